"""Shared pytest fixtures."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from learners.data import DatasetSplits, load_dataset

# Real data lives next to the checkout (see ../shared/data/README.md), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
