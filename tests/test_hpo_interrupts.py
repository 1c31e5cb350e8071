"""Stop signals: delivered as exceptions, delivered again when Python swallows them, acknowledged by clean-up."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from hpo.execution import Interrupted, Terminated, exit_code, interrupts_deferred, stop_signals_as_interrupts


class SignalsItselfWhileCollected:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))  # the handler runs here, inside __del__, where Python ignores its exception


def wait(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


def test_an_interruption_swallowed_by_a_finalizer_is_delivered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python's own hook prints and drops the swallowed exception; pytest's would keep it alive.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    with stop_signals_as_interrupts():
        with pytest.raises(Terminated):
            SignalsItselfWhileCollected()
            wait(10)


def test_clean_up_acknowledges_the_interruption_and_is_not_interrupted() -> None:
    with stop_signals_as_interrupts():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            wait(10)
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)  # ignored during clean-up
            wait(0.2)
        wait(3)  # acknowledged: nothing is delivered again


def test_an_interruption_is_not_delivered_again_while_its_clean_up_runs() -> None:
    unwound = False
    with stop_signals_as_interrupts():
        with pytest.raises(KeyboardInterrupt):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                wait(10)
            finally:
                wait(3)  # slow clean-up (a database write under load) while the interruption propagates
                unwound = True
        with interrupts_deferred():
            pass
    assert unwound


def test_exit_codes_follow_the_shell_convention() -> None:
    assert exit_code(KeyboardInterrupt()) == exit_code(Interrupted()) == 130 and exit_code(Terminated()) == 143
