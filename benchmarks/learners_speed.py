"""CPU throughput of every registered learner, and vmapped MAML against a per-task loop.

Omniglot-shaped random images (1×28×28), the default hyperparameters of each learner
(conv4 or ``--backbone``; MAML meta-batch 32), 5-way 1-shot episodes with 15 queries per class (``--queries``):

    python benchmarks/learners_speed.py --seconds 5 --threads 2
    python benchmarks/learners_speed.py --learners maml,protonet --queries 1 --json speed.json
    python benchmarks/learners_speed.py --device cuda      # on a GPU (timings synchronise the device)

Training: optimiser steps (zero_grad, ``train_step``, ``step``) per second, with the tasks and
images each step drew. Evaluation: episodes per second through ``Learner.evaluate`` (16 episodes
in its default batches). After a warm-up, the two calls alternate for at least 3 rounds and
``--seconds`` each, and the fastest repetition counts (see :func:`best_times`). The MAML section
times one meta-gradient of 32 tasks four ways, vmapped (:meth:`MAML.meta_loss`), a functional
per-task loop (:func:`per_task_meta_gradient`) and a clone-per-task loop as most libraries write
it (:func:`clone_per_task_meta_gradient`), with this package's layers (vmap-safe batch norm, conv4's
``conv_batch_norm`` blocks) and with PyTorch's own (fused batch-norm kernel, ``nn.MaxPool2d``),
checks they agree in float64, and prints the speed-ups. On a CPU it also times each operator of
the vmapped call and of the PyTorch-layers reference once (:class:`OperatorSeconds`): the share
each spends in convolutions, and the ceiling, the reference's time over the vmapped call's
convolution time, which no saving outside the convolutions can exceed.
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import time
from dataclasses import replace
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from learners.backbones import BACKBONES, with_pytorch_layers
from learners.base import TrainingData
from learners.data.episodes import Episodes, ImageSplit, TaskSpec
from learners.maml import MAML, per_task_meta_gradient
from learners.optimization import make_optimizer
from learners.registry import LEARNERS, build_learner

IMAGE_SHAPE = (1, 28, 28)
CLASSES, PER_CLASS = 64, 20
EVAL_EPISODES = 16  # per timed evaluate() call, in its default batches


class CountingTrainingData(TrainingData):
    """Training data that counts the tasks and images a learner draws."""

    def __init__(self, split: ImageSplit, spec: TaskSpec, seed: int, device: torch.device):
        super().__init__(split, spec, seed, device)
        self.tasks = self.images = 0

    def episodes(self, tasks: int, ways: int | None = None, queries: int | None = None,
                 shots: int | None = None) -> Episodes:
        episodes = super().episodes(tasks, ways, queries, shots)
        self.tasks += tasks
        self.images += episodes.support[0].shape[0] * tasks + episodes.query[0].shape[0] * tasks
        return episodes

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.images += batch_size
        return super().batch(batch_size)


def random_split() -> ImageSplit:
    images = torch.randint(0, 256, (CLASSES, PER_CLASS, *IMAGE_SHAPE), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return ImageSplit.from_equal_classes("random", images, [f"c{i}" for i in range(CLASSES)])


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_times(seconds: float, *calls: Callable[[], object], min_rounds: int = 3,
               device: torch.device = torch.device("cpu")) -> list[float]:
    """Fastest time of each call, run in turn for ``min_rounds`` rounds and at least ``seconds`` per call.

    Alternating the calls exposes them to the same background load; the fastest repetition is
    the one least disturbed by other processes on a shared machine. The caller warms up first.
    """
    best = [float("inf")] * len(calls)
    spent = [0.0] * len(calls)
    rounds = 0
    while rounds < min_rounds or min(spent) < seconds:
        for i, call in enumerate(calls):
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            elapsed = time.perf_counter() - start
            best[i], spent[i] = min(best[i], elapsed), spent[i] + elapsed
        rounds += 1
    return best


def learner_speed(name: str, backbone: str, split: ImageSplit, spec: TaskSpec, seconds: float,
                  device: torch.device) -> dict[str, float | str]:
    torch.manual_seed(0)
    learner = build_learner(name, {"backbone": backbone}, IMAGE_SHAPE, spec, CLASSES).to(device)
    data = CountingTrainingData(split, spec, seed=0, device=device)
    optimizer = make_optimizer(learner.parameters(), learner.hparams)
    learner.train()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        learner.train_step(data, step=1, total_steps=1_000_000)
        optimizer.step()

    def evaluate() -> None:
        learner.evaluate(split, EVAL_EPISODES, seed=0)

    train_step()  # warm-up, and the data one step draws
    tasks, images = data.tasks, data.images
    evaluate()
    step_seconds, eval_seconds = best_times(seconds, train_step, evaluate, device=device)
    return {
        "learner": name,
        "train steps/s": 1 / step_seconds,
        "train tasks/s": tasks / step_seconds if tasks else "—",
        "train images/s": images / step_seconds,
        "eval episodes/s": EVAL_EPISODES / eval_seconds,
    }


class OperatorSeconds(TorchDispatchMode):
    """Wall time spent in each ATen operator while active (CPU only: there operators run synchronously).

    Per-operator timing, unlike ``torch.profiler``, whose tables inflated large memory-bound
    operators several-fold on this project's machines. Its own overhead, a few microseconds per
    operator, inflates calls made of many small operators (the per-task loops).
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self.seconds[func.overloadpacket.__name__] += time.perf_counter() - start
        return out


