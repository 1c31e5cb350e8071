"""Accuracy on real Omniglot (Vinyals split) next to the published numbers, within a stated budget.

Trains every learner (or ``--learners a,b``) for each ``--ways`` × ``--shots`` setting through
:func:`learners.experiment.train_and_test` (the code behind ``fewshot-train``), scores it on
``--test-episodes`` fixed test episodes and writes a markdown table after every run:

    python benchmarks/omniglot_reproduce.py --minutes 10                # 10 training minutes per run
    python benchmarks/omniglot_reproduce.py --iterations 2000 --ways 5,20 --learners protonet,maml
    python benchmarks/omniglot_reproduce.py --set protonet.train_ways=60  # a learner's hyperparameter

``--minutes`` is turned into an iteration count by timing ~20 s of optimiser steps of a throwaway copy
of the learner, so the schedule (milestones are fractions of the budget) fits the budget; one
validation at the end (counted in "train min") and testing come on top. The published numbers come
from much longer training (and, for some, other protocols), so the table shows how close a fixed
budget gets, not a replication.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from learners.base import Budget, fit
from learners.data import DatasetSplits, load_dataset
from learners.experiment import RunConfig, RunResult, TrainingSetup, resolve_device, train_and_test
from learners.registry import LEARNERS
from learners.train import UsageError, parse_overrides

# Published Omniglot test accuracy (%), keyed by (learner, ways, shots).
PUBLISHED: dict[tuple[str, int, int], str] = {
    ("maml", 5, 1): "98.7", ("maml", 5, 5): "99.9", ("maml", 20, 1): "95.8", ("maml", 20, 5): "98.9",
    ("protonet", 5, 1): "98.8", ("protonet", 5, 5): "99.7", ("protonet", 20, 1): "96.0", ("protonet", 20, 5): "98.9",
    ("reptile", 5, 1): "97.68", ("reptile", 5, 5): "99.48", ("reptile", 20, 1): "89.43", ("reptile", 20, 5): "97.12",
}
SOURCES = {
    "maml": "Finn et al. 2017, batch-norm statistics of the test episode (transductive)",
    "protonet": "Snell et al. 2017, trained on 60-way episodes",
    "reptile": "Nichol et al. 2018, transductive",
}
PROBE_STEPS = 3       # per timed call, after one warm-up step; MAML steps can take seconds on a CPU
PROBE_SECONDS = 20.0  # timed calls repeat until this much has passed: a few steps alone misjudged by 2x


def calibrated_iterations(config: RunConfig, data: DatasetSplits, minutes: float) -> int:
    """Iterations that fill ``minutes`` of training, timed on a throwaway copy of the learner."""
    setup = TrainingSetup.of_run(config, data)
    probe, train = setup.build(config.hparams), setup.training_data()
    fit(probe, train, None, Budget(1), val_seed=0, progress=False)
    steps, start = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - start < PROBE_SECONDS:
        fit(probe, train, None, Budget(PROBE_STEPS), val_seed=0, progress=False)
        steps += PROBE_STEPS
    seconds_per_step = (time.perf_counter() - start) / steps
    return max(1, int(minutes * 60 / seconds_per_step))


def learner_overrides(learners: Sequence[str], assignments: Sequence[str]) -> dict[str, dict]:
    """``["protonet.train_ways=60", ...]`` → typed hyperparameters per learner."""
    per_learner: dict[str, list[str]] = defaultdict(list)
    for assignment in assignments:
        learner, sep, rest = assignment.partition(".")
        if not sep or learner not in learners:
            raise UsageError(f"--set expects LEARNER.key=value for one of {', '.join(learners)}, got '{assignment}'")
        per_learner[learner].append(rest)
    return {learner: parse_overrides(learner, per_learner[learner]) for learner in learners}


def markdown(results: list[RunResult], args: argparse.Namespace) -> str:
    budget = f"{args.iterations} iterations" if args.iterations else f"{args.minutes:g} training minutes"
    lines = [
        f"# {args.dataset} ({args.split}): measured vs published accuracy",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, device {resolve_device(args.device)}, seed {args.seed}, "
        f"budget {budget} per run, {args.test_episodes} test episodes with {args.queries} queries per class. "
        f"Command: `{' '.join(['python', 'benchmarks/omniglot_reproduce.py', *sys.argv[1:]])}`",
        "",
        "| learner | ways | shots | accuracy % (± 95% CI) | published % | iterations | train min | BN at test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.config
        lines.append(f"| {c.learner} | {c.ways} | {c.shots} | {100 * r.test_accuracy:.2f} ± {100 * r.test_ci95:.2f} "
                     f"| {PUBLISHED.get((c.learner, c.ways, c.shots), '—') if c.dataset == 'omniglot' else '—'} "
                     f"| {c.iterations} "
                     f"| {r.train_seconds / 60:.1f} | {r.bn_at_test} |")
    lines += ["", "Published: " + "; ".join(f"{name}: {source}" for name, source in SOURCES.items()) + "."]
    return "\n".join(lines) + "\n"


def comma_ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", default=",".join(LEARNERS), help="comma-separated (default: all)")
    parser.add_argument("--ways", type=comma_ints, default=[5], help="comma-separated, e.g. 5,20")
    parser.add_argument("--shots", type=comma_ints, default=[1, 5])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=10.0, help="training minutes per run (default: 10)")
    budget.add_argument("--iterations", type=int, help="fixed iterations per run instead of --minutes")
    parser.add_argument("--dataset", default="omniglot", choices=["omniglot", "synthetic"],
                        help="synthetic for a smoke run")
    parser.add_argument("--split", default="vinyals")
    parser.add_argument("--root", help="data folder (default as fewshot-train)")
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-episodes", type=int, default=1000)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="LEARNER.KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/omniglot.md"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        learners = args.learners.split(",")
        unknown = [name for name in learners if name not in LEARNERS]
        if unknown:
            raise UsageError(f"unknown learner(s) {', '.join(unknown)} (choose from {', '.join(LEARNERS)})")
        overrides = learner_overrides(learners, args.assignments)
        base = RunConfig(learner=learners[0], dataset=args.dataset, split=args.split, root=args.root,
                         queries=args.queries, iterations=args.iterations or 1, seed=args.seed,
                         test_episodes=args.test_episodes, device=args.device)
        data = load_dataset(base.dataset, base.data_root, base.split)
        results: list[RunResult] = []
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for ways in args.ways:
            for shots in args.shots:
                for learner in learners:
                    config = replace(base, learner=learner, ways=ways, shots=shots, hparams=overrides[learner])
                    if args.iterations is None:
                        config = replace(config, iterations=calibrated_iterations(config, data, args.minutes))
                    config = replace(config, val_interval=config.iterations)  # validate once, at the end
                    print(f"{learner} {ways}-way {shots}-shot: {config.iterations} iterations", file=sys.stderr)
                    results.append(train_and_test(config, data=data))
                    print(f"  test accuracy {100 * results[-1].test_accuracy:.2f}% "
                          f"± {100 * results[-1].test_ci95:.2f}%", file=sys.stderr)
                    args.out.write_text(markdown(results, args))
    except ValueError as error:  # DataError, UsageError, bad hyperparameters: the user's input
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
