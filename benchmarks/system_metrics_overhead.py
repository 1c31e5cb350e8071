"""What MLflow's system metrics (``system_metrics: true``) cost a trial: the same training with and without.

    python benchmarks/system_metrics_overhead.py [--iterations 1000] [--repeats 3]

Trains ProtoNet (conv4, 5-way 1-shot) on real Omniglot (``../shared/data/omniglot``; synthetic data where it
is absent) with the study's seed, once to warm up, then alternately with and without MLflow's monitor
sampling every 10 s into a run of a temporary SQLite tracking store, and prints each wall time and the
overhead of the means.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from hpo.tracking import system_metrics
from learners import Budget
from learners.data import TaskSpec, load_dataset
from learners.experiment import TrainingSetup, default_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = default_root("omniglot")
    data = load_dataset("omniglot", root, "vinyals") if root.exists() else load_dataset("synthetic")
    setup = TrainingSetup("protonet", data, TaskSpec(5, 1, 15), Budget(args.iterations, args.iterations, 32), 0,
                          torch.device("cpu"))
    setup.train({"backbone": "conv4"}, progress=False)  # warm-up: allocator, caches, lazy imports
    seconds: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as directory:
        uri = f"sqlite:///{Path(directory) / 'mlflow.db'}"
        client = MlflowClient(uri)
        experiment = client.create_experiment("overhead", artifact_location=str(Path(directory) / "mlruns"))
        for repeat in range(args.repeats):
            for monitored in (False, True):
                run = client.create_run(experiment).info.run_id
                start = time.perf_counter()
                with system_metrics(uri, run, monitored):
                    setup.train({"backbone": "conv4"}, progress=False)
                seconds[monitored].append(time.perf_counter() - start)
                samples = len(client.get_metric_history(run, "system/cpu_utilization_percentage"))
                print(f"repeat {repeat} {'with' if monitored else 'without':<7} system metrics: "
                      f"{seconds[monitored][-1]:6.2f} s ({samples} samples)")
    without, with_ = statistics.mean(seconds[False]), statistics.mean(seconds[True])
    print(f"{data.dataset}, {args.iterations} iterations: {without:.2f} s without, {with_:.2f} s with: "
          f"overhead {with_ / without - 1:+.2%}")


if __name__ == "__main__":
    main()
