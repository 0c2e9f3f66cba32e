"""Fixtures for fedlearn.data: small fake MNIST archives and a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from fedlearn.data.idx import write_idx

STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class FakeMnist:
    """Four small IDX arrays, and their gzip archives with SHA-256 digests."""

    arrays: dict[str, np.ndarray]
    archives: dict[str, bytes]
    checksums: dict[str, str]


def make_fake_arrays(
    *, n_train: int = 30, n_test: int = 20, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_fake_folder(
    folder: Path, arrays: dict[str, np.ndarray], *, compress: bool, keys: tuple[str, ...] = ()
) -> None:
    """Write the arrays (only ``keys`` if given) as IDX files named like MNIST's."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in keys or tuple(STEMS):
        name = STEMS[key] + (".gz" if compress else "")
        write_idx(folder / name, arrays[key], compress=compress)


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory: pytest.TempPathFactory) -> FakeMnist:
    arrays = make_fake_arrays()
    folder = tmp_path_factory.mktemp("fake-archives")
    write_fake_folder(folder, arrays, compress=True)
    archives = {f"{stem}.gz": (folder / f"{stem}.gz").read_bytes() for stem in STEMS.values()}
    checksums = {name: hashlib.sha256(data).hexdigest() for name, data in archives.items()}
    return FakeMnist(arrays=arrays, archives=archives, checksums=checksums)


@dataclass
class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``routes`` (path -> body)."""

    base_url: str
    routes: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def mirror(self, prefix: str) -> str:
        return f"{self.base_url}/{prefix}/"


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    state = LocalServer(base_url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


@pytest.fixture
def silent_server_url() -> Iterator[str]:
    """An http URL whose server accepts connections but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mnist/"


@pytest.fixture
def write_folder(fake_mnist: FakeMnist) -> Callable[..., Path]:
    """Write the fake arrays as IDX files: ``write_folder(folder, compress=..., keys=...)``."""

    def write(folder: Path, *, compress: bool = False, keys: tuple[str, ...] = ()) -> Path:
        write_fake_folder(folder, fake_mnist.arrays, compress=compress, keys=keys)
        return folder

    return write
