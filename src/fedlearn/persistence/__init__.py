"""Persistence adapters: the ``RunStore`` and ``ModelStore`` ports.

- :class:`SqlRunStore` on SQLite or PostgreSQL (engine from :func:`make_engine`,
  schema from :func:`fedlearn.persistence.migrate.upgrade`), and
  :class:`InMemoryRunStore` for tests and simulation;
- :class:`FileModelStore` (atomic, fsynced files under a folder) and
  :class:`InMemoryModelStore`.

Schema migrations live in :mod:`fedlearn.persistence.migrate`; test helpers
for PostgreSQL in :mod:`fedlearn.persistence.testing`.
"""

from __future__ import annotations

from fedlearn.persistence.engine import make_engine
from fedlearn.persistence.memory_store import InMemoryRunStore
from fedlearn.persistence.model_store import FileModelStore, InMemoryModelStore
from fedlearn.persistence.sql_store import SqlRunStore

__all__ = [
    "FileModelStore",
    "InMemoryModelStore",
    "InMemoryRunStore",
    "SqlRunStore",
    "make_engine",
]
