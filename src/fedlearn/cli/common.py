"""Option types shared by several commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from fedlearn.core.codecs import parse_codec
from fedlearn.core.downstream import check_download_codec
from fedlearn.errors import ConfigError

__all__ = [
    "CacheDirOpt",
    "CoordinatorOpt",
    "DataDirOpt",
    "DatasetOpt",
    "LogLevelOpt",
    "codec_name",
    "download_codec_name",
    "default_cache_dir",
    "setup_logging",
]

CoordinatorOpt = Annotated[
    str,
    typer.Option(
        "--coordinator", envvar="FEDLEARN_COORDINATOR", help="Coordinator address host:port."
    ),
]
DatasetOpt = Annotated[str, typer.Option("--dataset", help="Named data set: mnist or fashion.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder with IDX files (train-*/t10k-*, raw or .gz)."),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar="FEDLEARN_CACHE_DIR",
        help="Where downloaded MNIST files are kept [default: ~/.cache/fedlearn/mnist].",
    ),
]
LogLevelOpt = Annotated[
    str, typer.Option("--log-level", envvar="FEDLEARN_LOG_LEVEL", help="Logging level.")
]


def default_cache_dir(given: Path | None) -> Path:
    return given if given is not None else Path.home() / ".cache" / "fedlearn" / "mnist"


def setup_logging(level: str, *, plain: bool = False) -> None:
    """Configure the root logger once, for a process started from the CLI."""
    handler: logging.Handler
    if plain:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


def codec_name(text: str) -> str:
    """The canonical name of an update codec; a usage error (exit 2) if it is not one."""
    try:
        return parse_codec(text).name
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--update-codec'") from exc


def download_codec_name(text: str | None) -> str | None:
    """``--download-codec``: canonical, deterministic; ``None``/``raw`` for whole models."""
    if text is None or text == "raw":
        return None
    try:
        return check_download_codec(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--download-codec'") from exc
