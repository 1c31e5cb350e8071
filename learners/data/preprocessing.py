"""How an image file becomes a learner's input: one recipe per dataset, saved with every model.

The dataset loaders decode their files with it, and a saved model carries it, so that a user's own
images (any size, any common format, colour or not) reach a model exactly as its training images
did: an Omniglot model takes 105×105 ink-on-white PNGs like the originals.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from learners.data.episodes import DataError, normalise

RESAMPLING = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR}
MODES = {1: "L", 3: "RGB"}  # channels → the PIL mode every image is converted to


@dataclass(frozen=True)
class Preprocessing:
    """Convert to ``channels`` (grayscale or RGB), resize to ``size``×``size`` (the aspect ratio is not kept)
    with the ``resample`` filter (antialiased), optionally ``invert``, then scale to [0, 1] and normalise with
    ``mean`` and ``std`` per channel."""

    channels: int
    size: int
    resample: str = "bilinear"     # lanczos | bilinear
    invert: bool = False           # Omniglot: ink bright on black, where the files have black ink on white
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.channels not in MODES:
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.resample not in RESAMPLING:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLING)}, got '{self.resample}'")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.channels, self.size, self.size

    def decode(self, image: Image.Image) -> np.ndarray:
        """uint8 pixels ``[channels, size, size]`` of an open image."""
        mode = MODES[self.channels]
        image.draft(mode, (self.size, self.size))  # JPEG: decode at a reduced scale when it is big
        resized = image.convert(mode).resize((self.size, self.size), RESAMPLING[self.resample])
        pixels = np.asarray(resized, dtype=np.uint8).reshape(self.size, self.size, self.channels)
        if self.invert:
            pixels = 255 - pixels
        return pixels.transpose(2, 0, 1).copy()  # contiguous and writable, for torch.from_numpy

    def read(self, path: Path) -> np.ndarray:
        """:meth:`decode` of an image file.

        Raises:
            DataError: the file is missing, not an image, truncated, or of a mode that cannot be converted.
        """
        try:
            with Image.open(path) as image:
                return self.decode(image)
        except (UnidentifiedImageError, OSError) as e:  # missing, unreadable, not an image, truncated
            raise DataError(f"cannot read image {path}: {e}") from None
        except ValueError as e:  # PIL: "conversion from I;16 to RGB not supported"
            raise DataError(f"cannot convert image {path} to {self.channels} channel(s): {e}") from None

    def read_all(self, paths: Iterable[Path]) -> torch.Tensor:
        """uint8 ``[N, channels, size, size]`` of image files, in order."""
        return torch.stack([torch.from_numpy(self.read(path)) for path in paths])

    def normalise(self, images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 pixels → normalised float on ``device``."""
        return normalise(images, self.mean, self.std, device)

