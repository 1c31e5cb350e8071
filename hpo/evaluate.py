"""``python -m hpo.evaluate MODEL [options]`` (also ``fewshot-evaluate``): score a saved model.

On a dataset (by default the model's own: its dataset, class split and seed, its episode shape, the test
classes) it prints the mean accuracy ± 95% CI over fixed episodes; with the study's ``test.episodes`` it
reproduces the study's final test exactly (CPU). ``--episodes-dir DIR`` scores the user's own episodes
(``DIR/<episode>/{support,query}/<class>/<images>``, see :mod:`learners.inference`). ``--json`` prints one JSON
object instead: the per-episode accuracies and the protocol.

Exit codes: 0 done, 2 bad input (one ``error:`` line; nothing is written), 1 the tracking server failed midway.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from hpo.config import resolve_device
from hpo.model_commands import open_model, parser, positive_int, run_command
from learners.base import evaluation_seed
from learners.checkpoint import SavedModel
from learners.data import TaskSpec, load_dataset
from learners.experiment import default_root
from learners.inference import episode_accuracy, read_episodes
from learners.statistics import CI_METHODS, describe_method, mean_interval


def parse_args(argv: list[str] | None):  # -> argparse.Namespace
    made = parser("python -m hpo.evaluate", __doc__.splitlines()[0].split(": ", 1)[1])
    made.add_argument("--dataset", help="dataset (default: the model's)")
    made.add_argument("--root", help="dataset folder (default: ../shared/data/<dataset> if present, else data/<dataset>)")
    made.add_argument("--split", help="class split (default: the model's)")
    made.add_argument("--part", choices=("test", "val"), default="test", help="which classes (default: test)")
    made.add_argument("--ways", type=positive_int, help="default: the model's")
    made.add_argument("--shots", type=positive_int, help="default: the model's")
    made.add_argument("--queries", type=positive_int, help="default: the model's")
    made.add_argument("--episodes", type=positive_int, default=600, help="fixed episodes (default: 600, a study's "
                                                                         "test.episodes default)")
    made.add_argument("--seed", type=int, help="the run seed the episodes derive from (default: the model's)")
    made.add_argument("--ci", choices=CI_METHODS, default="t", help="how the interval is computed (default: t, "
                                                                     "Student's t, as a study's test.ci default)")
    made.add_argument("--episodes-dir", type=Path, metavar="DIR", help="score these episodes instead of a dataset")
    made.add_argument("--json", action="store_true", help="print one JSON object with per-episode accuracies")
    return made.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: _evaluate(args))


def _evaluate(args: Any) -> None:
    model = open_model(args.model, args.tracking_uri)
    device = resolve_device(args.device)
    accuracies, report = (_on_folder(model, args.episodes_dir, device) if args.episodes_dir
                          else _on_dataset(model, args, device))
    report = {"model": args.model, "learner": model.learner, "step": model.step, **_summary(accuracies, args.ci),
              **report}
    report["protocol"]["ci"] = describe_method(args.ci)
    print(json.dumps(report, indent=2) if args.json else _text(report))


def _on_dataset(model: SavedModel, args: Any, device: torch.device) -> tuple[list[float], dict[str, Any]]:
    """The per-episode accuracies, and the report's episodes and protocol."""
    trained = model.trained_on
    dataset = args.dataset or trained.dataset
    split = args.split or (trained.split if dataset == trained.dataset else "default")
    spec = TaskSpec(args.ways or trained.spec.ways, args.shots or trained.spec.shots,
                    args.queries or trained.spec.queries)
    seed = trained.seed if args.seed is None else args.seed
    data = load_dataset(dataset, args.root or default_root(dataset), split)
    classes = data[args.part]
    classes.check_spec(spec)
    learner = model.build(device, spec)
    episode_seed = evaluation_seed(seed, args.part)
    accuracies = learner.evaluate(classes, args.episodes, episode_seed, progress=not args.json).tolist()
    protocol = {"dataset": dataset, "split": split, "part": args.part, "ways": spec.ways, "shots": spec.shots,
                "queries": spec.queries, "episodes": args.episodes, "episode_seed": episode_seed,
                "bn_at_test": learner.bn_at_test}
    return accuracies, {"per_episode": accuracies, "protocol": protocol}


def _on_folder(model: SavedModel, folder: Path, device: torch.device) -> tuple[list[float], dict[str, Any]]:
    """As :func:`_on_dataset`, for the episodes of a folder."""
    preprocessing = model.trained_on.preprocessing
    episodes = read_episodes(folder, preprocessing)
    learner = model.build(device)
    for episode in episodes:  # every mismatch before any work
        learner.check_ways(episode.ways)
    scored = [{"episode": e.name, "ways": e.ways, "support": len(e.support.files), "query": len(e.query.files),
               "accuracy": episode_accuracy(learner, e, preprocessing)} for e in episodes]
    protocol = {"episodes_dir": str(folder), "episodes": len(scored), "bn_at_test": learner.bn_at_test,
                "preprocessing": vars(preprocessing)}
    return [e["accuracy"] for e in scored], {"per_episode": scored, "protocol": protocol}


def _summary(accuracies: list[float], method: str) -> dict[str, Any]:
    interval = mean_interval(accuracies, method)
    ci95 = interval.half_width
    return {"accuracy": interval.mean, "ci95": ci95 if math.isfinite(ci95) else None,  # NaN: 1 episode
            "error_rate": 1 - interval.mean}


def _text(report: dict[str, Any]) -> str:
    protocol = report["protocol"]
    lines = [f"{report['learner']} model {report['model']} (step {report['step']})"]
    if "episodes_dir" in protocol:
        lines.append(f"{protocol['episodes']} episodes from {protocol['episodes_dir']}:")
        width = max(len(e["episode"]) for e in report["per_episode"])
        lines += [f"  {e['episode']:<{width}}  {e['ways']}-way, {e['support']} support, {e['query']} query: "
                  f"{100 * e['accuracy']:6.2f}%" for e in report["per_episode"]]
    else:
        lines.append(f"{protocol['dataset']} {protocol['split']} {protocol['part']} classes: {protocol['ways']}-way "
                     f"{protocol['shots']}-shot {protocol['queries']}-query, {protocol['episodes']} episodes of seed "
                     f"{protocol['episode_seed']}, batch norm {protocol['bn_at_test']}")
    ci = "n/a (one episode)" if report["ci95"] is None else f"{100 * report['ci95']:.2f}%"
    lines.append(f"accuracy {100 * report['accuracy']:.2f}% ± {ci} ({protocol['ci']}), error rate "
                 f"{100 * report['error_rate']:.2f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
