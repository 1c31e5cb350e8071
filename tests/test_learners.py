"""ProtoNet, Classifier-Baseline, Meta-Baseline and the fine-tune baseline learn, deterministically."""
from __future__ import annotations

import platform

import pytest
import torch

from learners.allocator import reuse_freed_memory
from learners.base import Budget, TrainingData, fit
from learners.baseline import MetaBaseline, cosine_logits
from learners.data import TaskSpec
from learners.data.episodes import fixed_episodes
from learners.experiment import RunConfig, train_and_test
from learners.finetune import apply_heads, fit_linear_heads
from learners.registry import build_learner

pytestmark = pytest.mark.usefixtures("one_thread")
LEARNERS = ["protonet", "classifier_baseline", "meta_baseline", "finetune"]
# Small pre-training batches keep the classifier learners as fast as the episodic ones.
FAST_HPARAMS = {"protonet": {}, "classifier_baseline": {"batch_size": 32}, "meta_baseline": {"batch_size": 32},
                "finetune": {"batch_size": 32}}
SPEC = TaskSpec(ways=5, shots=5, queries=5)
CHANCE = 1 / SPEC.ways


@pytest.mark.parametrize("name", LEARNERS)
def test_learner_beats_chance_on_synthetic(synthetic, name):
    # Measured after 40 steps (seed 0, 40 test episodes): 0.52-0.66 for all four, chance 0.2.
    torch.manual_seed(0)
    learner = build_learner(name, FAST_HPARAMS[name], synthetic.train.image_shape, SPEC, synthetic.train.num_classes)
    history = fit(learner, TrainingData(synthetic.train, SPEC, seed=0), synthetic.val, Budget(40, 40, 20),
                  val_seed=1, progress=False).history
    accuracy = float(learner.evaluate(synthetic.test, episodes=40, seed=2).mean())
    assert accuracy > CHANCE + 0.2
    assert history[-1].step == 40 and history[-1].val_accuracy > CHANCE + 0.1


@pytest.mark.parametrize("name", ["protonet", "classifier_baseline", "maml"])
def test_evaluation_batches_do_not_change_accuracies(synthetic, name):
    torch.manual_seed(0)
    hparams = FAST_HPARAMS.get(name, {"meta_batch": 2})
    learner = build_learner(name, hparams, synthetic.train.image_shape, SPEC, synthetic.train.num_classes)
    fit(learner, TrainingData(synthetic.train, SPEC, seed=0), None, Budget(5), val_seed=1, progress=False)
    default = learner.evaluate(synthetic.test, episodes=12, seed=2)
    for batch_size in (1, 12):  # the default on a CPU: 3 episodes of 50 images
        other = learner.evaluate(synthetic.test, episodes=12, seed=2, batch_size=batch_size)
        # Other batch shapes may round differently: allow one of an episode's 25 queries to flip.
        assert (other - default).abs().max() <= 1 / 25 + 1e-6


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_keeps_freed_memory_for_reuse():
    assert reuse_freed_memory()


def _tiny_run(name: str, seed: int, data) -> dict:
    config = RunConfig(learner=name, dataset="synthetic", ways=5, shots=1, queries=3, iterations=4, seed=seed,
                       test_episodes=10, val_interval=2, val_episodes=5, device="cpu", hparams=FAST_HPARAMS[name])
    result = train_and_test(config, data=data, progress=False).to_json()
    for point in result["history"]:
        del point["seconds"]
    return {key: value for key, value in result.items() if not key.endswith("seconds")}


@pytest.mark.parametrize("name", LEARNERS)
def test_same_seed_same_numbers(synthetic, name):
    first, second = _tiny_run(name, 0, synthetic), _tiny_run(name, 0, synthetic)
    assert first == second
    other = _tiny_run(name, 1, synthetic)
    assert (other["test_accuracy"], other["history"]) != (first["test_accuracy"], first["history"])


def test_meta_baseline_switches_from_classifier_to_episodes(synthetic):
    spec = TaskSpec(5, 1, 2)
    learner = MetaBaseline(MetaBaseline.HParams(batch_size=8, pretrain_fraction=0.5), synthetic.train.image_shape,
                           spec, synthetic.train.num_classes)
    data = TrainingData(synthetic.train, spec, seed=0)
    for step, trained, idle in [(5, learner.classifier.weight, learner.temperature),
                                (6, learner.temperature, learner.classifier.weight)]:
        learner.zero_grad(set_to_none=True)
        learner.train_step(data, step, total_steps=10)
        assert trained.grad is not None and idle.grad is None


