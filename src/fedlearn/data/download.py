"""Download the official MNIST archives into a cache folder, verified by SHA-256.

Each archive is fetched from the mirrors in turn with :mod:`urllib`, streamed into
a temporary file next to its destination, checked against its known digest and
only then renamed into place, so the cache never holds a partial or wrong file.
A mirror that cannot be reached at all (refused, timed out, DNS failure) is
skipped for the remaining archives, so with no network the whole attempt ends
within about ``timeout_s`` per mirror.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from fedlearn.errors import ChecksumError, ConfigError, DataError

__all__ = [
    "DEFAULT_MNIST_MIRRORS",
    "MNIST_SHA256",
    "CacheFill",
    "download_verified",
    "fill_mnist_cache",
    "sha256_file",
]

logger = logging.getLogger(__name__)

DEFAULT_MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

MNIST_SHA256: Mapping[str, str] = MappingProxyType(
    {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    }
)
"""SHA-256 of the four official MNIST ``.gz`` archives, by file name."""

_CHUNK = 1 << 16
_MAX_BYTES = 64 << 20  # the largest official archive is under 10 MB


@dataclass(frozen=True, slots=True)
class CacheFill:
    """What :func:`fill_mnist_cache` achieved."""

    complete: bool
    """True when every archive is in the cache and matches its digest."""
    mirrors_used: tuple[str, ...]
    """Mirrors that supplied at least one archive this time (empty: all cached)."""


class _MirrorUnreachableError(DataError):
    """The mirror did not answer at all; later files should not try it again."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fill_mnist_cache(
    cache_dir: Path,
    checksums: Mapping[str, str],
    *,
    mirrors: Sequence[str],
    timeout_s: float,
    allow_download: bool = True,
) -> CacheFill:
    """Make ``cache_dir`` hold every file in ``checksums`` with the right digest.

    Cached files that fail their digest are deleted.  Missing files are fetched
    from ``mirrors`` in turn (unless ``allow_download`` is False).  Never raises
    for network or checksum problems: it logs them and reports ``complete=False``.
    """
    for url in mirrors:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(f"mirror {url!r} is not an http(s) URL")
    missing = [name for name, sha in checksums.items() if not _cached_ok(cache_dir, name, sha)]
    if not missing:
        return CacheFill(complete=True, mirrors_used=())
    if not allow_download or not mirrors:
        logger.info("MNIST cache %s lacks %s; not downloading", cache_dir, ", ".join(missing))
        return CacheFill(complete=False, mirrors_used=())
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("cannot create MNIST cache folder %s: %s", cache_dir, exc)
        return CacheFill(complete=False, mirrors_used=())
    used: list[str] = []
    dead: set[str] = set()
    complete = True
    for name in missing:
        mirror = _fetch_one(
            name,
            checksums[name],
            cache_dir=cache_dir,
            mirrors=mirrors,
            dead=dead,
            timeout_s=timeout_s,
        )
        if mirror is None:
            complete = False
        elif mirror not in used:
            used.append(mirror)
    return CacheFill(complete=complete, mirrors_used=tuple(used))


def download_verified(url: str, dest: Path, *, sha256: str, timeout_s: float) -> None:
    """Download ``url`` to ``dest`` atomically, keeping it only if its digest is ``sha256``.

    Raises :class:`~fedlearn.errors.ChecksumError` on a digest mismatch (nothing
    is left behind) and :class:`~fedlearn.errors.DataError` when the download fails.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise DataError(f"{dest.parent}: cannot write a download there: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _stream(url, out, timeout_s=timeout_s)
        if actual != sha256.lower():
            raise ChecksumError(
                f"{url}: SHA-256 {actual} does not match the expected {sha256}; file discarded"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _cached_ok(cache_dir: Path, name: str, sha256: str) -> bool:
    path = cache_dir / name
    if not path.is_file():
        return False
    if sha256_file(path) == sha256.lower():
        return True
    logger.warning("cached %s fails its SHA-256 check; deleting it", path)
    path.unlink(missing_ok=True)
    return False


def _fetch_one(
    name: str,
    sha256: str,
    *,
    cache_dir: Path,
    mirrors: Sequence[str],
    dead: set[str],
    timeout_s: float,
) -> str | None:
    """Fetch ``name`` from the first mirror that serves it intact; that mirror or None."""
    for mirror in mirrors:
        if mirror in dead:
            continue
        url = urllib.parse.urljoin(mirror if mirror.endswith("/") else f"{mirror}/", name)
        try:
            download_verified(url, cache_dir / name, sha256=sha256, timeout_s=timeout_s)
        except _MirrorUnreachableError as exc:
            logger.warning("MNIST mirror %s unreachable, skipping it: %s", mirror, exc)
            dead.add(mirror)
        except DataError as exc:  # ChecksumError included
            logger.warning("MNIST download of %s failed: %s", name, exc)
        else:
            logger.info("downloaded %s from %s", name, mirror)
            return mirror
    return None


def _stream(url: str, out: BinaryIO, *, timeout_s: float) -> str:
    """Copy ``url``'s body into ``out``; return its hex SHA-256."""
    digest = hashlib.sha256()
    total = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            while chunk := response.read(_CHUNK):
                total += len(chunk)
                if total > _MAX_BYTES:
                    raise DataError(f"{url}: larger than {_MAX_BYTES} bytes; refusing it")
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise _MirrorUnreachableError(f"{url}: {exc}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"{url}: download failed: {exc}") from exc
    return digest.hexdigest()
