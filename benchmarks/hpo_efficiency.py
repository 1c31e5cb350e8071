"""Does the search earn its keep? Optuna's samplers and pruners against a grid trained once, for real.

    python benchmarks/hpo_efficiency.py grid      # train the 48 grid points once (28 min on one core)
    python benchmarks/hpo_efficiency.py replay    # samplers x pruners x 20 seeds against that table (3 min)
    python benchmarks/hpo_efficiency.py warmstart # TPE warm-started from a related study, against scratch (1 min)
    python benchmarks/hpo_efficiency.py verify    # one real `hpo.run` of TPE + Hyperband, compared (8 min)

The space is the study file ``benchmarks/hpo_efficiency/study.yaml`` (ProtoNet, conv4, real Omniglot, 5-way
1-shot, a short budget; lr x train_ways x milestones x weight decay).

``grid`` trains every point with the study seed's initialisation and episodes, as a trial of that study would,
and keeps its validation curve (every ``val_interval``, with the CPU-seconds spent up to each validation) and
the correct queries of each fixed test episode (so two points compare paired) in ``grid.json``. A killed grid
continues with the points it lacks.

``replay`` runs Optuna's own samplers and pruners, built by :mod:`hpo.execution` exactly as a study would build
them, on the study's own space (:func:`hpo.config.suggest`): the objective looks the point up and reports its
stored curve step by step, so pruners act on real curves; a pruned trial costs the CPU-seconds up to the step
it was pruned at. One worker, trials one after another, until the grid's whole compute is spent (grid order:
until the grid is done). It writes ``replay.json``, ``replay.md`` (the table) and ``replay.png``.

``warmstart`` measures :mod:`hpo.execution`'s warm start with the same machinery: an earlier study of the same task
and space stopped at 40% of the budget (the table's curves up to that step), its best 5 configurations mapped by
:func:`hpo.execution.warm_start_points` and queued first, against the same search from scratch. It writes
``warm_start.md``.

``verify`` runs the study with ``python -m hpo.run`` (its own sampler seed is the replay's seed 0), until the
replay's seed 0 passed 30% of the grid's compute, and compares trial by trial with that replay; then it tests
the defaults against the tuned configuration on the same test episodes (paired). It writes ``verify.json``
and ``verify.md``.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import optuna
import torch
import yaml

from hpo.config import LearnerConfig, PrunerConfig, StudyConfig, grid_search_points, load_config, suggest, task_spec
from hpo.execution import make_pruner, make_sampler, warm_start_points
from hpo.storage import grid_points
from learners.base import Budget, ValidationPoint, evaluation_seed
from learners.data import load_dataset
from learners.experiment import TrainingSetup, resolve_device
from learners.registry import hparams_with_defaults

HERE = Path(__file__).with_name("hpo_efficiency")
STUDY_FILE = HERE / "study.yaml"
LEARNER = "protonet"
SAMPLERS = ["random", "tpe", "gp", "grid"]
PRUNERS = ["none", "median", "hyperband"]
SEEDS = 20
TARGET_GAP = 0.005      # within 0.5 points of the grid's best validation accuracy
CHOICE_AT = 0.30        # the configuration chosen with 30% of the grid's compute


@functools.cache  # read once per process: every replay asks for it
def study_config() -> StudyConfig:
    return load_config(STUDY_FILE)


def learner_config(config: StudyConfig) -> LearnerConfig:
    return config.learners[LEARNER]


def point_key(point: dict[str, Any]) -> str:
    """A grid point's name in the table: its hyperparameters as sorted JSON (milestone tuples as lists)."""
    return json.dumps(point, sort_keys=True)


def decoded_points(config: StudyConfig) -> list[dict[str, Any]]:
    """Every point of the space, with the values a trial trains with (milestones as lists)."""
    encoded = grid_search_points(learner_config(config).space, f"learners.{LEARNER}.space")
    return [{name: json.loads(v) if name == "milestones" else v for name, v in point.items()} for point in encoded]


def budget(config: StudyConfig) -> Budget:
    return Budget(config.budget.iterations, config.budget.val_interval, config.budget.val_episodes,
                  config.budget.select)


# --------------------------------------------------------------------------- grid

