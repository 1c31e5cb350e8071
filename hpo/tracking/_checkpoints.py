"""A trial's checkpoints and kept model, stored with the trial's MLflow run artifacts.

Why MLflow's artifacts and not an ``optuna.artifacts`` store: every worker of a study already
reaches its MLflow, on other machines through the tracking server's artifact proxy
(``mlflow server`` serves artifacts by default), on one machine in ``./mlruns``. An Optuna
artifact store would be a second shared store to set up (a shared folder or a bucket) next to the
Optuna database, and the model would sit apart from the run it belongs to.

A trial run holds, while the trial runs, ``checkpoints/step-<step>.pt`` (the training checkpoint of
its last validation; see :mod:`learners.checkpoint`) and, once it completes, ``model.pt`` (the kept
weights only). An artifact store copies a file into place, which is not atomic, so every
checkpoint has its own name and the one before it is deleted only after the new one is stored: a
kill during an upload leaves the previous checkpoint, and a reader passes over a truncated newest
one to it.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hpo.errors import RunAborted
from hpo.tracking._tracker import Tracker
from learners.base import FitState, ValidationPoint
from learners.checkpoint import (CheckpointError, CheckpointMismatch, SavedModel, TrainedOn, load_checkpoint,
                                 load_model, save_checkpoint, save_model)

CHECKPOINT_FOLDER = "checkpoints"
MODEL_FILE = "model.pt"


class TrialCheckpoints:
    """The checkpoints of one trial run, and the checkpoints it may continue from.

    Args:
        tracker, run_id: the trial's MLflow run.
        learner, hparams: the trial's learner and every hyperparameter value it trains with.
        trained_on: what it trains on (saved with every checkpoint and the model).
        earlier_runs: the runs of the trials this trial retries, the latest first (their checkpoints
            are where it continues from; they are deleted once this run has one of its own).
    """

    def __init__(self, tracker: Tracker, run_id: str, learner: str, hparams: dict[str, Any], trained_on: TrainedOn,
                 earlier_runs: list[str]):
        self.tracker, self.run_id, self.learner, self.hparams = tracker, run_id, learner, hparams
        self.trained_on = trained_on
        self.earlier_runs = earlier_runs
        self._saved: str | None = None  # this run's checkpoint artifact

    def latest(self) -> tuple[FitState, str] | None:
        """The newest readable checkpoint of the earlier runs, and its run; ``None`` if they have none.

        An unreadable checkpoint (truncated by a kill during its upload, corrupt) is passed over for
        the one before it, with a warning.

        Raises:
            CheckpointError: checkpoints exist but none is readable, or one is of another run.
        """
        unreadable: list[str] = []
        for run in self.earlier_runs:
            for artifact in sorted(self.tracker.artifact_sizes(run, CHECKPOINT_FOLDER), reverse=True):
                with tempfile.TemporaryDirectory(prefix="fewshot-hpo-") as directory:
                    path = self.tracker.download(run, artifact, Path(directory))
                    try:
                        return load_checkpoint(path, self.learner, self.hparams), run
                    except CheckpointMismatch as e:
                        raise CheckpointMismatch(f"run {run}: {artifact}: {_after_path(e, path)}") from None
                    except CheckpointError as e:
                        reason = f"run {run}: {artifact}: {_after_path(e, path)}"
                        print(f"warning: passing over an unreadable checkpoint ({reason})", file=sys.stderr)
                        unreadable.append(reason)
        if unreadable:
            raise CheckpointError(f"no readable checkpoint to continue from ({unreadable[0]})")
        return None

    def save(self, state: FitState) -> None:
        """Store ``state`` as this run's checkpoint, then delete the one before it (and the earlier runs')."""
        artifact = f"{CHECKPOINT_FOLDER}/step-{state.step:08d}.pt"
        with tempfile.TemporaryDirectory(prefix="fewshot-hpo-") as directory:
            path = Path(directory, Path(artifact).name)
            try:
                save_checkpoint(path, self.learner, self.hparams, self.trained_on, state)
            except OSError as e:
                raise RunAborted(f"cannot write the checkpoint of step {state.step} in {directory}: "
                                 f"{e.strerror or e}") from e
            try:
                self.tracker.log_file(self.run_id, path, CHECKPOINT_FOLDER)
            except RunAborted:
                self._delete_partial(artifact)
                raise
        previous, self._saved = self._saved, artifact
        if previous is not None:
            self.tracker.delete_artifacts(self.run_id, previous)
        else:
            self._delete_earlier()

    def keep_model(self, weights: dict[str, Any], selected: ValidationPoint) -> int:
        """Store the trial's selected weights as ``model.pt`` and delete its checkpoints; return the bytes."""
        model = SavedModel(self.learner, self.hparams, selected.step, selected.val_accuracy, weights, self.trained_on)
        with tempfile.TemporaryDirectory(prefix="fewshot-hpo-") as directory:
            path = Path(directory, MODEL_FILE)
            try:
                save_model(path, model)
            except OSError as e:
                raise RunAborted(f"cannot write the model of step {selected.step} in {directory}: "
                                 f"{e.strerror or e}") from e
            size = path.stat().st_size
            try:
                self.tracker.log_file(self.run_id, path)
            except RunAborted:
                self._delete_partial(MODEL_FILE)
                raise
        self.discard_checkpoints()
        return size

    def discard_checkpoints(self) -> None:
        """Delete the training checkpoints of this run and of the runs it continued from."""
        self.tracker.delete_artifacts(self.run_id, CHECKPOINT_FOLDER)
        self._saved = None
        self._delete_earlier()

    def _delete_partial(self, artifact: str) -> None:
        """After a failed upload (disk full): remove what the store copied of it, if it can."""
        try:
            self.tracker.delete_artifacts(self.run_id, artifact)
        except RunAborted:
            pass  # tracking is gone altogether; the upload's own error is the one to report

    def _delete_earlier(self) -> None:
        for run in self.earlier_runs:
            self.tracker.delete_artifacts(run, CHECKPOINT_FOLDER)


def load_kept_model(tracker: Tracker, run_id: str) -> SavedModel:
    """The kept model of a trial run.

    Raises:
        CheckpointError: the run has no kept model, or it is unreadable.
    """
    if MODEL_FILE not in tracker.artifact_sizes(run_id):
        raise CheckpointError(f"run {run_id} has no {MODEL_FILE} (checkpoints.keep: none, or it was deleted)")
    with tempfile.TemporaryDirectory(prefix="fewshot-hpo-") as directory:
        return load_model(tracker.download(run_id, MODEL_FILE, Path(directory)))


def stored_bytes(tracker: Tracker, run_ids: list[str]) -> int:
    """Bytes of the models and checkpoints the runs hold."""
    return sum(size for run in run_ids for folder in (None, CHECKPOINT_FOLDER)
               for path, size in tracker.artifact_sizes(run, folder).items()
               if folder is not None or path == MODEL_FILE)


def _after_path(error: CheckpointError, path: Path) -> str:
    """The message without the temporary file's path (the artifact is named instead)."""
    return str(error).replace(f"{path} ", "").replace(str(path), "the file")
