"""Helpers shared by the test modules (fixtures are in ``conftest.py``): study files, ``hpo.run`` in a folder
(in this process or a child one), readers of what a run stored in Optuna and MLflow, checks of error lines.

Test modules import from here, never from one another.
"""
from __future__ import annotations

import copy
import getpass
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import optuna
import pytest
import torch
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from hpo.run import main

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# --------------------------------------------------------------------------- study files

LEARNER = "protonet"
CONV4 = {"backbone": "conv4"}
LR = {"type": "float", "low": 1e-4, "high": 1e-2}
LOG_LR = {**LR, "log": True}
BASE_STUDY: dict[str, Any] = {
    "name": "t",
    "seed": 0,
    "dataset": {"name": "synthetic", "ways": 5, "shots": 1, "queries": 5},
    "learners": {LEARNER: {"fixed": CONV4, "space": {"lr": LOG_LR}}},
    "search": {"sampler": "tpe", "n_trials": 2},
    "budget": {"iterations": 4, "val_interval": 2, "val_episodes": 4},
    "test": {"episodes": 8},
    "device": "cpu",
}
# About 3 s per trial on one core: long enough to act on a running trial, short enough to finish.
SECONDS_BUDGET = {"iterations": 40, "val_interval": 10, "val_episodes": 4}
# Well under a second per trial: for cases about the trials' bookkeeping, not their training.
TINY_BUDGET = {"iterations": 2, "val_interval": 2, "val_episodes": 4}
# Runs until stopped.
LONG_BUDGET = {"iterations": 100_000, "val_interval": 10, "val_episodes": 4}


def study_dict(**sections: Any) -> dict[str, Any]:
    """``BASE_STUDY`` with whole top-level sections replaced."""
    return {**copy.deepcopy(BASE_STUDY), **sections}


def study_with(section: str, **entries: Any) -> dict[str, Any]:
    """``BASE_STUDY`` with some entries of one section replaced."""
    return study_dict(**{section: {**BASE_STUDY[section], **entries}})


def learner_study(space: dict[str, Any], fixed: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """``BASE_STUDY`` with ``LEARNER`` alone, on this space and these fixed values (none given: no ``fixed``
    entry at all), and other whole sections replaced."""
    learner = {"space": space} if fixed is None else {"fixed": fixed, "space": space}
    return study_dict(learners={LEARNER: learner}, **sections)


def write_study(directory: Path, study: dict[str, Any], name: str = "study.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


# --------------------------------------------------------------------------- hpo.run in a folder

# What a run writes in its working directory with the default storage and tracking.
WRITTEN = ("optuna.db", "mlflow.db", "mlruns")


def main_in(directory: Path, *argv: str) -> int:
    """``hpo.run``'s ``main(argv)`` in this process, with ``directory`` as the working directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        return main(list(argv))


def run_in(directory: Path, *args: str) -> int:
    """The study of ``directory`` run in this process: ``study.yaml --no-progress ARGS``."""
    return main_in(directory, "study.yaml", "--no-progress", *args)


def environment() -> dict[str, str]:
    """A child process's environment: this checkout importable, and one thread per process (the tests, and the
    workers of one run, already share the cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def hpo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo.run", *args]


def start_hpo(directory: Path, *args: str) -> subprocess.Popen:
    """The study of ``directory`` run in a child process, ``python -m hpo.run study.yaml --no-progress ARGS``,
    its output piped."""
    return subprocess.Popen(hpo_command("study.yaml", "--no-progress", *args), cwd=directory, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    """Its exit code and stderr once it ends; killed if it has not ended within ``timeout`` seconds."""
    try:
        _, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return process.returncode, err


def wait_for(probe: Callable[[], T], process: subprocess.Popen, timeout: float = 120,
             message: str = "timed out") -> T:
    """The first true value of ``probe()``, called every half second while ``process`` runs."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.communicate()
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, message
        time.sleep(0.5)


def wait_for_running_trial(directory: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    """Until Optuna has a RUNNING trial and MLflow its RUNNING run (read straight from the databases)."""
    query_optuna = "SELECT count(*) FROM trials WHERE state = 'RUNNING'"
    query_mlflow = ("SELECT count(*) FROM runs r JOIN tags t ON r.run_uuid = t.run_uuid "
                    "WHERE t.key = 'run_role' AND t.value = 'trial' AND r.status = 'RUNNING'")

    def running() -> bool:
        try:
            with sqlite3.connect(directory / "optuna.db", timeout=5) as optuna_db, \
                    sqlite3.connect(directory / "mlflow.db", timeout=5) as mlflow_db:
                return bool(optuna_db.execute(query_optuna).fetchone()[0]
                            and mlflow_db.execute(query_mlflow).fetchone()[0])
        except sqlite3.OperationalError:  # files or tables not created yet
            return False

    wait_for(running, process, timeout, "no trial started in time")


# --------------------------------------------------------------------------- what a run stored

def load_trials(name: str, storage: str | BaseStorage) -> list[FrozenTrial]:
    """The trials of study ``name``'s ``LEARNER`` in an Optuna storage."""
    return optuna.load_study(study_name=f"{name}/{LEARNER}", storage=storage).get_trials()


def trials(directory: Path, name: str) -> list[FrozenTrial]:
    """The trials of study ``name``'s ``LEARNER`` in the SQLite database of ``directory`` (the default storage)."""
    return load_trials(name, f"sqlite:///{directory}/optuna.db")


def journal_trials(directory: Path, name: str) -> list[FrozenTrial]:
    """The trials of study ``name``'s ``LEARNER`` in the journal file of ``directory``
    (``--storage journal:///optuna.journal``)."""
    backend = optuna.storages.journal.JournalFileBackend(str(directory / "optuna.journal"))
    return load_trials(name, optuna.storages.JournalStorage(backend))


def counted(all_trials: list[FrozenTrial]) -> int:
    """The trials that count towards ``n_trials``."""
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in all_trials)


def tracking(where: Path | str) -> MlflowClient:
    """An MLflow client: of the SQLite database of folder ``where`` (the default tracking), or of the URI."""
    uri = f"sqlite:///{where}/mlflow.db" if isinstance(where, Path) else where
    return MlflowClient(uri, registry_uri=uri)


def runs(where: Path | str, name: str, role: str) -> list[Run]:
    """The MLflow runs of study ``name`` with this ``run_role`` tag, oldest first."""
    client = tracking(where)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], f"tags.run_role = '{role}'",
                              order_by=["attributes.start_time ASC"])


