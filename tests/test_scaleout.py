"""Many workers on one study, against real services: PostgreSQL, an MLflow server, a journal file.

Each case runs the real command (``python -m hpo.run ... --workers N``) on synthetic data and
checks the stores afterwards: the exact total, no grid point twice, one MLflow run per trial,
the worker of each trial, and no password anywhere.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, unquote_plus

import optuna
import pytest
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState

from hpo.storage import grid_points
from tests.helpers import (BASE_STUDY, CONV4, LEARNER, PASSWORD, LONG_BUDGET, SECONDS_BUDGET, TINY_BUDGET,
                           assert_nothing_written, assert_one_error_line, counted, environment, finish, journal_trials,
                           learner_study, load_trials, main_in, mlflow_server, parent_run, start_hpo, study_dict,
                           tracking, trial_runs, wait_for, write_study)

# The PostgreSQL URL's other password (trust auth ignores it), in the query string.
QUERY_PASSWORD = "Wm5k+Tr7e%21"
JOURNAL = "journal:///optuna.journal"
TWO_WORKERS = {"sampler": "random", "n_trials": 4, "workers": 2}
# 6 x 5 = 30 grid points, more than the 24 trials asked for.
GRID_SPACE = {"lr": {"type": "categorical", "choices": [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]},
              "meta_batch": {"type": "int", "low": 1, "high": 5}}


def grid_study(name: str, n_trials: int, space: dict[str, Any] = GRID_SPACE) -> dict[str, Any]:
    return learner_study(space, CONV4, name=name, search={"sampler": "grid", "pruner": "none", "n_trials": n_trials},
                         budget=TINY_BUDGET)


def assert_workers_recorded(trials: list[FrozenTrial], runs: dict[int, Run], coordinator_pid: int,
                            workers: int) -> None:
    """Each trial ran in a worker process (not the coordinating one), named the same in Optuna and MLflow."""
    pids = set()
    for trial in trials:
        worker, tags = trial.user_attrs["worker"], runs[trial.number].data.tags
        assert (tags["worker_host"], tags["worker_pid"]) == (worker["host"], str(worker["pid"]))
        assert worker["host"] == socket.gethostname() and worker["pid"] != coordinator_pid
        pids.add(worker["pid"])
    assert 1 <= len(pids) <= workers


def finished_counts(trials: list[FrozenTrial]) -> Counter[TrialState]:
    return Counter(t.state for t in trials)


# --------------------------------------------------------------------------- no service needed

def test_grid_points_follow_optunas_grid_order() -> None:
    grid = {"lr": [0.1, 0.2, 0.3], "meta_batch": [1, 2]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=3))
    study.optimize(lambda t: t.suggest_categorical("lr", grid["lr"]) + t.suggest_int("meta_batch", 1, 2), n_trials=6)
    product = [{"lr": lr, "meta_batch": batch} for lr in grid["lr"] for batch in grid["meta_batch"]]
    assert [t.params for t in study.trials] == grid_points(product, seed=3)


def test_several_workers_on_sqlite_are_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_study(tmp_path, study_dict(name="lite"))
    assert main_in(tmp_path, "study.yaml", "--workers", "3") == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: study.yaml: search.workers: 3 workers need a storage") and "journal:///" in line
    assert_nothing_written(tmp_path)


# --------------------------------------------------------------------------- journal file, this machine

@pytest.mark.slow
def test_journal_workers_run_each_grid_point_once_and_stop_at_the_grid(tmp_path: Path) -> None:
    small_grid = {"lr": GRID_SPACE["lr"], "meta_batch": {"type": "int", "low": 1, "high": 2}}
    write_study(tmp_path, grid_study("journal", n_trials=20, space=small_grid))  # 12 points < 20
    process = start_hpo(tmp_path, "--workers", "3", "--storage", JOURNAL)
    out, err = process.communicate(timeout=400)
    assert process.returncode == 0, err
    trials = journal_trials(tmp_path, "journal")
    assert finished_counts(trials) == {TrialState.COMPLETE: 12}
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 12
    runs = trial_runs(tmp_path, "journal")
    assert sorted(runs) == [t.number for t in trials] and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert_workers_recorded(trials, runs, process.pid, workers=3)
    assert all(t.user_attrs["timing"]["trial_s"] > 0 for t in trials)


def wait_for_running_trials(directory: Path, name: str, process: subprocess.Popen, count: int) -> list[FrozenTrial]:
    """Until ``count`` trials run, each with its worker recorded and its MLflow run opened (a trial killed
    before its run opens leaves no run to close, which is right but not what these tests look at);
    returns those trials."""
    def opened() -> list[FrozenTrial]:
        try:
            running = [t for t in journal_trials(directory, name)
                       if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
            if len(running) < count:
                return []
            runs = trial_runs(directory, name)
        except (KeyError, FileNotFoundError, AttributeError, MlflowException):  # study or experiment not yet made
            return []
        with_runs = [t for t in running if t.number in runs]
        return with_runs if len(with_runs) >= count else []

    return wait_for(opened, process, 240, f"{count} trials did not start in time")


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_cleanly_and_a_rerun_reaches_the_total(tmp_path: Path) -> None:
    write_study(tmp_path, study_dict(name="stop", budget=LONG_BUDGET, search=TWO_WORKERS, storage=JOURNAL))
    process = start_hpo(tmp_path)
    try:
        wait_for_running_trials(tmp_path, "stop", process, count=2)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=180)
    finally:
        process.kill()
    assert process.returncode == 130, err
    hint = "interrupted; resume with: python -m hpo.run study.yaml --no-progress"
    assert err.rstrip().splitlines()[-1] == hint and err.count("resume with") == 1

    trials = journal_trials(tmp_path, "stop")
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert len(stopped) == 2 and finished_counts(trials)[TrialState.RUNNING] == 0
    assert sorted(str(t.params) for t in queued) == sorted(str(t.params) for t in stopped)
    runs = trial_runs(tmp_path, "stop")
    assert {runs[t.number].info.status for t in stopped} == {"KILLED"}
    assert parent_run(tmp_path, "stop").info.status == "KILLED"

    write_study(tmp_path, study_dict(name="stop", search=TWO_WORKERS, storage=JOURNAL))
    code, err = finish(start_hpo(tmp_path), timeout=400)
    assert code == 0, err
    after = finished_counts(journal_trials(tmp_path, "stop"))
    assert after[TrialState.COMPLETE] + after[TrialState.PRUNED] == 4 and not after[TrialState.WAITING]
    assert parent_run(tmp_path, "stop").info.status == "FINISHED"


@pytest.mark.slow
def test_a_killed_journal_worker_loses_only_its_trial_which_runs_again(tmp_path: Path) -> None:
    # About 3 s per trial (SECONDS_BUDGET): time to find a running trial and kill its worker.
    write_study(tmp_path, study_dict(name="killed", budget=SECONDS_BUDGET, search={**TWO_WORKERS, "pruner": "none"},
                                     storage=JOURNAL))
    process = start_hpo(tmp_path)
    try:
        victim = wait_for_running_trials(tmp_path, "killed", process, count=1)[0]
        os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
        _, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "stopped by a signal; its trial will run again" in err

    trials = {t.number: t for t in journal_trials(tmp_path, "killed")}
    assert trials[victim.number].state == TrialState.FAIL
    [retry] = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert finished_counts(list(trials.values())) == {TrialState.COMPLETE: 4, TrialState.FAIL: 1}
    runs = trial_runs(tmp_path, "killed")
    assert runs[victim.number].info.status == "KILLED"


# --------------------------------------------------------------------------- PostgreSQL

@pytest.fixture(scope="module")
def postgres_run(postgres_url: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Path, subprocess.Popen, str, str]:
    """4 workers, 24 trials of a 30-point grid; returns the folder, the process and its output."""
    directory = tmp_path_factory.mktemp("postgres")
    write_study(directory, grid_study("pg", n_trials=24))
    process = start_hpo(directory, "--workers", "4", "--storage", postgres_url)
    out, err = process.communicate(timeout=400)
    assert process.returncode == 0, err
    return directory, process, out, err


@pytest.mark.slow
@pytest.mark.postgres
def test_four_postgres_workers_run_exactly_the_total_of_distinct_grid_points(
        postgres_run: tuple[Path, subprocess.Popen, str, str], postgres_url: str) -> None:
    trials = load_trials("pg", postgres_url)
    assert len(trials) == 24 and finished_counts(trials) == {TrialState.COMPLETE: 24}
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == 24


@pytest.mark.slow
@pytest.mark.postgres
def test_every_postgres_trial_has_its_mlflow_run_and_worker(postgres_run: tuple[Path, subprocess.Popen, str, str],
                                                            postgres_url: str) -> None:
    directory, process, _, _ = postgres_run
    trials, runs, parent = load_trials("pg", postgres_url), trial_runs(directory, "pg"), parent_run(directory, "pg")
    assert sorted(runs) == sorted(t.number for t in trials)
    for trial in trials:
        run = runs[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["lr"] == str(trial.params["lr"])
    assert_workers_recorded(trials, runs, process.pid, workers=4)
    assert parent.info.status == "FINISHED" and "test_accuracy" in parent.data.metrics


def assert_password_nowhere(password: str, out: str, err: str, directory: Path, trials: list[FrozenTrial]) -> None:
    """No 4 characters of ``password``, as written in its URL or URL-decoded, in the output, in any file written
    (the MLflow database with its params, tags and metrics, every artifact) or in the trials' attributes."""
    forms = (password, unquote(password), unquote_plus(password))
    pieces = {form[i:i + 4] for form in forms for i in range(len(form) - 3)}
    texts = {"output": (out + err).encode(), "trials": repr([(t.user_attrs, t.system_attrs) for t in trials]).encode(),
             **{str(path): path.read_bytes() for path in directory.rglob("*") if path.is_file()}}
    assert not [(where, piece) for where, text in texts.items() for piece in pieces if piece.encode() in text]


