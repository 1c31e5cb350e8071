"""Which learner is better, and by how much: paired comparisons of learners tested on the same episodes.

Separate intervals side by side cannot answer that: two learners scored on the same 600 episodes share the
episodes' difficulty, and the spread of their per-episode *differences* is much smaller than either spread. For
every pair of learners whose final tests ran on identical episodes (equal episode digests) the comparison gives:

* the mean difference (first − second, the first being the higher mean) with its paired 95% interval, by the
  study's ``test.ci`` method;
* the paired t-test and the Wilcoxon signed-rank test p-values (scipy), each with Holm's correction over all the
  pairs compared;
* whether the difference is significant: Holm-corrected paired t-test p < 0.05.

Ranks: within a set of learners tested on the same episodes, the best mean and every learner not significantly
worse than it share rank 1; the same rule ranks the rest (rank 2 is the best of those left and every learner not
significantly worse than it, and so on). Pairs tested on different episodes (another seed, episode count or
shape; or a test by a version that kept no per-episode accuracies) are listed as not compared, with the reason.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from learners.statistics import Interval, mean_interval

ALPHA = 0.05


@dataclass(frozen=True)
class EpisodeScores:
    """One learner's final test: per-episode accuracies (``None``: tested by an older version) and their digest."""

    learner: str
    accuracies: list[float] | None
    episode_digest: str | None
    bn_at_test: str

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies)) if self.accuracies else math.nan


@dataclass(frozen=True)
class PairComparison:
    """``first`` against ``second`` (the higher mean first); without ``difference``, ``reason`` says why not."""

    first: str
    second: str
    difference: Interval | None = None
    t_p: float | None = None
    wilcoxon_p: float | None = None
    t_p_holm: float | None = None
    wilcoxon_p_holm: float | None = None
    reason: str = ""

    @property
    def significant(self) -> bool:
        return self.t_p_holm is not None and self.t_p_holm < ALPHA


@dataclass
class Comparison:
    pairs: list[PairComparison]
    ranks: dict[str, int]                     # learner → rank within its episodes (absent: not comparable)
    notes: list[str] = field(default_factory=list)


def compare(tested: list[EpisodeScores], method: str = "t") -> Comparison:
    """Compare every pair of ``tested`` learners; ``method``: how the paired intervals are computed."""
    pairs = []
    for a, b in combinations(sorted(tested, key=lambda t: -t.mean if t.accuracies else math.inf), 2):
        reason = _not_pairable(a, b)
        pairs.append(PairComparison(a.learner, b.learner, reason=reason) if reason else _paired(a, b, method))
    pairs = _holm_corrected(pairs)
    comparison = Comparison(pairs, _ranks(tested, pairs))
    groups = {t.episode_digest for t in tested if t.accuracies}
    if len(groups) > 1:
        comparison.notes.append(f"the learners were tested on {len(groups)} different sets of episodes: ranks are "
                                f"within each set, and pairs across sets are not compared")
    modes = {}
    for t in tested:
        modes.setdefault(t.bn_at_test, []).append(t.learner)
    if len(modes) > 1:
        comparison.notes.append(
            "batch norm at test differs: " + "; ".join(f"{mode} ({', '.join(names)})" for mode, names in modes.items())
            + ". batch statistics are transductive (each test episode normalised by its own images); set "
              "bn_at_test: batch in the embedding learners' fixed values for a like-for-like comparison")
    return comparison


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest of m is multiplied by m − i + 1,
    kept monotone, capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - position) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _not_pairable(a: EpisodeScores, b: EpisodeScores) -> str:
    missing = [t.learner for t in (a, b) if t.accuracies is None]
    if missing:
        return f"no per-episode accuracies for {', '.join(missing)} (tested by an older version: rerun the study)"
    if a.episode_digest != b.episode_digest:
        return (f"episodes differ ({len(a.accuracies)} episodes, digest {a.episode_digest} against "
                f"{len(b.accuracies)}, {b.episode_digest}: another seed, count or shape)")
    return ""


