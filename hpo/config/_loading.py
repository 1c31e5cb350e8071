"""Loading a study file: read the YAML, apply the command line's overrides, validate everything.

Validation happens in passes, all before anything is written: pydantic checks the shape and
types of the file (:mod:`hpo.config._schema`), then :func:`~hpo.config._learners.check_learners`
checks every ``fixed`` and ``space`` entry against the learner's own hyperparameters, then
:func:`check_workers` the storage against ``search.workers``. Every problem becomes a
:class:`~hpo.errors.ConfigError` whose one-line message names the file and the field.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpo.config._learners import check_learners
from hpo.config._schema import SPACE_TYPES, StudyConfig
from hpo.errors import ConfigError
from hpo.storage import resolved_url, storage_kind

# Workers beyond the cores share them; a few per core is still useful while trials wait on a database or server.
MAX_WORKERS_PER_CORE = 4


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
        raw = yaml.load(_study_text(Path(path), file), Loader=_UniqueKeyLoader)
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


def _study_text(path: Path, file: str) -> str:
    """The study file as text: UTF-8 (a byte-order mark is allowed), without NUL bytes."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the study file ({e.strerror})", file=file) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); a study file is YAML "
                          f"saved as UTF-8", file=file) from None
    nul = text.find("\0")
    if nul >= 0:
        raise ConfigError(f"not a text file (a NUL byte at offset {nul})", file=file)
    return text


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"found duplicate key '{key}'",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def check_workers(config: StudyConfig) -> None:
    """Several workers need a storage made for many writers; SQLite takes one worker per command (however many
    commands share it). Workers far above the cores only slow each other down."""
    workers, kind, cores = config.search.workers, storage_kind(config.storage), os.cpu_count() or 1
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise ConfigError(f"{workers} workers on {cores} cores would only slow each other down (at most "
                          f"{MAX_WORKERS_PER_CORE * cores} here); on several machines start one run per machine",
                          "search.workers")
    if workers > 1 and not kind.shared_by_processes:
        raise ConfigError(f"{workers} workers need a storage that several processes can share: "
                          f"journal:///optuna.journal (this machine) or postgresql://user@host/db (many machines), "
                          f"not {kind.scheme}", "search.workers")


def selected_learners(config: StudyConfig, names: list[str] | None) -> list[str]:
    """The learners to run: ``names`` (from ``--learners``) in the given order, or all of the study's."""
    if names is None:
        return list(config.learners)
    if not names:
        raise ConfigError("no learner named (give names separated by commas)", "--learners")
    twice = [n for i, n in enumerate(names) if n in names[:i]]
    if twice:
        raise ConfigError(f"'{twice[0]}' is named twice", "--learners")
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
    search = config.search
    if search.warm_start is not None:
        source = search.warm_start
        search = search.model_copy(update={"warm_start": source.model_copy(update={
            "storage": resolved_url(source.storage or config.storage, cwd)})})
    return config.model_copy(update={"dataset": dataset, "storage": resolved_url(config.storage, cwd),
                                     "tracking_uri": resolved_url(config.tracking_uri, cwd), "search": search})


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
