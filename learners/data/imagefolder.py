"""miniImageNet and tieredImageNet from the two usual on-disk layouts, decoded once and cached as uint8.

Layouts under ``root`` (checked in this order):

* Ravi & Larochelle CSVs: ``{train,val,test}.csv`` with header ``filename,label`` and the images in
  ``images/<filename>``.
* One folder per class: ``{train,val,test}/<class>/*.jpg|jpeg|png``.

Classes are sorted by name and images by file name, so class indices are reproducible. Every image is
converted to RGB and resized to 84×84 with PIL's BILINEAR filter (antialiased; the aspect ratio is not
kept, as in Ravi & Larochelle's preprocessing). Pixels are normalised with the ImageNet mean and std.
Classes may have different numbers of images (tieredImageNet).
"""
from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm.auto import tqdm

from learners.data.cache import cached, fingerprint
from learners.data.dataset_splits import DatasetSplits
from learners.data.episodes import DataError, ImageSplit
from learners.data.preprocessing import Preprocessing

IMAGE_SIZE = 84
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PARTS = ("train", "val", "test")
EXTENSIONS = (".jpg", ".jpeg", ".png")
PREPROCESSING = Preprocessing(channels=3, size=IMAGE_SIZE, resample="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)

# Everything the cached tensors depend on besides the files; bump "format" when decoding changes.
_DECODING = {"format": 1, "image_size": IMAGE_SIZE, "resample": "bilinear", "mode": "RGB"}

# One split as listed on disk: class name → its image files, both sorted.
ClassFiles = dict[str, list[Path]]


def load_miniimagenet(root: Path | None, split: str = "default", cache_dir: Path | None = None,
                      download: bool = False) -> DatasetSplits:
    """miniImageNet (Vinyals et al. 2016; Ravi & Larochelle's 64 / 16 / 20 class split)."""
    return load_image_folder("miniimagenet", root, split, cache_dir, download)


def load_tieredimagenet(root: Path | None, split: str = "default", cache_dir: Path | None = None,
                        download: bool = False) -> DatasetSplits:
    """tieredImageNet (Ren et al. 2018; 351 / 97 / 160 classes of varying size)."""
    return load_image_folder("tieredimagenet", root, split, cache_dir, download)


def load_image_folder(dataset: str, root: Path | None, split: str, cache_dir: Path | None,
                      download: bool) -> DatasetSplits:
    """A benchmark whose train / val / test class split is given by its files (``split`` must be ``default``)."""
    if split != "default":
        raise DataError(f"unknown {dataset} split '{split}' (its files define the only split: default)")
    if root is None:
        raise DataError(f"{dataset} needs a root folder holding train.csv/val.csv/test.csv + images/, "
                        f"or train/val/test class folders")
    try:
        listing, watched = _list_layout(dataset, Path(root))
    except DataError as error:
        if download:
            raise DataError(f"{error} ({dataset} cannot be downloaded automatically)") from None
        raise
    key = {**_DECODING, "sources": fingerprint(watched)}
    data = cached(cache_dir, dataset, key,
                  lambda: {part: _decode_split(dataset, part, listing[part]) for part in PARTS})
    return DatasetSplits(*(_image_split(part, data[part]) for part in PARTS), PREPROCESSING)


def _list_layout(dataset: str, root: Path) -> tuple[dict[str, ClassFiles], list[Path]]:
    """Every split's classes and files, and the paths whose change must invalidate the cache."""
    if (root / "train.csv").is_file():
        _require(dataset, [root / f"{part}.csv" for part in PARTS] + [root / "images"])
        listing = {part: _read_csv(dataset, root / f"{part}.csv", root / "images") for part in PARTS}
        return listing, [root / f"{part}.csv" for part in PARTS] + [root / "images"]
    if (root / "train").is_dir():
        _require(dataset, [root / part for part in PARTS])
        listing = {part: _read_folders(dataset, root / part) for part in PARTS}
        return listing, [root / part for part in PARTS] + [root / part / c for part in PARTS for c in listing[part]]
    raise DataError(f"no {dataset} data in {root}: expected {root / 'train.csv'} (+ val.csv, test.csv, images/) "
                    f"or class folders {root / 'train'}/<class>/*.jpg")


def _require(dataset: str, paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"{dataset} file(s) missing: {', '.join(missing)}")


def _read_csv(dataset: str, path: Path, images: Path) -> ClassFiles:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
            raise DataError(f"{dataset} {path} must have the header 'filename,label', got {reader.fieldnames}")
        classes: ClassFiles = {}
        for row in reader:
            classes.setdefault(row["label"], []).append(images / row["filename"])
    if not classes:
        raise DataError(f"{dataset} {path} lists no images")
    return {label: sorted(classes[label]) for label in sorted(classes)}


def _read_folders(dataset: str, folder: Path) -> ClassFiles:
    classes = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in EXTENSIONS)
               for d in sorted(folder.iterdir()) if d.is_dir()}
    if not classes:
        raise DataError(f"{dataset} {folder} has no class folders")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise DataError(f"{dataset} class folder {folder / empty[0]} has no .jpg/.jpeg/.png images")
    return classes



def _decode_split(dataset: str, part: str, classes: ClassFiles) -> dict[str, object]:
    """``images`` uint8 [N, 3, 84, 84] (classes contiguous), ``class_count`` and ``class_names``."""
    files = [path for paths in classes.values() for path in paths]
    images = torch.empty(len(files), 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    # PIL releases the GIL while decoding, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        decoded = pool.map(PREPROCESSING.read, files)
        for i, pixels in enumerate(tqdm(decoded, total=len(files), desc=f"decoding {dataset} {part}", unit="img")):
            images[i] = torch.from_numpy(pixels)
    return {"images": images, "class_count": torch.tensor([len(p) for p in classes.values()], dtype=torch.long),
            "class_names": list(classes)}


def _image_split(part: str, data: dict) -> ImageSplit:
    count = data["class_count"]
    start = torch.cumsum(count, 0) - count
    return ImageSplit(part, data["images"], start, count, data["class_names"], PREPROCESSING.mean,
                      PREPROCESSING.std)
