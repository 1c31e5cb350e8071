"""``python -m hpo.rerun``: a trial trained again from its MLflow run repeats the logged validation curve exactly
(complete, pruned and resumed trials; by run id and by ``study/learner#trial``), a changed configuration is
reported at its first differing step, and bad input is one ``error:`` line with exit code 2."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.entities import Metric, Run

from hpo.rerun import main
from hpo.tracking import TrialCheckpoints
from learners import LEARNERS
from learners.base import FitState
from tests.helpers import (CONV4, assert_one_error_line, free_port, learner_study, run_in, runs, tracking,
                           trial_runs, write_study)

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = "rr"
BUDGET = {"iterations": 8, "val_interval": 2, "val_episodes": 16}
VALIDATIONS = BUDGET["iterations"] // BUDGET["val_interval"]
# Seed 1 makes the grid run lr=0.001, 0.5, 0.002: the poor lr=0.5 is below the median of the first trial at step 4
# and pruned there (median pruner, one startup trial; the warm-up of 3 iterations keeps it past step 2).
GRID = learner_study({"lr": {"type": "categorical", "choices": [0.001, 0.002, 0.5]}}, CONV4, name=STUDY, seed=1,
                     search={"sampler": "grid", "n_trials": 3,
                             "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 3}},
                     budget=BUDGET)
COPIED_TAGS = ("run_role", "optuna_study", "optuna_trial_number", "optuna_trial_state")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("rerun")
    write_study(directory, GRID)
    assert run_in(directory) == 0
    return directory


@pytest.fixture(autouse=True)
def no_tracking_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the option's default reads it


def rerun(capsys: pytest.CaptureFixture[str], cwd: Path, *argv: str) -> tuple[int, str, str]:
    """``hpo.rerun``'s exit code, stdout and stderr, run in this process with ``cwd`` as the working directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def uri(directory: Path) -> str:
    return f"sqlite:///{directory}/mlflow.db"


def trial_of_state(directory: Path, state: str) -> Run:
    """The first trial run of the study in this Optuna state."""
    return next(run for _, run in sorted(trial_runs(directory, STUDY).items())
                if run.data.tags["optuna_trial_state"] == state)


def curve(where: Path, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in tracking(where).get_metric_history(run_id, "val_accuracy"))


def settings(where: Path, run_id: str) -> dict[str, Any]:
    """A run's config.json."""
    with tempfile.TemporaryDirectory() as directory:
        return json.loads(Path(tracking(where).download_artifacts(run_id, "config.json", directory)).read_text())


def copied_trial(where: Path, run: Run, config: dict[str, Any] | None, with_curve: bool = True) -> str:
    """A new trial run, in an experiment of its own, tagged as ``run`` and holding ``config`` as its config.json
    (None: none) and ``run``'s validation curve (unless not ``with_curve``): a trial as another version, or an
    edited configuration, would have left it."""
    client = tracking(where)
    experiment = client.get_experiment_by_name("copies")
    experiment_id = (experiment.experiment_id if experiment else
                     client.create_experiment("copies", artifact_location=(where / "copies").as_uri()))
    run_id = client.create_run(experiment_id, tags={k: run.data.tags[k] for k in COPIED_TAGS}).info.run_id
    if config is not None:
        client.log_text(run_id, json.dumps(config), "config.json")
    if with_curve:
        client.log_batch(run_id, metrics=[Metric("val_accuracy", value, 0, step)
                                          for step, value in curve(where, run.info.run_id)])
    return run_id


