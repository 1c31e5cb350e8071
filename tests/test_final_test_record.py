"""What a final test leaves for an honest comparison: per-episode accuracies with their digest, the protocol card,
further training seeds on the same episodes (resumable), and the paired comparison on the summary run."""
from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
from pathlib import Path

import optuna
import pytest

from hpo.reporting import FINAL_TEST_ATTR, SEED_RUNS_ATTR, TEST_EPISODES_ATTR
from learners.base import evaluation_seed
from learners.data import TaskSpec, episode_digest, load_dataset
from tests.helpers import (CONV4, LOG_LR, SECONDS_BUDGET, finish, main_in, parent_run, runs, start_hpo,
                           study_dict, tracking, wait_for, write_study)

pytestmark = pytest.mark.usefixtures("one_thread")

EPISODES = 12
LEARNERS = {"protonet": {"fixed": CONV4, "space": {"lr": LOG_LR}},
            "classifier_baseline": {"fixed": {**CONV4, "batch_size": 16}, "space": {"lr": LOG_LR}}}
PROTOCOL_FIELDS = {"study", "learner", "dataset", "episodes", "ci", "bn_at_test", "device", "versions", "code",
                   "study_seed", "training_seeds", "tested_model"}


def study(seeds: int, **test: object) -> dict:
    return study_dict(learners=LEARNERS, search={"sampler": "random", "n_trials": 1},
                      budget={"iterations": 6, "val_interval": 3, "val_episodes": 4},
                      test={"episodes": EPISODES, "seeds": seeds, **test})


def optuna_study(directory: Path, learner: str) -> optuna.Study:
    return optuna.load_study(study_name=f"t/{learner}", storage=f"sqlite:///{directory}/optuna.db")