def setting(config: StudyConfig) -> dict[str, Any]:
    """What the table's numbers depend on besides the grid point (JSON-normalised, as stored)."""
    space = learner_config(config).space
    defaults = hparams_with_defaults(LEARNER, {})
    return json.loads(json.dumps({
        "learner": LEARNER, "dataset": f"{config.dataset.name}/{config.dataset.split}",
        "spec": asdict(task_spec(config)), "seed": config.seed, "budget": asdict(budget(config)),
        "test_episodes": config.test.episodes, "fixed": learner_config(config).fixed,
        "defaults": {k: defaults[k] for k in space}, "torch": torch.__version__}))


def train_grid(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    config = study_config()
    path = HERE / "grid.json"
    table = json.loads(path.read_text()) if path.exists() else {"setting": setting(config), "points": []}
    if table["setting"] != setting(config):
        print(f"error: {path} holds another setting; move it away to train this one", file=sys.stderr)
        return 2
    done = {point_key(p["hparams"]) for p in table["points"]}
    spec = task_spec(config)
    data = load_dataset(config.dataset.name, Path(config.dataset.root), config.dataset.split)
    setup = TrainingSetup(LEARNER, data, spec, budget(config), config.seed, resolve_device("cpu"))
    todo = [p for p in sorted(decoded_points(config), key=point_key) if point_key(p) not in done]
    print(f"{len(done)} of {len(done) + len(todo)} points trained; training {len(todo)}", flush=True)
    for index, point in enumerate(todo, 1):
        curve: list[dict[str, float]] = []
        start = time.process_time()

        def record(validation: ValidationPoint) -> None:
            curve.append({"step": validation.step, "val_accuracy": validation.val_accuracy,
                          "cpu_s": time.process_time() - start})

        learner, _ = setup.train({**learner_config(config).fixed, **point}, on_validation=record, progress=False)
        tested = time.process_time()
        correct = (learner.evaluate(data.test, config.test.episodes, evaluation_seed(config.seed, "test"))
                   * spec.ways * spec.queries).round().long()
        table["points"].append({"hparams": point, "curve": curve, "test_correct": correct.tolist(),
                                "test_accuracy": float(correct.double().mean() / (spec.ways * spec.queries)),
                                "test_cpu_s": time.process_time() - tested})
        write_json(path, table)
        print(f"[{index}/{len(todo)}] {point_key(point)}: val {curve[-1]['val_accuracy']:.4f}, "
              f"test {table['points'][-1]['test_accuracy']:.4f}, {curve[-1]['cpu_s']:.1f} CPU-s", flush=True)
    return 0


@functools.cache
def load_grid() -> dict[str, dict[str, Any]]:
    """The trained table by point key, read once per process; exits with a one-line error if it is missing,
    partial or of another setting."""
    config = study_config()
    path = HERE / "grid.json"
    if not path.exists():
        sys.exit(f"error: no {path}: run `python benchmarks/hpo_efficiency.py grid` first")
    table = json.loads(path.read_text())
    points = {point_key(p["hparams"]): p for p in table["points"]}
    missing = [k for k in map(point_key, decoded_points(config)) if k not in points]
    if table["setting"] != setting(config) or missing:
        sys.exit(f"error: {path} is of another setting or lacks {len(missing)} points: run `grid` again")
    return points


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value))
    temporary.replace(path)


# --------------------------------------------------------------------------- replay

@dataclass
class ReplayedTrial:
    key: str
    cpu_s: float           # cumulative CPU-seconds of the search when this trial ended
    value: float | None    # None: pruned
    step: int              # the last step it reported


