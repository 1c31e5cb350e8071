"""Loading a study file: read the YAML, apply the command line's overrides, validate everything.

Validation happens in passes, all before anything is written: pydantic checks the shape and
types of the file (:mod:`hpo.config._schema`), then :func:`~hpo.config._learners.check_learners`
checks every ``fixed`` and ``space`` entry against the learner's own hyperparameters, then
:func:`check_workers` the storage against ``search.workers``. Every problem becomes a
:class:`~hpo.errors.ConfigError` whose one-line message names the file and the field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpo.config._learners import check_learners
from hpo.config._schema import SPACE_TYPES, StudyConfig
from hpo.errors import ConfigError
from hpo.storage import resolved_url, storage_kind


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read, override and fully validate a study file; nothing is written.

    Args:
        path: the study file (YAML).
        overrides: dotted fields set before validation, e.g. ``{"search.n_trials": 4}`` (``None`` values
            are ignored), as the command line's options do.

    Raises:
        ConfigError: the first problem, naming the file and the field.
    """
    file = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the study file ({e.strerror})", file=file) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise ConfigError(f"invalid YAML: {getattr(e, 'problem', None) or e}", where, file) from None
    if not isinstance(raw, dict):
        raise ConfigError("a study file is a mapping of fields (name, dataset, learners, ...)", file=file)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, dotted, value)
    try:
        config = StudyConfig.model_validate(raw)
        check_learners(config)
        check_workers(config)
    except ValidationError as e:
        error = e.errors()[0]
        raise ConfigError(_error_message(error), _dotted(error["loc"]), file) from None
    except ConfigError as e:
        e.file = file
        raise
    return config


def check_workers(config: StudyConfig) -> None:
    """Several workers need a storage made for many writers; SQLite takes one worker per command (however many
    commands share it)."""
    workers, kind = config.search.workers, storage_kind(config.storage)
    if workers > 1 and not kind.shared_by_processes:
        raise ConfigError(f"{workers} workers need a storage that several processes can share: "
                          f"journal:///optuna.journal (this machine) or postgresql://user@host/db (many machines), "
                          f"not {kind.scheme}", "search.workers")


def selected_learners(config: StudyConfig, names: list[str] | None) -> list[str]:
    """The learners to run: ``names`` (from ``--learners``) in the given order, or all of the study's."""
    if not names:
        return list(config.learners)
    unknown = [n for n in names if n not in config.learners]
    if unknown:
        raise ConfigError(f"'{unknown[0]}' is not a learner of this study (it has: {', '.join(config.learners)})",
                          "--learners")
    return names


def resolve_paths(config: StudyConfig, cwd: Path | None = None) -> StudyConfig:
    """Relative data paths and SQLite / journal files made absolute against the working directory."""
    cwd = cwd or Path.cwd()
    dataset = config.dataset.model_copy(update={
        "root": (cwd / config.dataset.root).resolve() if config.dataset.root else None,
        "cache_dir": (cwd / config.dataset.cache_dir).resolve() if config.dataset.cache_dir else None})
    return config.model_copy(update={"dataset": dataset, "storage": resolved_url(config.storage, cwd),
                                     "tracking_uri": resolved_url(config.tracking_uri, cwd)})


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        if not isinstance(raw.get(key), dict):
            raw[key] = {}
        raw = raw[key]
    raw[last] = value


def _dotted(loc: tuple) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        elif i >= 2 and loc[i - 2] == "space" and item in SPACE_TYPES:
            continue  # pydantic's discriminator tag, not a key in the file
        else:
            parts.append(str(item))
    return ".".join(parts)


def _error_message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return error["msg"].removeprefix("Value error, ")
