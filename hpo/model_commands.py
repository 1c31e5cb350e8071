"""What ``hpo.evaluate`` and ``hpo.predict`` share: the MODEL argument, the tracking URI and device options,
and one ``error:`` line with exit code 2 for every bad input (nothing is written by either command but the
``--csv`` file that ``hpo.predict`` is asked for)."""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Callable

from hpo.cli import OneLineParser
from hpo.config import check_mlflow_server, is_mlflow_server
from hpo.errors import BAD_INPUT, FAULT, ConfigError, RunAborted
from hpo.logs import quiet_logging
from hpo.storage import storage_kind
from learners.checkpoint import CheckpointError, SavedModel, load_model
from learners.data import DataError

RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id
MODEL_HELP = ("a registered model (models:/NAME/VERSION, models:/NAME@ALIAS), an MLflow run id, a runs:/RUN_ID/PATH "
              "URI, or a model or checkpoint file (a study's model.pt, learners.train --save)")
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # a study's default


def parser(prog: str, description: str) -> OneLineParser:
    """A parser with MODEL, ``--tracking-uri`` and ``--device``."""
    made = OneLineParser(prog=prog, description=description)
    made.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    made.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI),
                      help="MLflow tracking URI for models:/, runs:/ and run ids (default: $MLFLOW_TRACKING_URI, "
                           f"else {DEFAULT_TRACKING_URI}, a study's default)")
    made.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    return made


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def open_model(reference: str, tracking_uri: str) -> SavedModel:
    """The model ``reference`` names (see :data:`MODEL_HELP`); a tracking URI is checked before it is used, so
    that a missing SQLite file is not created and an unreachable server is one line."""
    if Path(reference).exists() or not (reference.startswith(("models:/", "runs:/")) or RUN_ID.fullmatch(reference)):
        return load_model(Path(reference))
    check_tracking(tracking_uri)
    from hpo.tracking import fetch_model  # MLflow takes a second to import; model files do without it

    return fetch_model(reference, tracking_uri)


def run_command(command: Callable[[], None]) -> int:
    """Run a command; bad input is one ``error:`` line and exit code 2, a lost tracking server exit code 1."""
    quiet_logging()
    try:
        command()
    except (ConfigError, CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT
    except RunAborted as e:  # tracking failed midway
        print(f"error: {e}", file=sys.stderr)
        return FAULT
    return 0


def check_tracking(uri: str) -> None:
    if is_mlflow_server(uri):
        check_mlflow_server(uri, "--tracking-uri")
        return
    storage_kind(uri).check_exists("--tracking-uri")
