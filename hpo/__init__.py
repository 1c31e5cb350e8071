"""Hyperparameter search over the few-shot learners: Optuna studies tracked in MLflow.

Data flows one way: study YAML → validated config (:mod:`hpo.config`) → objective and trial
runners (:mod:`hpo.execution`) → learner (:mod:`learners`) → metrics → tracker
(:mod:`hpo.tracking`), over storages of any kind (:mod:`hpo.storage`), reported by
:mod:`hpo.reporting`. Entry point: ``python -m hpo.run STUDY.yaml`` (:mod:`hpo.cli`).

Example::

    import hpo

    config = hpo.resolve_paths(hpo.load_config("studies/quickstart.yaml"))
    data = hpo.load_data(config)
    print(hpo.run_study(config, list(config.learners), data))
"""
import importlib
from typing import Any

from hpo.config import StudyConfig, load_config, load_data, resolve_paths, selected_learners
from hpo.errors import ConfigError, HpoError, NoTrialsLeft, RunAborted, TrackingError, TrialFailed
from hpo.storage import get_storage, storage_kind

# Tracking and the study code import MLflow (about a second): loaded on first use, so that validating a
# study (``python -m hpo.run`` on bad input) does not wait for it.
_LAZY = {"Tracker": "hpo.tracking", "open_study": "hpo.execution", "run_study": "hpo.execution",
         "tune_learner": "hpo.execution"}

__all__ = ["ConfigError", "HpoError", "NoTrialsLeft", "RunAborted", "StudyConfig", "Tracker", "TrackingError",
           "TrialFailed", "get_storage", "load_config", "load_data", "open_study", "resolve_paths", "run_study",
           "selected_learners", "storage_kind", "tune_learner"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpo' has no attribute '{name}'")
