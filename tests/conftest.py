"""Shared pytest fixtures (shared helpers are in ``helpers.py``)."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import torch

from learners.data import DatasetSplits, load_dataset
from tests.helpers import PASSWORD, REPO, connect_to_postgres

# Real data lives next to the checkout (see ../shared/data/README.md), never inside it.
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread in this process, for a whole module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Two shared cores: several intra-op threads per process slow training down several-fold (one thread per
    process avoids oversubscription).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic() -> DatasetSplits:
    return load_dataset("synthetic")


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """The folder with the real Omniglot archives; skips the test when they are absent."""
    root = SHARED_DATA / "omniglot"
    if not (root / "images_background.zip").is_file() or not (root / "images_evaluation.zip").is_file():
        pytest.skip(f"real Omniglot archives not found in {root} (see shared/data/README.md)")
    return root


@pytest.fixture(scope="session")
def omniglot_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder private to this test session, so the archives are decoded exactly once per session."""
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="session")
def omniglot_first_load(omniglot_root: Path, omniglot_cache: Path) -> tuple[DatasetSplits, float]:
    """Vinyals splits from a cold cache (decodes every PNG), and how many seconds that took."""
    start = time.perf_counter()
    splits = load_dataset("omniglot", root=omniglot_root, split="vinyals", cache_dir=omniglot_cache)
    return splits, time.perf_counter() - start


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh database, dropped afterwards, as a URL carrying a password (trust auth ignores it)."""
    admin = connect_to_postgres()
    database = f"hpo_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    try:
        yield f"postgresql://{admin.info.user}:{PASSWORD}@127.0.0.1:5432/{database}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
