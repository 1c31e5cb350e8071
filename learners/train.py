"""Train and test one learner from the command line (console script ``fewshot-train``).

    python -m learners.train --learner protonet --dataset omniglot --split vinyals \\
        --ways 5 --shots 1 --iterations 2000 --set lr=0.002 --set milestones=0.5,0.75

Seeds and the meaning of every number are those of :mod:`learners.experiment`.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any, Sequence, Union, get_args, get_origin

from learners.base import TrainingDiverged
from learners.data import DATASETS
from learners.experiment import RunConfig, RunResult, train_and_test
from learners.registry import LEARNERS, coerce_value, hparam_names, hparam_types
from learners.statistics import CI_METHODS


class UsageError(ValueError):
    """Bad command-line arguments (one-line message)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump; main() turns it into exit code 2
        raise UsageError(message)


def parse_value(text: str, annotation: Any) -> Any:
    """Command-line ``text`` as a hyperparameter of type ``annotation``: ``none`` is None where the type allows
    it, commas separate the items of a tuple; the conversion is the one study files get (``coerce_value``)."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    if type(None) in options and text.lower() == "none":
        return None
    items = any(get_origin(option) is tuple for option in options)
    return coerce_value(annotation, [part.strip() for part in text.split(",") if part.strip()] if items else text)


def parse_overrides(learner: str, assignments: Sequence[str]) -> dict[str, Any]:
    """``["lr=0.01", ...]`` → typed values, checked against the learner's ``HParams`` fields."""
    types_by_name = hparam_types(learner)
    names = hparam_names(learner)
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep:
            raise UsageError(f"--set expects key=value, got '{assignment}'")
        if name not in names:
            raise UsageError(f"unknown hyperparameter '{name}' for {learner} (accepted: {', '.join(names)})")
        try:
            overrides[name] = parse_value(text, types_by_name[name])
        except ValueError as error:
            raise UsageError(f"--set {name}: {error}") from None
    return overrides


def build_parser() -> argparse.ArgumentParser:
    defaults = RunConfig(learner="")
    parser = _Parser(prog="fewshot-train", description="Train one few-shot learner and score it on test episodes.")
    parser.add_argument("--learner", required=True, choices=sorted(LEARNERS))
    parser.add_argument("--dataset", default=defaults.dataset, choices=sorted(DATASETS))
    parser.add_argument("--split", help="class split of the dataset (default: vinyals for omniglot, else default)")
    parser.add_argument("--root", help="data folder (default: ../shared/data/<dataset> if present, else ./data/<dataset>)")
    parser.add_argument("--ways", type=int, default=defaults.ways)
    parser.add_argument("--shots", type=int, default=defaults.shots)
    parser.add_argument("--queries", type=int, default=defaults.queries, help="query images per class")
    parser.add_argument("--iterations", type=int, default=defaults.iterations, help="optimiser steps")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--test-episodes", type=int, default=defaults.test_episodes)
    parser.add_argument("--ci", default=defaults.ci, choices=CI_METHODS,
                        help="how the test interval is computed (default: t, Student's t)")
    parser.add_argument("--val-interval", type=int, default=defaults.val_interval, help="steps between validations")
    parser.add_argument("--val-episodes", type=int, default=defaults.val_episodes)
    parser.add_argument("--select", default=defaults.select, choices=["last", "best"],
                        help="the model to test: the last, or the best validation's (default: last)")
    parser.add_argument("--device", default=defaults.device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--backbone", help="shortcut for --set backbone=NAME")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override a learner hyperparameter (repeatable)")
    parser.add_argument("--save", type=Path, metavar="PATH",
                        help="save the run's state (model, optimiser, random streams) here after every validation; "
                             "a run that finds one there continues from it, and the finished run's file holds "
                             "the tested model")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    hparams = parse_overrides(args.learner, args.assignments)
    if args.backbone is not None:
        hparams["backbone"] = args.backbone
    return RunConfig(learner=args.learner, dataset=args.dataset, split=args.split, root=args.root, ways=args.ways,
                     shots=args.shots, queries=args.queries, iterations=args.iterations, seed=args.seed,
                     test_episodes=args.test_episodes, ci=args.ci, val_interval=args.val_interval,
                     val_episodes=args.val_episodes, select=args.select, device=args.device, hparams=hparams)


def describe(result: RunResult) -> str:
    c = result.config
    lines = [f"{c.learner} on {c.dataset}/{c.split}, {c.ways}-way {c.shots}-shot ({c.queries} queries), "
             f"{c.iterations} iterations, seed {c.seed}, {result.device}",
             f"test accuracy: {100 * result.test_accuracy:.2f}% ± {100 * result.test_ci95:.2f}% "
             f"(95% CI, {c.ci}, over {c.test_episodes} episodes)"]
    if result.stop_reason == "early_stopping":
        lines.append(f"stopped early at step {result.history[-1].step} "
                     f"(patience {result.hparams['patience']} validations)")
    tested = next((p for p in result.history if p.step == result.selected_step), None)
    if tested is not None:
        lines.append(f"tested model: step {tested.step} ({c.select}), validation accuracy "
                     f"{100 * tested.val_accuracy:.2f}%")
    lines += [f"batch norm at test: {result.bn_at_test} statistics",
              f"wall time: {result.train_seconds:.1f} s training, {result.test_seconds:.1f} s testing"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        result = train_and_test(config_from_args(args), checkpoint=args.save)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # writing the checkpoint: disk full, folder missing or not writable
        print(f"error: --save {args.save}: {error.strerror or error}", file=sys.stderr)
        return 1
    except ValueError as error:  # DataError, UsageError and hyperparameter checks: the user's input
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json()) if args.json else describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