def _paired(a: EpisodeScores, b: EpisodeScores, method: str) -> PairComparison:
    from scipy import stats  # a second to import: only once there is something to compare

    x, y = np.asarray(a.accuracies), np.asarray(b.accuracies)
    differences = x - y
    if not differences.any():  # identical scores: no evidence of a difference (scipy returns NaN)
        t_p = wilcoxon_p = 1.0
    else:
        t_p = float(stats.ttest_rel(x, y).pvalue)
        wilcoxon_p = float(stats.wilcoxon(x, y).pvalue)  # zero differences dropped (Wilcoxon's own rule)
    return PairComparison(a.learner, b.learner, mean_interval(differences, method), t_p, wilcoxon_p)


def _holm_corrected(pairs: list[PairComparison]) -> list[PairComparison]:
    compared = [i for i, p in enumerate(pairs) if p.difference is not None]
    t_holm = holm([pairs[i].t_p for i in compared])
    w_holm = holm([pairs[i].wilcoxon_p for i in compared])
    corrected = list(pairs)
    for k, i in enumerate(compared):
        p = pairs[i]
        corrected[i] = PairComparison(p.first, p.second, p.difference, p.t_p, p.wilcoxon_p, t_holm[k], w_holm[k])
    return corrected


def _ranks(tested: list[EpisodeScores], pairs: list[PairComparison]) -> dict[str, int]:
    by_pair = {(p.first, p.second): p for p in pairs} | {(p.second, p.first): p for p in pairs}
    ranks: dict[str, int] = {}
    for digest in {t.episode_digest for t in tested if t.accuracies}:
        left = sorted((t for t in tested if t.accuracies and t.episode_digest == digest), key=lambda t: -t.mean)
        rank = 1
        while left:
            leader = left[0]
            tier = [t for t in left if t is leader or not by_pair[(leader.learner, t.learner)].significant]
            ranks.update({t.learner: rank for t in tier})
            left = [t for t in left if t not in tier]
            rank += 1
    return ranks


COMPARISON_HEADER = ["pair", "mean difference ± 95% CI", "paired t p (Holm)", "Wilcoxon p (Holm)", "significant"]


def comparison_markdown(comparison: Comparison) -> str:
    """The pairs as a Markdown table, then the notes."""
    if not comparison.pairs:
        return "nothing to compare: fewer than two learners have been tested\n"
    lines = ["| " + " | ".join(COMPARISON_HEADER) + " |", "|" + "---|" * len(COMPARISON_HEADER)]
    for p in comparison.pairs:
        if p.difference is None:
            lines.append(f"| {p.first} − {p.second} | not compared: {p.reason} | - | - | - |")
            continue
        d = p.difference
        lines.append(f"| {p.first} − {p.second} | {100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}] "
                     f"({d.method}) | {_p(p.t_p)} ({_p(p.t_p_holm)}) | {_p(p.wilcoxon_p)} ({_p(p.wilcoxon_p_holm)}) | "
                     f"{'yes' if p.significant else 'no'} |")
    return "\n".join(lines + [f"\nNote: {note}." for note in comparison.notes]) + "\n"


def comparison_csv(comparison: Comparison) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["first", "second", "difference", "low", "high", "ci_method", "t_p", "t_p_holm", "wilcoxon_p",
                     "wilcoxon_p_holm", "significant", "not_compared"])
    for p in comparison.pairs:
        d = p.difference
        writer.writerow([p.first, p.second, *((d.mean, d.low, d.high, d.method) if d else ("",) * 4),
                         *(("" if v is None else v) for v in (p.t_p, p.t_p_holm, p.wilcoxon_p, p.wilcoxon_p_holm)),
                         p.significant if d else "", p.reason])
    return out.getvalue()


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"
