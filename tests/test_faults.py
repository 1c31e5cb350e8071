"""Fault injection with real processes, databases and file systems: diverging and crashing trials,
a killed worker, a lost PostgreSQL database, a full disk, a damaged MLflow database and an unwritable
``mlruns``."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg2
import pytest
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo.errors import STORAGE_ERRORS
from hpo.storage import SQLITE_HEADER, ReconnectingRDBStorage
from tests.helpers import (CONV4, LEARNER, LOG_LR, LR, SECONDS_BUDGET, counted, error_line, finish, learner_study,
                           run_in, runs, start_hpo, trial_runs, trials, wait_for, wait_for_running_trial, write_study)

pytestmark = pytest.mark.usefixtures("one_thread")
# Adam takes steps of about lr whatever the gradient: at 1e20 the loss is NaN at step 2.
DIVERGING_LR = 1.0e20
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def search(**settings: Any) -> dict[str, Any]:
    return {"sampler": "random", "pruner": "none", "n_trials": 3, **settings}


def stderr_of(capsys: pytest.CaptureFixture) -> str:
    return capsys.readouterr().err


def no_running(directory: Path, name: str) -> None:
    """Neither store has anything left RUNNING."""
    assert all(t.state != TrialState.RUNNING for t in trials(directory, name))
    assert all(r.info.status != "RUNNING" for role in ("parent", "trial") for r in runs(directory, name, role))


# --------------------------------------------------------------------------- failing trials

def test_diverging_trials_fail_with_their_reason_and_are_replaced(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    lr = {"type": "categorical", "choices": [1.0e-3, DIVERGING_LR]}
    write_study(tmp_path, learner_study({"lr": lr}, CONV4, name="diverge", search=search()))
    assert run_in(tmp_path) == 0
    done, tracked = trials(tmp_path, "diverge"), trial_runs(tmp_path, "diverge")
    failed = [t for t in done if t.state == TrialState.FAIL]
    assert failed and counted(done) == 3 and len(done) == 3 + len(failed)
    for trial in done:
        run = tracked[trial.number]
        assert (trial.params["lr"] == DIVERGING_LR) == (trial.state == TrialState.FAIL)
        if trial.state == TrialState.FAIL:
            reason = trial.user_attrs["failure_reason"]
            assert reason.startswith("diverged: training loss is nan at step")
            assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == reason
            assert run.data.tags["optuna_trial_state"] == "FAIL"
        else:
            assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
    assert "Traceback" not in stderr_of(capsys)  # a diverged trial is one log line, not a traceback
    [parent] = runs(tmp_path, "diverge", "parent")
    assert parent.info.status == "FINISHED"


def test_a_study_whose_every_trial_fails_stops_after_the_limit(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    # Every value passes the study checks (values a learner can never train with, such as a negative weight
    # decay, are bad input), but no machine holds 10**12 episodes: every trial raises when it samples them.
    failing = {**CONV4, "meta_batch": 10**12}
    write_study(tmp_path, learner_study({"lr": LOG_LR}, failing, name="doomed",
                                        search=search(max_consecutive_failures=3)))
    assert run_in(tmp_path) == 1
    line = error_line(stderr_of(capsys))  # after Optuna's log of each trial, with the learner's traceback
    assert line.startswith(f"error: doomed/{LEARNER}: 3 trials in a row failed, the last with 'RuntimeError: ")
    done = trials(tmp_path, "doomed")
    assert [t.state for t in done] == [TrialState.FAIL] * 3
    assert all(t.user_attrs["failure_reason"].startswith("RuntimeError: ") and "can't allocate memory"
               in t.user_attrs["failure_reason"] for t in done)
    assert {r.info.status for r in trial_runs(tmp_path, "doomed").values()} == {"FAILED"}
    assert runs(tmp_path, "doomed", "parent")[0].info.status == "FAILED"
    no_running(tmp_path, "doomed")


# --------------------------------------------------------------------------- a killed worker

@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_failed_retried_and_closed_by_the_next_start(tmp_path: Path) -> None:
    study = learner_study({"lr": LOG_LR}, CONV4, name="killed",
                          search=search(n_trials=2, heartbeat_interval=1, grace_period=2), budget=SECONDS_BUDGET)
    write_study(tmp_path, study)
    process = start_hpo(tmp_path)
    try:
        wait_for_running_trial(tmp_path, process)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    [killed] = trials(tmp_path, "killed")
    assert killed.state == TrialState.RUNNING and trial_runs(tmp_path, "killed")[0].info.status == "RUNNING"

    code, err = finish(start_hpo(tmp_path))  # the same command again
    assert code == 0, err
    after = trials(tmp_path, "killed")
    assert after[0].state == TrialState.FAIL and counted(after) == 2
    assert [t.params for t in after if t.state == TrialState.COMPLETE].count(killed.params) == 1  # retried
    assert trial_runs(tmp_path, "killed")[0].info.status == "KILLED"
    assert runs(tmp_path, "killed", "parent")[0].info.status == "FINISHED"
    no_running(tmp_path, "killed")


# --------------------------------------------------------------------------- storage lost mid-run

@pytest.fixture
def postgres_database() -> Iterator[tuple[str, Callable[[str], Any]]]:
    """A fresh database on the local server, dropped afterwards; and a function running SQL on the server."""
    try:
        admin = psycopg2.connect(**POSTGRES, connect_timeout=5)
    except psycopg2.OperationalError as e:
        pytest.skip(f"no PostgreSQL server at {POSTGRES['host']}:{POSTGRES['port']} ({str(e).strip()})")
    admin.autocommit = True
    name = f"hpo_faults_{uuid.uuid4().hex[:8]}"

    def sql(statement: str) -> list[tuple]:
        with admin.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []

    sql(f"CREATE DATABASE {name}")
    try:
        yield name, sql
    finally:
        sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_killed_connections_are_survived_and_a_dropped_database_stops_with_one_line(
        tmp_path: Path, postgres_database: tuple[str, Callable[[str], Any]]) -> None:
    name, sql = postgres_database
    url = f"postgresql+psycopg2://postgres:s3cretpw@127.0.0.1:5432/{name}"  # trust auth ignores the password
    write_study(tmp_path, learner_study({"lr": LOG_LR}, CONV4, name="lost", search=search(n_trials=50),
                                        budget=SECONDS_BUDGET, storage=url))

    def in_state(state: str) -> int:
        try:
            return _count(name, f"SELECT count(*) FROM trials WHERE state = '{state}'")
        except psycopg2.Error:  # tables not created yet
            return 0

    process = start_hpo(tmp_path)
    try:
        wait_for(lambda: in_state("RUNNING") > 0, process)
        # Transient: every session of the worker is killed; the pool reconnects and the trial goes on.
        killed = sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        assert killed
        wait_for(lambda: in_state("COMPLETE") >= 1, process)
        # Lost for good: retried a bounded number of times, then one line naming the URL without its password.
        sql(f"DROP DATABASE {name} WITH (FORCE)")
        code, err = finish(process)
    finally:
        process.kill()
    assert code == 1 and "Traceback" not in err, err
    line = error_line(err)
    assert line.startswith(f"error: lost the Optuna storage postgresql+psycopg2://postgres:***@127.0.0.1:5432/{name}")
    # The drop either cuts a statement in flight or lands between statements (then the reconnect fails).
    assert (f'database "{name}" does not exist' in line or "server closed the connection" in line), line
    assert "s3cretpw" not in err
    assert all(r.info.status != "RUNNING" for role in ("parent", "trial") for r in runs(tmp_path, "lost", role))
    assert runs(tmp_path, "lost", "parent")[0].info.status == "FAILED"


@pytest.mark.postgres
@pytest.mark.parametrize("cut_at, replayed", [("before_cursor_execute", True), ("commit", False)])
def test_a_storage_call_cut_off_before_commit_runs_again_and_one_cut_off_at_commit_does_not(
        cut_at: str, replayed: bool, postgres_database: tuple[str, Callable[[str], Any]],
        caplog: pytest.LogCaptureFixture) -> None:
    name, sql = postgres_database
    storage = ReconnectingRDBStorage(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    trial_id = storage.create_new_trial(storage.create_new_study([StudyDirection.MAXIMIZE], "cut"))
    cuts = []

    def cut(connection: sqlalchemy.engine.Connection, *_: Any) -> None:
        if not cuts:  # the first statement (or COMMIT) of the next call: its session is killed under it
            cuts.append(connection.connection.dbapi_connection.get_backend_pid())
            sql(f"SELECT pg_terminate_backend({cuts[0]}, 10000)")

    sqlalchemy.event.listen(storage.engine, cut_at, cut)
    if replayed:  # the server rolled the transaction back: running it again writes the attribute once
        storage.set_trial_user_attr(trial_id, "note", 1)
        assert "connection lost before set_trial_user_attr committed; running it again" in caplog.text
        assert storage.get_trial_user_attrs(trial_id) == {"note": 1}
    else:  # the COMMIT may have landed: not replayed, the run stops with its one line
        with pytest.raises(STORAGE_ERRORS):
            storage.set_trial_user_attr(trial_id, "note", 1)
    assert len(cuts) == 1


@pytest.mark.postgres
def test_a_lost_connection_that_optuna_swallows_is_run_again(postgres_database: tuple[str, Callable[[str], Any]],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Optuna catches a failed read of trial params and falls back to another query in the same, now dead, session;
    its commit then fails with "Can't reconnect until invalid transaction is rolled back" (a CI flake of the test
    above): nothing was committed, so the call runs again."""
    name, sql = postgres_database
    storage = ReconnectingRDBStorage(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    study_id = storage.create_new_study([StudyDirection.MAXIMIZE], "swallowed")
    storage.set_trial_param(storage.create_new_trial(study_id), "lr", 0.5,
                            FloatDistribution(0.1, 1.0))
    cuts = []

    def cut(connection: sqlalchemy.engine.Connection, cursor: Any, statement: str, *_: Any) -> None:
        if not cuts and "FROM trial_params" in statement:
            cuts.append(connection.connection.dbapi_connection.get_backend_pid())
            sql(f"SELECT pg_terminate_backend({cuts[0]}, 10000)")

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", cut)
    [trial] = storage.get_all_trials(study_id)
    assert trial.params == {"lr": 0.5} and len(cuts) == 1
    assert "connection lost before get_all_trials committed; running it again" in caplog.text


def _count(database: str, query: str) -> int:
    with psycopg2.connect(**{**POSTGRES, "dbname": database}, connect_timeout=5) as connection:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchone()[0]


# --------------------------------------------------------------------------- artifacts cannot be written

@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` on a tmpfs of ``size`` (skips where mounting is not allowed)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_mlruns(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/mlruns`` on a small tmpfs filled to the last byte (emptied, it holds a study's artifacts: checkpoints,
    the model and its registered copy, and 4.8 MB of plots)."""
    with small_disk(tmp_path / "mlruns", "16m") as mlruns:
        with open(mlruns / "filler", "wb", buffering=0) as filler:
            with pytest.raises(OSError, match="No space left"):
                while True:
                    filler.write(b"\0" * 4096)
        yield mlruns


def test_a_full_disk_stops_with_one_line_and_a_rerun_completes(tmp_path: Path, full_mlruns: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    write_study(tmp_path, learner_study({"lr": LR}, CONV4, name="full"))
    assert run_in(tmp_path) == 1
    err = stderr_of(capsys)
    line = error_line(err)
    assert "Traceback" not in err
    assert line == f"error: MLflow tracking at sqlite:///{tmp_path}/mlflow.db failed: [Errno 28] No space left on device"
    assert trials(tmp_path, "full") == []  # stopped before any trial started
    assert runs(tmp_path, "full", "parent")[0].info.status == "FAILED"
    no_running(tmp_path, "full")

    (full_mlruns / "filler").unlink()
    assert run_in(tmp_path) == 0
    assert counted(trials(tmp_path, "full")) == 2
    assert runs(tmp_path, "full", "parent")[0].info.status == "FINISHED"


def test_a_checkpoint_that_does_not_fit_stops_with_one_line_and_leaves_no_partial_file(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # 1 MiB holds the run's small artifacts but not a conv4 protonet checkpoint (1.3 MiB with Adam's moments).
    write_study(tmp_path, learner_study({"lr": LR}, CONV4, name="nospace", budget=SECONDS_BUDGET))
    with small_disk(tmp_path / "mlruns", "1m"):
        assert run_in(tmp_path) == 1
        err = stderr_of(capsys)
        assert "Traceback" not in err
        assert error_line(err).endswith("No space left on device")
        assert list((tmp_path / "mlruns").glob("**/*.pt")) == []
        [trial] = trials(tmp_path, "nospace")
        assert trial.state == TrialState.FAIL
        no_running(tmp_path, "nospace")


def test_a_damaged_mlflow_database_is_blamed_on_the_tracking_not_the_storage(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    # Opening MLflow's store raises SQLAlchemy's errors, which once read as a lost Optuna storage.
    write_study(tmp_path, learner_study({"lr": LR}, CONV4, name="damaged"))
    # SQLite's header, so that the up-front check passes it: damaged after its first 16 bytes.
    (tmp_path / "mlflow.db").write_bytes(SQLITE_HEADER + b"not a database\n" * 100)
    assert run_in(tmp_path) == 1
    err = stderr_of(capsys)
    assert "Traceback" not in err
    assert error_line(err) == (f"error: MLflow tracking at sqlite:///{tmp_path}/mlflow.db failed: "
                               f"(sqlite3.DatabaseError) file is not a database")


@pytest.mark.slow
def test_mlruns_made_unwritable_mid_run_fails_the_trial_and_stops(tmp_path: Path) -> None:
    # Tests run as root, which ignores permissions: a file in place of the folder stops root too.
    write_study(tmp_path, learner_study({"lr": LOG_LR}, CONV4, name="unwritable", search=search(n_trials=3),
                                        budget=SECONDS_BUDGET))
    process = start_hpo(tmp_path)
    try:
        wait_for_running_trial(tmp_path, process)
        # Once the first trial has written its config.json, swap the folder for a file: its next checkpoint fails.
        wait_for(lambda: len(list((tmp_path / "mlruns").glob("*/*/artifacts/config.json"))) >= 2, process)
        shutil.move(tmp_path / "mlruns", tmp_path / "mlruns.moved")
        (tmp_path / "mlruns").write_text("not a folder")
        code, err = finish(process)
    finally:
        process.kill()
    assert code == 1 and "Traceback" not in err, err
    assert "[Errno 20] Not a directory" in error_line(err)
    done = trials(tmp_path, "unwritable")
    assert [t.state for t in done] == [TrialState.FAIL]
    failed_run = trial_runs(tmp_path, "unwritable")[0]
    assert failed_run.info.status == "FAILED" and "Not a directory" in failed_run.data.tags["failure_reason"]
    assert runs(tmp_path, "unwritable", "parent")[0].info.status == "FAILED"
    no_running(tmp_path, "unwritable")