@pytest.mark.slow
@pytest.mark.postgres
def test_the_storage_password_appears_nowhere(postgres_run: tuple[Path, subprocess.Popen, str, str],
                                              postgres_url: str) -> None:
    directory, _, out, err = postgres_run
    assert ":***@127.0.0.1" in out  # the plan names the storage, redacted
    assert list(directory.rglob("config.json"))
    assert_password_nowhere(PASSWORD, out, err, directory, load_trials("pg", postgres_url))


@pytest.mark.slow
@pytest.mark.postgres
def test_a_query_string_password_appears_nowhere(postgres_url: str, tmp_path: Path) -> None:
    url = postgres_url.replace(f":{PASSWORD}@", "@") + f"?sslmode=disable&password={QUERY_PASSWORD}"  # same database
    write_study(tmp_path, grid_study("pgquery", n_trials=2))
    process = start_hpo(tmp_path, "--workers", "2", "--storage", url)
    out, err = process.communicate(timeout=400)
    assert process.returncode == 0, err
    assert "&password=***" in out and list(tmp_path.rglob("config.json"))
    assert_password_nowhere(QUERY_PASSWORD, out, err, tmp_path, load_trials("pgquery", url))


# Servers that cannot be reached, each behind a password of another form, and what the error line says: the
# driver's own message too. libpq splits the user info at the first '@', so with an '@' in the password the host
# it fails to resolve is the rest of the password and the real host.
AT_PASSWORD, COLON_PASSWORD, QUERY_ONLY_PASSWORD = "Nk7@Rw5t", "Nk:7%40Rw5t", "Nk7Rw5t%40"
UNREACHABLE = {
    "storage, @ in the password (psycopg2)": (
        "--storage", f"postgresql+psycopg2://postgres:{AT_PASSWORD}@127.0.0.1:1/db", AT_PASSWORD,
        "storage: cannot connect to postgresql+psycopg2://postgres:***@127.0.0.1:1/db: (psycopg2.OperationalError) "
        'could not translate host name "***@127.0.0.1" to address'),
    "storage, @ in the password (psycopg 3)": (
        "--storage", f"postgresql://postgres:{AT_PASSWORD}@127.0.0.1:1/db", AT_PASSWORD,
        "failed to resolve host '***@127.0.0.1'"),
    "storage, : and %40 in the password": (
        "--storage", f"postgresql+psycopg2://postgres:{COLON_PASSWORD}@127.0.0.1:1/db", COLON_PASSWORD,
        'postgres:***@127.0.0.1:1/db: (psycopg2.OperationalError) connection to server at "127.0.0.1", port 1 failed'),
    "storage, password in the query string": (
        "--storage", f"postgresql+psycopg2://postgres@127.0.0.1:1/db?password={QUERY_ONLY_PASSWORD}",
        QUERY_ONLY_PASSWORD, "cannot connect to postgresql+psycopg2://postgres@127.0.0.1:1/db?password=***: "),
    "tracking database, @ in the password": (
        "--tracking-uri", f"postgresql+psycopg2://postgres:{AT_PASSWORD}@127.0.0.1:1/mlflow", AT_PASSWORD,
        'tracking_uri: cannot connect to postgresql+psycopg2://postgres:***@127.0.0.1:1/mlflow: '
        '(psycopg2.OperationalError) could not translate host name "***@127.0.0.1"'),
    "tracking server, @ in the password": (
        "--tracking-uri", f"http://u:{AT_PASSWORD}@127.0.0.1:1", AT_PASSWORD,
        "tracking_uri: MLflow server http://u:***@127.0.0.1:1 does not answer"),
}


