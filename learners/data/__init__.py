"""Datasets as class splits (train / val / test) of uint8 tensors, and episode sampling from them."""
from learners.data.dataset_splits import DatasetSplits
from learners.data.datasets import DATASETS, default_split, load_dataset
from learners.data.episodes import (DataError, Episodes, EpisodeSampler, ImageSplit, LabelledBatches, TaskSpec,
                                    episode_digest, fixed_episodes)
from learners.data.preprocessing import Preprocessing
from learners.data.synthetic import synthetic_split

__all__ = ["DATASETS", "DataError", "DatasetSplits", "Episodes", "EpisodeSampler", "ImageSplit", "LabelledBatches",
           "Preprocessing", "TaskSpec", "default_split", "episode_digest", "fixed_episodes", "load_dataset",
           "synthetic_split"]
