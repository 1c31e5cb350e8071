"""The plan printed before a search (and alone by ``--dry-run``): what will run, where results go."""
from __future__ import annotations

import torch

from hpo.config import ARTIFACT_FOLDER, StudyConfig, describe, grid_search_points, is_mlflow_server
from hpo.redaction import redact
from hpo.storage import storage_kind
from learners.data import DatasetSplits


def format_plan(config: StudyConfig, learners: list[str], data: DatasetSplits, device: torch.device) -> str:
    """The plan of running ``learners`` of the study on ``data`` and ``device``, as lines of text."""
    d, s, b, p = config.dataset, config.search, config.budget, config.search.pruner
    classes = " / ".join(f"{name} {data[name].num_classes}" for name in ("train", "val", "test"))
    pruner = {"median": f"median pruner (n_startup_trials {p.n_startup_trials}, n_warmup_steps {p.n_warmup_steps})",
              "hyperband": f"hyperband pruner (reduction_factor {p.reduction_factor})",
              "none": "no pruner"}[p.type]
    artifacts = "" if is_mlflow_server(config.tracking_uri) else f" (artifacts in ./{ARTIFACT_FOLDER})"
    lines = [
        f"study '{config.name}' (seed {config.seed})",
        f"  data      {d.name}, split {d.split}, root {d.root or '-'}: {classes} classes, "
        f"images {'x'.join(map(str, data.train.image_shape))}",
        f"  episodes  {d.ways}-way {d.shots}-shot, {d.queries} queries per class",
        f"  search    {s.sampler} sampler, {pruner}, n_trials {s.n_trials or '-'} per learner in total, "
        f"timeout {s.timeout or '-'} s per learner, workers {s.workers}",
        *([f"  warm start  the best {s.warm_start.top_k} of {s.warm_start.study}"
           f"{'' if '/' in s.warm_start.study else '/<learner>'} at {redact(s.warm_start.storage)}, queued first "
           f"(once per study)"] if s.warm_start else []),
        f"  budget    {b.iterations} iterations, validation every {b.val_interval} on {b.val_episodes} episodes; "
        f"final test on {config.test.episodes} episodes (95% CI: {config.test.ci})"
        f"{f', {config.test.seeds} training seeds' if config.test.seeds > 1 else ''}",
        f"  device    {device}",
        f"  storage   {redact(config.storage)} (studies {config.name}/<learner>)",
        f"  tracking  {redact(config.tracking_uri)} (experiment {config.name}){artifacts}",
        "  learners",
    ]
    for learner in learners:
        entry = config.learners[learner]
        fixed = ", ".join(f"{k}={v}" for k, v in entry.fixed.items()) or "-"
        lines.append(f"    {learner}")
        lines.append(f"      fixed  {fixed}")
        lines += [f"      {'space' if i == 0 else '     '}  {name}: {describe(param)}"
                  for i, (name, param) in enumerate(entry.space.items())]
        if s.sampler == "grid":
            lines.append(f"      grid   {len(grid_search_points(entry.space, learner))} points")
    return "\n".join(lines)


def format_where_to_look(config: StudyConfig, experiment_id: str) -> str:
    """The lines printed after a search: how to open its MLflow experiment on its runs, and its Optuna studies."""
    # MLflow 3.17's UI opens an experiment in its GenAI mode (a traces page) unless the link asks for the other.
    runs = f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    optuna = (f"Optuna: optuna-dashboard {storage_kind(config.storage).dashboard_argument()}   "
              f"(pip install -e '.[dashboard]'; then open http://127.0.0.1:8080)")
    if is_mlflow_server(config.tracking_uri):
        return f"MLflow: open {redact(config.tracking_uri).rstrip('/')}{runs}\n{optuna}"
    return (f"MLflow: mlflow ui --backend-store-uri {redact(config.tracking_uri)}\n"
            f"        then open http://127.0.0.1:5000{runs}\n{optuna}")
