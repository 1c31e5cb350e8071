"""``python -m hpo.rerun RUN [options]`` (also ``fewshot-rerun``): train one trial of a study again, from what its
MLflow run logged, and compare the validation curves.

RUN is a trial's MLflow run id or ``study/learner#trial`` (``quickstart/protonet#3``). The trial's ``config.json``
artifact holds the study's seed, dataset, budget and device and every hyperparameter; the trial is trained again
from scratch with them, set up as the study sets up its trials, and each validation accuracy is compared with the
``val_accuracy`` the run logged at that step, for exact equality (on the CPU a re-run is bit-identical). A pruned or
interrupted trial's curve ends where it stopped, so its re-run stops after that step; a trial resumed from a
checkpoint logged one continuous curve, which its re-run from scratch matches too. It trains with as many torch
threads as the trial did (``config.json``'s ``threads``; they change a CPU run's rounding). Nothing is written, to
MLflow or anywhere else. ``--json`` prints one JSON object instead: both curves, the first difference, the seconds taken.

Exit codes: 0 reproduced, 1 the re-run differs (the first differing step is printed; also, with one ``error:``
line, a tracking server that failed midway), 2 bad input (one ``error:`` line; nothing is written).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from pydantic import ValidationError

from hpo.cli import OneLineParser
from hpo.config import StudyConfig, load_data, resolve_paths
from hpo.errors import ConfigError, TrackingError
from hpo.execution import training_setup
from hpo.model_commands import DEFAULT_TRACKING_URI, RUN_ID, check_tracking, run_command
from hpo.redaction import redact
from hpo.storage import resolved_url
from hpo.tracking import ROLE_TAG, STATE_TAG, STUDY_TAG, TRIAL_TAG, ReportingClient
from learners import LEARNERS, TrainingDiverged, learner_class
from learners.base import ValidationPoint
from learners.experiment import TrainingSetup

DIFFERS = 1  # exit code: the re-run's validation curve is not the logged one
CONFIG_FILE = "config.json"  # a trial run's settings and hyperparameters, as hpo.execution's Objective logs them
CURVE_METRIC = "val_accuracy"
# What a re-run needs of config.json; runs of older versions may lack some of it.
NEEDED = ("study", "seed", "device", "dataset", "budget", "learner", "hparams")
# Study names are [A-Za-z0-9_.-]+ (hpo.config), learner names identifiers: nothing to quote in a search filter.
TRIAL_REFERENCE = re.compile(r"(?P<study>[A-Za-z0-9_.-]+)/(?P<learner>[A-Za-z0-9_]+)#(?P<trial>[0-9]+)")
NOT_FOUND = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)  # MLflow's error code for a run id it does not hold

Curve = list[tuple[int, float]]  # (step, val_accuracy), by step


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    made = OneLineParser(prog="python -m hpo.rerun", description="train one trial of a study again from what its "
                                                                 "MLflow run logged and compare the validation curves")
    made.add_argument("run", metavar="RUN", help="a trial's MLflow run id, or study/learner#trial "
                                                 "(quickstart/protonet#3)")
    made.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI),
                      help="the study's MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                           f"{DEFAULT_TRACKING_URI}, a study's default)")
    made.add_argument("--device", choices=("auto", "cpu", "cuda"),
                      help="default: the trial's own (an exact re-run needs the kind of device the trial ran on)")
    made.add_argument("--root", help="dataset folder (default: the one the study logged)")
    made.add_argument("--json", action="store_true", help="print one JSON object with both curves")
    return made.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reproduced: list[bool] = []
    code = run_command(lambda: reproduced.append(_rerun(args)))
    return DIFFERS if code == 0 and not reproduced[0] else code


@dataclass(frozen=True)
class LoggedTrial:
    """What a trial run logged that its re-run needs: the run's tags, its ``config.json`` and its curve."""

    run_id: str
    tags: dict[str, str]
    settings: dict[str, Any]
    curve: Curve


@dataclass(frozen=True)
class Retrained:
    """The re-run: its validation curve, how its training ended, on which device and in how many seconds."""

    curve: Curve
    ended: str
    device: str
    seconds: float


@dataclass(frozen=True)
class Difference:
    """The first logged validation the re-run does not repeat exactly (``rerun`` None: it has none at that step)."""

    step: int
    logged: float
    rerun: float | None


