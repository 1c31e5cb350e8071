"""Decoded datasets cached as ``torch.save`` files, keyed by what they were decoded from.

Decoding tens of thousands of PNG/JPEG files takes seconds to minutes; loading
one uint8 tensor file takes about a second. The cache key holds everything the
tensors depend on (decoding settings and a fingerprint of the source files), so
a changed archive or a different image size never reuses a stale file.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from learners.files import write_atomically

CACHE_ENV = "FEWSHOT_HPO_CACHE"


def resolve_cache_dir(cache_dir: Path | None) -> Path:
    """``cache_dir`` if given, else ``$FEWSHOT_HPO_CACHE``, else ``~/.cache/fewshot-hpo``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fewshot-hpo").expanduser()


def fingerprint(paths: Iterable[Path]) -> list[list[str | int]]:
    """Path, size and modification time of each path (not recursive: a folder's mtime changes when
    entries are added, removed or renamed in it, which is cheap to check even for huge trees)."""
    return [[str(Path(p).resolve()), (s := Path(p).stat()).st_size, s.st_mtime_ns] for p in paths]


def cached(cache_dir: Path | None, name: str, key: dict[str, Any],
           build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``build()``'s result, from ``<cache>/<name>-<hash of key>.pt`` when present, else built and saved.

    ``build`` must return tensors, strings, numbers and lists/dicts of them (loaded with ``weights_only``).
    The file is written to a temporary name and renamed, so readers never see a partial file.
    """
    directory = resolve_cache_dir(cache_dir)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = directory / f"{name}-{digest}.pt"
    if path.is_file():
        try:
            # Memory-mapped: parallel workers on one machine share the page cache instead of copies.
            return torch.load(path, weights_only=True, mmap=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            pass  # unreadable (e.g. written by an incompatible torch): rebuild and overwrite
    data = build()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda handle: torch.save(data, handle))
    except OSError as error:
        # A read-only or full cache folder costs speed next time, not correctness now.
        warnings.warn(f"could not write dataset cache {path}: {error}", stacklevel=2)
    return data
