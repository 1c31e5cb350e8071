"""The three class splits a few-shot benchmark is made of (its own module so loaders can import it)."""
from __future__ import annotations

from dataclasses import dataclass

from learners.data.episodes import ImageSplit, TaskSpec
from learners.data.preprocessing import Preprocessing


@dataclass(frozen=True)
class DatasetSplits:
    """The three disjoint class splits of a few-shot benchmark, and how its image files were decoded."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    preprocessing: Preprocessing
    dataset: str = ""            # its name in the registry, and the split it was loaded with (set by load_dataset)
    split: str = "default"

    def __getitem__(self, name: str) -> ImageSplit:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def check_spec(self, spec: TaskSpec) -> None:
        """Raise :class:`~learners.data.DataError` unless every split can form ``spec``'s episodes."""
        for split in (self.train, self.val, self.test):
            split.check_spec(spec)
