"""The three class splits a few-shot benchmark is made of (its own module so loaders can import it)."""
from __future__ import annotations

from dataclasses import dataclass

from learners.data.episodes import ImageSplit


@dataclass(frozen=True)
class DatasetSplits:
    """The three disjoint class splits of a few-shot benchmark."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit

    def __getitem__(self, name: str) -> ImageSplit:
        return {"train": self.train, "val": self.val, "test": self.test}[name]
