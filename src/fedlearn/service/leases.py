"""Fencing: refuse work done under a lease that another holder has since taken over."""

from __future__ import annotations

from fedlearn.errors import FencedError
from fedlearn.service.ports import LeaseStore

__all__ = ["fenced"]


def fenced(leases: LeaseStore, name: str, token: int) -> None:
    """Raise :class:`FencedError` unless ``token`` is the newest issued for ``name``.

    Call it right before a write made on behalf of a lease. The check and the write
    are not one atomic step, so a store that can hold the token with the data (a
    column compared in the write's ``WHERE``, a Lua script) should check it there too.
    """
    if not leases.check_token(name, token):
        raise FencedError(name, token)
