"""Omniglot (Lake et al. 2015): 1623 handwritten characters from 50 alphabets, 20 drawings each.

Protocol (as in Vinyals et al. 2016 and Snell et al. 2017):

* Each 105×105 binary PNG is converted to grayscale and resized to 28×28 with PIL's LANCZOS filter
  (antialiased), then inverted so the background is 0 and ink is bright (up to 255).
* Rotations by 90, 180 and 270 degrees (``torch.rot90``, counter-clockwise) make new classes, in every
  split. Classes are ordered base character major, rotation minor and named ``Alphabet/characterNN/rot90``.

Splits (``split=``):

* ``vinyals`` (also ``default``): the 1028 / 172 / 423 characters listed in
  ``learners/data/splits/vinyals/{train,val,test}.json`` → 4112 / 688 / 1692 classes.
* ``lake``: train and validate on ``images_background`` (964 characters), test on ``images_evaluation``
  (659). Validation holds out whole background alphabets: 20% of the 30 (6 alphabets), the first 6 of
  ``torch.randperm(30)`` with seed 0 over the sorted alphabet names: Burmese_(Myanmar), Grantha, Greek,
  Mkhedruli_(Georgian), Syriac_(Estrangelo) and Tifinagh → 744 / 220 / 659 characters,
  2976 / 880 / 2636 classes.

All 1623 × 20 images are decoded once and cached as one uint8 tensor (see :mod:`learners.data.cache`).
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from learners.data.cache import cached, fingerprint
from learners.data.dataset_splits import DatasetSplits
from learners.data.episodes import DataError, ImageSplit
from learners.data.preprocessing import Preprocessing

IMAGE_SIZE = 28
PREPROCESSING = Preprocessing(channels=1, size=IMAGE_SIZE, resample="lanczos", invert=True)
DRAWINGS = 20
ROTATIONS = (0, 90, 180, 270)
SETS = {"background": "images_background", "evaluation": "images_evaluation"}
SPLITS_DIR = Path(__file__).parent / "splits"
LAKE_VAL_FRACTION, LAKE_VAL_SEED = 0.2, 0

# Everything the cached tensor depends on besides the archives; bump "format" when decoding changes.
_DECODING = {"format": 1, "image_size": IMAGE_SIZE, "resample": "lanczos", "ink": "bright"}


def load_omniglot(root: Path | None, split: str = "default", cache_dir: Path | None = None,
                  download: bool = False) -> DatasetSplits:
    """Omniglot class splits; ``root`` holds ``images_{background,evaluation}.zip`` (or torchvision's
    ``omniglot-py/`` layout, zipped or extracted). ``download=True`` fetches missing sets with torchvision."""
    split = "vinyals" if split == "default" else split
    if split not in ("vinyals", "lake"):
        raise DataError(f"unknown omniglot split '{split}' (choose from default, vinyals, lake)")
    if root is None:
        raise DataError("omniglot needs a root folder holding images_background.zip and images_evaluation.zip")
    sources = {subset: _find_source(Path(root), folder, download) for subset, folder in SETS.items()}
    key = {**_DECODING, "sources": fingerprint(p for source in sources.values() for p in _fingerprinted(source))}
    data = cached(cache_dir, "omniglot", key, lambda: _decode_all(sources))
    images, names = data["images"], data["names"]
    chosen = _vinyals_split(names) if split == "vinyals" else _lake_split(names)
    return DatasetSplits(*(_rotated_split(part, images, names, chosen[part]) for part in ("train", "val", "test")),
                         PREPROCESSING)


def _candidates(root: Path, folder: str) -> list[Path]:
    """Where a set may be, in order of preference: our zips, then torchvision's zipped or extracted layout."""
    torchvision = root / "omniglot-py"
    return [root / f"{folder}.zip", torchvision / f"{folder}.zip", root / folder, torchvision / folder]


def _find_source(root: Path, folder: str, download: bool) -> Path:
    found = [p for p in _candidates(root, folder) if p.exists()]
    if not found and download:
        _download(root, background=folder == SETS["background"])
        found = [p for p in _candidates(root, folder) if p.exists()]
    if not found:
        raise DataError(f"omniglot set '{folder}' not found: expected {_candidates(root, folder)[0]} or "
                        f"{_candidates(root, folder)[1]} (set download: true to fetch it with torchvision)")
    return found[0]


def _download(root: Path, background: bool) -> None:
    from torchvision.datasets import Omniglot  # only needed for this rare path

    target = root / "omniglot-py"
    created = not target.exists()
    try:
        Omniglot(str(root), background=background, download=True)
    except (OSError, RuntimeError) as error:
        if created:  # a failed download leaves nothing behind, not an empty folder that looks like data
            shutil.rmtree(target, ignore_errors=True)
        raise DataError(f"could not download omniglot into {target}: {error}") from error


