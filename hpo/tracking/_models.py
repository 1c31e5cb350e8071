"""Tested models as MLflow models: logged with the learner's parent run, registered, and found again.

Why a ``pyfunc`` model and not ``mlflow.pytorch.log_model``: a few-shot model classifies query images
*relative to a support set*, so its ``predict`` must take both; a pickled ``nn.Module`` has no such
entry point, and pickling the module would tie the file to the class layout of the day. The pyfunc
model holds the same ``model.pt`` a trial keeps (:mod:`learners.checkpoint`: weights, hyperparameters,
what it was trained on and its preprocessing), rebuilds the learner from it, and its ``predict`` takes::

    {"support": uint8 [n, C, H, W], "support_labels": int64 [n] (0..ways-1), "query": uint8 [m, C, H, W]}

(images already decoded to the model's size: ``metadata["trained_on"]["preprocessing"]`` says how, and
``python -m hpo.predict`` does it from files) and returns class probabilities ``float32 [m, ways]``.
Loading it needs this project installed (``learners``), as its pip requirements say.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # MLflow's own "meanwhile" for the URI
from mlflow.types import Schema, TensorSpec

from hpo.errors import TrackingError, first_line
from hpo.redaction import redact
from hpo.tracking._checkpoints import CHECKPOINT_FOLDER, MODEL_FILE
from hpo.tracking._tracker import Tracker
from learners.checkpoint import CheckpointError, SavedModel, load_model, save_model
from learners.experiment import resolve_device
from learners.inference import probabilities

MODEL_ARTIFACT = "model"          # the pyfunc artifact holding model.pt
FINAL_TEST_TAG = "final_test"     # LoggedModel tag: which final test the model is the tested model of


# Making a PythonModel subclass, MLflow warns that predict's input has no type hint it can read as a schema (the
# signature given at logging is the schema); it installs its own "once" filter for that warning, so only
# silencing stderr while the class is made keeps it out of every command's output.
with contextlib.redirect_stderr(io.StringIO()):
    class FewShotModel(mlflow.pyfunc.PythonModel):
        """The pyfunc model of a saved few-shot learner (see the module's docstring for its input)."""

        def load_context(self, context: Any) -> None:
            self.saved = load_model(context.artifacts[MODEL_ARTIFACT])
            self.learner = self.saved.build(resolve_device("auto"))

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # hints: see above
            labels = torch.as_tensor(model_input["support_labels"], dtype=torch.long)
            return probabilities(self.learner, self.saved.trained_on.preprocessing,
                                 torch.as_tensor(model_input["support"]), labels,
                                 torch.as_tensor(model_input["query"]), int(labels.max()) + 1).numpy()


def signature(model: SavedModel) -> ModelSignature:
    images = (-1, *model.trained_on.image_shape)
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), images, "support"),
                       TensorSpec(np.dtype(np.int64), (-1,), "support_labels"),
                       TensorSpec(np.dtype(np.uint8), images, "query")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1), "probabilities")]))


def model_metadata(model: SavedModel) -> dict[str, Any]:
    """What the MLmodel file says of the model: everything needed to rebuild and feed it (JSON-ready)."""
    return {"learner": model.learner, "hparams": model.hparams, "step": model.step,
            "val_accuracy": model.val_accuracy, "trained_on": json.loads(json.dumps(asdict(model.trained_on)))}


def log_tested_model(tracker: Tracker, parent_run: str, model: SavedModel, final_test: dict[str, Any],
                     example: dict[str, np.ndarray]) -> str:
    """Log a learner's tested model as an MLflow model of its parent run; the model id.

    The final test's metrics are linked to the model, so that the UI shows them together. A model already
    logged for this final test (a run stopped before it was recorded) is found and used, not logged twice.

    Raises:
        TrackingError: MLflow cannot be reached or written.
    """
    key = final_test_key(final_test)
    found = tracker.client.search_logged_models(
        [tracker.experiment_id], filter_string=f"source_run_id = '{parent_run}'")
    model_id = next((m.model_id for m in found if m.tags.get(FINAL_TEST_TAG) == key), None)
    if model_id is None:
        with tempfile.TemporaryDirectory(prefix="fewshot-hpo-") as directory:
            path = Path(directory, MODEL_FILE)
            save_model(path, model)
            model_id = _reported(tracker, lambda: _log_pyfunc(tracker, parent_run, model, path, key, example))
    tracker.log_metrics(parent_run, {name: final_test[name] for name in ("test_accuracy", "test_ci95")},
                        model_id=model_id)
    return model_id


def _log_pyfunc(tracker: Tracker, parent_run: str, model: SavedModel, path: Path, key: str,
                example: dict[str, np.ndarray]) -> str:
    # The fluent log_model reads the global tracking URI; set only meanwhile, since MLflow also exports it to the
    # environment, where the processes this one starts would inherit it. log_model attaches the model to the
    # active run; reopening the parent this way ends it FINISHED again on exit, where tune_learner leaves it
    # anyway. Quiet: MLflow warns that a Python object is pickled (this module's class, by reference) and that
    # predict has no type hints (the signature is the schema).
    with _use_tracking_uri(tracker.tracking_uri), mlflow.start_run(run_id=parent_run), warnings.catch_warnings(), \
            _logger_level("mlflow.pyfunc", logging.ERROR):
        warnings.simplefilter("ignore", UserWarning)
        info = mlflow.pyfunc.log_model(
            name=model.learner, python_model=FewShotModel(), artifacts={MODEL_ARTIFACT: str(path)},
            signature=signature(model), input_example=example, metadata=model_metadata(model),
            params={k: json.dumps(v) if isinstance(v, (list, tuple)) else v for k, v in model.hparams.items()},
            tags={FINAL_TEST_TAG: key, "learner": model.learner}, model_type="few-shot image classifier",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                              "numpy", "pillow", "fewshot-hpo  # this project: learners/ rebuilds the model"])
    return info.model_id