def artifact(directory: Path, run_id: str, path: str) -> str:
    local = tracking(directory).download_artifacts(run_id, path, str(directory))
    return Path(local).read_text()


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-learner study run with test.seeds: 2, its file then changed to test.seeds: 3 (run again by a test)."""
    directory = tmp_path_factory.mktemp("seeds")
    write_study(directory, study(seeds=2))
    assert main_in(directory, "study.yaml", "--no-progress") == 0
    write_study(directory, study(seeds=3))
    return directory


def test_the_final_test_keeps_its_per_episode_accuracies_and_their_digest(three_seeds: Path) -> None:
    directory = three_seeds
    data = load_dataset("synthetic")
    digest = episode_digest(data.test, TaskSpec(5, 1, 5), EPISODES, evaluation_seed(0, "test"))
    for learner in LEARNERS:
        attrs = optuna_study(directory, learner).user_attrs
        record, episodes = attrs[FINAL_TEST_ATTR], attrs[TEST_EPISODES_ATTR]
        assert record["episode_digest"] == episodes["episode_digest"] == digest
        assert record["ci_method"] == "t" and len(episodes["accuracies"]) == EPISODES
        assert record["test_accuracy"] == pytest.approx(sum(episodes["accuracies"]) / EPISODES, abs=1e-12)
        rows = list(csv.DictReader(io.StringIO(artifact(directory, record["run_id"], "test_episodes.csv"))))
        assert [int(r["episode"]) for r in rows] == list(range(EPISODES))
        assert [float(r["accuracy"]) for r in rows] == episodes["accuracies"]


def test_the_protocol_card_has_every_field_on_both_runs(three_seeds: Path) -> None:
    directory = three_seeds
    record = optuna_study(directory, "protonet").user_attrs[FINAL_TEST_ATTR]
    card = record["protocol"]
    assert set(card) == PROTOCOL_FIELDS
    assert card["dataset"] == {"name": "synthetic", "split": "default",
                               "classes": {"train": 64, "val": 16, "test": 20}, "image_shape": [1, 28, 28],
                               "preprocessing": card["dataset"]["preprocessing"]}
    assert {"channels", "size", "resample", "invert", "mean", "std"} <= set(card["dataset"]["preprocessing"])
    assert card["episodes"] == {"ways": 5, "shots": 1, "queries": 5, "test_episodes": EPISODES, "episode_seed": 2000,
                                "digest": record["episode_digest"]}
    assert card["ci"] == {"method": "t", "description": "95% CI, Student's t with n-1 degrees of freedom"}
    assert (card["bn_at_test"], card["device"], card["study_seed"]) == ("running", "cpu", 0)
    assert set(card["versions"]) == {"python", "torch", "optuna", "mlflow"}
    assert len(card["code"].get("git_commit", "")) == 40 or card["code"].get("package_version")
    assert card["training_seeds"] == [0, 100003]  # the first run's test.seeds: 2
    assert card["tested_model"] == {"how": "kept model", "trial": record["trial"], "run_id": record["model_run_id"],
                                    "step": record["model_step"], "val_accuracy": record["model_val_accuracy"]}
    parent = next(r.info.run_id for r in runs(directory, "t", "parent") if r.data.tags["learner"] == "protonet")
    for run in (parent, record["run_id"]):
        assert json.loads(artifact(directory, run, "protocol.json")) == card


def test_three_seeds_give_three_results_on_the_same_episodes_and_resume(three_seeds: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    directory = three_seeds
    before = {r.info.run_id: r.info.end_time for r in runs(directory, "t", "seed_run")}
    assert len(before) == 2  # one further seed per learner in the first run
    assert main_in(directory, "study.yaml", "--no-progress") == 0
    out = capsys.readouterr().out
    after = runs(directory, "t", "seed_run")
    assert len(after) == 4 and all(r.info.status == "FINISHED" for r in after)
    assert {r.info.run_id: r.info.end_time for r in after if r.info.run_id in before} == before  # not redone
    for learner in LEARNERS:
        attrs = optuna_study(directory, learner).user_attrs
        record, done = attrs[FINAL_TEST_ATTR], list(attrs[SEED_RUNS_ATTR].values())
        assert sorted(r["training_seed"] for r in done) == [100003, 200006]
        assert {r["episode_digest"] for r in done} == {record["episode_digest"]}
        assert all(r["trial"] == record["trial"] for r in done)
        accuracies = [record["test_accuracy"], *(r["test_accuracy"] for r in done)]
        assert len(set(accuracies)) > 1  # other initial weights and training episodes, other models
    row = next(line for line in out.splitlines() if line.startswith("| protonet |"))
    assert "(t)" in row and "(3) |" in row  # the interval's method, and the mean ± sd over 3 seeds
    assert "Paired comparison on the same test episodes:" in out
    assert "| protonet − classifier_baseline |" in out or "| classifier_baseline − protonet |" in out


def test_the_summary_run_holds_the_comparison_and_the_frontier(three_seeds: Path) -> None:
    directory = three_seeds
    (summary,) = runs(directory, "t", "summary")
    files = {a.path for a in tracking(directory).list_artifacts(summary.info.run_id)}
    assert {"comparison.md", "comparison.csv", "frontier.md", "frontier.csv", "frontier.png"} <= files
    rows = list(csv.DictReader(io.StringIO(artifact(directory, summary.info.run_id, "comparison.csv"))))
    assert len(rows) == 1 and rows[0]["ci_method"] == "t" and rows[0]["not_compared"] == ""


def test_a_seed_run_stopped_by_ctrl_c_is_killed_and_finished_by_the_next_start(tmp_path: Path) -> None:
    write_study(tmp_path, study_dict(learners={"protonet": LEARNERS["protonet"]},
                                     search={"sampler": "random", "n_trials": 1}, budget=SECONDS_BUDGET,
                                     test={"episodes": EPISODES, "seeds": 2}))
    process = start_hpo(tmp_path)

    def seed_run_running() -> bool:
        try:
            with sqlite3.connect(tmp_path / "mlflow.db", timeout=5) as db:
                return bool(db.execute("SELECT count(*) FROM runs r JOIN tags t ON r.run_uuid = t.run_uuid WHERE "
                                       "t.key = 'run_role' AND t.value = 'seed_run' AND r.status = 'RUNNING'"
                                       ).fetchone()[0])
        except sqlite3.OperationalError:
            return False

    wait_for(seed_run_running, process, message="no seed run started")
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert code == 130, err
    (killed,) = runs(tmp_path, "t", "seed_run")
    assert killed.info.status == "KILLED" and parent_run(tmp_path, "t").info.status == "KILLED"
    assert SEED_RUNS_ATTR not in optuna_study(tmp_path, "protonet").user_attrs
    assert main_in(tmp_path, "study.yaml", "--no-progress") == 0
    (finished,) = runs(tmp_path, "t", "seed_run")  # the same run, reopened and finished
    assert finished.info.run_id == killed.info.run_id and finished.info.status == "FINISHED"
    assert list(optuna_study(tmp_path, "protonet").user_attrs[SEED_RUNS_ATTR]) == ["100003"]
