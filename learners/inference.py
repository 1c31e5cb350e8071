"""A saved model on anyone's images: episodes from folders, and unlabelled images against a support set.

Episode folders (``read_episodes``)::

    DIR/<episode>/support/<class>/<image files>
    DIR/<episode>/query/<class>/<image files>

Class folder names pair the support and query images of a class within an episode; episodes may differ in
ways and shots, and classes in images. A support folder alone (``read_support``) is ``DIR/<class>/<images>``.
Every image goes through the model's own :class:`~learners.data.preprocessing.Preprocessing`, so an Omniglot
model takes 105×105 ink-on-white PNGs like the originals. Folders and files are read in sorted order.

Example::

    model = load_model("model.pt")
    learner = model.build()
    for episode in read_episodes(Path("my-episodes"), model.trained_on.preprocessing):
        print(episode.name, episode_accuracy(learner, episode, model.trained_on.preprocessing))
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from learners.base import Learner
from learners.data import DataError, Episodes, ImageSplit, TaskSpec
from learners.data.preprocessing import Preprocessing

# What PIL reads and a user is likely to have; other files in a class folder are ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


@dataclass
class LabelledImages:
    """uint8 images ``[n, C, H, W]`` (after preprocessing), their class indices and files."""

    images: torch.Tensor
    labels: torch.Tensor
    files: list[Path]


@dataclass
class FolderEpisode:
    """One episode of a folder: its class names (support order) and the support and query images."""

    name: str
    classes: list[str]
    support: LabelledImages
    query: LabelledImages

    @property
    def ways(self) -> int:
        return len(self.classes)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name (hidden files skipped)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def class_folders(folder: Path) -> dict[str, list[Path]]:
    """Class name → its image files, for every class folder of ``folder``.

    Raises:
        DataError: ``folder`` is missing or has no class folders, or a class folder has no images.
    """
    if not folder.is_dir():
        raise DataError(f"no folder {folder}")
    classes = {d.name: image_files(d) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if not classes:
        raise DataError(f"{folder} has no class folders (expected {folder}/<class>/<images>)")
    empty = next((name for name, files in classes.items() if not files), None)
    if empty is not None:
        raise DataError(f"class folder {folder / empty} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes


def read_labelled(classes: dict[str, list[Path]], order: list[str], preprocessing: Preprocessing) -> LabelledImages:
    """The images of ``classes``, labelled by the position of their class in ``order``."""
    files = [path for name in classes for path in classes[name]]
    labels = torch.tensor([order.index(name) for name in classes for _ in classes[name]], dtype=torch.long)
    return LabelledImages(preprocessing.read_all(files), labels, files)


def read_support(folder: Path, preprocessing: Preprocessing) -> tuple[list[str], LabelledImages]:
    """The class names and images of a support folder ``folder/<class>/<images>``."""
    classes = class_folders(folder)
    if len(classes) < 2:
        raise DataError(f"{folder} has {len(classes)} class folder: at least 2 classes to tell apart")
    order = list(classes)
    return order, read_labelled(classes, order, preprocessing)


def read_episodes(folder: Path, preprocessing: Preprocessing) -> list[FolderEpisode]:
    """Every episode of an episode folder (see the module's docstring).

    Raises:
        DataError: the folder has no episodes, an episode lacks ``support/`` or ``query/``, a query class has
            no support class, or an image cannot be read or converted.
    """
    if not folder.is_dir():
        raise DataError(f"no folder {folder}")
    episodes = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if not episodes:
        raise DataError(f"{folder} has no episodes (expected {folder}/<episode>/support/<class>/<images> and "
                        f"{folder}/<episode>/query/<class>/<images>)")
    read = []
    for episode in episodes:
        order, support = read_support(episode / "support", preprocessing)
        query = class_folders(episode / "query")
        unpaired = next((name for name in query if name not in order), None)
        if unpaired is not None:
            raise DataError(f"query class {episode / 'query' / unpaired} has no support class "
                            f"{episode / 'support' / unpaired}")
        read.append(FolderEpisode(episode.name, order, support, read_labelled(query, order, preprocessing)))
    return read


def probabilities(learner: Learner, preprocessing: Preprocessing, support: torch.Tensor,
                  support_labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """Class probabilities ``[queries, ways]`` of uint8 ``query`` images (after preprocessing) given uint8
    ``support`` images labelled ``0..ways-1``."""
    device = learner.device
    episode = Episodes(preprocessing.normalise(support, device)[None], support_labels.to(device)[None],
                       preprocessing.normalise(query, device)[None],
                       torch.zeros(1, len(query), dtype=torch.long, device=device))
    return learner.classify(episode, ways).cpu()


def episode_accuracy(learner: Learner, episode: FolderEpisode, preprocessing: Preprocessing) -> float:
    """The fraction of an episode's query images classified as their class."""
    predicted = probabilities(learner, preprocessing, episode.support.images, episode.support.labels,
                              episode.query.images, episode.ways).argmax(-1)
    return float((predicted == episode.query.labels).double().mean())


def example_episode(split: ImageSplit, spec: TaskSpec) -> dict[str, np.ndarray]:
    """A small real input of a model (its MLflow input example): the first ``spec.ways`` classes of ``split``,
    ``spec.shots`` support images and one query image each."""
    starts = split.class_start[: spec.ways].tolist()
    support = torch.cat([split.images[s: s + spec.shots] for s in starts])
    query = torch.stack([split.images[s + spec.shots] for s in starts])
    labels = torch.arange(spec.ways).repeat_interleave(spec.shots)
    return {"support": support.numpy(), "support_labels": labels.numpy(), "query": query.numpy()}
