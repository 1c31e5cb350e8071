"""What a trial costs, and where its wall time goes: its Optuna and MLflow calls (bookkeeping) versus the rest.

Each trial records the user attr ``timing``:

* ``trial_s``: the whole cycle from the end of the previous trial of the same worker (so it includes
  Optuna's tell of that trial, the stale-trial check and this trial's ask), in wall seconds;
* ``optuna_s``: the Optuna calls of the cycle (ask, tell, suggestions, reports, pruning decisions);
* ``mlflow_s``: every MLflow call of the trial;
* ``cpu_s``: the CPU seconds of the process over the same cycle as ``trial_s``
  (:func:`time.process_time`: user plus system time of every thread of the process, so torch's
  intra-op threads and MLflow's background threads count too, and it can exceed ``trial_s``);
* ``gpu_s``: on a CUDA device, the wall seconds of the objective call, the time the trial held the
  GPU (its model and batches on it) whether or not kernels were running: occupancy, not
  utilisation; ``None`` on the CPU.
"""
from __future__ import annotations

import functools
import time
from typing import Any

import optuna

from hpo.execution._objective import Objective
from hpo.reporting import TIMING_ATTR


class CallTimer:
    """Sums the wall time of the method calls made through the proxies it hands out."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, target: Any) -> Any:
        return _Timed(target, self)


class _Timed:
    def __init__(self, target: Any, timer: CallTimer):
        self._target, self._timer = target, timer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self._timer.seconds += time.perf_counter() - start

        return timed


class TimedObjective:
    """An objective that records the ``timing`` of each trial it runs (see the module docstring).

    From now on the MLflow calls of the objective's tracker are timed.
    """

    def __init__(self, objective: Objective):
        self.objective, self.optuna, self.mlflow = objective, CallTimer(), CallTimer()
        objective.tracker.client = self.mlflow.wrap(objective.tracker.client)
        self.on_gpu = objective.setup.device.type == "cuda"
        self.cycle_start, self.cpu_start = time.perf_counter(), time.process_time()

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.objective.after_trial(study, trial)

    @property
    def interrupted_trial(self) -> int | None:
        """The number of the trial that Ctrl-C / SIGTERM stopped, if one did."""
        return self.objective.interrupted_trial

    def __call__(self, trial: optuna.Trial) -> float:
        # Before the objective: the previous trial's tell, the stale-trial check and this trial's ask.
        objective_start = time.perf_counter()
        self.optuna.seconds, self.mlflow.seconds = objective_start - self.cycle_start, 0.0
        try:
            value = self.objective(self.optuna.wrap(trial))
        except Exception:  # pruned or failed: a trial whose cost counts too (not so for Ctrl-C)
            self._record(trial, objective_start)
            raise
        self._record(trial, objective_start)
        return value

    def _record(self, trial: optuna.Trial, objective_start: float) -> None:
        end, cpu_end = time.perf_counter(), time.process_time()
        trial.set_user_attr(TIMING_ATTR, {"trial_s": end - self.cycle_start, "optuna_s": self.optuna.seconds,
                                          "mlflow_s": self.mlflow.seconds, "cpu_s": cpu_end - self.cpu_start,
                                          "gpu_s": end - objective_start if self.on_gpu else None})
        self.cycle_start, self.cpu_start = end, cpu_end
