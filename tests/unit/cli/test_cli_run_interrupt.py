"""Ctrl-C during ``fedlearn run``'s status call is held back until the call is done."""

from __future__ import annotations

import os
import signal

import pytest

from fedlearn.cli.run_cmd import _ctrl_c_after


def test_ctrl_c_inside_the_block_is_raised_after_it() -> None:
    finished: list[str] = []
    with pytest.raises(KeyboardInterrupt), _ctrl_c_after():
        os.kill(os.getpid(), signal.SIGINT)
        finished.append("the call")  # not interrupted half-way
    assert finished == ["the call"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_ctrl_c_no_interrupt() -> None:
    with _ctrl_c_after():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