def trial_runs(where: Path | str, name: str) -> dict[int, Run]:
    """The run of each trial, by trial number (asserted to be one run per trial)."""
    tracked = runs(where, name, "trial")
    numbers = [int(r.data.tags["optuna_trial_number"]) for r in tracked]
    assert len(numbers) == len(set(numbers)), "a trial has two MLflow runs"
    return dict(zip(numbers, tracked))


def parent_run(where: Path | str, name: str) -> Run:
    """The one parent run of study ``name``."""
    [parent] = runs(where, name, "parent")
    return parent


# --------------------------------------------------------------------------- PostgreSQL

# The password of the PostgreSQL URLs (trust auth ignores it): in the user info, with ':' and a percent-encoded '@'.
PASSWORD = "Qz:8v%40Jx4k"


def connect_to_postgres() -> Any:
    """An autocommit connection to the server's ``postgres`` database; skips when no server answers."""
    psycopg2 = pytest.importorskip("psycopg2")
    errors = []
    for user in dict.fromkeys((getpass.getuser(), "postgres")):
        try:
            connection = psycopg2.connect(host="127.0.0.1", port=5432, dbname="postgres", user=user,
                                          connect_timeout=5)
        except psycopg2.OperationalError as e:
            errors.append(str(e).strip().splitlines()[0])
            continue
        connection.autocommit = True
        return connection
    if all("Connection refused" in e or "could not connect" in e for e in errors):
        pytest.skip(f"no PostgreSQL server at 127.0.0.1:5432 ({errors[0]})")
    raise AssertionError(f"PostgreSQL at 127.0.0.1:5432 refused every user: {errors}")


# --------------------------------------------------------------------------- an MLflow server, a browser

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mlflow_server(backend_store: str, *options: str) -> Iterator[str]:
    """A real ``mlflow server`` of ``backend_store`` on a free loopback port, until the block ends; its URL."""
    url = f"http://127.0.0.1:{(port := free_port())}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *options],
                              env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not answer /health in time"
                time.sleep(1.0)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


CHROMIUM = shutil.which("chromium")
NO_CHROMIUM = "Chromium is not installed (.ci/run installs it: apt-get install -y chromium)"


def rendered(url: str, offline: bool = False, console: list[str] | None = None, expect: str | None = None) -> str:
    """The DOM of a page after its scripts ran, in headless Chromium (20 s of virtual time: the MLflow UI is a
    React app); ``offline``: every host name fails to resolve, as on a machine without a network; ``console``
    receives the page's console messages (an uncaught error among them). ``expect``: rendered again, up to three
    times, until the DOM holds it (a server busy with the first requests can answer after the time is up)."""
    blocked = ["--host-resolver-rules=MAP * ~NOTFOUND"] if offline else []
    for _ in range(3):
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000",
                               "--virtual-time-budget=20000", "--enable-logging=stderr", "--v=0", *blocked,
                               "--dump-dom", url], capture_output=True, text=True, timeout=120)
        if expect is None or expect in done.stdout:
            break
    if console is not None:
        console += [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout


# --------------------------------------------------------------------------- checks

def assert_nothing_written(directory: Path) -> None:
    assert not [name for name in WRITTEN if (directory / name).exists()], sorted(p.name for p in directory.iterdir())


def assert_one_error_line(err: str) -> None:
    """``err`` is one ``error:`` line and nothing else."""
    assert err.startswith("error: ") and err.count("\n") == 1, err


def error_line(err: str) -> str:
    """The ``error:`` line, asserted to be the only one and the last."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    return errors[0]


# --------------------------------------------------------------------------- networks

def spread_batch_norm_affine(module: nn.Module, weights: tuple[float, float],
                             biases: tuple[float, float] | None = None) -> None:
    """Spread the weights (and biases) of every batch norm in ``module``, itself included, evenly over a
    range: ranges with negative weights make pooling before the batch norm flip channels (see conv_batch_norm)."""
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, nn.BatchNorm2d):
                norm.weight.copy_(torch.linspace(*weights, norm.num_features))
                if biases is not None:
                    norm.bias.copy_(torch.linspace(*biases, norm.num_features))
