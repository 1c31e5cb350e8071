"""Several ``hpo.run`` commands started at the same moment in a fresh folder, on the default SQLite storage and
tracking: the first one to open each database creates its schema while the others wait, ``n_trials`` stays a
total over all commands, and they share one parent run and one summary run.

Each case starts real processes, all at once, in a fresh folder, several times over: a race shows only
sometimes. Before the schema locks every one of these 8 tries lost commands (16 of 22 exited 1, on
``table ... already exists`` or alembic's ``UNIQUE constraint failed``); the module takes about 90 s on 2 cores.
"""
from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpo.storage import storage_kind
from tests.helpers import (CONV4, LR, TINY_BUDGET, finish, learner_study, runs, start_hpo, trial_runs, trials,
                           write_study)

N_TRIALS = 6
STUDY = learner_study({"lr": LR}, CONV4, name="together", budget=TINY_BUDGET,
                      search={"sampler": "random", "pruner": "none", "n_trials": N_TRIALS})
# (processes, try): each try a fresh folder.
STARTS = [(2, attempt) for attempt in range(1, 6)] + [(4, attempt) for attempt in range(1, 4)]


@pytest.mark.slow
@pytest.mark.parametrize("processes, attempt", STARTS, ids=[f"{n}-processes-try-{a}" for n, a in STARTS])
def test_commands_started_together_share_both_databases(tmp_path: Path, processes: int, attempt: int) -> None:
    write_study(tmp_path, STUDY)
    started = [start_hpo(tmp_path) for _ in range(processes)]  # every process before any is waited for
    ended = [finish(process, timeout=300) for process in started]
    errors = "\n".join(err for _, err in ended)
    assert [code for code, _ in ended] == [0] * processes and "Traceback" not in errors, errors

    done = trials(tmp_path, "together")
    assert Counter(t.state for t in done) == {TrialState.COMPLETE: N_TRIALS}
    assert sorted(trial_runs(tmp_path, "together")) == sorted(t.number for t in done)
    [parent] = runs(tmp_path, "together", "parent")
    [summary] = runs(tmp_path, "together", "summary")
    tracked = [parent, summary, *runs(tmp_path, "together", "trial")]
    assert {run.info.status for run in tracked} == {"FINISHED"}
    assert {run.data.tags["mlflow.parentRunId"] for run in tracked[2:]} == {parent.info.run_id}


def test_sqlites_locks_hold_off_a_second_taker_until_released(tmp_path: Path) -> None:
    # flock excludes every other open file description, another process's or this one's (here, a thread's).
    kind = storage_kind(f"sqlite:///{tmp_path}/optuna.db")
    for lock in (kind.schema_lock, kind.trial_lock("together/protonet")):
        taken = threading.Event()

        def take() -> None:
            with lock():
                taken.set()

        with lock():
            second = threading.Thread(target=take)
            second.start()
            assert not taken.wait(0.5)
        assert taken.wait(10)
        second.join()
