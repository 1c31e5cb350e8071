"""Ctrl-C and SIGTERM as one kind of interruption, delivered reliably, and a window for clean-up.

A signal handler's exception is raised wherever the main thread happens to be. When that is a
garbage-collector callback or a ``__del__`` (SQLAlchemy and torch create many), Python prints
"Exception ignored in ..." and carries on as if nothing happened. So until the program
acknowledges the interruption (by entering :func:`interrupts_deferred`), the signal is sent again.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REDELIVER_AFTER_S = 2.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs (Optuna fails the trial, MLflow kills the run)."""


def exit_code(interruption: KeyboardInterrupt) -> int:
    """The shell convention 128 + signal number: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + (signal.SIGTERM if isinstance(interruption, Terminated) else signal.SIGINT)


class _Pending:
    """The last stop signal not yet acknowledged, and when it arrived."""

    signum: int | None = None
    since = 0.0


def _raise_interruption(signum: int, frame: object) -> None:
    if _Pending.signum is None:
        _Pending.signum, _Pending.since = signum, time.monotonic()
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _redeliver(stop: threading.Event) -> None:
    while not stop.wait(0.5):
        signum = _Pending.signum
        if signum is not None and time.monotonic() - _Pending.since > REDELIVER_AFTER_S:
            _Pending.since = time.monotonic()
            os.kill(os.getpid(), signum)


@contextmanager
def stop_signals_as_interrupts() -> Iterator[None]:
    """Inside the block, Ctrl-C raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated`, until acknowledged."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers; elsewhere the default behaviour stays
        return
    previous = {sig: signal.signal(sig, _raise_interruption) for sig in STOP_SIGNALS}
    stop = threading.Event()
    watchdog = threading.Thread(target=_redeliver, args=(stop,), name="redeliver-stop-signal", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        stop.set()
        watchdog.join()
        _Pending.signum = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Acknowledge the interruption and ignore further Ctrl-C / SIGTERM inside the block, so clean-up completes."""
    _Pending.signum = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
