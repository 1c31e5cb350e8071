"""Checkpoints of a training run: everything :func:`learners.fit` needs to continue it exactly.

A :class:`~learners.base.FitState` holds the weights (with batch-norm statistics), the optimiser and learning-rate
schedule, every random generator the run draws from (each training-episode stream and the
labelled-batch stream of :class:`~learners.base.TrainingData`, torch's global generator, CUDA's
where used), the validation history and the early-stopping count (with the best validation's weights
while ``select: best`` keeps an earlier model). ``fit`` hands one out after every validation and takes one
to continue from; on the CPU the continued run is bit-identical to one never stopped.

Two kinds of file share one format: a *training checkpoint* (:func:`save_checkpoint`, all of the above)
and a *model* (:func:`save_model`, the kept weights only, a quarter of the size with Adam's two moments
gone). :func:`load_model` reads either, so a one-off ``learners.train --save`` run and a study's kept model
are used the same way. Both say what the model was trained on (:class:`TrainedOn`: dataset, seed, episode
and image shape, and the preprocessing of its images), so a model file alone rebuilds the learner and feeds
it new images (:meth:`SavedModel.build`).

Files are written atomically (a temporary file next to the target, flushed to disk, then renamed
over it), so a kill during a save leaves the previous checkpoint readable. A file names the
learner and hyperparameters it was trained with, and loading it for another refuses.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from learners.base import FitState, Learner, Selection, ValidationPoint
from learners.data import TaskSpec
from learners.data.preprocessing import Preprocessing
from learners.files import write_atomically
from learners.registry import build_learner, hparams_with_defaults

FORMAT = 3  # bumped when the layout of a checkpoint file changes
# Format 2 files (a study's kept models before models carried TrainedOn) are read too, without it: a study that
# resumes fills it in from its own setup (TrainingSetup.load), so an earlier study's final test still runs.
READABLE = (2, FORMAT)
TRAINING, MODEL = "training", "model"  # the two kinds of file


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or of another run (one-line message)."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint of another learner or other hyperparameters: never continued from."""


@dataclass(frozen=True)
class TrainedOn:
    """What a model was trained on: enough to rebuild its network without the dataset, to feed it new images,
    and to test it again on the episodes its run was tested on."""

    dataset: str                          # registry name, and the class split loaded
    split: str
    seed: int                             # the run's seed: its validation and test episodes derive from it
    spec: TaskSpec                        # the episode shape it was trained and tested for
    image_shape: tuple[int, int, int]
    train_classes: int                    # width of a pre-training classifier head
    preprocessing: Preprocessing          # how an image file becomes its input

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainedOn:
        return cls(**{**data, "spec": TaskSpec(**data["spec"]), "image_shape": tuple(data["image_shape"]),
                      "preprocessing": Preprocessing(**data["preprocessing"])})


@dataclass
class SavedModel:
    """A kept model: the weights a run selected, and what they are."""

    learner: str
    hparams: dict[str, Any]  # every value it trained with
    step: int                # the training step of the weights
    val_accuracy: float | None
    weights: dict[str, Any]
    trained_on: TrainedOn | None  # None: a format 2 file

    def build(self, device: torch.device | str = "cpu", spec: TaskSpec | None = None) -> Learner:
        """The learner with these weights, on ``device``, for episodes of shape ``spec`` (default: its own).

        Raises:
            CheckpointError: a format 2 file, which does not say what the model was trained on.
            DataError: the learner has a head of fixed width (MAML, Reptile) and ``spec`` other ways.
        """
        trained_on = self.trained_on
        if trained_on is None:
            raise CheckpointError("the model was saved by an earlier version (format 2), without its image shape "
                                  "and preprocessing; rerun its study to publish it with them")
        learner = build_learner(self.learner, self.hparams, trained_on.image_shape, trained_on.spec,
                                trained_on.train_classes).to(device)
        learner.load_state_dict(self.weights)
        if spec is not None:
            learner.check_ways(spec.ways)
            learner.spec = spec  # the shape evaluate() samples; only a fixed head was built for the trained one
        return learner