def find_trial_run(client: ReportingClient, reference: str, tracking_uri: str) -> Run:
    """The trial run ``reference`` names at ``tracking_uri``: a run id, or ``study/learner#trial``.

    Raises:
        ConfigError: no such run or trial, or a run that is not a trial's.
    """
    where = redact(tracking_uri)
    named = TRIAL_REFERENCE.fullmatch(reference)
    if named is not None:
        study, trial = f"{named['study']}/{named['learner']}", int(named["trial"])
        experiment = client.get_experiment_by_name(named["study"])
        query = f"tags.{ROLE_TAG} = 'trial' and tags.{STUDY_TAG} = '{study}' and tags.{TRIAL_TAG} = '{trial}'"
        found = [] if experiment is None else client.search_runs([experiment.experiment_id], query, max_results=1)
        if not found:
            raise ConfigError(f"no trial {trial} of {study} in {where}", reference)
        return found[0]
    if RUN_ID.fullmatch(reference) is None:
        raise ConfigError("expected a trial's MLflow run id (32 hex digits) or study/learner#trial", reference)
    try:
        run = client.get_run(reference)
    except TrackingError as e:
        if isinstance(e.__cause__, MlflowException) and e.__cause__.error_code == NOT_FOUND:
            raise ConfigError(f"no such MLflow run in {where}", reference) from None
        raise
    role = run.data.tags.get(ROLE_TAG)
    if role != "trial":
        what = f"a {role} run" if role else f"no {ROLE_TAG} tag"
        raise ConfigError(f"not a trial's run ({what}); give a run with {ROLE_TAG}=trial", reference)
    return run


def logged_trial(client: ReportingClient, run: Run) -> LoggedTrial:
    """A trial run's ``config.json`` and ``val_accuracy`` curve.

    Raises:
        ConfigError: naming what the run lacks (a run of an older version).
    """
    run_id = run.info.run_id
    where = f"run {run_id}"
    if CONFIG_FILE not in {a.path for a in client.list_artifacts(run_id)}:
        raise ConfigError(f"no {CONFIG_FILE} artifact (logged by an older version?): nothing to re-run from", where)
    with tempfile.TemporaryDirectory(prefix="fewshot-hpo-") as directory:
        text = Path(client.download_artifacts(run_id, CONFIG_FILE, directory)).read_text()
    try:
        settings = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{CONFIG_FILE} is not JSON ({e})", where) from None
    missing = [key for key in NEEDED if key not in settings] if isinstance(settings, dict) else list(NEEDED)
    if missing:
        raise ConfigError(f"{CONFIG_FILE} has no {', '.join(missing)} (logged by an older version?)", where)
    curve = sorted((m.step, m.value) for m in client.get_metric_history(run_id, CURVE_METRIC))
    if not curve:
        raise ConfigError(f"no {CURVE_METRIC} history (logged by an older version, or the trial never validated)",
                          where)
    return LoggedTrial(run_id, run.data.tags, settings, curve)


def trial_setup(settings: dict[str, Any], root: str | None = None, device: str | None = None) -> TrainingSetup:
    """The training setup of a logged trial, made as its study made it: the logged settings as a study of the
    trial's learner, its data loaded and checked as ``hpo.run`` loads them. ``root`` and ``device`` override the
    logged ones.

    Raises:
        ConfigError: settings or hyperparameters this version refuses, missing data, an unavailable device; named
            as the option when one overrides the field, else as the field of ``config.json``.
    """
    try:
        config = _study_of(settings, root, device)
        return training_setup(config, settings["learner"], load_data(config))
    except ConfigError as e:
        option, given = {"dataset.root": ("--root", root), "device": ("--device", device)}.get(e.field, ("", None))
        if given is not None:
            e.field = option
        else:
            e.file = CONFIG_FILE
        raise


def _study_of(settings: dict[str, Any], root: str | None, device: str | None) -> StudyConfig:
    """The logged settings as a validated study of the trial's learner alone, every hyperparameter fixed."""
    learner, hparams = settings["learner"], settings["hparams"]
    if learner not in LEARNERS:
        raise ConfigError(f"'{learner}' is not a learner of this version (it has: {', '.join(LEARNERS)})", "learner")
    try:
        learner_class(learner).HParams(**hparams)  # before the data checks, which build them unguarded
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e), "hparams") from None
    raw = {"name": settings["study"], "seed": settings["seed"], "device": device or settings["device"],
           "dataset": {**settings["dataset"], **({} if root is None else {"root": root})},
           "budget": settings["budget"], "learners": {learner: {"fixed": hparams}}, "search": {"n_trials": 1}}
    try:
        return resolve_paths(StudyConfig.model_validate(raw))
    except ValidationError as e:
        error = e.errors()[0]
        raise ConfigError(error["msg"], ".".join(map(str, error["loc"]))) from None