def register_tested_model(tracker: Tracker, name: str, model_id: str, parent_run: str, tags: dict[str, Any]) -> str:
    """Register a logged model of ``parent_run`` under ``name``; its version (the existing one when it is
    registered already: a run stopped before it was recorded)."""
    client = tracker.client
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description="The tested model of a fewshot-hpo learner study; "
                                                         "a new version whenever the study tests a new model.")
    # The store may leave a version's model_id empty; its source names the model.
    version = next((v for v in client.search_model_versions(f"name = '{name}'") if v.source == f"models:/{model_id}"),
                   None)
    if version is None:
        version = client.create_model_version(name, f"models:/{model_id}", run_id=parent_run, model_id=model_id)
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    return str(version.version)


@contextlib.contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def final_test_key(final_test: dict[str, Any]) -> str:
    return f"trial {final_test['trial']}, {final_test['how']}, {final_test['episodes']} test episodes"


def _reported(tracker: Tracker, call: Any) -> Any:
    try:
        return call()
    except (MlflowException, OSError) as e:
        raise TrackingError(f"MLflow tracking at {redact(tracker.tracking_uri)} failed: {first_line(e)}") from e


def fetch_model(reference: str, tracking_uri: str) -> SavedModel:
    """The saved model ``reference`` names: a registry URI (``models:/name/version``, ``models:/name@alias``,
    ``models:/<model id>``), a ``runs:/<run id>/<path>`` URI, or an MLflow run id (its logged model, else its
    kept ``model.pt``, else its newest checkpoint).

    Every call names ``tracking_uri``, which is also the registry (as where a study registers): MLflow's global
    URIs, and MLFLOW_REGISTRY_URI in the environment, are neither read nor set.

    Raises:
        CheckpointError: nothing there, or not a model of this version (one line, naming ``reference``).
        TrackingError: MLflow cannot be reached.
    """
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        if not reference.startswith(("models:/", "runs:/")):
            reference = _run_model_uri(client, reference)
        if reference.startswith("runs:/"):
            run_id, _, path = reference[len("runs:/"):].partition("/")
            download = functools.partial(client.download_artifacts, run_id, path)
        else:
            location = client.get_logged_model(_logged_model_id(client, reference)).artifact_location
            repository = get_artifact_repository(location, tracking_uri=tracking_uri)
            download = functools.partial(repository.download_artifacts, f"artifacts/{MODEL_FILE}")
        with tempfile.TemporaryDirectory(prefix="fewshot-hpo-") as directory:
            local = Path(download(directory))
            if local.is_dir():  # a run's folder holding an MLflow model
                local = local / "artifacts" / MODEL_FILE
                if not local.is_file():
                    raise CheckpointError(f"{reference} is not a model of fewshot-hpo (no artifacts/{MODEL_FILE})")
            return load_model(local)
    except MlflowException as e:
        raise CheckpointError(f"no model {reference} at {redact(tracking_uri)} ({first_line(e)})") from None
    except OSError as e:
        raise TrackingError(f"MLflow tracking at {redact(tracking_uri)} failed: {first_line(e)}") from e


def _logged_model_id(client: mlflow.MlflowClient, reference: str) -> str:
    """The logged model of ``models:/m-<id>``, ``models:/name/version`` or ``models:/name@alias``."""
    named = reference[len("models:/"):]
    if named.startswith("m-"):
        return named
    name, at, alias = named.partition("@")
    version = client.get_model_version_by_alias(name, alias) if at else client.get_model_version(*named.split("/", 1))
    if not version.source.startswith("models:/m-"):
        raise CheckpointError(f"{reference} is not a model of fewshot-hpo (its source is {version.source})")
    return version.source[len("models:/"):]


def _run_model_uri(client: mlflow.MlflowClient, run_id: str) -> str:
    """The URI of a run's model: its logged model, else its kept model, else its newest checkpoint."""
    try:
        run = client.get_run(run_id)
        if run.outputs is not None and run.outputs.model_outputs:
            return f"models:/{run.outputs.model_outputs[-1].model_id}"
        top = {a.path for a in client.list_artifacts(run_id)}
        if MODEL_FILE in top:
            return f"runs:/{run_id}/{MODEL_FILE}"
        checkpoints = sorted(a.path for a in client.list_artifacts(run_id, CHECKPOINT_FOLDER))
    except MlflowException as e:
        raise CheckpointError(f"no run {run_id} at {redact(client.tracking_uri)} ({first_line(e)})") from None
    if not checkpoints:
        raise CheckpointError(f"run {run_id} has no model: no logged model, no {MODEL_FILE}, no checkpoint")
    return f"runs:/{run_id}/{checkpoints[-1]}"
