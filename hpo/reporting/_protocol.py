"""The protocol card of a final test: everything a reader needs to know what a test accuracy means and to redo it.

Comparisons of few-shot learners go wrong on protocol more than on code: transductive against inductive batch
norm, 600 against 10,000 episodes, normal against t intervals. The card is logged as ``protocol.json`` with the
parent run and the final-test run, kept in the study's final-test record, and printed after each final test.
"""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import optuna
import torch

from learners.base import evaluation_seed
from learners.experiment import TrainingSetup
from learners.statistics import describe_method

PROTOCOL_FILE = "protocol.json"
PACKAGE = "fewshot-hpo"
_CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root, when hpo runs from a checkout


def protocol_card(setup: TrainingSetup, hparams: dict[str, Any], record: dict[str, Any], study: str,
                  seeds: list[int]) -> dict[str, Any]:
    """The card of the final test ``record`` (its episodes, interval and tested model) of ``setup``, for a model
    with every hyperparameter ``hparams``; ``seeds``: the training seeds of the chosen configuration, the study's
    first."""
    data, spec = setup.data, setup.spec
    return {
        "study": study,
        "learner": setup.learner,
        "dataset": {"name": data.dataset, "split": data.split,
                    "classes": {part: data[part].num_classes for part in ("train", "val", "test")},
                    "image_shape": list(data.train.image_shape), "preprocessing": vars(data.preprocessing)},
        "episodes": {"ways": spec.ways, "shots": spec.shots, "queries": spec.queries,
                     "test_episodes": record["episodes"], "episode_seed": evaluation_seed(setup.seed, "test"),
                     "digest": record["episode_digest"]},
        "ci": {"method": record["ci_method"], "description": describe_method(record["ci_method"])},
        "bn_at_test": hparams["bn_at_test"],
        "device": str(setup.device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "optuna": optuna.__version__,
                     # Its metadata, not the module: importing MLflow takes a second and a half.
                     "mlflow": importlib.metadata.version("mlflow")},
        "code": code_version(),
        "study_seed": setup.seed,
        "training_seeds": seeds,
        "tested_model": {"how": record["how"], "trial": record["trial"], "run_id": record["model_run_id"],
                         "step": record["model_step"], "val_accuracy": record["model_val_accuracy"]},
    }


def code_version() -> dict[str, Any]:
    """The git commit of the checkout hpo runs from (``dirty``: tracked files changed since), else the installed
    package's version."""
    if (_CHECKOUT / ".git").exists():
        try:
            commit = _git("rev-parse", "HEAD")
            return {"git_commit": commit, "dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}
        except (OSError, subprocess.CalledProcessError):  # no git program, or not a repository after all
            pass
    try:
        return {"package_version": importlib.metadata.version(PACKAGE)}
    except importlib.metadata.PackageNotFoundError:
        return {"package_version": None}


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(_CHECKOUT), *args], check=True, capture_output=True, text=True,
                          timeout=10).stdout.strip()


def format_protocol(card: dict[str, Any]) -> str:
    """The card as a short printed block."""
    d, e, code, model = card["dataset"], card["episodes"], card["code"], card["tested_model"]
    classes = " / ".join(f"{part} {count}" for part, count in d["classes"].items())
    version = (f"commit {code['git_commit'][:12]}{' (modified)' if code['dirty'] else ''}" if "git_commit" in code
               else f"{PACKAGE} {code['package_version']}")
    seeds = card["training_seeds"]
    return "\n".join([
        f"{card['study']} final-test protocol",
        f"  data      {d['name']}, split {d['split']}: {classes} classes, "
        f"images {'x'.join(map(str, d['image_shape']))}",
        f"  episodes  {e['ways']}-way {e['shots']}-shot {e['queries']}-query, {e['test_episodes']} test episodes "
        f"of seed {e['episode_seed']} (digest {e['digest']})",
        f"  interval  {card['ci']['description']}; batch norm at test: {card['bn_at_test']}",
        f"  model     {model['how']} of trial {model['trial']} (step {model['step']}), study seed "
        f"{card['study_seed']}{f', training seeds {seeds}' if len(seeds) > 1 else ''}",
        f"  run on    {card['device']}, torch {card['versions']['torch']}, optuna {card['versions']['optuna']}, "
        f"mlflow {card['versions']['mlflow']}, {version}",
    ])
