"""MLflow bookkeeping with explicit run ids.

MLflow's fluent API keeps the active run per thread; every call here names its run instead, so
trials, parents and the study summary can be written from any thread or process. Everything
that goes in (params, tags, artifacts) passes through :func:`hpo.redaction.redact`.

Runs, all in one experiment named after the study:

* ``run_role=summary``: one per study, holding the summary table (Markdown and CSV);
* ``run_role=parent``: one per learner study (tag ``optuna_study``), reused when a study resumes;
* ``run_role=trial``: one per Optuna trial, nested under its parent (tag ``mlflow.parentRunId``);
* ``run_role=final_test``: one per final test, nested under its parent: the tested configuration as params.

Every MLflow error, and every file-system error writing artifacts (disk full, ``mlruns`` not
writable), becomes a :class:`~hpo.errors.TrackingError`: one line naming the tracking URI, which
stops the run.
"""
from __future__ import annotations

import functools
import json
import os
import socket
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import sqlalchemy
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, Metric, Param, Run, RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hpo.errors import TrackingError, first_line
from hpo.redaction import redact
from hpo.storage import storage_kind

ROLE_TAG = "run_role"
STUDY_TAG = "optuna_study"
TRIAL_TAG = "optuna_trial_number"
STATE_TAG = "optuna_trial_state"
RUNNING = RunStatus.to_string(RunStatus.RUNNING)
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def worker_tags() -> dict[str, str]:
    return {"worker_host": socket.gethostname(), "worker_pid": str(os.getpid())}


