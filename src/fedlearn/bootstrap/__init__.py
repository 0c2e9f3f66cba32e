"""The one place that picks concrete adapters and wires them together.

- :mod:`~fedlearn.bootstrap.data`: where a process finds its images.
- :mod:`~fedlearn.bootstrap.client`: a client process (PyTorch trainer, gRPC client).
- :mod:`~fedlearn.bootstrap.coordinator`: a coordinator process (SQL, Redis, gRPC server).
- :mod:`~fedlearn.bootstrap.runs`: a stopped run's results and an operator's rollback.

Each name below is imported from its module on first use (PEP 562), so that a client
process never loads the coordinator's SQLAlchemy, Alembic and Redis (some 35 MB of
memory in each of many client processes), while ``from fedlearn.bootstrap import X``
keeps working for every ``X``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedlearn.bootstrap.client import ClientSettings, build_client
    from fedlearn.bootstrap.coordinator import (
        PAUSE_BEFORE_CLOSE,
        CoordinatorSettings,
        SystemClock,
        build_coordinator,
        build_health_endpoint,
    )
    from fedlearn.bootstrap.data import DataSettings, load_data
    from fedlearn.bootstrap.runs import RunResult, read_run, rollback_stored_run

__all__ = [
    "PAUSE_BEFORE_CLOSE",
    "ClientSettings",
    "CoordinatorSettings",
    "DataSettings",
    "RunResult",
    "SystemClock",
    "build_client",
    "build_coordinator",
    "build_health_endpoint",
    "load_data",
    "read_run",
    "rollback_stored_run",
]

_MODULE_OF = {
    "ClientSettings": "client",
    "build_client": "client",
    "PAUSE_BEFORE_CLOSE": "coordinator",
    "CoordinatorSettings": "coordinator",
    "SystemClock": "coordinator",
    "build_coordinator": "coordinator",
    "build_health_endpoint": "coordinator",
    "DataSettings": "data",
    "load_data": "data",
    "RunResult": "runs",
    "read_run": "runs",
    "rollback_stored_run": "runs",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups (and monkeypatching) see a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
