"""Raw training data never leaves a client: every byte a real client process sends over
its gRPC channel during real training is recorded by a proxy and searched for the
client's images, whole or in 8-byte pieces.

The client trains two FedAvg rounds of the MLP on its partition of the bundled digits
(plain SGD, no DP: the case with the most to leak). Its images are searched for in two
encodings: the uint8 pixels as stored in the IDX file, and the float32 values the trainer
feeds the model (``images_to_tensor``: ``(pixel / 255 - 0.1307) / 0.3081``), each as every
8-byte window (at every byte offset) of each image, against every 8-byte window of the
capture. The same proxy also carries a rogue upload that hides one of those images in an
update: the detector must find it there, so the test would fail if images did travel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pytest
from capture_proxy import CaptureProxy

from fedlearn.core.retry import RetryPolicy
from fedlearn.core.serialization import encode_weights
from fedlearn.data import load_dataset, make_partitions
from fedlearn.errors import FedLearnError
from fedlearn.models.preprocess import images_to_tensor
from fedlearn.persistence import FileModelStore, SqlRunStore
from fedlearn.service.messages import UpdateSubmission
from fedlearn.transport.client import GrpcCoordinatorClient

if TYPE_CHECKING:
    from conftest import Federation

WINDOW = 8
ROUNDS = 2
PARTITION, NUM_PARTITIONS = 0, 3
MIN_EVIDENCE = 100
"""Informative windows every image has in at least one encoding (the float32 one has
at least 204 in each of the 5,000 bundled digits)."""
ROGUE_IMAGE = 17
"""Index (in the client's partition) of the image the rogue upload smuggles out."""


# -- the detector -----------------------------------------------------------------------


def _windows(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Every 8-byte window of each row of ``rows`` ``[N, B]``: ``[N, B - 7, 8]``."""
    return np.lib.stride_tricks.sliding_window_view(rows, WINDOW, axis=1)


def _pack(windows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """``[..., 8]`` bytes to one ``uint64`` per window."""
    packed: npt.NDArray[np.uint64] = np.ascontiguousarray(windows).view("<u8")[..., 0]
    return packed


@dataclass(frozen=True)
class ImageWindows:
    """The 8-byte windows of a set of images in one encoding, and which are evidence."""

    encoding: str
    windows: npt.NDArray[np.uint64]
    """``[N, W]``: window ``j`` of image ``i``."""
    informative: npt.NDArray[np.bool_]
    """``[N, W]``: False for the trivially common windows, which are never evidence."""

    @classmethod
    def of(
        cls, encoding: str, images: npt.NDArray[np.uint8], rows: npt.NDArray[np.uint8]
    ) -> ImageWindows:
        """``rows``: each of ``images`` ``[N, 28, 28]`` as its bytes in this encoding.

        A window counts as evidence only if it is not constant and at least half of its
        bytes belong to stroke pixels (non-zero in the IDX file). Every other window is
        mostly background, the 0 pixel (-0.4242 as float32) that fills about 80% of a
        digit: at most three bytes of content in zero padding, the shape of any small
        number in binary data. This very capture is full of them (HTTP/2 and protobuf
        framing; float32 deltas with exact zeros next to small values), and about 10,000
        such windows of the client's images turn up in it by chance: they prove nothing.
        Constant windows (all 8 bytes equal: background, or inside a saturated stroke)
        are as common. What remains are the stroke's own bytes, of which a leaked image
        shows hundreds (``MIN_EVIDENCE``).
        """
        n = images.shape[0]
        per_pixel = rows.shape[1] // images[0].size
        stroke = np.repeat(images.reshape(n, -1) != 0, per_pixel, axis=1)
        windows = _windows(rows)
        constant = (windows[..., 1:] == windows[..., :1]).all(axis=-1)
        mostly_stroke = _windows(stroke.view(np.uint8)).sum(axis=-1) >= WINDOW // 2
        return cls(encoding, _pack(windows), mostly_stroke & ~constant)

    def per_image(self) -> npt.NDArray[np.intp]:
        """How many informative windows each image has."""
        counts: npt.NDArray[np.intp] = self.informative.sum(axis=1)
        return counts

    def whole_in(self, captured: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """Per image, whether all its windows are among ``captured``, as they are where
        the image appears whole. (This also covers the few thin digits, a narrow "1",
        whose uint8 windows all hold less than four stroke pixels.)"""
        whole: npt.NDArray[np.bool_] = np.isin(self.windows, captured).all(axis=1)
        return whole

    def found_in(self, captured: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
        """Per image, how many of its informative windows are among ``captured``."""
        hits: npt.NDArray[np.intp] = (np.isin(self.windows, captured) & self.informative).sum(
            axis=1
        )
        return hits


def capture_windows(streams: list[bytes]) -> npt.NDArray[np.uint64]:
    """The distinct 8-byte windows, at every offset, of each recorded stream."""
    found = [
        _pack(_windows(np.frombuffer(s, dtype=np.uint8)[None, :]))[0]
        for s in streams
        if len(s) >= WINDOW
    ]
    return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.uint64)


def detectors(images: npt.NDArray[np.uint8]) -> list[ImageWindows]:
    """The two encodings a client holds its images in."""
    n = images.shape[0]
    pixels = images.reshape(n, -1)
    floats = images_to_tensor(images).numpy().astype("<f4").reshape(n, -1)
    return [
        ImageWindows.of("uint8 IDX pixels", images, pixels),
        ImageWindows.of("float32 normalised", images, floats.view(np.uint8)),
    ]


# -- the federation ---------------------------------------------------------------------


def _coordinator_args(federation: Federation, database_url: str) -> list[object]:
    return [
        "coordinator", "--address", "127.0.0.1:0", "--port-file", federation.port_file,
        "--database-url", database_url, "--model-dir", federation.model_dir, "--run-id", "it",
        "--model", "mlp", "--rounds", ROUNDS, "--min-clients", 1, "--keep-updates",
        "--local-epochs", 1, "--lr", 0.05, "--no-download", "--linger", 5,
    ]  # fmt: skip


def _client_args(federation: Federation, target: str) -> list[object]:
    return [
        "client", "--coordinator", target, "--client-id", "c0",
        "--partition", PARTITION, "--num-partitions", NUM_PARTITIONS,
        "--partitioner", "shards", "--seed", 0, "--holdout", 0.1,
        "--dataset", "mnist", "--data-dir", federation.digits_dir,
        "--no-download", "--threads", 1,
    ]  # fmt: skip


def _partition_images(digits_dir: Path) -> npt.NDArray[np.uint8]:
    """Every image of the client's partition (training and held out), as the client
    process reads them from the IDX files."""
    data = load_dataset("mnist", data_dir=digits_dir, allow_download=False)
    parts = make_partitions(data.train_labels, NUM_PARTITIONS, scheme="shards", seed=0)
    images: npt.NDArray[np.uint8] = data.train_images[parts[PARTITION]]
    return images


def _rogue_upload(target: str, image: npt.NDArray[np.uint8]) -> None:
    """An update shaped like an MLP delta that carries ``image`` twice: normalised in one
    row of ``fc1.weight``, and its raw pixels reinterpreted as float32 in another."""
    smuggled = np.zeros((200, 28 * 28), dtype=np.float32)
    smuggled[3] = images_to_tensor(image[None]).numpy().ravel()
    smuggled[7, : 28 * 28 // 4] = np.frombuffer(image.tobytes(), dtype="<f4")
    submission = UpdateSubmission(
        client_id="rogue",
        round_number=1,
        update_id="rogue-1",
        payload=encode_weights({"fc1.weight": smuggled}),
        num_samples=1,
        training_loss=0.0,
    )
    retry = RetryPolicy(initial_s=0.1, max_delay_s=0.5, total_s=10)
    # Unknown client: refused, but only after the server read every chunk.
    with GrpcCoordinatorClient(target, retry=retry) as api, pytest.raises(FedLearnError):
        api.submit_update(submission)


@pytest.mark.slow
def test_client_process_sends_no_training_image_nor_window_of_one(
    federation: Federation,
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
) -> None:
    images = _partition_images(federation.digits_dir)
    port = federation.start_coordinator("coordinator", _coordinator_args(federation, sqlite_url))
    with CaptureProxy(port) as proxy:
        # The control first, on its own connections: a rogue client smuggling one image.
        _rogue_upload(proxy.address, images[ROGUE_IMAGE])
        time.sleep(0.2)  # let the proxy's threads record the last bytes
        rogue_connections = proxy.connections
        federation.processes.start("c0", *_client_args(federation, proxy.address))
        codes = federation.processes.wait_all(timeout_s=120)
        rogue = proxy.sent()[:rogue_connections]
        honest = proxy.sent(first=rogue_connections)

    assert codes == {"coordinator": 0, "c0": 0}
    assert f"client c0: trained {ROUNDS} rounds" in federation.processes.log("c0")
    assert honest and all(honest), "the client's traffic was not captured"
    honest_windows = capture_windows(honest)

    # The capture holds what the client uploaded: the stored updates are in it.
    runs = open_run_store(sqlite_url)
    models = FileModelStore(federation.model_dir)
    for r in range(1, ROUNDS + 1):
        (update,) = runs.list_updates("it", r)
        assert update.model_update_path is not None
        payload = np.frombuffer(models.get(update.model_update_path), dtype=np.uint8)
        found = np.isin(_pack(_windows(payload[None, :]))[0], honest_windows).mean()
        assert found > 0.99, f"round {r}: only {found:.1%} of the update in the capture"

    rogue_windows = capture_windows(rogue)
    evidence = []
    for detector in detectors(images):
        evidence.append(detector.per_image())
        # The control: the one image the rogue sent is found, whole and window by window.
        in_rogue = detector.found_in(rogue_windows)
        assert in_rogue[ROGUE_IMAGE] >= 0.9 * evidence[-1][ROGUE_IMAGE] >= MIN_EVIDENCE, (
            detector.encoding,
            in_rogue[ROGUE_IMAGE],
            evidence[-1][ROGUE_IMAGE],
        )
        assert np.flatnonzero(detector.whole_in(rogue_windows)).tolist() == [ROGUE_IMAGE]
        # The client's own traffic: no image, whole or in part.
        in_honest = detector.found_in(honest_windows)
        assert not in_honest.any(), (detector.encoding, np.flatnonzero(in_honest), in_honest)
        assert not detector.whole_in(honest_windows).any(), detector.encoding
    # Every image would have been found, had it been sent in either encoding.
    assert (np.maximum(*evidence) >= MIN_EVIDENCE).all(), np.maximum(*evidence).min()