def test_a_complete_trial_re_runs_identically_by_run_id(study_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = trial_of_state(study_dir, "COMPLETE")
    code, out, _ = rerun(capsys, tmp_path, run.info.run_id, "--tracking-uri", uri(study_dir), "--json")
    assert code == 0, out
    report = json.loads(out)
    logged = curve(study_dir, run.info.run_id)
    assert len(logged) == VALIDATIONS
    assert [(point["step"], point["logged"]) for point in report["curve"]] == logged
    assert [(point["step"], point["rerun"]) for point in report["curve"]] == logged
    assert report["reproduced"] is True and report["first_difference"] is None
    assert (report["run_id"], report["study"], report["state"]) == (run.info.run_id, f"{STUDY}/protonet", "COMPLETE")
    assert report["device"] == "cpu" and report["seconds"] > 0
    assert report["threads"] == settings(study_dir, run.info.run_id)["threads"] == 1  # the study ran on one
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_re_run_trains_with_as_many_threads_as_the_trial(study_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = trial_of_state(study_dir, "COMPLETE")
    config = settings(study_dir, run.info.run_id)
    config["threads"] = 2
    try:
        code, out, _ = rerun(capsys, tmp_path, copied_trial(study_dir, run, config), "--tracking-uri",
                             uri(study_dir), "--json")
        assert json.loads(out)["threads"] == 2, out
    finally:
        torch.set_num_threads(1)  # the module's one thread (the command sets the process's)


def test_a_trial_re_runs_identically_by_study_learner_and_number(study_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = trial_of_state(study_dir, "COMPLETE")
    number = run.data.tags["optuna_trial_number"]
    code, out, _ = rerun(capsys, study_dir, f"{STUDY}/protonet#{number}")  # the default tracking URI
    assert code == 0, out
    header, last = out.splitlines()
    assert re.fullmatch(rf"re-ran {STUDY}/protonet trial {number} \(run {run.info.run_id}, COMPLETE\) on cpu \(1 thread\) in "
                        rf"\d+\.\d\d s, stopped after step 8, the last logged", header), header
    assert last == f"reproduced: {VALIDATIONS} validations identical (steps 2..8)"


def test_a_pruned_trial_re_runs_identically_up_to_where_it_was_pruned(study_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = trial_of_state(study_dir, "PRUNED")
    pruned_at = int(run.data.tags["stopped_at_step"])
    assert BUDGET["val_interval"] < pruned_at < BUDGET["iterations"]  # more than one validation, not the whole budget
    code, out, _ = rerun(capsys, tmp_path, run.info.run_id, "--tracking-uri", uri(study_dir))
    assert code == 0, out
    header, last = out.splitlines()
    assert header.endswith(f", stopped after step {pruned_at}, the last logged"), header
    count = pruned_at // BUDGET["val_interval"]
    assert last == f"reproduced: {count} validations identical (steps 2..{pruned_at})"


def test_a_changed_learning_rate_differs_at_the_first_validation(study_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = trial_of_state(study_dir, "COMPLETE")
    config = settings(study_dir, run.info.run_id)
    config["hparams"]["lr"] *= 10
    changed = copied_trial(study_dir, run, config)
    code, out, _ = rerun(capsys, tmp_path, changed, "--tracking-uri", uri(study_dir))
    assert code == 1, out
    [(step, logged), *_] = curve(study_dir, run.info.run_id)
    found = re.fullmatch(rf"differs at step {step}: logged {re.escape(repr(logged))}, re-run (\S+) "
                         rf"\(difference (\S+)\)", out.splitlines()[-1])
    assert found, out
    again, difference = float(found[1]), float(found[2])
    assert again != logged and difference == again - logged


def test_a_trial_resumed_after_an_interruption_re_runs_identically_from_scratch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    save = TrialCheckpoints.save

    def interrupted_after_step_4(self: TrialCheckpoints, state: FitState) -> None:
        save(self, state)
        if state.step == 4:
            raise KeyboardInterrupt  # Ctrl-C once the checkpoint of step 4 is stored

    write_study(tmp_path, learner_study({"lr": {"type": "categorical", "choices": [0.001]}}, CONV4, name=STUDY,
                                        search={"sampler": "random", "pruner": "none", "n_trials": 1},
                                        budget=BUDGET))
    with monkeypatch.context() as patch:
        patch.setattr(TrialCheckpoints, "save", interrupted_after_step_4)
        assert run_in(tmp_path) == 130
    assert run_in(tmp_path) == 0
    capsys.readouterr()  # the study's own lines
    retry = trial_of_state(tmp_path, "COMPLETE")
    assert retry.data.tags["resumed_at_step"] == "4"
    code, out, _ = rerun(capsys, tmp_path, retry.info.run_id)
    assert code == 0, out
    assert out.splitlines()[-1] == f"reproduced: {VALIDATIONS} validations identical (steps 2..8)"


@pytest.fixture(scope="module")
def older_runs(study_dir: Path) -> dict[str, str]:
    """Trial runs as earlier versions (or edits) left them: case → run id."""
    run = trial_of_state(study_dir, "COMPLETE")
    config = settings(study_dir, run.info.run_id)
    return {"no config": copied_trial(study_dir, run, None),
            "no hparams or budget": copied_trial(study_dir, run, {k: v for k, v in config.items()
                                                                  if k not in ("hparams", "budget")}),
            "no curve": copied_trial(study_dir, run, config, with_curve=False),
            "negative lr": copied_trial(study_dir, run, {**config, "hparams": {**config["hparams"], "lr": -0.001}}),
            "unknown learner": copied_trial(study_dir, run, {**config, "learner": "matching_net"})}


def other_role_run(study_dir: Path, role: str) -> str:
    return runs(study_dir, STUDY, role)[0].info.run_id


BAD_INPUT = {
    # case: (RUN or a callable of the study folder and older runs giving it, extra arguments, the error line)
    "not a run": ("last-week", [], "error: last-week: expected a trial's MLflow run id (32 hex digits) or "
                                    "study/learner#trial"),
    "no such run": ("0123456789abcdef0123456789abcdef", [],
                    "error: 0123456789abcdef0123456789abcdef: no such MLflow run in {uri}"),
    "parent run": (lambda d, _: other_role_run(d, "parent"), [],
                   "error: {run}: not a trial's run (a parent run); give a run with run_role=trial"),
    "final-test run": (lambda d, _: other_role_run(d, "final_test"), [],
                       "error: {run}: not a trial's run (a final_test run); give a run with run_role=trial"),
    "summary run": (lambda d, _: other_role_run(d, "summary"), [],
                    "error: {run}: not a trial's run (a summary run); give a run with run_role=trial"),
    "no such trial": (f"{STUDY}/protonet#9", [],
                      f"error: {STUDY}/protonet#9: no trial 9 of {STUDY}/protonet in {{uri}}"),
    "no such learner": (f"{STUDY}/maml#0", [], f"error: {STUDY}/maml#0: no trial 0 of {STUDY}/maml in {{uri}}"),
    "no such study": ("other/protonet#0", [], "error: other/protonet#0: no trial 0 of other/protonet in {uri}"),
    "no config.json": (lambda _, older: older["no config"], [],
                       "error: run {run}: no config.json artifact (logged by an older version?): nothing to re-run "
                       "from"),
    "config.json without hparams and budget": (
        lambda _, older: older["no hparams or budget"], [],
        "error: run {run}: config.json has no budget, hparams (logged by an older version?)"),
    "no val_accuracy": (lambda _, older: older["no curve"], [],
                        "error: run {run}: no val_accuracy history (logged by an older version, or the trial never "
                        "validated)"),
    "refused hyperparameter": (lambda _, older: older["negative lr"], [],
                               "error: config.json: hparams: lr must be positive, got -0.001"),
    "learner of no version": (lambda _, older: older["unknown learner"], [],
                              "error: config.json: learner: 'matching_net' is not a learner of this version (it has: "
                              f"{', '.join(LEARNERS)})"),
    "missing data": (lambda d, _: trial_of_state(d, "COMPLETE").info.run_id, ["--root", "{cwd}/gone"],
                     "error: --root: no such directory: {cwd}/gone"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_error_line_and_exit_code_2(case: str, study_dir: Path, older_runs: dict[str, str],
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference, extra, expected = BAD_INPUT[case]
    run = reference(study_dir, older_runs) if callable(reference) else reference
    values = {"uri": uri(study_dir), "run": run, "cwd": tmp_path}
    code, out, err = rerun(capsys, tmp_path, run, "--tracking-uri", uri(study_dir),
                           *(arg.format(**values) for arg in extra))
    assert (code, out) == (2, "")
    assert_one_error_line(err)
    assert err.rstrip("\n") == expected.format(**values)
    assert list(tmp_path.iterdir()) == []  # nothing written


SERVER = f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.parametrize("tracking_uri, expected", [
    ("sqlite:///missing.db", "error: --tracking-uri: no database file {cwd}/missing.db"),
    (SERVER, f"error: --tracking-uri: MLflow server {SERVER} does not answer: "),
], ids=["missing database", "no server"])
def test_an_unreachable_tracking_store_is_one_error_line_and_exit_code_2(
        tracking_uri: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = rerun(capsys, tmp_path, f"{STUDY}/protonet#0", "--tracking-uri", tracking_uri)
    assert (code, out) == (2, "")
    assert_one_error_line(err)
    assert err.startswith(expected.format(cwd=tmp_path)), err
    assert list(tmp_path.iterdir()) == []  # the missing database is not created
