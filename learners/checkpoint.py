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
are used the same way.

Files are written atomically (a temporary file next to the target, flushed to disk, then renamed
over it), so a kill during a save leaves the previous checkpoint readable. A file names the
learner and hyperparameters it was trained with, and loading it for another refuses.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from learners.base import FitState, Selection, ValidationPoint

FORMAT = 2  # bumped when the layout of a checkpoint file changes
TRAINING, MODEL = "training", "model"  # the two kinds of file


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or of another run (one-line message)."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint of another learner or other hyperparameters: never continued from."""


@dataclass
class SavedModel:
    """A kept model: the weights a run selected, and what they are."""

    learner: str
    hparams: dict[str, Any]  # every value it trained with
    step: int                # the training step of the weights
    val_accuracy: float | None
    weights: dict[str, Any]


def save_checkpoint(path: str | Path, learner: str, hparams: dict[str, Any], state: FitState) -> None:
    """Write ``state`` of a run of ``learner`` with ``hparams`` (every value it trains with) to ``path``,
    atomically.

    Raises:
        OSError: the file cannot be written (disk full, folder missing); a previous file is left as it was.
    """
    # Not asdict(state): it rebuilds dict subclasses from pairs, which breaks the scheduler's Counter.
    _write(path, {"kind": TRAINING, "learner": learner, "hparams": hparams,
                  "state": {**vars(state), "history": [asdict(point) for point in state.history],
                            "selection": asdict(state.selection)}})


def save_model(path: str | Path, model: SavedModel) -> None:
    """Write a kept model (weights only) to ``path``, atomically (raises as :func:`save_checkpoint`)."""
    _write(path, {"kind": MODEL, **vars(model)})


def load_checkpoint(path: str | Path, learner: str, hparams: dict[str, Any]) -> FitState:
    """The state saved in ``path``, which must be a training checkpoint of a run of ``learner`` with exactly
    ``hparams``.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, of another format, or of another run.
    """
    payload = _read(path)
    if payload["kind"] != TRAINING:
        raise CheckpointError(f"{path} holds a model without its training state; a run cannot continue from it")
    if payload["learner"] != learner or payload["hparams"] != hparams:
        changed = sorted(k for k in {*payload["hparams"], *hparams}
                         if payload["hparams"].get(k) != hparams.get(k)) if payload["learner"] == learner else []
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
    if payload["kind"] == MODEL:
        return SavedModel(**{k: v for k, v in payload.items() if k not in ("kind", "format")})
    state = payload["state"]
    step = state["step"] if state["best_model"] is None else state["selection"]["best_step"]
    accuracy = next((p["val_accuracy"] for p in state["history"] if p["step"] == step), None)
    return SavedModel(payload["learner"], payload["hparams"], step, accuracy,
                      state["model"] if state["best_model"] is None else state["best_model"])


def _write(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with temporary.open("wb") as handle:
            torch.save({"format": FORMAT, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read(path: str | Path) -> dict[str, Any]:
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as e:  # truncated or not a checkpoint: torch raises several kinds
        raise CheckpointError(f"cannot read the checkpoint {path} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no message'})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this version (format {FORMAT})")
    return payload
