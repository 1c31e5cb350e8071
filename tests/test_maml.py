"""MAML and Reptile: batched (vmapped) meta-gradients against a per-task loop, learning, determinism."""
from __future__ import annotations

import pytest
import torch

from learners.backbones import with_pytorch_layers
from learners.base import Budget, TrainingData, fit
from learners.data.episodes import EpisodeSampler, Episodes, ImageSplit, TaskSpec
from learners.functional import classification_loss
from learners.maml import MAML, MAMLHParams, per_task_meta_gradient
from learners.registry import build_learner
from learners.reptile import Reptile, ReptileHParams
from tests.helpers import spread_batch_norm_affine

SMALL_SHAPE = (1, 16, 16)
SPEC = TaskSpec(ways=5, shots=1, queries=3)


def random_split() -> ImageSplit:
    images = torch.randint(0, 256, (8, SPEC.shots + SPEC.queries, *SMALL_SHAPE), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return ImageSplit.from_equal_classes("random", images, [f"c{i}" for i in range(8)])


def random_episodes(tasks: int) -> Episodes:
    episodes = EpisodeSampler(random_split(), SPEC, seed=0).sample(tasks)
    episodes.support, episodes.query = episodes.support.double(), episodes.query.double()
    return episodes


def small_maml(**hparams) -> MAML:
    torch.manual_seed(0)
    return MAML(MAMLHParams(**hparams), SMALL_SHAPE, SPEC, num_train_classes=8).double()


def vmapped_meta_gradient(learner: MAML, episodes: Episodes, inner_steps: int, first_order: bool) -> dict:
    params = learner.meta_parameters()
    grads = torch.autograd.grad(learner.meta_loss(episodes, inner_steps, first_order), list(params.values()))
    return dict(zip(params, grads))


def max_abs_difference(a: dict, b: dict) -> float:
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("images_per_chunk", [1000, 15])  # all 4 tasks at once; uneven chunks of 3+1 and 1
@pytest.mark.parametrize("backbone", ["conv4", "conv4_strided"])
@pytest.mark.parametrize("mixed_signs", [False, True])  # batch-norm weights of both signs (see conv_batch_norm)
def test_vmapped_meta_gradient_equals_per_task_loop(first_order: bool, images_per_chunk: int, backbone: str,
                                                    mixed_signs: bool) -> None:
    learner, episodes = small_maml(inner_lr=0.5, backbone=backbone), random_episodes(tasks=4)
    if mixed_signs:
        spread_batch_norm_affine(learner.backbone, (-1.5, 1.5))
    learner.cpu_images_per_batch = images_per_chunk
    vmapped = vmapped_meta_gradient(learner, episodes, inner_steps=2, first_order=first_order)
    # The loop needs no vmap-safe batch norm: PyTorch's kernel gives an independent reference.
    reference = per_task_meta_gradient(with_pytorch_layers(learner), episodes, inner_steps=2,
                                       first_order=first_order)
    assert max_abs_difference(vmapped, reference) < 1e-5


def test_second_order_term_is_not_negligible() -> None:
    learner, episodes = small_maml(inner_lr=0.5), random_episodes(tasks=4)
    second = vmapped_meta_gradient(learner, episodes, inner_steps=2, first_order=False)
    first = vmapped_meta_gradient(learner, episodes, inner_steps=2, first_order=True)
    assert max_abs_difference(second, first) > 1e-2


def test_predict_adapts_under_no_grad() -> None:
    learner, episodes = small_maml(test_inner_steps=2), random_episodes(tasks=3)
    learner.eval()
    with torch.no_grad():
        adapted_without_grad = learner.predict(episodes, 5)
        unadapted = learner.task_logits({n: p.expand(3, *p.shape) for n, p in learner.meta_parameters().items()},
                                        episodes.query)
    adapted_with_grad = learner.predict(episodes, 5)
    assert adapted_without_grad.shape == (3, SPEC.ways * SPEC.queries, SPEC.ways)
    torch.testing.assert_close(adapted_without_grad, adapted_with_grad.detach())
    assert (adapted_without_grad - unadapted).abs().max() > 1e-3


def test_reptile_with_one_full_batch_step_follows_the_mean_task_gradient() -> None:
    # With one inner step on all of a task's images, θ − adapted θ = inner_lr · ∇loss (Nichol et al. 2018, §5).
    torch.manual_seed(0)
    hparams = ReptileHParams(inner_lr=0.3, inner_steps=1, meta_batch=3, inner_batch=100)
    learner = Reptile(hparams, SMALL_SHAPE, SPEC, num_train_classes=8)
    learner.train_step(TrainingData(random_split(), SPEC, seed=0), step=1, total_steps=1)
    episodes = TrainingData(random_split(), SPEC, seed=0).episodes(3)  # the same three tasks
    params = learner.meta_parameters()
    expected = {name: torch.zeros_like(p) for name, p in params.items()}
    for task in range(3):
        images = torch.cat([episodes.support[task], episodes.query[task]])
        labels = torch.cat([episodes.support_labels[task], episodes.query_labels[task]])
        loss = classification_loss(learner, params, images, labels)
        for name, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            expected[name] += hparams.inner_lr * g / 3
    assert max_abs_difference({n: p.grad for n, p in params.items()}, expected) < 1e-5


def trained_learner(name: str, hparams: dict, synthetic, seed: int = 0, iterations: int = 30,
                    val_episodes: int = 40) -> tuple[list[float], float]:
    """Validation accuracies of ``fit`` and the accuracy of the untrained learner on the same episodes."""
    spec = TaskSpec(ways=5, shots=1, queries=5)
    torch.manual_seed(seed)
    learner = build_learner(name, hparams, synthetic.train.image_shape, spec, synthetic.train.num_classes)
    untrained = float(learner.evaluate(synthetic.val, val_episodes, seed=1).mean())
    history = fit(learner, TrainingData(synthetic.train, spec, seed), synthetic.val,
                  Budget(iterations=iterations, val_interval=iterations, val_episodes=val_episodes),
                  val_seed=1, progress=False).history
    return [point.val_accuracy for point in history], untrained


# Small enough to learn in seconds on a CPU (the paper defaults need hundreds of steps).
FAST_MAML = {"meta_batch": 4, "lr": 3e-3, "inner_lr": 0.1}
FAST_REPTILE = {"test_inner_steps": 10}


@pytest.mark.parametrize("name, hparams", [("maml", FAST_MAML), ("reptile", FAST_REPTILE)])
def test_learns_synthetic_tasks_well_above_chance(name: str, hparams: dict, synthetic) -> None:
    # Fine-tuning a random network already beats chance (0.2), so also require a gain over the initialisation.
    (accuracy,), untrained = trained_learner(name, hparams, synthetic)
    assert accuracy > 0.35 and accuracy > untrained + 0.04, f"{name}: {untrained:.3f} untrained, {accuracy:.3f} trained"


@pytest.mark.parametrize("name, hparams", [("maml", FAST_MAML), ("reptile", FAST_REPTILE)])
def test_same_seed_gives_same_accuracies(name: str, hparams: dict, synthetic) -> None:
    def run() -> tuple[list[float], float]:
        return trained_learner(name, hparams, synthetic, iterations=3, val_episodes=8)

    assert run() == run()


def test_rejects_bad_inner_hyperparameters() -> None:
    with pytest.raises(ValueError, match="inner_lr"):
        MAMLHParams(inner_lr=0.0)
    with pytest.raises(ValueError, match="inner_batch"):
        ReptileHParams(inner_batch=0)
