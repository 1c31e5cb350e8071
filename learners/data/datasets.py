"""The registry of datasets: name → loader of its three class splits."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from learners.data.dataset_splits import DatasetSplits
from learners.data.episodes import DataError
from learners.data.imagefolder import load_miniimagenet, load_tieredimagenet
from learners.data.omniglot import load_omniglot
from learners.data.synthetic import synthetic_split


def load_synthetic(root: Path | None = None, split: str = "default", cache_dir: Path | None = None,
                   download: bool = False, seed: int = 0) -> DatasetSplits:
    """64 / 16 / 20 generated classes of 20 images, 1×28×28 (``root`` and ``split`` are ignored)."""
    return DatasetSplits(*(synthetic_split(name, n, seed=seed + i)
                           for i, (name, n) in enumerate([("train", 64), ("val", 16), ("test", 20)])))


DatasetLoader = Callable[..., DatasetSplits]

DATASETS: dict[str, DatasetLoader] = {
    "synthetic": load_synthetic,
    "omniglot": load_omniglot,
    "miniimagenet": load_miniimagenet,
    "tieredimagenet": load_tieredimagenet,
}


# The split a dataset is loaded with when none is named: Omniglot's standard one; the others have one split.
DEFAULT_SPLITS = {"omniglot": "vinyals"}


def default_split(name: str) -> str:
    return DEFAULT_SPLITS.get(name, "default")


def load_dataset(name: str, root: str | Path | None = None, split: str = "default",
                 cache_dir: str | Path | None = None, download: bool = False) -> DatasetSplits:
    """Load a dataset by registry name. Raises :class:`DataError` with a one-line message on bad input."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    return DATASETS[name](root=Path(root) if root else None, split=split,
                          cache_dir=Path(cache_dir) if cache_dir else None, download=download)