def replay(sampler: str, pruner: str, seed: int, warm: list[dict[str, Any]] | None = None,
           at_step: int | None = None, n_trials: int | None = None) -> tuple[list[ReplayedTrial], optuna.Study]:
    """One search against the table, until the grid's compute is spent (grid order: until the grid is done), or
    for ``n_trials``; ``warm``: points queued first (as a warm start queues them); ``at_step``: the table as if
    the budget ended at that step (a shorter study of the same task)."""
    config = study_config()
    table = load_grid()
    total = sum(p["curve"][-1]["cpu_s"] for p in table.values())
    seeded = config.model_copy(update={"seed": seed, "search": config.search.model_copy(update={"sampler": sampler})})
    # Named as hpo.run names it: Hyperband assigns a trial to its bracket by a hash of the study name and number.
    study = optuna.create_study(
        study_name=f"{config.name}/{LEARNER}", direction="maximize", sampler=make_sampler(seeded, 0),
        pruner=make_pruner(PrunerConfig(type=pruner), config.budget.iterations, config.budget.val_interval))
    space = learner_config(config).space
    if sampler == "grid":  # queued in GridSampler's order, as hpo.run queues a grid
        for point in grid_points(grid_search_points(space, "space"), seed):
            study.enqueue_trial(point)
    for point in warm or []:
        study.enqueue_trial(point, skip_if_exists=True)
    trials: list[ReplayedTrial] = []
    spent = 0.0

    def objective(trial: optuna.Trial) -> float:
        nonlocal spent
        point = table[point_key(suggest(trial, space))]
        trial.set_user_attr("hparams", point["hparams"])  # as a study's trial records what it trained with
        curve = [v for v in point["curve"] if at_step is None or v["step"] <= at_step]
        for validation in curve:
            trial.report(validation["val_accuracy"], validation["step"])
            if trial.should_prune():
                spent += validation["cpu_s"]
                trials.append(ReplayedTrial(point_key(point["hparams"]), spent, None, validation["step"]))
                raise optuna.TrialPruned()
        spent += curve[-1]["cpu_s"]
        trials.append(ReplayedTrial(point_key(point["hparams"]), spent, curve[-1]["val_accuracy"], curve[-1]["step"]))
        return curve[-1]["val_accuracy"]

    limit = len(table) if sampler == "grid" else n_trials
    while (n_trials is not None or spent < total) and (limit is None or len(trials) < limit):
        study.optimize(objective, n_trials=1)
    return trials, study


def _replay_job(job: tuple[str, str, int]) -> tuple[str, str, int, list[dict[str, Any]], float]:
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    trials, _ = replay(*job)
    return (*job, [asdict(t) for t in trials], time.perf_counter() - start)