def test_meta_baseline_rejects_bad_fraction():
    with pytest.raises(ValueError, match="pretrain_fraction"):
        MetaBaseline.HParams(pretrain_fraction=1.5)


def test_cosine_logits_are_cosines_to_class_means():
    support = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]])  # class 0 twice, class 1 once
    labels = torch.tensor([[0, 0, 1]])
    query = torch.tensor([[[5.0, 0.0], [1.0, 1.0]]])
    expected = torch.tensor([[[1.0, 0.0], [2 ** -0.5, 2 ** -0.5]]])
    assert torch.allclose(cosine_logits(support, labels, query, ways=2), expected)


def test_fine_tune_heads_are_fitted_per_task():
    torch.manual_seed(0)
    support, labels = torch.randn(3, 10, 8), torch.arange(5).repeat(2).expand(3, -1)
    weight, bias = fit_linear_heads(support, labels, ways=5, lr=0.05, steps=30)
    for task in range(3):
        alone_weight, alone_bias = fit_linear_heads(support[task:task + 1], labels[task:task + 1], 5, 0.05, 30)
        assert torch.allclose(weight[task], alone_weight[0], atol=1e-5)
        assert torch.allclose(bias[task], alone_bias[0], atol=1e-5)
    logits = apply_heads(support, weight, bias)
    assert (logits.argmax(-1) == labels).all()  # separable support: the heads fit it


class ShapeRecordingData(TrainingData):
    """Training data that records the (ways, queries per class) of every episode batch drawn."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shapes: list[tuple[int, int]] = []

    def episodes(self, tasks, ways=None, queries=None, shots=None):
        episodes = super().episodes(tasks, ways, queries, shots)
        ways = int(episodes.query_labels.max()) + 1
        self.shapes.append((ways, episodes.support.shape[1] // ways, episodes.query.shape[1] // ways))
        return episodes


@pytest.mark.parametrize("name, hparams, drawn", [
    ("protonet", {}, (5, 2, 3)),
    ("protonet", {"train_ways": 8, "train_queries": 1}, (8, 2, 1)),
    ("maml", {"train_queries": 1, "meta_batch": 2}, (5, 2, 1)),
    ("maml", {"train_shots": 1, "meta_batch": 2}, (5, 1, 3)),
])
def test_training_episode_shape_follows_train_ways_shots_and_queries(synthetic, name, hparams, drawn):
    spec = TaskSpec(ways=5, shots=2, queries=3)
    learner = build_learner(name, hparams, synthetic.train.image_shape, spec, synthetic.train.num_classes)
    data = ShapeRecordingData(synthetic.train, spec, seed=0)
    learner.train_step(data, step=1, total_steps=1)
    assert data.shapes == [drawn]
    assert learner.predict(next(iter(fixed_episodes(synthetic.val, spec, 2, seed=0))), 5).shape == (2, 15, 5)


@pytest.mark.parametrize("other_shape", [{"queries": 1}, {"shots": 1}])
def test_other_training_shapes_leave_the_run_shape_stream_alone(synthetic, other_shape):
    spec = TaskSpec(ways=5, shots=2, queries=3)
    alone = TrainingData(synthetic.train, spec, seed=0).episodes(2)
    mixed = TrainingData(synthetic.train, spec, seed=0)
    other = mixed.episodes(2, **other_shape)
    assert not torch.equal(other.support[:, :1], alone.support[:, :1])  # a stream of its own
    assert torch.equal(mixed.episodes(2).support, alone.support)


@pytest.mark.parametrize("name, field", [("protonet", "train_queries"), ("protonet", "train_ways"),
                                         ("protonet", "meta_batch"), ("maml", "train_queries"),
                                         ("maml", "train_shots")])
def test_episode_shape_hparams_must_be_positive(name, field):
    with pytest.raises(ValueError, match=f"{field} must be at least 1"):
        build_learner(name, {field: 0}, (1, 28, 28), TaskSpec(5, 1, 3), num_train_classes=10)
