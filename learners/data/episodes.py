"""Class splits held as one uint8 tensor, and N-way K-shot episodes sampled from them.

Sampling is index arithmetic on tensors: no Python work per image. Training draws
from a seeded stream; evaluation episodes are fixed by their seed, so every learner
and every trial is scored on exactly the same tasks (paired comparisons).
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Iterator

import torch


class DataError(ValueError):
    """Data is missing, malformed or cannot satisfy a request (one-line message)."""


@dataclass(frozen=True)
class TaskSpec:
    """Shape of an episode: ``ways`` classes, ``shots`` support and ``queries`` query images each."""

    ways: int
    shots: int
    queries: int

    def __post_init__(self) -> None:
        for name in ("ways", "shots", "queries"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.ways == 1:
            raise DataError("ways=1: an episode of one class has nothing to classify (at least 2)")


@dataclass(frozen=True)
class ImageSplit:
    """Every image of one class split, classes stored contiguously.

    ``images`` is uint8 ``[num_images, C, H, W]``; class ``c`` owns rows
    ``class_start[c] : class_start[c] + class_count[c]``.
    """

    name: str
    images: torch.Tensor
    class_start: torch.Tensor
    class_count: torch.Tensor
    class_names: list[str] = field(repr=False)
    # Per-channel normalisation applied after scaling pixels to [0, 1].
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def from_equal_classes(cls, name: str, images: torch.Tensor, class_names: list[str],
                           mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,)) -> "ImageSplit":
        """Build from a ``[classes, per_class, C, H, W]`` tensor."""
        num_classes, per_class = images.shape[:2]
        start = torch.arange(num_classes, dtype=torch.long) * per_class
        count = torch.full((num_classes,), per_class, dtype=torch.long)
        return cls(name, images.reshape(-1, *images.shape[2:]).contiguous(), start, count,
                   list(class_names), mean, std)

    @property
    def num_classes(self) -> int:
        return len(self.class_count)

    @functools.cached_property
    def digest(self) -> str:
        """16 hex digits of SHA-256 over the class names, their sizes and every decoded image: two runs on other
        data differ here (0.1 s for Omniglot's 4112 training classes, once per split and process)."""
        sha = hashlib.sha256("\n".join(self.class_names).encode())
        sha.update(self.class_count.numpy().tobytes())
        sha.update(self.images.contiguous().numpy().tobytes())
        return sha.hexdigest()[:16]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def labels(self) -> torch.Tensor:
        """Class index of every image, aligned with ``images``."""
        return torch.repeat_interleave(torch.arange(self.num_classes), self.class_count)

    def check_spec(self, spec: TaskSpec) -> None:
        if spec.ways > self.num_classes:
            raise DataError(f"ways={spec.ways} is more than the {self.num_classes} classes "
                            f"of the '{self.name}' split")
        smallest = int(self.class_count.min())
        if spec.shots + spec.queries > smallest:
            raise DataError(f"shots+queries={spec.shots + spec.queries} is more than the {smallest} "
                            f"images of the smallest class in the '{self.name}' split")

    def to_float(self, images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 → normalised float on ``device``."""
        return normalise(images, self.mean, self.std, device)


def normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
              device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 → float in [0, 1] normalised per channel, on ``device`` (moved first: a quarter of the bytes)."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    if mean != (0.0,) or std != (1.0,):
        shape = (-1, 1, 1)
        x = (x - torch.tensor(mean, device=x.device).view(shape)) / torch.tensor(std, device=x.device).view(shape)
    return x


@dataclass
class Episodes:
    """A batch of episodes; leading dimension is the task."""

    support: torch.Tensor         # [tasks, ways*shots, C, H, W]
    support_labels: torch.Tensor  # [tasks, ways*shots], values 0..ways-1
    query: torch.Tensor           # [tasks, ways*queries, C, H, W]
    query_labels: torch.Tensor    # [tasks, ways*queries]

    @property
    def num_tasks(self) -> int:
        return self.support.shape[0]


def _sample_indices(split: ImageSplit, spec: TaskSpec, tasks: int, generator: torch.Generator) -> torch.Tensor:
    """Image indices ``[tasks, ways, shots+queries]``, classes and images drawn without replacement."""
    # Random keys + argsort is a batched randperm: which classes, then which images per class.
    classes = torch.rand(tasks, split.num_classes, generator=generator).argsort(dim=1)[:, : spec.ways]
    counts = split.class_count[classes]
    keys = torch.rand(tasks, spec.ways, int(counts.max()), generator=generator)
    keys.masked_fill_(torch.arange(keys.shape[-1]) >= counts.unsqueeze(-1), 2.0)  # past a class's end
    offsets = keys.argsort(dim=-1)[..., : spec.shots + spec.queries]
    return split.class_start[classes].unsqueeze(-1) + offsets


def _gather(split: ImageSplit, spec: TaskSpec, index: torch.Tensor, device: torch.device | str) -> Episodes:
    tasks = index.shape[0]
    images = split.to_float(split.images[index], device)  # [tasks, ways, shots+queries, C, H, W]
    support = images[:, :, : spec.shots].reshape(tasks, spec.ways * spec.shots, *split.image_shape)
    query = images[:, :, spec.shots:].reshape(tasks, spec.ways * spec.queries, *split.image_shape)
    labels = torch.arange(spec.ways, device=device)
    return Episodes(
        support=support,
        support_labels=labels.repeat_interleave(spec.shots).expand(tasks, -1),
        query=query,
        query_labels=labels.repeat_interleave(spec.queries).expand(tasks, -1),
    )


class EpisodeSampler:
    """Seeded stream of training episodes from one split."""

    def __init__(self, split: ImageSplit, spec: TaskSpec, seed: int, device: torch.device | str = "cpu"):
        split.check_spec(spec)
        self.split, self.spec, self.device = split, spec, device
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, tasks: int) -> Episodes:
        return _gather(self.split, self.spec, _sample_indices(self.split, self.spec, tasks, self.generator),
                       self.device)


def fixed_episodes(split: ImageSplit, spec: TaskSpec, count: int, seed: int, batch_size: int = 16,
                   device: torch.device | str = "cpu") -> Iterator[Episodes]:
    """The same ``count`` episodes for a given seed, in batches of ``batch_size``.

    Episodes are drawn one at a time from one generator, so the first k of
    ``count`` episodes do not depend on ``count`` or ``batch_size``.
    """
    index = fixed_episode_indices(split, spec, count, seed)
    for start in range(0, count, batch_size):
        yield _gather(split, spec, index[start:start + batch_size], device)


def fixed_episode_indices(split: ImageSplit, spec: TaskSpec, count: int, seed: int) -> torch.Tensor:
    """The image indices ``[count, ways, shots+queries]`` of :func:`fixed_episodes` (support images first)."""
    split.check_spec(spec)
    if count < 1:
        raise DataError(f"episodes must be at least 1, got {count}")
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([_sample_indices(split, spec, 1, generator) for _ in range(count)])


def episode_digest(split: ImageSplit, spec: TaskSpec, count: int, seed: int) -> str:
    """16 hex digits of SHA-256 over the split's content and the image indices of its ``count`` fixed episodes of
    ``seed``: two scores can be paired episode by episode exactly when their digests are equal (same images, same
    classes in the same order, same episode count and shape)."""
    sha = hashlib.sha256(split.digest.encode())
    sha.update(repr((spec.ways, spec.shots, spec.queries)).encode())
    sha.update(fixed_episode_indices(split, spec, count, seed).numpy().tobytes())
    return sha.hexdigest()[:16]


class LabelledBatches:
    """Seeded stream of ordinary (image, class) mini-batches over every class of a split, for pre-training."""

    def __init__(self, split: ImageSplit, seed: int, device: torch.device | str = "cpu"):
        self.split, self.device = split, device
        self.labels = split.labels()
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(self.labels), (batch_size,), generator=self.generator)
        return self.split.to_float(self.split.images[index], self.device), self.labels[index].to(self.device)
