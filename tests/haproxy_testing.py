"""HAProxy for the load-balancer tests (``pythonpath = tests``): found, or the test is
skipped, except under ``CI=true`` where a missing HAProxy fails it (as a missing
PostgreSQL or Redis does)."""

from __future__ import annotations

import os

import pytest

from fedlearn.cli.haproxy import find_haproxy
from fedlearn.errors import ConfigError

__all__ = ["require_haproxy", "unavailable"]


def unavailable(what: str, reason: str) -> None:
    """Skip the test because ``what`` is missing; fail it instead when ``CI=true``."""
    message = f"{what} is needed for this test: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_haproxy() -> str:
    """The path of the ``haproxy`` binary (``make install`` installs it with apt)."""
    try:
        return find_haproxy()
    except ConfigError as exc:
        unavailable("HAProxy", str(exc))
        raise  # not reached: skip and fail raise
