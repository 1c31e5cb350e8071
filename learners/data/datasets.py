"""The registry of datasets: name → loader of its three class splits."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from learners.data.dataset_splits import DatasetSplits
from learners.data.episodes import DataError
from learners.data.imagefolder import load_miniimagenet, load_tieredimagenet
from learners.data.omniglot import load_omniglot
from learners.data.preprocessing import Preprocessing
from learners.data.synthetic import synthetic_split

# Generated images are never read from files; a user's images for a synthetic model become 28×28 grayscale.
SYNTHETIC_PREPROCESSING = Preprocessing(channels=1, size=28)


def load_synthetic(root: Path | None = None, split: str = "default", cache_dir: Path | None = None,
                   download: bool = False, seed: int = 0) -> DatasetSplits:
    """64 / 16 / 20 generated classes of 20 images, 1×28×28 (``root`` and ``split`` are ignored)."""
    return DatasetSplits(*(synthetic_split(name, n, image_size=SYNTHETIC_PREPROCESSING.size, seed=seed + i)
                           for i, (name, n) in enumerate([("train", 64), ("val", 16), ("test", 20)])),
                         SYNTHETIC_PREPROCESSING)


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
    splits = DATASETS[name](root=Path(root) if root else None, split=split,
                            cache_dir=Path(cache_dir) if cache_dir else None, download=download)
    return dataclasses.replace(splits, dataset=name, split=split)
