"""Checks that need the outside world (data on disk, databases, the device), run before anything is written.

Each failure is a :class:`ConfigError` naming the field, so a bad study stops with one line and
leaves no storage file, no MLflow database and no artifact folder behind.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import sqlalchemy
import torch

from hpo.config import ConfigError, StudyConfig
from hpo.faults import first_line
from hpo.urls import SQLITE_PREFIX, journal_path, redact, sqlite_path
from learners import experiment
from learners.data import DATASETS, DataError, DatasetSplits, TaskSpec, load_dataset


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is an error naming ``device``."""
    try:
        return experiment.resolve_device(name)
    except ValueError as error:
        raise ConfigError(str(error), "device") from error


def load_data(config: StudyConfig) -> DatasetSplits:
    """Load the dataset and check that every split can form the study's episodes."""
    dataset = config.dataset
    if dataset.name not in DATASETS:
        raise ConfigError(f"unknown dataset '{dataset.name}' (choose from {', '.join(DATASETS)})", "dataset.name")
    if dataset.root is not None and not dataset.root.is_dir():
        raise ConfigError(f"no such directory: {dataset.root}", "dataset.root")
    try:
        data = load_dataset(dataset.name, dataset.root, dataset.split, dataset.cache_dir, dataset.download)
        spec = task_spec(config)
        for split in (data.train, data.val, data.test):
            split.check_spec(spec)
    except DataError as e:  # the message names the setting (ways=..., shots+queries=...)
        raise ConfigError(str(e), "dataset") from None
    return data


def task_spec(config: StudyConfig) -> TaskSpec:
    return TaskSpec(config.dataset.ways, config.dataset.shots, config.dataset.queries)


def check_database(url: str, field: str) -> None:
    """A SQLite file must be creatable (its folder exists); other databases must accept a connection."""
    journal = journal_path(url)
    if journal is not None:  # Optuna's journal file (storage only)
        if not journal.parent.is_dir():
            raise ConfigError(f"the folder of the journal file does not exist: {journal.parent}", field)
        return
    if url.startswith(SQLITE_PREFIX):
        path = sqlite_path(url)
        if path is None:  # in memory
            return
        if not path.parent.is_dir():
            raise ConfigError(f"the folder of the SQLite file does not exist (or is not a folder): {path.parent}",
                              field)
        if path.is_dir():
            raise ConfigError(f"the SQLite file is a folder: {path}", field)
        if not os.access(path if path.exists() else path.parent, os.W_OK):  # root passes: a file stops it
            raise ConfigError(f"the SQLite file cannot be written: {path}", field)
        return
    try:
        engine = sqlalchemy.create_engine(url)
    except ImportError as e:
        # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; this project ships psycopg2.
        raise ConfigError(f"no database driver for {redact(url)} ({first_line(e)}); for PostgreSQL with "
                          f"psycopg2 write postgresql+psycopg2://", field) from None
    except Exception as e:  # bad URL syntax
        raise ConfigError(f"invalid database URL {redact(url)}: {first_line(e)}", field) from None
    try:
        with engine.connect():
            pass
    except Exception as e:
        raise ConfigError(f"cannot connect to {redact(url)}: {first_line(e)}", field) from None
    finally:
        engine.dispose()


def check_tracking_uri(uri: str, field: str = "tracking_uri") -> None:
    """MLflow tracking: a database URL (checked as above, with its artifact folder) or an MLflow server
    that answers ``/health``."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
        except (urllib.error.URLError, OSError) as e:
            raise ConfigError(f"MLflow server {redact(uri)} does not answer: {first_line(e)}", field) from None
        return
    if "://" not in uri:
        raise ConfigError(f"expected a database URL (sqlite:///mlflow.db) or an http(s) MLflow server, "
                          f"got '{redact(uri)}'", field)
    check_database(uri, field)
    check_artifact_folder(Path.cwd() / "mlruns", field)


def check_artifact_folder(folder: Path, field: str) -> None:
    """With a database backend, MLflow puts new experiments' artifacts in ./mlruns of the working directory."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"MLflow keeps artifacts in {folder}, which is not a folder", field)
    if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
        raise ConfigError(f"MLflow keeps artifacts in {folder}, which cannot be written", field)
