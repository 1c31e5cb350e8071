"""Command line: ``python -m hpo.run STUDY.yaml [options]`` (also the ``fewshot-hpo`` console script).

Exit codes: 0 done, 1 a fault stopped the run (storage or tracking lost, disk full, too many failed
trials: one ``error:`` line; rerun to resume), 2 bad input (one ``error: <file>: <field>: <message>``
line, nothing written), 130 interrupted by Ctrl-C, 143 by SIGTERM (rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import NoReturn

from hpo.config import (check_storage, check_tracking_uri, check_warm_start, load_config, load_data, resolve_device,
                        resolve_paths, selected_learners)
from hpo.errors import BAD_INPUT, ConfigError
from hpo.reporting import format_plan


class OneLineParser(argparse.ArgumentParser):
    """A command-line mistake is one ``error:`` line and exit code 2 (argparse would add the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m hpo.run", description=__doc__.splitlines()[0])
    parser.add_argument("study", help="study file (YAML)")
    parser.add_argument("--n-trials", type=int, help="total trials per learner (overrides search.n_trials)")
    parser.add_argument("--storage", help="Optuna storage URL (overrides storage)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (overrides tracking_uri)")
    parser.add_argument("--learners", type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
                        help="comma-separated learners of the study to run (default: all)")
    parser.add_argument("--workers", type=int, help="worker processes on this machine (overrides search.workers)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate, load the data and print the plan; write nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``python -m hpo.run``: validate, print the plan, run the study, print its summary; the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    overrides = {"search.n_trials": args.n_trials, "search.workers": args.workers,
                 "storage": args.storage, "tracking_uri": args.tracking_uri}
    try:
        config = resolve_paths(load_config(args.study, overrides))
        learners = selected_learners(config, args.learners)
        device = resolve_device(config.device)
        data = load_data(config)
        check_storage(config.storage)
        check_warm_start(config, learners)
        check_tracking_uri(config.tracking_uri)
    except ConfigError as e:
        e.file = e.file or args.study
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT
    print(format_plan(config, learners, data, device), flush=True)
    if args.dry_run:
        return 0

    # The one lazy import: MLflow and the study code take over a second to import, bad input should not wait.
    from hpo.execution import as_command, run_study
    from hpo.logs import quiet_logging

    quiet_logging()
    resume = f"\ninterrupted; resume with: {resume_command(argv)}"
    return as_command(lambda: print(run_study(config, learners, data, progress=not args.no_progress)),
                      config.storage, on_interrupt=lambda: print(resume, file=sys.stderr))


def resume_command(argv: list[str]) -> str:
    return shlex.join(["python", "-m", "hpo.run", *argv])