def convolution_seconds(call: Callable[[], object]) -> float:
    """Seconds one ``call()`` spends in convolutions and their derivatives."""
    with OperatorSeconds() as timer:
        call()
    return timer.seconds["convolution"] + timer.seconds["convolution_backward"]


def clone_module(module: nn.Module) -> nn.Module:
    """A differentiable copy of ``module`` whose parameters are clones of the original's (learn2learn style)."""
    clone = copy.copy(module)
    clone.__dict__ = module.__dict__.copy()
    clone._parameters = {n: None if p is None else p.clone() for n, p in module._parameters.items()}
    clone._buffers = dict(module._buffers)
    clone._modules = {n: clone_module(m) for n, m in module._modules.items()}
    return clone


def clone_per_task_meta_gradient(learner: MAML, episodes: Episodes, inner_steps: int,
                                 first_order: bool) -> dict[str, torch.Tensor]:
    """The meta-gradient as most libraries compute it: clone the module per task, update its
    parameters in place of the module's own, and ``backward()`` each task's query loss."""
    learner.zero_grad(set_to_none=True)
    for task in range(episodes.num_tasks):
        clone = clone_module(learner)
        slots = [(m, n) for m in clone.modules() for n, p in m._parameters.items() if p is not None]
        for _ in range(inner_steps):
            loss = F.cross_entropy(clone(episodes.support[task]), episodes.support_labels[task])
            grads = torch.autograd.grad(loss, [m._parameters[n] for m, n in slots], create_graph=not first_order)
            for (m, n), g in zip(slots, grads):
                m._parameters[n] = m._parameters[n] - learner.hparams.inner_lr * g
        query_loss = F.cross_entropy(clone(episodes.query[task]), episodes.query_labels[task])
        (query_loss / episodes.num_tasks).backward()
    return {name: p.grad for name, p in learner.named_parameters()}


def meta_gradient_calls(learner: MAML, episodes: Episodes) -> list[Callable[[], dict[str, torch.Tensor]]]:
    """The four ways to one meta-gradient: vmapped, functional loop, clone-per-task with this package's layers,
    clone-per-task with PyTorch's own layers (what a library would run: exact outside vmap)."""
    h, params = learner.hparams, learner.meta_parameters()
    pytorch_layers = with_pytorch_layers(learner)

    def vmapped() -> dict[str, torch.Tensor]:
        grads = torch.autograd.grad(learner.meta_loss(episodes, h.inner_steps, h.first_order), list(params.values()))
        return dict(zip(params, grads))

    return [vmapped,
            partial(per_task_meta_gradient, learner, episodes, h.inner_steps, h.first_order),
            partial(clone_per_task_meta_gradient, learner, episodes, h.inner_steps, h.first_order),
            partial(clone_per_task_meta_gradient, pytorch_layers, episodes, h.inner_steps, h.first_order)]


