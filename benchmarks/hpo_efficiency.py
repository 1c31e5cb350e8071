"""Does the search earn its keep? The grid that Optuna's samplers and pruners will be replayed against.

    python benchmarks/hpo_efficiency.py grid      # train every grid point once (estimated 50 min on one core)

``grid`` trains ProtoNet (conv4, real Omniglot, 5-way 1-shot) at every point of :data:`GRID` with the study
seed's initialisation and episodes, and keeps each point's validation curve (every ``val_interval``) with the
CPU-seconds spent up to each validation, and its test accuracy on the fixed test episodes (the correct queries
of each episode, so that two points compare paired), in ``benchmarks/hpo_efficiency/grid.json``. A killed grid
continues with the points it lacks. The replay of samplers and pruners against this table is issue 19's next
step.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from learners.base import Budget, ValidationPoint, evaluation_seed
from learners.data import load_dataset
from learners.data.episodes import TaskSpec
from learners.experiment import TrainingSetup, default_root, resolve_device
from learners.registry import hparams_with_defaults

OUT = Path(__file__).with_name("hpo_efficiency")
LEARNER = "protonet"
SPEC = TaskSpec(5, 1, 15)
SEED = 0
# 48 points in an estimated 50 minutes on one core (a point: ~35 CPU-s training, ~10 validating, ~15 testing; a first
# try at 300 iterations, 12 validations of 64 episodes and 15-way training would have taken 90), long enough
# that lr and the schedule matter (the first point reached 84% validation accuracy at 300 iterations).
BUDGET = Budget(iterations=200, val_interval=40, val_episodes=50)
TEST_EPISODES = 400
FIXED = {"backbone": "conv4"}
GRID: dict[str, list[Any]] = {
    "lr": [3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2],
    "train_ways": [5, 10],
    "milestones": [[0.5], [0.7, 0.9]],
    "weight_decay": [0.0, 1.0e-4, 1.0e-3],
}


def grid_points() -> list[dict[str, Any]]:
    names = list(GRID)
    return [dict(zip(names, values)) for values in itertools.product(*GRID.values())]


def point_key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)


# --------------------------------------------------------------------------- grid

def train_grid(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    path = OUT / "grid.json"
    table = json.loads(path.read_text()) if path.exists() else {"setting": setting(), "points": []}
    if table["setting"] != setting():
        print(f"error: {path} holds another setting; move it away to train this one", file=sys.stderr)
        return 2
    done = {point_key(p["hparams"]) for p in table["points"]}
    data = load_dataset("omniglot", default_root("omniglot"), "vinyals")
    setup = TrainingSetup(LEARNER, data, SPEC, BUDGET, SEED, resolve_device("cpu"))
    todo = [p for p in grid_points() if point_key(p) not in done]
    print(f"{len(done)} of {len(grid_points())} points trained; training {len(todo)}", flush=True)
    for index, point in enumerate(todo, 1):
        curve: list[dict[str, float]] = []
        start = time.process_time()

        def record(validation: ValidationPoint) -> None:
            curve.append({"step": validation.step, "val_accuracy": validation.val_accuracy,
                          "cpu_s": time.process_time() - start})

        learner, _ = setup.train({**FIXED, **point}, on_validation=record, progress=False)
        tested = time.process_time()
        correct = (learner.evaluate(data.test, TEST_EPISODES, evaluation_seed(SEED, "test"))
                   * SPEC.ways * SPEC.queries).round().long()
        table["points"].append({"hparams": point, "curve": curve, "test_correct": correct.tolist(),
                                "test_accuracy": float(correct.double().mean() / (SPEC.ways * SPEC.queries)),
                                "test_cpu_s": time.process_time() - tested})
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(table))
        temporary.replace(path)
        print(f"[{index}/{len(todo)}] {point_key(point)}: val {curve[-1]['val_accuracy']:.4f}, "
              f"test {table['points'][-1]['test_accuracy']:.4f}, {curve[-1]['cpu_s']:.1f} CPU-s", flush=True)
    return 0


def setting() -> dict[str, Any]:
    """What the table's numbers depend on besides the grid point."""
    return {"learner": LEARNER, "dataset": "omniglot/vinyals", "spec": asdict(SPEC), "seed": SEED,
            "budget": asdict(BUDGET), "test_episodes": TEST_EPISODES, "fixed": FIXED,
            "defaults": {k: hparams_with_defaults(LEARNER, {})[k] for k in GRID},
            "torch": torch.__version__}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    grid = commands.add_parser("grid", help="train every grid point (continues a killed grid)")
    grid.add_argument("--threads", type=int, default=1, help="torch threads (CPU-seconds are per process)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"grid": train_grid}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