def _fingerprinted(source: Path) -> list[Path]:
    """An archive itself, or an extracted set's folder and its alphabet and character folders."""
    return [source] if source.is_file() else [source, *sorted(source.glob("*")), *sorted(source.glob("*/*"))]


class _SetReader:
    """PNG bytes of one set by path ``Alphabet/characterNN/XXXX_YY.png``, from a zip or a folder."""

    def __init__(self, source: Path):
        self.source = source
        self.zip = zipfile.ZipFile(source) if source.is_file() else None

    def __enter__(self) -> "_SetReader":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.zip is not None:
            self.zip.close()

    def pngs(self) -> list[str]:
        if self.zip is None:
            return sorted(p.relative_to(self.source).as_posix() for p in self.source.glob("*/*/*.png"))
        # Zip entries start with the set's top folder (images_background/...), as in the upstream zips.
        return sorted(name.split("/", 1)[1] for name in self.zip.namelist()
                      if name.endswith(".png") and name.count("/") == 3)

    def read(self, png: str) -> bytes:
        if self.zip is None:
            return (self.source / png).read_bytes()
        return self.zip.read(f"{self.source.stem}/{png}")


def _decode_png(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return PREPROCESSING.decode(image)[0]


def _characters(reader: _SetReader) -> dict[str, list[str]]:
    """Sorted ``Alphabet/characterNN`` → its sorted PNG paths; every character must have 20 drawings."""
    characters: dict[str, list[str]] = {}
    for png in reader.pngs():
        characters.setdefault(png.rsplit("/", 1)[0], []).append(png)
    for character, pngs in characters.items():
        if len(pngs) != DRAWINGS:
            raise DataError(f"omniglot character {reader.source}/{character} has {len(pngs)} images, "
                            f"expected {DRAWINGS}")
    return characters


def _decode_all(sources: dict[str, Path]) -> dict[str, object]:
    """``images`` uint8 [characters, 20, 1, 28, 28] and ``names`` ``background/Alphabet/characterNN``."""
    with ExitStack() as stack:
        readers = {subset: stack.enter_context(_SetReader(source)) for subset, source in sources.items()}
        per_set = {subset: _characters(reader) for subset, reader in readers.items()}
        names = [f"{subset}/{c}" for subset, characters in per_set.items() for c in characters]
        images = torch.empty(len(names), DRAWINGS, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
        with tqdm(total=len(names) * DRAWINGS, desc="decoding omniglot", unit="png") as bar:
            row = 0
            for subset, characters in per_set.items():
                for pngs in characters.values():
                    for j, png in enumerate(pngs):
                        images[row, j, 0] = torch.from_numpy(_decode_png(readers[subset].read(png)))
                    row += 1
                    bar.update(DRAWINGS)
    return {"images": images, "names": names}


def _vinyals_split(names: list[str]) -> dict[str, list[int]]:
    index = {name: i for i, name in enumerate(names)}
    chosen = {}
    for part in ("train", "val", "test"):
        listing = json.loads((SPLITS_DIR / "vinyals" / f"{part}.json").read_text())
        names = [f"{subset}/{alphabet}/{c}" for subset, alphabets in listing.items()
                 for alphabet, characters in alphabets.items() for c in characters]
        missing = [n for n in names if n not in index]
        if missing:
            raise DataError(f"omniglot vinyals {part} split names {len(missing)} characters not in the archives, "
                            f"e.g. {missing[0]}")
        chosen[part] = sorted(index[n] for n in names)
    return chosen


def _lake_val_alphabets(background_alphabets: list[str]) -> set[str]:
    """The background alphabets the ``lake`` split holds out for validation (fixed by seed)."""
    ordered = sorted(background_alphabets)
    count = round(LAKE_VAL_FRACTION * len(ordered))
    picks = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(LAKE_VAL_SEED))[:count]
    return {ordered[i] for i in picks.tolist()}


def _lake_split(names: list[str]) -> dict[str, list[int]]:
    parts = [name.split("/") for name in names]  # subset, alphabet, character
    val_alphabets = _lake_val_alphabets(sorted({a for s, a, _ in parts if s == "background"}))
    return {
        "train": [i for i, (s, a, _) in enumerate(parts) if s == "background" and a not in val_alphabets],
        "val": [i for i, (s, a, _) in enumerate(parts) if s == "background" and a in val_alphabets],
        "test": [i for i, (s, _, _) in enumerate(parts) if s == "evaluation"],
    }


def _rotated_split(part: str, images: torch.Tensor, names: list[str], chosen: list[int]) -> ImageSplit:
    base = images[chosen]  # [characters, 20, 1, H, W]
    rotated = torch.stack([torch.rot90(base, degrees // 90, dims=(-2, -1)) for degrees in ROTATIONS], dim=1)
    class_names = [f"{names[i].split('/', 1)[1]}/rot{degrees}" for i in chosen for degrees in ROTATIONS]
    return ImageSplit.from_equal_classes(part, rotated.flatten(0, 1), class_names)