def meta_gradient_speed(first_order: bool, backbone: str, split: ImageSplit, spec: TaskSpec, seconds: float,
                        device: torch.device) -> dict[str, float | str]:
    """Vmapped against per-task-loop MAML meta-gradients on one meta-batch of default size.

    The four agree to 1e-8 in float64, checked first; float32 is timed (there, batch norm over
    five images amplifies the rounding differences of the two batch-norm forms to ~1e-3).
    """
    torch.manual_seed(0)
    learner = build_learner("maml", {"first_order": first_order, "backbone": backbone}, IMAGE_SHAPE, spec,
                            CLASSES).to(device)
    assert isinstance(learner, MAML)
    h = learner.hparams
    episodes = TrainingData(split, spec, seed=0, device=device).episodes(h.meta_batch)
    exact = copy.deepcopy(learner).double()
    exact_episodes = replace(episodes, support=episodes.support.double(), query=episodes.query.double())
    results = [call() for call in meta_gradient_calls(exact, exact_episodes)]
    for name in results[0]:
        for reference in results[1:]:
            torch.testing.assert_close(results[0][name], reference[name], rtol=1e-8, atol=1e-8,
                                       msg=f"float64 meta-gradient of {name}")
    calls = meta_gradient_calls(learner, episodes)
    for call in calls:  # warm-up
        call()
    times = best_times(seconds, *calls, device=device)
    rates = [h.meta_batch / t for t in times]
    row: dict[str, float | str] = {
        "meta-gradient": f"MAML {'first' if first_order else 'second'} order, {h.inner_steps} inner step, "
                         f"{h.meta_batch} tasks",
        "vmapped tasks/s": rates[0], "functional loop tasks/s": rates[1],
        "clone-per-task, package layers tasks/s": rates[2], "clone-per-task, PyTorch layers tasks/s": rates[3],
        "× loop": rates[0] / rates[1], "× clone, package layers": rates[0] / rates[2],
        "× clone, PyTorch layers": rates[0] / rates[3]}
    if device.type == "cpu":
        # Batching saves per-operation work, not arithmetic: the vmapped call's convolution time
        # bounds the speed-up that removing all of its other work could reach.
        vmapped_convolutions, reference_convolutions = convolution_seconds(calls[0]), convolution_seconds(calls[3])
        row |= {"vmapped: convolutions": f"{vmapped_convolutions / times[0]:.0%}",
                "clone, PyTorch layers: convolutions": f"{reference_convolutions / times[3]:.0%}",
                "ceiling × clone, PyTorch layers": times[3] / vmapped_convolutions}
    return row


def markdown_table(rows: list[dict[str, float | str]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", default=",".join(LEARNERS), help="comma-separated registry names")
    parser.add_argument("--backbone", default="conv4", choices=list(BACKBONES))
    parser.add_argument("--queries", type=int, default=15, help="query images per class")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-reference", action="store_true", help="skip the vmapped-vs-loop MAML comparison")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    names = [n for n in args.learners.split(",") if n]
    unknown = [n for n in names if n not in LEARNERS]
    if unknown:
        parser.error(f"unknown learner(s) {', '.join(unknown)} (choose from {', '.join(LEARNERS)})")
    if not 1 <= args.queries < PER_CLASS:
        parser.error(f"--queries must be between 1 and {PER_CLASS - 1}, got {args.queries}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    spec = TaskSpec(ways=5, shots=1, queries=args.queries)
    torch.set_num_threads(args.threads)
    split = random_split()

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{where}, {args.threads} thread(s), {spec.ways}-way {spec.shots}-shot, {spec.queries} queries per class, "
          f"images {'×'.join(map(str, IMAGE_SHAPE))}, {args.backbone}, default hyperparameters\n", flush=True)
    speeds = [learner_speed(name, args.backbone, split, spec, args.seconds, device) for name in names]
    print(markdown_table(speeds), flush=True)
    comparisons = []
    if not args.no_reference:
        comparisons = [meta_gradient_speed(first_order, args.backbone, split, spec, args.seconds, device)
                       for first_order in (False, True)]
        print("\n" + markdown_table(comparisons))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "threads": args.threads, "backbone": args.backbone, "queries": spec.queries,
                       "learners": speeds, "maml_vmap_vs_loop": comparisons}, f, indent=2)


if __name__ == "__main__":
    main()
