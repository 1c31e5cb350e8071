"""Checks that need the outside world (data on disk, databases, an MLflow server, the device), run before
anything is written.

Each failure is a :class:`~hpo.errors.ConfigError` naming the field, so a bad study stops with one
line and leaves no storage file, no MLflow database and no artifact folder behind.
"""
from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import torch

from hpo.config._learners import check_training_shapes
from hpo.config._schema import StudyConfig
from hpo.errors import ConfigError, first_line
from hpo.redaction import redact
from hpo.storage import storage_kind
from learners import experiment
from learners.data import DATASETS, DataError, DatasetSplits, TaskSpec, load_dataset

MLFLOW_SERVER_SCHEMES = ("http://", "https://")
ARTIFACT_FOLDER = "mlruns"  # with a database backend, MLflow keeps new experiments' artifacts in ./mlruns


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is an error naming ``device``."""
    try:
        return experiment.resolve_device(name)
    except ValueError as error:
        raise ConfigError(str(error), "device") from error


def load_data(config: StudyConfig) -> DatasetSplits:
    """Load the dataset and check that every split can form the study's episodes.

    Raises:
        ConfigError: naming ``dataset.name``, ``dataset.root`` or ``dataset`` (the message names the setting).
    """
    dataset = config.dataset
    if dataset.name not in DATASETS:
        raise ConfigError(f"unknown dataset '{dataset.name}' (choose from {', '.join(DATASETS)})", "dataset.name")
    if dataset.root is not None and not dataset.root.is_dir():
        raise ConfigError(f"no such directory: {dataset.root}", "dataset.root")
    spec = task_spec(config)
    try:
        data = load_dataset(dataset.name, dataset.root, dataset.split, dataset.cache_dir, dataset.download)
        data.check_spec(spec)
    except DataError as e:  # the message names the setting (ways=..., shots+queries=...)
        raise ConfigError(str(e), "dataset") from None
    check_training_shapes(config, spec, data.train)
    return data


def task_spec(config: StudyConfig) -> TaskSpec:
    return TaskSpec(config.dataset.ways, config.dataset.shots, config.dataset.queries)


def check_storage(url: str, field: str = "storage") -> None:
    """The Optuna storage can be used (see :meth:`hpo.storage.StorageKind.check`)."""
    storage_kind(url).check(field)


def check_warm_start(config: StudyConfig, learners: list[str]) -> None:
    """The earlier study of ``search.warm_start`` is there, for every learner to run (read, never created)."""
    source = config.search.warm_start
    if source is None:
        return
    field = "search.warm_start"
    kind = storage_kind(source.storage)
    kind.check_exists(f"{field}.storage")
    try:
        import optuna  # only when a warm start is asked for: validating a study stays light

        names = set(optuna.get_all_study_names(kind.open()))
    except Exception as e:  # SQLAlchemy's or Optuna's errors: a database that cannot be read
        raise ConfigError(f"cannot read {redact(source.storage)}: {first_line(e)}", f"{field}.storage") from None
    for learner in learners:
        name = source.study_of(learner)
        if name not in names:
            held = ", ".join(sorted(names)) or "none"
            raise ConfigError(f"no study {name} in {redact(source.storage)} (it holds: {held})", f"{field}.study")


def is_mlflow_server(uri: str) -> bool:
    return uri.startswith(MLFLOW_SERVER_SCHEMES)


def check_tracking_uri(uri: str, field: str = "tracking_uri") -> None:
    """MLflow tracking: a database URL (checked like a storage, with its artifact folder) or an MLflow server
    that answers a real API call (a port of another service can answer ``/health`` with 200 OK)."""
    if is_mlflow_server(uri):
        check_mlflow_server(uri, field)
        return
    if "://" not in uri:
        raise ConfigError(f"expected a database URL (sqlite:///mlflow.db) or an http(s) MLflow server, "
                          f"got '{redact(uri)}'", field)
    storage_kind(uri).check(field)
    check_artifact_folder(Path.cwd() / ARTIFACT_FOLDER, field)


def check_mlflow_server(uri: str, field: str) -> None:
    """Search one experiment through MLflow's REST API, as every run will; the answer must be MLflow's JSON."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise ConfigError(f"{redact(uri)} is not an MLflow server (its API answered HTTP {e.code})", field) from None
    except (urllib.error.URLError, OSError) as e:
        raise ConfigError(f"MLflow server {redact(uri)} does not answer: {first_line(e)}", field) from None
    except (http.client.HTTPException, ValueError) as e:  # another protocol, or not JSON
        raise ConfigError(f"{redact(uri)} is not an MLflow server ({type(e).__name__})", field) from None
    if not isinstance(answer, dict):
        raise ConfigError(f"{redact(uri)} is not an MLflow server (its API answered {type(answer).__name__})",
                          field)


def check_artifact_folder(folder: Path, field: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"MLflow keeps artifacts in {folder}, which is not a folder", field)
    if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
        raise ConfigError(f"MLflow keeps artifacts in {folder}, which cannot be written", field)
