"""Trials per minute with 1, 2 and 4 workers on PostgreSQL, and what bookkeeping costs per trial.

Runs the real command (``python -m hpo.run STUDY --workers N --storage postgresql://...``) on
synthetic data, one study per worker count, in a database it creates and drops:

    python benchmarks/scaling.py                       # 1, 2 and 4 workers, 16 short trials each
    python benchmarks/scaling.py --workers 1,2 --trials 24 --iterations 200

Throughput counts the trials finished between the first trial's start and the last one's end
(process start-up and the final test are left out). Overhead is what each trial spent in Optuna
(ask, tell, suggestions, reports, pruning) and in MLflow calls, from the ``timing`` user attr
every trial records (see :mod:`hpo.execution._timing`), in milliseconds and as a share of the trial's time.
Each worker trains with one thread, so N workers can use N cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import optuna
import sqlalchemy
import yaml
from optuna.trial import FrozenTrial, TrialState

REPO = Path(__file__).resolve().parents[1]
LEARNER = "protonet"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://127.0.0.1:5432/postgres",
                        help="a database of the PostgreSQL server, to create the benchmark's database from")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--trials", type=int, default=16, help="trials per worker count")
    parser.add_argument("--iterations", type=int, default=100, help="training iterations per trial")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: a SQLite file per run)")
    return parser.parse_args()


@contextmanager
def scratch_database(server: str) -> Iterator[str]:
    """A new database on ``server``'s PostgreSQL, dropped afterwards; yields its URL."""
    name = f"hpo_scaling_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def study(name: str, trials: int, iterations: int) -> dict:
    return {"name": name, "seed": 0, "dataset": {"name": "synthetic", "ways": 5, "shots": 1, "queries": 5},
            "learners": {LEARNER: {"fixed": {"backbone": "conv4"},
                                   "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}},
            "search": {"sampler": "random", "pruner": "none", "n_trials": trials},
            "budget": {"iterations": iterations, "val_interval": max(1, iterations // 2), "val_episodes": 20},
            "test": {"episodes": 20}, "device": "cpu"}


def run(workers: int, args: argparse.Namespace, storage: str, directory: Path) -> list[FrozenTrial]:
    name = f"scaling-{workers}"
    (directory / "study.yaml").write_text(yaml.safe_dump(study(name, args.trials, args.iterations)))
    command = [sys.executable, "-m", "hpo.run", "study.yaml", "--workers", str(workers), "--storage", storage,
               "--no-progress", *(["--tracking-uri", args.tracking_uri] if args.tracking_uri else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(command, cwd=directory, env=env, check=True, stdout=subprocess.DEVNULL)
    return optuna.load_study(study_name=f"{name}/{LEARNER}", storage=storage).get_trials(
        states=(TrialState.COMPLETE, TrialState.PRUNED))


def summary(trials: list[FrozenTrial]) -> dict[str, float]:
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    timings = [t.user_attrs["timing"] for t in trials]
    trial_s = statistics.mean(t["trial_s"] for t in timings)
    optuna_s = statistics.mean(t["optuna_s"] for t in timings)
    mlflow_s = statistics.mean(t["mlflow_s"] for t in timings)
    return {"trials": len(trials), "per_minute": 60 * len(trials) / span, "trial_s": trial_s,
            "optuna_ms": 1000 * optuna_s, "mlflow_ms": 1000 * mlflow_s,
            "overhead_pct": 100 * (optuna_s + mlflow_s) / trial_s}


def main() -> None:
    args = parse_args()
    print(f"{os.cpu_count()} CPU cores; {args.trials} trials of {args.iterations} iterations per worker count")
    print("| workers | trials | trials/min | speed-up | trial (s) | Optuna (ms) | MLflow (ms) | overhead |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    with scratch_database(args.server) as storage, tempfile.TemporaryDirectory() as scratch:
        for workers in (int(n) for n in args.workers.split(",")):
            directory = Path(scratch) / f"workers-{workers}"
            directory.mkdir()
            row = summary(run(workers, args, storage, directory))
            base = base or row["per_minute"]
            print(f"| {workers} | {row['trials']} | {row['per_minute']:.1f} | {row['per_minute'] / base:.2f}x | "
                  f"{row['trial_s']:.2f} | {row['optuna_ms']:.0f} | {row['mlflow_ms']:.0f} | "
                  f"{row['overhead_pct']:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
