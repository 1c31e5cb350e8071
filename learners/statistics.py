"""Confidence intervals of a mean accuracy over episodes: the one place that decides how an interval is computed.

Methods (``test.ci`` in a study file):

* ``t``: Student's t with n−1 degrees of freedom, ``mean ± t(0.975, n−1) · sd / √n`` (the default; exact for normal
  per-episode accuracies, and wider than ``normal`` for few episodes);
* ``normal``: the normal approximation, ``mean ± z(0.975) · sd / √n`` (what most papers print);
* ``bootstrap``: the percentile interval of 10,000 resampled means, seeded, so the same accuracies give the same
  interval (it may be asymmetric; its half-width is half its length).

Example::

    interval = mean_interval(learner.evaluate(data.test, episodes=600, seed=2000), "t")
    print(f"{100 * interval.mean:.2f}% ± {100 * interval.half_width:.2f} ({interval.method})")
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

CI_METHODS = ("t", "normal", "bootstrap")
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000
# 10,000 resamples of 600 episodes take about 50 ms; resampled in chunks so memory stays at a few MB.
_BOOTSTRAP_CHUNK = 1_000


@dataclass(frozen=True)
class Interval:
    """A mean and its 95% confidence interval ``[low, high]`` (NaN bounds for fewer than two values)."""

    mean: float
    low: float
    high: float
    method: str

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def check_ci_method(method: str) -> None:
    """Raise ``ValueError`` for an unknown method."""
    if method not in CI_METHODS:
        raise ValueError(f"unknown CI method '{method}' (choose from {', '.join(CI_METHODS)})")


def mean_interval(values: torch.Tensor | Sequence[float], method: str = "t", seed: int = 0) -> Interval:
    """The mean of ``values`` (per-episode accuracies, or paired differences) with its 95% interval by ``method``;
    ``seed`` fixes the bootstrap's resamples."""
    check_ci_method(method)
    x = np.asarray(values.double().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, method)
    if method == "bootstrap":
        generator = np.random.default_rng(seed)
        means = np.concatenate([x[generator.integers(0, len(x), (_BOOTSTRAP_CHUNK, len(x)))].mean(axis=1)
                                for _ in range(BOOTSTRAP_RESAMPLES // _BOOTSTRAP_CHUNK)])
        low, high = np.quantile(means, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
        return Interval(mean, float(low), float(high), method)
    if method == "t":
        # scipy.special, not scipy.stats (the same quantile function): 0.4 s to import against 1.1 s, paid by every
        # process that tests; here, not at the top, so that worker processes do not pay it.
        from scipy.special import stdtrit

        quantile = float(stdtrit(len(x) - 1, (1 + CI_LEVEL) / 2))
    else:
        quantile = statistics.NormalDist().inv_cdf((1 + CI_LEVEL) / 2)
    half = float(quantile * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, method)


def describe_method(method: str) -> str:
    """How an interval of ``method`` was computed, in words (protocol cards, registered models)."""
    return {"t": "95% CI, Student's t with n-1 degrees of freedom",
            "normal": "95% CI, normal approximation",
            "bootstrap": f"95% CI, percentile bootstrap of {BOOTSTRAP_RESAMPLES} resampled means"}[method]
