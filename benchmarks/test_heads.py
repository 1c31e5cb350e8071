"""Test-time heads: episodes per second, and accuracy, of ``centroid`` and ``logreg`` (:mod:`learners.heads`).

    python benchmarks/test_heads.py --threads 2                                    # ProtoNet, about a minute
    python benchmarks/test_heads.py --threads 2 --learner classifier_baseline --iterations 500

The learner (conv4, real Omniglot, 5-way 1-shot or ``--shots``) is trained briefly (``--iterations``, seed 0),
then the same fixed test episodes are labelled by each head: the centroid head batches episodes through one
tensor computation, logreg fits one scikit-learn logistic regression per episode on the CPU.
"""
from __future__ import annotations

import argparse
import time

import torch

from learners.base import Budget, evaluation_seed
from learners.statistics import mean_interval
from learners.data import load_dataset
from learners.data.episodes import TaskSpec
from learners.experiment import TrainingSetup, default_root, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learner", default="protonet", choices=["protonet", "classifier_baseline", "meta_baseline"])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("omniglot", default_root("omniglot"), "vinyals")
    spec = TaskSpec(5, args.shots, 15)
    setup = TrainingSetup(args.learner, data, spec, Budget(args.iterations, args.iterations, 50), 0,
                          resolve_device(args.device))
    learner, _ = setup.train({"lr": 3e-3}, progress=False)
    print(f"{args.learner} conv4, {args.iterations} iterations; {args.episodes} test episodes 5-way {args.shots}-shot "
          f"15-query, {args.threads} threads, {args.device}")
    print("| head | episodes/s | test accuracy |\n|---|---|---|")
    for head in ("centroid", "logreg"):
        learner.hparams.test_head = head
        learner.evaluate(data.test, 8, evaluation_seed(0, "test"))  # warm-up (allocations, imports)
        start = time.perf_counter()
        accuracies = learner.evaluate(data.test, args.episodes, evaluation_seed(0, "test"))
        seconds = time.perf_counter() - start
        interval = mean_interval(accuracies, "normal")  # as the docs' table says
        print(f"| {head} | {args.episodes / seconds:.0f} | {100 * interval.mean:.2f}% ± {100 * interval.half_width:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
