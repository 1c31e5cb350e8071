"""A small generated dataset for tests and smoke runs, hard enough that hyperparameters matter.

Each class is a smooth random pattern. Every image of a class is that pattern under its own random
rotation, scale and shift, with random contrast and brightness and pixel noise, so a learner must
become invariant to the nuisances to separate classes: trained learners land clearly above chance
but below 100% within a few hundred steps. Generation is batched (no Python loop per image).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from learners.data.episodes import ImageSplit

PATTERN_CELLS = 7          # resolution of the random pattern before smooth upsampling
MAX_ROTATION_DEG = 30.0
SCALE_RANGE = (0.8, 1.2)
MAX_SHIFT = 0.25           # fraction of half the image width (±3.5 px at 28×28)
CONTRAST_RANGE = (0.5, 1.2)
MAX_BRIGHTNESS = 0.2
NOISE_STD = 0.35


def _uniform(shape: tuple[int, ...], low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def synthetic_split(name: str, num_classes: int, per_class: int = 20, image_size: int = 28,
                    channels: int = 1, seed: int = 0) -> ImageSplit:
    """``num_classes`` classes of ``per_class`` uint8 images ``[channels, image_size, image_size]``."""
    g = torch.Generator().manual_seed(seed)
    n = num_classes * per_class
    coarse = torch.rand(num_classes, channels, PATTERN_CELLS, PATTERN_CELLS, generator=g)
    patterns = F.interpolate(coarse, size=image_size, mode="bicubic", align_corners=False)
    patterns = patterns.repeat_interleave(per_class, dim=0)  # [n, C, H, W], classes contiguous

    # One random similarity transform per image, applied by a single batched grid_sample.
    angle = torch.deg2rad(_uniform((n,), -MAX_ROTATION_DEG, MAX_ROTATION_DEG, g))
    scale = _uniform((n,), *SCALE_RANGE, g)
    shift = _uniform((n, 2), -MAX_SHIFT, MAX_SHIFT, g)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1)
    grid = F.affine_grid(theta, [n, channels, image_size, image_size], align_corners=False)
    images = F.grid_sample(patterns, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    contrast = _uniform((n, 1, 1, 1), *CONTRAST_RANGE, g)
    brightness = _uniform((n, 1, 1, 1), -MAX_BRIGHTNESS, MAX_BRIGHTNESS, g)
    images = (images - 0.5) * contrast + 0.5 + brightness + NOISE_STD * torch.randn(images.shape, generator=g)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSplit.from_equal_classes(name, pixels.view(num_classes, per_class, channels, image_size, image_size),
                                         [f"{name}{i:04d}" for i in range(num_classes)])