class ReportingClient:
    """An ``MlflowClient`` whose errors are :class:`TrackingError` (MLflow retries HTTP requests itself)."""

    def __init__(self, tracking_uri: str):
        self._uri = redact(tracking_uri)
        # Making the client opens MLflow's store; with a database backend, SqlAlchemyStore's constructor creates
        # a new database's tables (alembic), and its errors there are SQLAlchemy's own, not MlflowException.
        # The model registry is the tracking store's own, never MLFLOW_REGISTRY_URI from the environment.
        self._client = self._reported(MlflowClient)(tracking_uri, registry_uri=tracking_uri)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return self._reported(getattr(self._client, name))

    def delete_artifacts(self, run_id: str, path: str) -> None:
        """Delete a run's artifact file or folder (MlflowClient has no call for it; its artifact repositories do,
        local and behind a server's artifact proxy alike). A path that is not there is no error."""
        def delete() -> None:
            artifact_uri = self._client.get_run(run_id).info.artifact_uri
            get_artifact_repository(artifact_uri, tracking_uri=self._client.tracking_uri).delete_artifacts(path)

        self._reported(delete)()

    def _reported(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def reported(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            # OSError: artifacts, and requests' connection errors.
            except (MlflowException, OSError, sqlalchemy.exc.SQLAlchemyError) as e:
                raise TrackingError(f"MLflow tracking at {self._uri} failed: {first_line(e)}") from e

        return reported


SYSTEM_METRICS_INTERVAL_S = 10  # MLflow's default; measured overhead: docs/benchmarks.md#system-metrics


@contextmanager
def system_metrics(tracking_uri: str, run_id: str, enabled: bool) -> Iterator[None]:
    """While the block runs, MLflow samples the machine (CPU, memory, disk, network; GPUs with pynvml) into the
    run's ``system/*`` metrics (``enabled``; needs psutil)."""
    if not enabled:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor  # imports psutil

    monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, tracking_uri=tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


class Tracker:
    """One study's MLflow experiment, created (or restored) on first use.

    Args:
        tracking_uri: a database URL (``sqlite:///mlflow.db``) or an MLflow server (``http://host:5000``).
        experiment: the experiment's name: the study's name.

    Raises:
        TrackingError: MLflow cannot be reached or written.
    """

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        with storage_kind(tracking_uri).schema_lock():  # the client creates MLflow's tables in a new database
            self.client = ReportingClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            # With a database backend MLflow puts artifacts in ./mlruns of the working directory.
            self.experiment_id = self.client.create_experiment(experiment)
        else:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            self.experiment_id = found.experiment_id
        # MLflow 3's UI opens an experiment by its kind; without one it lands on the GenAI traces page. Set on
        # every start, so that experiments of earlier versions gain it when their study resumes.
        self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

    def reuse_or_start(self, role: str, key_tags: dict[str, str], name: str, params: dict[str, Any],
                       tags: dict[str, str] | None = None) -> str:
        """The run with this role and these tags, reopened as RUNNING; else a new one with ``params``.

        Params are written only when the run is created (MLflow params are immutable); tags are
        updated every time.
        """
        # Tags are stored redacted, so they are looked up redacted (a study name can hold a password's piece).
        query = " and ".join(f"tags.{k} = '{v}'" for k, v in self._clean({ROLE_TAG: role, **key_tags}).items())
        found = self.client.search_runs([self.experiment_id], query, run_view_type=ViewType.ACTIVE_ONLY,
                                        max_results=1, order_by=["attributes.start_time ASC"])
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status=RUNNING)
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=name,
                                            tags=self._clean({ROLE_TAG: role, **key_tags})).info.run_id
            self.log_params(run_id, params)
        self.set_tags(run_id, {**worker_tags(), **(tags or {})})
        return run_id

    def start_trial_run(self, parent_id: str, study: str, trial_number: int, name: str, tags: dict[str, Any],
                        params: dict[str, Any]) -> str:
        """A RUNNING trial run nested under ``parent_id``."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=self._clean({
            MLFLOW_PARENT_RUN_ID: parent_id, ROLE_TAG: "trial", STUDY_TAG: study, TRIAL_TAG: trial_number,
            **worker_tags(), **tags}))
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def trial_run(self, study: str, trial_number: int) -> str | None:
        """The run id of trial ``trial_number`` of ``study``, if it has one."""
        query = (f"tags.{ROLE_TAG} = 'trial' and tags.{STUDY_TAG} = '{self._text(study)}' "
                 f"and tags.{TRIAL_TAG} = '{trial_number}'")
        runs = self.client.search_runs([self.experiment_id], query, max_results=1)
        return runs[0].info.run_id if runs else None

    def trial_runs(self, study: str) -> list[str]:
        """The run ids of every trial run of ``study``."""
        return [run.info.run_id for run in self.role_runs("trial", study)]

    def role_runs(self, role: str, study: str) -> list[Run]:
        """Every run of ``study`` with this ``run_role``."""
        query = f"tags.{ROLE_TAG} = '{role}' and tags.{STUDY_TAG} = '{self._text(study)}'"
        return self.client.search_runs([self.experiment_id], query, max_results=10_000)

    def running_children(self, study: str) -> dict[int, str]:
        """Trial number → run id of the trial runs of ``study`` still marked RUNNING."""
        query = (f"tags.{ROLE_TAG} = 'trial' and tags.{STUDY_TAG} = '{self._text(study)}' "
                 f"and attributes.status = '{RUNNING}'")
        runs = self.client.search_runs([self.experiment_id], query, max_results=10_000)
        return {int(r.data.tags[TRIAL_TAG]): r.info.run_id for r in runs}

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self.client.log_batch(run_id, params=[Param(k, self._text(v)) for k, v in params.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0, model_id: str | None = None) -> None:
        """Log metrics of a run (``model_id``: linked to that logged model of the run, too)."""
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step, model_id=model_id)
                                               for k, v in metrics.items()])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for key, value in self._clean(tags).items():
            self.client.set_tag(run_id, key, value)

    def log_inputs(self, run_id: str, inputs: list[DatasetInput]) -> None:
        """Record the datasets a run used (:mod:`hpo.tracking._datasets`)."""
        self.client.log_inputs(run_id, datasets=inputs)

    def log_json(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.log_text(run_id, json.dumps(data, indent=2, default=str), artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, redact(text), artifact_file)

    def log_file(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def artifact_sizes(self, run_id: str, folder: str | None = None) -> dict[str, int]:
        """Path → bytes of the files directly in a run's artifact ``folder`` (the top level by default)."""
        return {info.path: info.file_size or 0 for info in self.client.list_artifacts(run_id, folder)
                if not info.is_dir}

    def download(self, run_id: str, path: str, directory: Path) -> Path:
        """A run's artifact file, copied into ``directory``."""
        return Path(self.client.download_artifacts(run_id, path, str(directory)))

    def delete_artifacts(self, run_id: str, path: str) -> None:
        self.client.delete_artifacts(run_id, path)

    def end(self, run_id: str, status: str, tags: dict[str, Any] | None = None) -> None:
        """Close a run as FINISHED, FAILED or KILLED."""
        if tags:
            self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status)

    @staticmethod
    def _text(value: Any) -> str:
        return redact(json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value))

    @classmethod
    def _clean(cls, tags: dict[str, Any]) -> dict[str, str]:
        return {k: cls._text(v) for k, v in tags.items()}