def best_so_far(trials: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(cumulative CPU-s, best complete value so far) after each completed trial."""
    best, points = -math.inf, []
    for trial in trials:
        if trial["value"] is not None and trial["value"] > best:
            best = trial["value"]
        points.append((trial["cpu_s"], best))
    return points


def compute_to_target(trials: list[dict[str, Any]], target: float) -> float | None:
    return next((cpu for cpu, best in best_so_far(trials) if best >= target), None)


def chosen_at(trials: list[dict[str, Any]], budget_cpu_s: float) -> str | None:
    """The point the search would pick with ``budget_cpu_s`` spent: the best completed trial by then (the
    earliest among equals, as the final test picks)."""
    done = [t for t in trials if t["cpu_s"] <= budget_cpu_s and t["value"] is not None]
    return max(reversed(done), key=lambda t: t["value"])["key"] if done else None


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q1), float(q2), float(q3)


def run_replay(args: argparse.Namespace) -> int:
    config = study_config()
    table = load_grid()
    total = sum(p["curve"][-1]["cpu_s"] for p in table.values())
    grid_best = max(p["curve"][-1]["val_accuracy"] for p in table.values())
    jobs = [(s, p, seed) for s in args.samplers for p in PRUNERS for seed in range(args.seeds)]
    print(f"{len(jobs)} replays on {args.processes} processes; grid: {len(table)} points, {total:.0f} CPU-s, "
          f"best validation {grid_best:.4f}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    with Pool(args.processes) as pool:
        for index, (sampler, pruner, seed, trials, seconds) in enumerate(pool.imap_unordered(_replay_job, jobs), 1):
            results[f"{sampler}/{pruner}/{seed}"] = trials
            if index % 20 == 0 or index == len(jobs):
                print(f"[{index}/{len(jobs)}] {time.perf_counter() - started:.0f} s", flush=True)
    write_json(HERE / "replay.json", {"grid_cpu_s": total, "grid_best": grid_best, "replays": results})
    summary = summarize(table, results, args.samplers, args.seeds, total, grid_best)
    (HERE / "replay.md").write_text(markdown_table(summary, table, total, grid_best, args.seeds) + "\n")
    plot(results, args.samplers, args.seeds, total, grid_best, HERE / "replay.png")
    print((HERE / "replay.md").read_text())
    return 0


def summarize(table: dict[str, dict[str, Any]], results: dict[str, list[dict[str, Any]]], samplers: list[str],
              seeds: int, total: float, grid_best: float) -> list[dict[str, Any]]:
    rows = []
    for sampler in samplers:
        for pruner in PRUNERS:
            runs = [results[f"{sampler}/{pruner}/{seed}"] for seed in range(seeds)]
            reached = [c for c in (compute_to_target(r, grid_best - TARGET_GAP) for r in runs) if c is not None]
            chosen = [chosen_at(r, CHOICE_AT * total) for r in runs]
            tests = [table[k]["test_accuracy"] for k in chosen if k is not None]
            rows.append({"sampler": sampler, "pruner": pruner, "reached": len(reached),
                         # a seed that never got there counts as the whole grid's compute and more
                         "to_target": quartiles([*reached, *[math.inf] * (seeds - len(reached))]),
                         "test_at_30": quartiles(tests) if tests else None, "chose": len(tests),
                         "trials": statistics.median(len(r) for r in runs)})
    return rows


def markdown_table(rows: list[dict[str, Any]], table: dict[str, dict[str, Any]], total: float, grid_best: float,
                   seeds: int) -> str:
    best_test = max(table.values(), key=lambda p: p["curve"][-1]["val_accuracy"])["test_accuracy"]

    def share(value: float) -> str:
        return "never" if math.isinf(value) else f"{100 * value / total:.0f}%"

    lines = [f"Grid: {len(table)} points, {total:.0f} CPU-s; best validation {100 * grid_best:.2f}% (test "
             f"{100 * best_test:.2f}%); target: validation >= {100 * (grid_best - TARGET_GAP):.2f}%. "
             f"{seeds} seeds each; compute as a share of the grid's, median [IQR].", "",
             "| sampler | pruner | compute to target | reached | trials run | test acc. of the choice at 30% |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        q1, q2, q3 = row["to_target"]
        test = ("-" if row["test_at_30"] is None else
                "{:.2f}% [{:.2f}, {:.2f}]".format(*(100 * v for v in (row["test_at_30"][1], row["test_at_30"][0],
                                                                      row["test_at_30"][2]))))
        lines.append(f"| {row['sampler']} | {row['pruner']} | {share(q2)} [{share(q1)}, {share(q3)}] | "
                     f"{row['reached']}/{seeds} | {row['trials']:.0f} | {test} |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict[str, Any]]], samplers: list[str], seeds: int, total: float, grid_best: float,
         path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, 1, 201)
    figure, axes = plt.subplots(1, len(PRUNERS), figsize=(5 * len(PRUNERS), 4), sharey=True)
    for axis, pruner in zip(axes, PRUNERS):
        for sampler in samplers:
            curves = []
            for seed in range(seeds):
                points = best_so_far(results[f"{sampler}/{pruner}/{seed}"])
                xs = np.array([cpu / total for cpu, _ in points])
                ys = np.array([best for _, best in points])
                # the best so far at each share of compute (NaN before the first completed trial, or after the run)
                index = np.searchsorted(xs, grid, side="right") - 1
                curve = np.where(index >= 0, ys[np.clip(index, 0, None)], np.nan)
                curve[(grid > xs[-1]) | np.isinf(curve)] = np.nan
                curves.append(curve)
            stacked = np.array(curves)
            with warnings.catch_warnings():  # before any seed's first completed trial: no value yet
                warnings.simplefilter("ignore", RuntimeWarning)
                median, q1, q3 = (np.nanpercentile(stacked, q, axis=0) for q in (50, 25, 75))
            line, = axis.plot(grid * 100, median * 100, label=sampler)
            axis.fill_between(grid * 100, q1 * 100, q3 * 100, color=line.get_color(), alpha=0.2)
        axis.axhline((grid_best - TARGET_GAP) * 100, color="grey", linestyle="--", linewidth=1)
        axis.set_title(f"pruner: {pruner}")
        axis.set_xlabel("CPU-seconds, % of the grid's")
    axes[0].set_ylabel("best validation accuracy so far (%)")
    axes[0].legend(loc="lower right")
    axes[0].set_ylim((grid_best - 0.06) * 100, (grid_best + 0.01) * 100)
    figure.suptitle(f"Samplers and pruners replayed against the grid: median and IQR over {seeds} seeds "
                    f"(dashed: 0.5 points below the grid's best)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


# --------------------------------------------------------------------------- warm start

RELATED_STEP = 80       # the earlier, related study: the same task and space, stopped at 40% of the budget
RELATED_TRIALS = 16
TOP_K = 5


def run_warm_start(args: argparse.Namespace) -> int:
    """TPE warm-started from a related study's best configurations, against TPE from scratch, per seed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = study_config()
    table = load_grid()
    total = sum(p["curve"][-1]["cpu_s"] for p in table.values())
    target = max(p["curve"][-1]["val_accuracy"] for p in table.values()) - TARGET_GAP
    space = learner_config(config).space
    lines = [f"TPE warm-started with the best {TOP_K} of an earlier study (TPE, {RELATED_TRIALS} trials of the same "
             f"space stopped at step {RELATED_STEP} of {config.budget.iterations}; its own compute not counted) "
             f"against TPE from scratch; {args.seeds} seeds; compute to target as a share of the grid's, median [IQR].",
             "", "| pruner | from scratch | warm-started | ratio of medians | reached (scratch / warm) | "
             "earlier study's compute |", "|---|---|---|---|---|---|"]
    for pruner in ("none", "hyperband"):
        cold, warm, earlier_cost = [], [], []
        for seed in range(args.seeds):
            related, earlier = replay("tpe", "none", 1000 + seed, at_step=RELATED_STEP, n_trials=RELATED_TRIALS)
            earlier_cost.append(related[-1].cpu_s)
            points = warm_start_points(earlier.get_trials(deepcopy=False), space, TOP_K)
            cold.append(compute_to_target([asdict(t) for t in replay("tpe", pruner, seed)[0]], target))
            warm.append(compute_to_target(
                [asdict(t) for t in replay("tpe", pruner, seed, warm=[p.params for p in points])[0]], target))
        as_share = [[math.inf if c is None else c / total for c in runs] for runs in (cold, warm)]
        (c1, c2, c3), (w1, w2, w3) = (quartiles(runs) for runs in as_share)

        def pct(value: float) -> str:
            return "never" if math.isinf(value) else f"{100 * value:.0f}%"

        ratio = "-" if math.isinf(c2) or math.isinf(w2) else f"{w2 / c2:.2f}"
        lines.append(f"| {pruner} | {pct(c2)} [{pct(c1)}, {pct(c3)}] | {pct(w2)} [{pct(w1)}, {pct(w3)}] | {ratio} | "
                     f"{sum(c is not None for c in cold)}/{args.seeds} / {sum(w is not None for w in warm)}/{args.seeds}"
                     f" | {100 * statistics.median(earlier_cost) / total:.0f}% |")
    (HERE / "warm_start.md").write_text("\n".join(lines) + "\n")
    print((HERE / "warm_start.md").read_text())
    return 0


# --------------------------------------------------------------------------- verify

def run_verify(args: argparse.Namespace) -> int:
    config = study_config()
    table = load_grid()
    total = sum(p["curve"][-1]["cpu_s"] for p in table.values())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    replayed = [asdict(t) for t in replay("tpe", "hyperband", 0)[0]]
    n_trials = next(i for i, t in enumerate(replayed, 1) if t["cpu_s"] >= CHOICE_AT * total)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hpo-efficiency-"))
    work.mkdir(parents=True, exist_ok=True)
    study = yaml.safe_load(STUDY_FILE.read_text())
    study["dataset"]["root"] = str((Path.cwd() / study["dataset"]["root"]).resolve())
    (work / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    command = [sys.executable, "-m", "hpo.run", "study.yaml", "--n-trials", str(n_trials), "--no-progress"]
    print(f"in {work}: {' '.join(command[1:])} (the replay's seed 0 ran {n_trials} trials to 30%)", flush=True)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    before = os.times()
    started = time.perf_counter()
    subprocess.run(command, cwd=work, env=environment, check=True)
    after = os.times()
    cpu_s = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    wall_s = time.perf_counter() - started

    stored = optuna.load_study(study_name=f"{config.name}/{LEARNER}", storage=f"sqlite:///{work}/optuna.db")
    real = []
    for trial in stored.get_trials(deepcopy=False):
        hparams = {k: v for k, v in trial.user_attrs["hparams"].items() if k in learner_config(config).space}
        last = max(trial.intermediate_values) if trial.intermediate_values else 0
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        # Optuna stores a pruned trial's last report as its value; the replay's pruned trials have none.
        value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        real.append({"key": point_key(hparams), "state": trial.state.name, "value": value, "step": last,
                     "seconds": seconds,
                     "intermediate": [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)]})
    same_trials = [(r["key"], r["value"], r["step"]) == (t["key"], t["value"], t["step"])
                   for r, t in zip(real, replayed)]
    same_curves = [r["intermediate"] == [v["val_accuracy"] for v in table[r["key"]]["curve"]][:len(r["intermediate"])]
                   for r in real]
    target = max(p["curve"][-1]["val_accuracy"] for p in table.values()) - TARGET_GAP
    elapsed = np.cumsum([r["seconds"] for r in real])  # one thread: a trial's wall seconds are its CPU-seconds
    real_to_target = compute_to_target([{**r, "cpu_s": c} for r, c in zip(real, elapsed)], target)
    final = stored.user_attrs["final_test"]
    tuned = point_key({k: v for k, v in stored.trials[final["trial"]].user_attrs["hparams"].items()
                       if k in learner_config(config).space})
    spec = task_spec(config)
    every = hparams_with_defaults(LEARNER, {})
    every["train_ways"] = every["train_ways"] or spec.ways  # none: the episodes' own ways
    defaults = point_key({k: v for k, v in every.items() if k in learner_config(config).space})
    per_episode = spec.ways * spec.queries
    difference = (np.array(table[tuned]["test_correct"]) - np.array(table[defaults]["test_correct"])) / per_episode
    half_width = 1.96 * difference.std(ddof=1) / math.sqrt(len(difference))
    result = {
        "n_trials": n_trials, "cpu_s": cpu_s, "wall_s": wall_s, "grid_cpu_s": total,
        "replay_cpu_s": replayed[n_trials - 1]["cpu_s"],
        "trial_seconds": sum(r["seconds"] for r in real),
        "same_trials_as_replay": sum(same_trials), "curves_equal_to_table": sum(same_curves), "trials": real,
        "real_to_target_s": real_to_target, "replay_to_target_s": compute_to_target(replayed, target),
        "final_test": final, "tuned": tuned, "defaults": defaults,
        "tuned_test_in_table": table[tuned]["test_accuracy"], "defaults_test": table[defaults]["test_accuracy"],
        "difference": float(difference.mean()), "difference_ci95": float(half_width), "episodes": len(difference)}
    write_json(HERE / "verify.json", result)
    (HERE / "verify.md").write_text(verify_markdown(result) + "\n")
    print((HERE / "verify.md").read_text())
    return 0


def _share(seconds: float | None, total: float) -> str:
    return "never" if seconds is None else f"{100 * seconds / total:.0f}%"


def verify_markdown(r: dict[str, Any]) -> str:
    return "\n".join([
        f"- Real `hpo.run`, TPE + Hyperband, {r['n_trials']} trials: {r['same_trials_as_replay']} of them the "
        f"replay's seed 0 trial for trial (point, value, pruned step); {r['curves_equal_to_table']} validation "
        f"curves equal to the table's.",
        f"- Within 0.5 points of the grid's best after {_share(r['real_to_target_s'], r['grid_cpu_s'])} of the "
        f"grid's compute (trial seconds), the replay's seed 0 after {_share(r['replay_to_target_s'], r['grid_cpu_s'])}"
        f" (the table's CPU-seconds).",
        f"- Compute: {r['trial_seconds']:.0f} s inside trials, {r['cpu_s']:.0f} CPU-s for the whole command "
        f"({r['wall_s']:.0f} s wall, with data loading and the final test), against {r['replay_cpu_s']:.0f} CPU-s "
        f"in the replay ({100 * r['replay_cpu_s'] / r['grid_cpu_s']:.0f}% of the grid's {r['grid_cpu_s']:.0f}).",
        f"- Tuned `{r['tuned']}`: final test {100 * r['final_test']['test_accuracy']:.2f}% "
        f"± {100 * r['final_test']['test_ci95']:.2f} (the table's test of that point: "
        f"{100 * r['tuned_test_in_table']:.2f}%).",
        f"- Defaults `{r['defaults']}`: {100 * r['defaults_test']:.2f}% on the same {r['episodes']} episodes.",
        f"- Tuned minus defaults, paired over the episodes: {100 * r['difference']:+.2f} points, 95% interval "
        f"[{100 * (r['difference'] - r['difference_ci95']):+.2f}, {100 * (r['difference'] + r['difference_ci95']):+.2f}]."])


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    grid = commands.add_parser("grid", help="train every grid point (continues a killed grid)")
    grid.add_argument("--threads", type=int, default=1, help="torch threads (CPU-seconds are per process)")
    replayed = commands.add_parser("replay", help="samplers and pruners against the table")
    replayed.add_argument("--seeds", type=int, default=SEEDS)
    replayed.add_argument("--samplers", type=lambda s: s.split(","), default=SAMPLERS)
    replayed.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    warm = commands.add_parser("warmstart", help="TPE warm-started from a related study, against from scratch")
    warm.add_argument("--seeds", type=int, default=SEEDS)
    verify = commands.add_parser("verify", help="one real TPE + Hyperband run, compared with the replay")
    verify.add_argument("--workdir", help="where the run's databases go (default: a new temporary folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"grid": train_grid, "replay": run_replay, "warmstart": run_warm_start,
            "verify": run_verify}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
