"""Checkpoints of a training run: everything :func:`learners.fit` needs to continue it exactly.

A :class:`~learners.base.FitState` holds the weights (with batch-norm statistics), the optimiser and learning-rate
schedule, every random generator the run draws from (each training-episode stream and the
labelled-batch stream of :class:`~learners.base.TrainingData`, torch's global generator, CUDA's
where used) and the validation history. ``fit`` hands one out after every validation and takes one
to continue from; on the CPU the continued run is bit-identical to one never stopped.

Files are written atomically (a temporary file next to the target, flushed to disk, then renamed
over it), so a kill during a save leaves the previous checkpoint readable. A file names the
learner and hyperparameters it was trained with, and loading it for another refuses.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from learners.base import FitState, ValidationPoint

FORMAT = 1  # bumped when the layout of a checkpoint file changes


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or of another run (one-line message)."""


def save_checkpoint(path: str | Path, learner: str, hparams: dict[str, Any], state: FitState) -> None:
    """Write ``state`` of a run of ``learner`` with ``hparams`` (every value it trains with) to ``path``,
    atomically."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    payload = {"format": FORMAT, "learner": learner, "hparams": hparams,
               # Not asdict(state): it rebuilds dict subclasses from pairs, which breaks the scheduler's Counter.
               "state": {**vars(state), "history": [asdict(point) for point in state.history]}}
    try:
        with temporary.open("wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, learner: str, hparams: dict[str, Any]) -> FitState:
    """The state saved in ``path``, which must be of a run of ``learner`` with exactly ``hparams``.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, of another format, or of another run.
    """
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as e:  # truncated or not a checkpoint: torch raises several kinds
        raise CheckpointError(f"cannot read the checkpoint {path} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no message'})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this version (format {FORMAT})")
    if payload["learner"] != learner or payload["hparams"] != hparams:
        changed = sorted(k for k in {*payload["hparams"], *hparams}
                         if payload["hparams"].get(k) != hparams.get(k)) if payload["learner"] == learner else []
        raise CheckpointError(f"{path} is a checkpoint of {payload['learner']}"
                              f"{' with other ' + ', '.join(changed) if changed else ''}, not of this run")
    state = payload["state"]
    return FitState(**{**state, "history": [ValidationPoint(**point) for point in state["history"]]})