def save_checkpoint(path: str | Path, learner: str, hparams: dict[str, Any], trained_on: TrainedOn,
                    state: FitState) -> None:
    """Write ``state`` of a run of ``learner`` with ``hparams`` (every value it trains with) on ``trained_on``
    to ``path``, atomically.

    Raises:
        OSError: the file cannot be written (disk full, folder missing); a previous file is left as it was.
    """
    # Not asdict(state): it rebuilds dict subclasses from pairs, which breaks the scheduler's Counter.
    _write(path, {"kind": TRAINING, "learner": learner, "hparams": hparams, "trained_on": asdict(trained_on),
                  "state": {**vars(state), "history": [asdict(point) for point in state.history],
                            "selection": asdict(state.selection)}})


def save_model(path: str | Path, model: SavedModel) -> None:
    """Write a kept model (weights only) to ``path``, atomically (raises as :func:`save_checkpoint`)."""
    _write(path, {"kind": MODEL, **vars(model), "trained_on": asdict(model.trained_on)})


def load_checkpoint(path: str | Path, learner: str, hparams: dict[str, Any]) -> FitState:
    """The state saved in ``path``, which must be a training checkpoint of a run of ``learner`` with exactly
    ``hparams``.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, of another format, or of another run.
    """
    payload = _read(path)
    if payload["kind"] != TRAINING:
        raise CheckpointError(f"{path} holds a model without its training state; a run cannot continue from it")
    # A checkpoint of an earlier version lacks the hyperparameters added since: it trained with their defaults.
    saved = hparams_with_defaults(learner, payload["hparams"]) if payload["learner"] == learner else payload["hparams"]
    if payload["learner"] != learner or saved != hparams:
        changed = sorted(k for k in {*saved, *hparams}
                         if saved.get(k) != hparams.get(k)) if payload["learner"] == learner else []
        raise CheckpointMismatch(f"{path} is a checkpoint of {payload['learner']}"
                              f"{' with other ' + ', '.join(changed) if changed else ''}, not of this run")
    state = payload["state"]
    return FitState(**{**state, "history": [ValidationPoint(**point) for point in state["history"]],
                       "selection": Selection(**state["selection"])})


def load_model(path: str | Path) -> SavedModel:
    """The model in ``path``: a kept model, or the model a training checkpoint has selected so far.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, or of another format.
    """
    payload = _read(path)
    trained_on = TrainedOn.from_dict(payload["trained_on"]) if "trained_on" in payload else None
    if payload["kind"] == MODEL:
        return SavedModel(**{k: v for k, v in payload.items() if k not in ("kind", "format", "trained_on")},
                          trained_on=trained_on)
    state = payload["state"]
    step = state["step"] if state["best_model"] is None else state["selection"]["best_step"]
    accuracy = next((p["val_accuracy"] for p in state["history"] if p["step"] == step), None)
    return SavedModel(payload["learner"], payload["hparams"], step, accuracy,
                      state["model"] if state["best_model"] is None else state["best_model"], trained_on)


def _write(path: str | Path, payload: dict[str, Any]) -> None:
    write_atomically(path, lambda handle: torch.save({"format": FORMAT, **payload}, handle))


def _read(path: str | Path) -> dict[str, Any]:
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as e:  # truncated or not a checkpoint: torch raises several kinds
        raise CheckpointError(f"cannot read the checkpoint {path} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no message'})") from None
    if not isinstance(payload, dict) or payload.get("format") not in READABLE:
        found = f"format {payload['format']}" if isinstance(payload, dict) and "format" in payload else "no format"
        raise CheckpointError(f"{path} is not a checkpoint of this version ({found}; this version reads "
                              f"format {' and '.join(map(str, READABLE))})")
    return payload
