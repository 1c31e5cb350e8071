"""End to end on synthetic data: trial accounting, pruning, MLflow runs, resume, grid exhaustion, Ctrl-C."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import optuna
from optuna.trial import TrialState

from hpo.redaction import register_secrets
from learners import hparam_names
from learners.data import load_dataset
from learners.registry import hparams_with_defaults
from tests.helpers import (BASE_STUDY, CONV4, LEARNER, LOG_LR, LONG_BUDGET, SECONDS_BUDGET, counted, learner_study,
                           run_in, runs, start_hpo, study_dict, tracking, trial_runs, trials, wait_for_running_trial,
                           write_study)

pytestmark = pytest.mark.usefixtures("one_thread")
# Seed 1 makes the grid run lr=0.001 first, so the poor lr=0.5 trial that follows is below the
# median at the first report and is pruned (median pruner, one startup trial).
GRID_STUDY = learner_study(
    {"lr": {"type": "categorical", "choices": [0.001, 0.002, 0.5]}}, CONV4, name="grid", seed=1,
    search={"sampler": "grid", "pruner": {"type": "median", "n_startup_trials": 1}, "n_trials": 5},
    budget={"iterations": 4, "val_interval": 2, "val_episodes": 16})


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    directory = tmp_path_factory.mktemp("grid")
    write_study(directory, GRID_STUDY)
    return directory, run_in(directory)


def test_grid_runs_each_point_once_and_stops(grid_run: tuple[Path, int]) -> None:
    directory, code = grid_run
    assert code == 0
    done = trials(directory, "grid")
    assert len(done) == 3  # n_trials is 5, the grid has 3 points
    assert sorted(t.params["lr"] for t in done) == [0.001, 0.002, 0.5]


def test_pruned_trials_end_killed_and_complete_ones_finished(grid_run: tuple[Path, int]) -> None:
    directory, _ = grid_run
    done, tracked = trials(directory, "grid"), trial_runs(directory, "grid")
    states = {t.number: t.state for t in done}
    assert TrialState.PRUNED in states.values() and TrialState.COMPLETE in states.values()
    expected = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}
    assert {n: tracked[n].info.status for n in states} == {n: expected[s] for n, s in states.items()}
    assert all(tracked[n].data.tags["optuna_trial_state"] == s.name for n, s in states.items())


def test_one_parent_with_nested_trials_test_metrics_and_artifacts(grid_run: tuple[Path, int]) -> None:
    directory, _ = grid_run
    client = tracking(directory)
    [parent] = runs(directory, "grid", "parent")
    assert parent.info.status == "FINISHED" and parent.data.tags["optuna_study"] == f"grid/{LEARNER}"
    assert {"test_accuracy", "test_ci95", "val_accuracy", "best_trial"} <= set(parent.data.metrics)
    assert 0.0 <= parent.data.metrics["test_accuracy"] <= 1.0
    best = max((t for t in trials(directory, "grid") if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert parent.data.metrics["best_trial"] == best.number and parent.data.metrics["val_accuracy"] == best.value
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.json", "plots"} <= artifacts
    assert parent.info.artifact_uri.startswith(str(directory / "mlruns"))
    # The plots as images MLflow previews, and one HTML report that needs no network: plotly.js inline, once.
    plots = {Path(a.path).name: a.file_size for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"optimization_history.png", "validation_curves.png", "parallel_coordinate.png", "plots.html"} <= set(plots)
    [report] = directory.glob(f"mlruns/*/{parent.info.run_id}/artifacts/plots/plots.html")
    html = report.read_text()
    assert "<script src=" not in html and html.count("Plotly.newPlot") == len(plots) - 1
    assert sum(plots.values()) < 6 * 2**20
    for name in plots:
        if name.endswith(".png"):
            assert (report.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The MLflow UI opens the experiment as model training; Optuna's views name the value.
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    study = optuna.load_study(study_name=f"grid/{LEARNER}", storage=f"sqlite:///{directory}/optuna.db")
    assert study.metric_names == ["val_accuracy"]

    data = load_dataset("synthetic")
    assert [(d.dataset.name, d.tags[0].value) for d in parent.inputs.dataset_inputs] == [
        ("synthetic/default/train", "train"), ("synthetic/default/val", "validation"),
        ("synthetic/default/test", "test")]
    assert len({data.train.digest, data.val.digest, data.test.digest}) == 3
    for number, run in trial_runs(directory, "grid").items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert set(hparam_names(LEARNER)) <= set(run.data.params)
        assert {"bn_at_test", "worker_host", "worker_pid"} <= set(run.data.tags)
        # The data it used, as MLflow datasets: the training and validation classes, told apart by digest.
        assert {(d.dataset.name, d.dataset.digest, d.tags[0].value) for d in run.inputs.dataset_inputs} == {
            ("synthetic/default/train", data.train.digest, "train"), ("synthetic/default/val", data.val.digest,
                                                                      "validation")}
        # The base learning rate is a param; the scheduled one a metric of its own name.
        assert set(run.data.metrics) == {"val_accuracy", "train_loss", "lr_scheduled", "seconds"}
        assert "lr" in run.data.params
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps and steps == [2, 4][:len(steps)] and (len(steps) == 2 or run.info.status == "KILLED")
        assert "config.json" in {a.path for a in client.list_artifacts(run.info.run_id)}

    [summary] = runs(directory, "grid", "summary")
    assert {"summary.md", "summary.csv"} <= {a.path for a in client.list_artifacts(summary.info.run_id)}


def test_resume_adds_only_the_remainder_and_reuses_the_parent(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    write_study(tmp_path, study_dict(name="resume"))
    assert run_in(tmp_path) == 0
    assert counted(trials(tmp_path, "resume")) == 2
    assert run_in(tmp_path, "--n-trials", "4") == 0
    after = trials(tmp_path, "resume")
    assert len(after) == counted(after) == 4
    assert len(runs(tmp_path, "resume", "parent")) == 1 and sorted(trial_runs(tmp_path, "resume")) == [0, 1, 2, 3]
    tests_logged = len(tracking(tmp_path).get_metric_history(
        runs(tmp_path, "resume", "parent")[0].info.run_id, "test_accuracy"))

    capsys.readouterr()
    assert run_in(tmp_path, "--n-trials", "4") == 0  # finished: prints the summary only
    out = capsys.readouterr().out
    assert "nothing to run" in out and f"| {LEARNER} |" in out
    assert len(trials(tmp_path, "resume")) == 4
    [parent] = runs(tmp_path, "resume", "parent")
    assert len(tracking(tmp_path).get_metric_history(parent.info.run_id, "test_accuracy")) == tests_logged

    # One final-test run per final test, nested under the parent, with exactly the tested configuration as params;
    # a new best trial's made a new one, a new model version, and marked the earlier run superseded.
    study = optuna.load_study(study_name=f"resume/{LEARNER}", storage=f"sqlite:///{tmp_path}/optuna.db")
    record = study.user_attrs["final_test"]
    finals = runs(tmp_path, "resume", "final_test")
    current = [run for run in finals if "superseded" not in run.data.tags]
    assert [run.info.run_id for run in current] == [record["run_id"]]
    [final] = current
    assert final.data.tags["mlflow.parentRunId"] == parent.info.run_id and final.info.status == "FINISHED"
    assert final.data.params == {k: str(v) for k, v in
                                 hparams_with_defaults(LEARNER, study.best_trial.user_attrs["hparams"]).items()
                                 if not isinstance(v, tuple)} | {k: json.dumps(list(v)) for k, v in
                                 hparams_with_defaults(LEARNER, study.best_trial.user_attrs["hparams"]).items()
                                 if isinstance(v, tuple)}
    assert final.data.metrics["test_accuracy"] == parent.data.metrics["test_accuracy"] == record["test_accuracy"]
    versions = tracking(tmp_path).search_model_versions(f"name = 'resume.{LEARNER}'")
    assert len(finals) == len(versions) == tests_logged
    assert all(run.data.tags["superseded_by"] == final.info.run_id for run in finals if run is not final)


def test_a_study_named_like_a_password_piece_still_resumes_its_runs(tmp_path: Path) -> None:
    # Redaction hides a registered password's pieces everywhere, tags included: the runs are found again by
    # their redacted tags, not duplicated on every resume.
    register_secrets("postgresql://user:elsewhere@db.example/optuna")
    write_study(tmp_path, study_dict(name="elsewhere"))
    assert run_in(tmp_path) == 0 and run_in(tmp_path, "--n-trials", "3") == 0
    assert len(runs(tmp_path, "elsewhere", "parent")) == 1 and len(runs(tmp_path, "elsewhere", "summary")) == 1
    assert sorted(trial_runs(tmp_path, "elsewhere")) == [0, 1, 2]


@pytest.mark.parametrize("sampler, pruner", [("gp", "hyperband"), ("random", "none")])
def test_other_samplers_and_pruners_complete_the_total(sampler: str, pruner: str, tmp_path: Path) -> None:
    write_study(tmp_path, study_dict(name=sampler, search={"sampler": sampler, "pruner": pruner, "n_trials": 3}))
    assert run_in(tmp_path) == 0
    assert counted(trials(tmp_path, sampler)) == 3


@pytest.mark.slow
@pytest.mark.parametrize("stop, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_fails_the_trial_kills_its_run_and_a_rerun_completes(stop: signal.Signals, exit_code: int,
                                                                       tmp_path: Path) -> None:
    write_study(tmp_path, study_dict(name="stop", budget=LONG_BUDGET))
    process = start_hpo(tmp_path)
    try:
        wait_for_running_trial(tmp_path, process)
        time.sleep(1.0)
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == exit_code, err
    assert err.rstrip().splitlines()[-1] == "interrupted; resume with: python -m hpo.run study.yaml --no-progress"

    [stopped, *queued] = trials(tmp_path, "stop")
    assert stopped.state == TrialState.FAIL
    assert [(t.state, t.params) for t in queued] == [(TrialState.WAITING, stopped.params)]
    assert trial_runs(tmp_path, "stop")[stopped.number].info.status == "KILLED"
    assert runs(tmp_path, "stop", "parent")[0].info.status == "KILLED"

    write_study(tmp_path, study_dict(name="stop"))  # same study, short budget: the rerun finishes quickly
    assert run_in(tmp_path) == 0
    after = trials(tmp_path, "stop")
    assert counted(after) == BASE_STUDY["search"]["n_trials"]
    assert after[1].params == stopped.params and after[1].state != TrialState.WAITING
    assert {r.info.status for r in trial_runs(tmp_path, "stop").values()} <= {"FINISHED", "KILLED", "FAILED"}
    [parent] = runs(tmp_path, "stop", "parent")
    assert parent.info.status == "FINISHED"


def test_a_new_best_trial_makes_a_new_final_test_run_and_model_version(tmp_path: Path) -> None:
    lr = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    write_study(tmp_path, learner_study(lr, CONV4, name="newbest", search={"sampler": "random", "n_trials": 1},
                                       budget={"iterations": 20, "val_interval": 10, "val_episodes": 10}))
    assert run_in(tmp_path) == 0
    assert run_in(tmp_path, "--n-trials", "3") == 0
    study = optuna.load_study(study_name=f"newbest/{LEARNER}", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert study.best_trial.number != 0  # measured: a later trial beats the first (seed 0, CPU)
    first, second = runs(tmp_path, "newbest", "final_test")  # oldest first
    assert (first.data.tags["tested_trial"], second.data.tags["tested_trial"]) == ("0", str(study.best_trial.number))
    assert first.data.tags["superseded"] == "true" and first.data.tags["superseded_by"] == second.info.run_id
    assert "superseded" not in second.data.tags and first.data.params["lr"] != second.data.params["lr"]
    assert [(d.dataset.name, d.tags[0].value) for d in second.inputs.dataset_inputs] == [
        ("synthetic/default/test", "test")]
    versions = tracking(tmp_path).search_model_versions(f"name = 'newbest.{LEARNER}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {int(v.version): v.tags["trial"] for v in versions} == {1: "0", 2: str(study.best_trial.number)}


def test_system_metrics_are_sampled_into_each_trial_run_when_asked(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # trials of seconds; studies sample every 10 s
    write_study(tmp_path, {**learner_study({"lr": LOG_LR}, CONV4, name="system", budget=SECONDS_BUDGET,
                                           search={"sampler": "random", "n_trials": 1}), "system_metrics": True})
    assert run_in(tmp_path) == 0
    [run] = trial_runs(tmp_path, "system").values()
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    [parent] = runs(tmp_path, "system", "parent")
    assert not any(name.startswith("system/") for name in parent.data.metrics)


def test_a_study_left_by_an_earlier_version_gains_the_new_records_once_when_it_resumes(tmp_path: Path) -> None:
    write_study(tmp_path, study_dict(name="earlier"))
    assert run_in(tmp_path) == 0
    client = tracking(tmp_path)
    experiment = client.get_experiment_by_name("earlier").experiment_id
    study = optuna.load_study(study_name=f"earlier/{LEARNER}", storage=f"sqlite:///{tmp_path}/optuna.db")
    # As an earlier version left it: no experiment kind, no final-test run, a final test without the model's ids.
    client.delete_experiment_tag(experiment, "mlflow.experimentKind")
    for final in runs(tmp_path, "earlier", "final_test"):
        client.delete_run(final.info.run_id)
    study.set_user_attr("final_test", {k: v for k, v in study.user_attrs["final_test"].items()
                                       if k not in ("model_id", "registered", "run_id")})
    assert run_in(tmp_path) == 0
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    record = optuna.load_study(study_name=f"earlier/{LEARNER}",
                               storage=f"sqlite:///{tmp_path}/optuna.db").user_attrs["final_test"]
    assert [run.info.run_id for run in runs(tmp_path, "earlier", "final_test")] == [record["run_id"]]
    # The model logged and registered the first time is found again, not logged or registered twice.
    [version] = client.search_model_versions(f"name = 'earlier.{LEARNER}'")
    assert version.source == f"models:/{record['model_id']}" and record["registered"]["version"] == str(version.version)
