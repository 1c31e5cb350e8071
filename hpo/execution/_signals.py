"""Ctrl-C and SIGTERM as one kind of interruption, delivered reliably, and a window for clean-up.

A signal handler's exception is raised wherever the main thread happens to be. When that is a
garbage-collector callback or a ``__del__`` (SQLAlchemy and torch create many), Python prints
"Exception ignored in ..." and carries on as if nothing happened. So an interruption that is gone
(garbage-collected) before the program acknowledged it (by entering :func:`interrupts_deferred`)
is sent again. One still propagating, however slowly its clean-up runs, is alive and left alone.

Inside a database call (a SQLAlchemy frame on the stack: MLflow's store, Optuna's storage) the
interruption waits until the call has returned: raised between a transaction's statements, it left
the transaction open on its pooled connection, holding SQLite's write lock, so that every later
write of the same process (closing the trial and its run) waited out the busy timeout and failed
("database is locked"; CI saw it once, a Ctrl-C one second into a trial). The watchdog sends the
signal again every ``REDELIVERY_POLL_S`` until it lands outside one.

:func:`as_command` is the one block both entry points (``python -m hpo.run`` and the worker
process) run their work in: signals as interruptions, and exit codes for interruptions and faults.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import weakref
from contextlib import contextmanager
from types import FrameType
from typing import Callable, Iterator

from hpo.errors import FAULT, fault_message

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REDELIVERY_POLL_S = 0.5  # how often the watchdog looks for a swallowed interruption


class Interrupted(KeyboardInterrupt):
    """Ctrl-C inside :func:`stop_signals_as_interrupts` (a subclass only so that it can be weakly referenced)."""


class Terminated(Interrupted):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs (Optuna fails the trial, MLflow kills the run)."""


def stop_signal(error: BaseException) -> signal.Signals:
    """SIGINT for Ctrl-C, SIGTERM for anything else (SIGTERM's :class:`Terminated`, an error)."""
    is_ctrl_c = isinstance(error, KeyboardInterrupt) and not isinstance(error, Terminated)
    return signal.SIGINT if is_ctrl_c else signal.SIGTERM


def exit_code(interruption: KeyboardInterrupt) -> int:
    """The shell convention 128 + signal number: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + stop_signal(interruption)


class _Pending:
    """The last interruption raised and not yet acknowledged, and its signal; a signal held back until the
    database call it arrived in has returned."""

    interruption: weakref.ref[Interrupted] | None = None
    signum = 0
    held_back = 0


def _in_database_call(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("sqlalchemy."):
            return True
        frame = frame.f_back
    return False


def _raise_interruption(signum: int, frame: FrameType | None) -> None:
    if _in_database_call(frame):
        _Pending.held_back = signum  # the watchdog sends it again
        return
    interruption = Terminated() if signum == signal.SIGTERM else Interrupted()
    _Pending.interruption, _Pending.signum = weakref.ref(interruption), signum
    try:
        raise interruption
    finally:
        del interruption  # this frame sits in the traceback: a local would keep a swallowed one alive


def _redeliver(stop: threading.Event) -> None:
    while not stop.wait(REDELIVERY_POLL_S):
        held_back, _Pending.held_back = _Pending.held_back, 0
        if held_back:
            os.kill(os.getpid(), held_back)
            continue
        pending = _Pending.interruption
        if pending is not None and pending() is None and _Pending.interruption is pending:
            os.kill(os.getpid(), _Pending.signum)  # swallowed: the handler raises a new one


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
        _Pending.interruption, _Pending.held_back = None, 0
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Acknowledge the interruption and ignore further Ctrl-C / SIGTERM inside the block, so clean-up completes."""
    _Pending.interruption, _Pending.held_back = None, 0
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def as_command(work: Callable[[], None], storage_url: str, error_prefix: str = "",
               on_interrupt: Callable[[], None] | None = None) -> int:
    """Run ``work`` with Ctrl-C / SIGTERM as interruptions; return the command's exit code.

    0 when it returns; 130 / 143 when interrupted (after ``on_interrupt``, run with further signals
    ignored); 1 with one ``error: <error_prefix><message>`` line on stderr for a fault of the outside
    world (see :func:`hpo.errors.fault_message`). Any other exception is a bug and keeps its traceback.
    """
    with stop_signals_as_interrupts():
        try:
            work()
        except KeyboardInterrupt as interruption:
            if on_interrupt is not None:
                with interrupts_deferred():
                    on_interrupt()
            return exit_code(interruption)
        except Exception as error:
            message = fault_message(error, storage_url)
            if message is None:
                raise  # a bug: keep the traceback
            print(f"error: {error_prefix}{message}", file=sys.stderr)
            return FAULT
    return 0