class _LastLoggedStep(Exception):
    """Raised by the re-run's validation callback at the logged curve's last step: nothing after it is compared."""


def retrain(setup: TrainingSetup, hparams: dict[str, Any], last_step: int, progress: bool = False) -> Retrained:
    """Train the trial again from scratch, until its validation at ``last_step`` (or until its training ends)."""
    curve: Curve = []

    def validated(point: ValidationPoint) -> None:
        curve.append((point.step, point.val_accuracy))
        if point.step >= last_step:
            raise _LastLoggedStep

    start = time.perf_counter()
    try:
        _, result = setup.train(hparams, validated, progress)
        ended = f"ended at step {result.stopped_at} ({result.stop_reason})"
    except _LastLoggedStep:
        ended = f"stopped after step {curve[-1][0]}, the last logged"
    except TrainingDiverged as e:  # where the logged trial trained on: the comparison shows where they part
        ended = f"diverged ({e})"
    return Retrained(curve, ended, str(setup.device), time.perf_counter() - start)


def first_difference(logged: Curve, rerun: Curve) -> Difference | None:
    """The first logged validation that the re-run does not repeat exactly; None when it repeats them all."""
    repeated = dict(rerun)
    for step, value in logged:
        if repeated.get(step) != value:
            return Difference(step, value, repeated.get(step))
    return None


def verdict(logged: Curve, difference: Difference | None) -> str:
    """``reproduced: ...`` or ``differs at step S: ...``, the command's last line."""
    if difference is None:
        count = len(logged)
        return (f"reproduced: {count} validation{'s' if count != 1 else ''} identical "
                f"(steps {logged[0][0]}..{logged[-1][0]})")
    step, value, rerun = difference.step, difference.logged, difference.rerun
    if rerun is None:
        return f"differs at step {step}: logged {value!r}, re-run none"
    return f"differs at step {step}: logged {value!r}, re-run {rerun!r} (difference {rerun - value!r})"


def _rerun(args: argparse.Namespace) -> bool:
    """Re-run the trial ``args.run`` names and print the comparison; whether the re-run reproduced it."""
    tracking_uri = resolved_url(args.tracking_uri)  # as hpo.run names it: a relative SQLite file made absolute
    check_tracking(tracking_uri)  # before MLflow opens it: a missing SQLite file is not created
    client = ReportingClient(tracking_uri)
    logged = logged_trial(client, find_trial_run(client, args.run, tracking_uri))
    setup = trial_setup(logged.settings, args.root, args.device)
    if "threads" in logged.settings:  # torch's intra-op threads change a CPU run's rounding: as many as the trial
        torch.set_num_threads(logged.settings["threads"])
    retrained = retrain(setup, logged.settings["hparams"], logged.curve[-1][0], progress=not args.json)
    difference = first_difference(logged.curve, retrained.curve)
    study, trial, state = (logged.tags[tag] for tag in (STUDY_TAG, TRIAL_TAG, STATE_TAG))
    if args.json:
        repeated = dict(retrained.curve)
        print(json.dumps({"run_id": logged.run_id, "study": study, "trial": int(trial), "state": state,
                          "reproduced": difference is None,
                          "first_difference": None if difference is None else asdict(difference),
                          "curve": [{"step": step, "logged": value, "rerun": repeated.get(step)}
                                    for step, value in logged.curve],
                          "rerun_ended": retrained.ended, "device": retrained.device,
                          "threads": torch.get_num_threads(),
                          "seconds": retrained.seconds}, indent=2))
    else:
        threads = torch.get_num_threads()
        print(f"re-ran {study} trial {trial} (run {logged.run_id}, {state}) on {retrained.device} "
              f"({threads} thread{'s' if threads != 1 else ''}) in {retrained.seconds:.2f} s, {retrained.ended}")
        print(verdict(logged.curve, difference))
    return difference is None


if __name__ == "__main__":
    sys.exit(main())
