"""Stop signals: delivered as exceptions, delivered again when Python swallows them, acknowledged by clean-up."""
from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time

import pytest
import sqlalchemy

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


def test_an_interruption_waits_until_the_database_call_it_arrived_in_has_returned(tmp_path) -> None:
    # A real SQLite transaction of SQLAlchemy's, signalled between its statements: interrupted there, it would
    # keep the file's write lock on its pooled connection ("database is locked" for every later write).
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/t.db")
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE t (x INTEGER)"))
    committed = []

    @sqlalchemy.event.listens_for(engine, "before_cursor_execute")
    def signal_mid_transaction(*_: object) -> None:
        if not committed:
            os.kill(os.getpid(), signal.SIGINT)
            wait(0.3)  # the handler runs here, inside SQLAlchemy's frames

    with stop_signals_as_interrupts():
        with pytest.raises(KeyboardInterrupt):
            with engine.begin() as connection:
                connection.execute(sqlalchemy.text("INSERT INTO t VALUES (1)"))
                connection.execute(sqlalchemy.text("INSERT INTO t VALUES (2)"))
            committed.append(True)  # the call returned whole; the held-back signal lands after it
            wait(10)
    assert committed
    with sqlite3.connect(tmp_path / "t.db", timeout=0.1) as other:  # no lock left behind
        other.execute("INSERT INTO t VALUES (3)")
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT x FROM t ORDER BY x")).scalars().all() == [1, 2, 3]


def test_exit_codes_follow_the_shell_convention() -> None:
    assert exit_code(KeyboardInterrupt()) == exit_code(Interrupted()) == 130 and exit_code(Terminated()) == 143
