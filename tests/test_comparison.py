"""Intervals, paired comparisons of learners and Holm's correction, on per-episode accuracies we control; and the
transductive batch norm of the embedding learners."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import torch
from scipy import stats

from hpo.reporting import EpisodeScores, compare, comparison_csv, comparison_markdown, holm
from learners.data import TaskSpec, episode_digest
from learners.registry import build_learner
from learners.statistics import mean_interval

pytestmark = pytest.mark.usefixtures("one_thread")

EPISODES = 600


def difficulties(seed: int = 0) -> np.ndarray:
    """Per-episode accuracies of a learner on episodes of very different difficulty (the spread that pairing
    removes)."""
    return np.random.default_rng(seed).uniform(0.3, 0.9, EPISODES)


def shifted(base: np.ndarray, t: float, seed: int, sd: float = 0.03) -> np.ndarray:
    """``base`` plus per-episode differences whose paired t statistic is exactly ``t`` (standardised noise)."""
    z = np.random.default_rng(seed).normal(size=len(base))
    z = (z - z.mean()) / z.std(ddof=1)
    return base + t * sd / math.sqrt(len(base)) + sd * z


def scored(name: str, accuracies: np.ndarray, digest: str = "same", bn: str = "running") -> EpisodeScores:
    return EpisodeScores(name, accuracies.tolist(), digest, bn)


def overlap(a: np.ndarray, b: np.ndarray) -> bool:
    ia, ib = mean_interval(a), mean_interval(b)
    return ia.low <= ib.high and ib.low <= ia.high


def test_intervals_are_those_of_scipy() -> None:
    x = difficulties()[:30]
    t = mean_interval(x, "t")
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (t.low, t.high) == pytest.approx((low, high), rel=1e-12)
    normal = mean_interval(x, "normal")
    assert (normal.low, normal.high) == pytest.approx(stats.norm.interval(0.95, x.mean(), stats.sem(x)), rel=1e-12)
    assert normal.half_width < t.half_width  # t is wider for few episodes
    boot = mean_interval(x, "bootstrap")
    assert boot == mean_interval(x, "bootstrap")  # seeded
    assert boot.low < x.mean() < boot.high and boot.half_width == pytest.approx(normal.half_width, rel=0.2)
    assert math.isnan(mean_interval([0.5], "t").half_width)
    with pytest.raises(ValueError, match="unknown CI method 'wald'"):
        mean_interval(x, "wald")


def test_the_paired_test_finds_a_difference_that_separate_intervals_miss() -> None:
    base = difficulties()
    better = np.clip(base + np.random.default_rng(1).normal(0.02, 0.02, EPISODES), 0, 1)
    assert overlap(better, base)  # side by side, the two intervals cannot tell them apart
    comparison = compare([scored("worse", base), scored("better", better)])
    (pair,) = comparison.pairs
    assert (pair.first, pair.second) == ("better", "worse")
    assert pair.difference.low > 0 and pair.t_p < 1e-10 and pair.wilcoxon_p < 1e-10 and pair.significant
    assert pair.t_p == stats.ttest_rel(better, base).pvalue and pair.t_p_holm == pair.t_p  # one pair: no correction
    assert comparison.ranks == {"better": 1, "worse": 2}


def test_holm_by_hand() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 0.01·3; 0.03·2; max(0.04·1, 0.06)
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # 0.6·2 capped at 1


def test_holm_is_applied_across_every_pair() -> None:
    base = difficulties()
    # a and c each differ from b with t = 2.2 (p = 0.028): significant alone, not once three pairs are tested.
    scores = {"a": shifted(base, 2.2, seed=1), "b": base, "c": shifted(base, -2.2, seed=2)}
    comparison = compare([scored(name, s) for name, s in scores.items()])
    raw = {(p.first, p.second): stats.ttest_rel(scores[p.first], scores[p.second]).pvalue for p in comparison.pairs}
    ordered = sorted(raw, key=raw.get)
    by_hand, running = {}, 0.0
    for position, key in enumerate(ordered):  # Holm's step-down, written out for three pairs
        running = max(running, min(1.0, (3 - position) * raw[key]))
        by_hand[key] = running
    for p in comparison.pairs:
        assert p.t_p == raw[(p.first, p.second)]
        assert p.t_p_holm == pytest.approx(by_hand[(p.first, p.second)], rel=1e-12)
    wilcoxon = [stats.wilcoxon(scores[p.first], scores[p.second]).pvalue for p in comparison.pairs]
    assert [p.wilcoxon_p_holm for p in comparison.pairs] == pytest.approx(holm(wilcoxon), rel=1e-12)
    flipped = {(p.first, p.second) for p in comparison.pairs if p.t_p < 0.05 <= p.t_p_holm}
    assert flipped == {("a", "b"), ("b", "c")} and comparison.ranks == {"a": 1, "b": 1, "c": 2}


def test_learners_not_significantly_worse_than_the_best_share_rank_1() -> None:
    base = difficulties()
    scores = {"best": shifted(base, 1.0, seed=3), "tied": base, "worst": shifted(base, -40, seed=4)}
    comparison = compare([scored(name, s) for name, s in scores.items()])
    assert comparison.ranks == {"best": 1, "tied": 1, "worst": 2}
    table = comparison_markdown(comparison)
    assert "| best − tied |" in table and "| best − worst | +5." in table


def test_learners_tested_on_other_episodes_are_never_paired() -> None:
    base = difficulties()
    comparison = compare([scored("a", base + 0.05), scored("b", base, digest="other"),
                          EpisodeScores("old", None, None, "running")])
    assert all(p.difference is None for p in comparison.pairs)
    reasons = {(p.first, p.second): p.reason for p in comparison.pairs}
    assert reasons[("a", "b")].startswith("episodes differ (600 episodes, digest same against 600, other")
    assert "no per-episode accuracies for old" in reasons[("a", "old")]
    assert comparison.ranks == {"a": 1, "b": 1}  # each within its own episodes
    table = comparison_markdown(comparison)
    assert "| a − b | not compared: episodes differ" in table and "2 different sets of episodes" in table
    rows = list(csv.DictReader(io.StringIO(comparison_csv(comparison))))
    assert [(r["first"], r["second"], r["difference"], r["t_p_holm"]) for r in rows] == [
        ("a", "b", "", ""), ("a", "old", "", ""), ("b", "old", "", "")]
    assert rows[0]["not_compared"] == reasons[("a", "b")]


def test_different_batch_norm_protocols_are_flagged() -> None:
    base = difficulties()
    comparison = compare([scored("protonet", base), scored("maml", base + 0.01, bn="batch")])
    assert comparison.notes == [
        "batch norm at test differs: running (protonet); batch (maml). batch statistics are transductive (each "
        "test episode normalised by its own images); set bn_at_test: batch in the embedding learners' fixed values "
        "for a like-for-like comparison"]
    assert not compare([scored("protonet", base), scored("maml", base, bn="running")]).notes
    alone = compare([scored("protonet", base)])
    assert (alone.pairs, alone.ranks) == ([], {"protonet": 1})
    assert comparison_markdown(alone) == "nothing to compare: fewer than two learners have been tested\n"


def test_the_episode_digest_tells_episodes_apart(synthetic) -> None:
    spec = TaskSpec(5, 1, 5)
    digest = episode_digest(synthetic.test, spec, 20, 2000)
    assert digest == episode_digest(synthetic.test, spec, 20, 2000)
    others = {episode_digest(synthetic.test, spec, 21, 2000), episode_digest(synthetic.test, spec, 20, 2001),
              episode_digest(synthetic.test, TaskSpec(5, 1, 4), 20, 2000), episode_digest(synthetic.val, spec, 20, 2000)}
    assert digest not in others and len(others) == 4


@pytest.mark.parametrize("learner", ["protonet", "classifier_baseline", "finetune"])
def test_transductive_batch_norm_scores_each_episode_alone(synthetic, learner: str) -> None:
    spec = TaskSpec(5, 1, 5)
    scores = {}
    for bn in ("running", "batch"):
        torch.manual_seed(0)
        model = build_learner(learner, {"bn_at_test": bn}, synthetic.train.image_shape, spec,
                              synthetic.train.num_classes)
        scores[bn] = [model.evaluate(synthetic.test, 8, seed=2000, batch_size=size) for size in (1, 8)]
    # With batch statistics per episode, the evaluation batch does not change a score.
    assert torch.equal(*scores["batch"])
    assert not torch.equal(scores["batch"][0], scores["running"][0])  # and it is another protocol