@pytest.mark.parametrize("option, url, password, expected", UNREACHABLE.values(), ids=UNREACHABLE)
def test_no_password_in_the_error_line_of_an_unreachable_server(option: str, url: str, password: str, expected: str,
                                                                tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    write_study(tmp_path, study_dict())
    assert main_in(tmp_path, "study.yaml", option, url) == 2
    out, err = capfd.readouterr()
    assert_one_error_line(err)
    assert expected in err, err
    assert_password_nowhere(password, out, err, tmp_path, [])
    assert_nothing_written(tmp_path)


# --------------------------------------------------------------------------- MLflow server

@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``mlflow server`` with its own database and artifact folder; its URL and that folder."""
    artifacts = tmp_path / "server-artifacts"
    with mlflow_server(f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(artifacts)) as url:
        yield url, artifacts


def test_two_workers_track_into_a_real_mlflow_server(served: tuple[str, Path], tmp_path: Path) -> None:
    url, artifacts = served
    write_study(tmp_path, study_dict(name="served", search={"sampler": "random", "n_trials": 6},
                                     budget={"iterations": 20, "val_interval": 10, "val_episodes": 4}))
    process = start_hpo(tmp_path, "--workers", "2", "--storage", JOURNAL, "--tracking-uri", url)
    _, err = process.communicate(timeout=400)
    assert process.returncode == 0, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()

    trials, runs = journal_trials(tmp_path, "served"), trial_runs(url, "served")
    assert counted(trials) == 6
    assert sorted(runs) == [t.number for t in trials]
    assert {r.info.status for r in runs.values()} <= {"FINISHED", "KILLED"}
    assert_workers_recorded(trials, runs, process.pid, workers=2)
    assert parent_run(url, "served").info.status == "FINISHED"
    # Artifacts went through the server into its artifact store.
    assert any(path.name == "config.json" for path in artifacts.rglob("*"))
    # The tested model is registered on the server, for every machine, and scores there as in the final test.
    [version] = tracking(url).search_model_versions(f"name = 'served.{LEARNER}'")
    evaluated = subprocess.run([sys.executable, "-m", "hpo.evaluate", f"models:/served.{LEARNER}/{version.version}",
                                "--tracking-uri", url, "--episodes", str(BASE_STUDY["test"]["episodes"]), "--json"],
                               cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == parent_run(url, "served").data.metrics["test_accuracy"]
