"""The MNIST download path, against a local HTTP server serving small fake archives."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from fedlearn.data import BUNDLED_SOURCE, MNIST_SHA256, load_dataset
from fedlearn.data.download import download_verified, fill_mnist_cache
from fedlearn.errors import ChecksumError, ConfigError


def serve(server, prefix: str, archives: dict[str, bytes]) -> str:
    for name, body in archives.items():
        server.routes[f"/{prefix}/{name}"] = body
    return server.mirror(prefix)


def corrupted(archives: dict[str, bytes]) -> dict[str, bytes]:
    return {name: body[:-1] + bytes([body[-1] ^ 0xFF]) for name, body in archives.items()}


def assert_fake_dataset(dataset_arrays: dict[str, np.ndarray], fake) -> None:
    for key, expected in fake.arrays.items():
        np.testing.assert_array_equal(dataset_arrays[key], expected)


def arrays_of(dataset: object) -> dict[str, np.ndarray]:
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    return {key: getattr(dataset, key) for key in keys}


def test_official_digest_table_names_the_four_archives() -> None:
    assert sorted(MNIST_SHA256) == sorted(
        f"{stem}.gz"
        for stem in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    )
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in MNIST_SHA256.values())


def test_download_fills_the_cache_and_loads_it(tmp_path: Path, http_server, fake_mnist) -> None:
    mirror = serve(http_server, "good", fake_mnist.archives)
    dataset = load_dataset(
        "mnist", cache_dir=tmp_path / "cache", mirrors=[mirror], checksums=fake_mnist.checksums
    )
    assert dataset.source == f"download:{mirror}"
    assert dataset.train_labels.dtype == np.int64
    assert_fake_dataset(arrays_of(dataset), fake_mnist)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(fake_mnist.archives)


def test_checksum_mismatch_on_first_mirror_falls_through_to_second(
    tmp_path: Path, http_server, fake_mnist, caplog: pytest.LogCaptureFixture
) -> None:
    bad = serve(http_server, "bad", corrupted(fake_mnist.archives))
    good = serve(http_server, "good", fake_mnist.archives)
    with caplog.at_level(logging.WARNING, logger="fedlearn.data"):
        dataset = load_dataset(
            "mnist", cache_dir=tmp_path, mirrors=[bad, good], checksums=fake_mnist.checksums
        )
    assert dataset.source == f"download:{good}"
    assert_fake_dataset(arrays_of(dataset), fake_mnist)
    assert sum("does not match" in r.getMessage() for r in caplog.records) == 4
    for name, digest in fake_mnist.checksums.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    assert not list(tmp_path.glob("*.part")), "no partial downloads may stay behind"


def test_all_mirrors_failing_falls_back_to_bundled_digits(
    tmp_path: Path, http_server, fake_mnist, caplog: pytest.LogCaptureFixture
) -> None:
    bad = serve(http_server, "bad", corrupted(fake_mnist.archives))
    missing = http_server.mirror("nothing-here")
    with caplog.at_level(logging.WARNING, logger="fedlearn.data"):
        dataset = load_dataset(
            "mnist", cache_dir=tmp_path, mirrors=[missing, bad], checksums=fake_mnist.checksums
        )
    assert dataset.source == BUNDLED_SOURCE
    assert (len(dataset.train_labels), len(dataset.test_labels)) == (4000, 1000)
    leftovers = [p for p in tmp_path.iterdir() if p.name != "bundled"]
    assert leftovers == [], "files failing their checksum are deleted"
    assert any("HTTP 404" in r.getMessage() for r in caplog.records)
    assert any("full MNIST not found" in r.getMessage() for r in caplog.records)


def test_closed_port_mirror_is_skipped_after_one_refusal(
    tmp_path: Path,
    http_server,
    fake_mnist,
    closed_port_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = serve(http_server, "good", fake_mnist.archives)
    with caplog.at_level(logging.WARNING, logger="fedlearn.data"):
        dataset = load_dataset(
            "mnist",
            cache_dir=tmp_path,
            mirrors=[closed_port_url, good],
            checksums=fake_mnist.checksums,
            timeout_s=30.0,
        )
    assert dataset.source == f"download:{good}"
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1


def test_silent_mirror_costs_one_timeout_not_one_per_file(
    tmp_path: Path, fake_mnist, silent_server_url: str
) -> None:
    started = time.monotonic()
    fill = fill_mnist_cache(
        tmp_path, fake_mnist.checksums, mirrors=[silent_server_url], timeout_s=0.5
    )
    elapsed = time.monotonic() - started
    assert not fill.complete
    assert elapsed < 1.5, f"four files x 0.5 s would be 2 s; took {elapsed:.2f} s"


def test_verified_cache_is_used_without_any_request(
    tmp_path: Path, http_server, fake_mnist, closed_port_url: str
) -> None:
    good = serve(http_server, "good", fake_mnist.archives)
    load_dataset("mnist", cache_dir=tmp_path, mirrors=[good], checksums=fake_mnist.checksums)
    served = len(http_server.requests)
    dataset = load_dataset(
        "mnist", cache_dir=tmp_path, mirrors=[good], checksums=fake_mnist.checksums
    )
    assert dataset.source == str(tmp_path)
    assert len(http_server.requests) == served
    assert_fake_dataset(arrays_of(dataset), fake_mnist)


def test_corrupt_cached_file_is_deleted_and_fetched_again(
    tmp_path: Path, http_server, fake_mnist
) -> None:
    good = serve(http_server, "good", fake_mnist.archives)
    for name, body in fake_mnist.archives.items():
        (tmp_path / name).write_bytes(body)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    dataset = load_dataset(
        "mnist", cache_dir=tmp_path, mirrors=[good], checksums=fake_mnist.checksums
    )
    assert dataset.source == f"download:{good}"
    assert http_server.requests == ["/good/t10k-labels-idx1-ubyte.gz"]
    assert_fake_dataset(arrays_of(dataset), fake_mnist)


def test_downloads_disabled_uses_bundled_digits_without_requests(
    tmp_path: Path, http_server, fake_mnist
) -> None:
    good = serve(http_server, "good", fake_mnist.archives)
    dataset = load_dataset(
        "mnist",
        cache_dir=tmp_path,
        mirrors=[good],
        checksums=fake_mnist.checksums,
        allow_download=False,
    )
    assert dataset.source == BUNDLED_SOURCE
    assert http_server.requests == []


def test_download_verified_raises_checksum_error_and_leaves_nothing(
    tmp_path: Path, http_server
) -> None:
    http_server.routes["/f"] = b"hello"
    with pytest.raises(ChecksumError, match="does not match"):
        download_verified(
            f"{http_server.base_url}/f", tmp_path / "f", sha256="0" * 64, timeout_s=5.0
        )
    assert list(tmp_path.iterdir()) == []


def test_load_dataset_rejects_checksums_for_other_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checksums"):
        load_dataset("mnist", cache_dir=tmp_path, checksums={"a.gz": "0" * 64})


def test_load_dataset_rejects_non_http_mirror(tmp_path: Path, fake_mnist) -> None:
    with pytest.raises(ConfigError, match="http"):
        load_dataset(
            "mnist", cache_dir=tmp_path, mirrors=["file:///etc/"], checksums=fake_mnist.checksums
        )
