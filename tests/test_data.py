"""Datasets (real Omniglot, image folders, synthetic), the cache, and episode sampling."""
from __future__ import annotations

import csv
import os
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from learners.data import (DataError, DatasetSplits, EpisodeSampler, ImageSplit, TaskSpec, fixed_episodes,
                           load_dataset, synthetic_split)
from learners.data import imagefolder, omniglot
from learners.data.cache import cached
from learners.data.episodes import _sample_indices
from learners.data.preprocessing import Preprocessing


def base_characters(split: ImageSplit) -> set[str]:
    return {name.rsplit("/", 1)[0] for name in split.class_names}


# ---------------------------------------------------------------- real Omniglot

def test_omniglot_vinyals_split_sizes(omniglot_first_load: tuple[DatasetSplits, float]) -> None:
    splits, _ = omniglot_first_load
    assert [splits[p].num_classes for p in ("train", "val", "test")] == [4112, 688, 1692]
    chars = [base_characters(splits[p]) for p in ("train", "val", "test")]
    assert [len(c) for c in chars] == [1028, 172, 423]
    assert not (chars[0] & chars[1]) and not (chars[0] & chars[2]) and not (chars[1] & chars[2])
    for split in (splits.train, splits.val, splits.test):
        assert split.image_shape == (1, 28, 28) and split.images.dtype == torch.uint8
        assert bool((split.class_count == 20).all())


def test_omniglot_has_every_character_and_drawing(omniglot_first_load: tuple[DatasetSplits, float]) -> None:
    splits, _ = omniglot_first_load
    assert sum(len(base_characters(splits[p])) for p in ("train", "val", "test")) == 1623
    assert sum(len(splits[p].images) for p in ("train", "val", "test")) == 1623 * 20 * 4


def test_omniglot_rotations_and_bright_ink(omniglot_first_load: tuple[DatasetSplits, float]) -> None:
    train = omniglot_first_load[0].train
    assert train.class_names[:2] == ["Alphabet_of_the_Magi/character01/rot0", "Alphabet_of_the_Magi/character01/rot90"]
    first, rotated = train.images[:20], train.images[20:40]
    assert torch.equal(rotated, torch.rot90(first, 1, dims=(-2, -1)))
    # Ink is bright on a dark background: most pixels are background.
    assert float(first.float().mean()) < 64 and int(first.max()) == 255 and int(first.min()) == 0


def test_an_original_omniglot_png_read_with_the_preprocessing_is_the_training_image(
        omniglot_root: Path, omniglot_first_load: tuple[DatasetSplits, float], tmp_path: Path) -> None:
    # What a user's 105x105 ink-on-white PNG goes through (hpo.evaluate, hpo.predict): the dataset's own decoding.
    splits, _ = omniglot_first_load
    assert splits.preprocessing == omniglot.PREPROCESSING
    with zipfile.ZipFile(omniglot_root / "images_background.zip") as archive:
        png = sorted(n for n in archive.namelist() if n.startswith("images_background/Alphabet_of_the_Magi/character01/")
                     and n.endswith(".png"))[3]
        (tmp_path / "drawing.png").write_bytes(archive.read(png))
    with Image.open(tmp_path / "drawing.png") as original:
        assert original.size == (105, 105)
    pixels = torch.from_numpy(splits.preprocessing.read(tmp_path / "drawing.png"))
    assert torch.equal(pixels, splits.train.images[3])  # character01, rotation 0, drawing 3


def test_omniglot_second_load_is_cached_and_equal(omniglot_root: Path, omniglot_cache: Path,
                                                  omniglot_first_load: tuple[DatasetSplits, float]) -> None:
    first, _ = omniglot_first_load
    start = time.perf_counter()
    second = load_dataset("omniglot", root=omniglot_root, split="default", cache_dir=omniglot_cache)
    assert time.perf_counter() - start < 5.0
    assert len(list(omniglot_cache.glob("omniglot-*.pt"))) == 1
    for part in ("train", "val", "test"):
        assert torch.equal(first[part].images, second[part].images)
        assert first[part].class_names == second[part].class_names


def test_omniglot_lake_split(omniglot_root: Path, omniglot_cache: Path,
                             omniglot_first_load: tuple[DatasetSplits, float]) -> None:
    splits = load_dataset("omniglot", root=omniglot_root, split="lake", cache_dir=omniglot_cache)
    assert [splits[p].num_classes for p in ("train", "val", "test")] == [2976, 880, 2636]
    alphabets = {p: {n.split("/")[0] for n in splits[p].class_names} for p in ("train", "val", "test")}
    assert alphabets["val"] == {"Burmese_(Myanmar)", "Grantha", "Greek", "Mkhedruli_(Georgian)",
                                "Syriac_(Estrangelo)", "Tifinagh"}
    assert len(alphabets["train"]) == 24 and not alphabets["train"] & alphabets["val"]
    assert len(alphabets["test"]) == 20 and not alphabets["test"] & (alphabets["train"] | alphabets["val"])


def write_tiny_omniglot(source: zipfile.ZipFile, folder: str, characters: int) -> dict[str, bytes]:
    """The PNGs of the first few characters of one real set, by path inside the set."""
    names = sorted(n for n in source.namelist() if n.endswith(".png"))[: characters * 20]
    return {name.split("/", 1)[1]: source.read(name) for name in names if name.startswith(folder)}


def test_omniglot_zip_and_extracted_layouts_decode_alike(omniglot_root: Path, tmp_path: Path) -> None:
    zipped, extracted = tmp_path / "zipped", tmp_path / "extracted" / "omniglot-py"
    sources = {}
    for subset, folder in omniglot.SETS.items():
        with zipfile.ZipFile(omniglot_root / f"{folder}.zip") as real:
            pngs = write_tiny_omniglot(real, folder, characters=2)
        zipped.mkdir(exist_ok=True)
        with zipfile.ZipFile(zipped / f"{folder}.zip", "w") as z:
            for name, data in pngs.items():
                z.writestr(f"{folder}/{name}", data)
        for name, data in pngs.items():
            (extracted / folder / name).parent.mkdir(parents=True, exist_ok=True)
            (extracted / folder / name).write_bytes(data)
        sources[subset] = (zipped / f"{folder}.zip", extracted / folder)
    from_zip = omniglot._decode_all({s: paths[0] for s, paths in sources.items()})
    from_folder = omniglot._decode_all({s: paths[1] for s, paths in sources.items()})
    assert from_zip["names"] == from_folder["names"] and len(from_zip["names"]) == 4
    assert torch.equal(from_zip["images"], from_folder["images"])
    # The loader finds torchvision's extracted layout under root/omniglot-py.
    assert omniglot._find_source(tmp_path / "extracted", "images_background", download=False) == \
        extracted / "images_background"

    next(iter((extracted / "images_background").glob("*/*/*.png"))).unlink()
    with pytest.raises(DataError, match="has 19 images, expected 20"):
        omniglot._decode_all({s: paths[1] for s, paths in sources.items()})


def test_omniglot_missing_archives(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"images_background\.zip.*download: true") as error:
        load_dataset("omniglot", root=tmp_path / "nowhere", cache_dir=tmp_path)
    assert str(tmp_path / "nowhere") in str(error.value)
    with pytest.raises(DataError, match="needs a root folder"):
        load_dataset("omniglot", root=None, cache_dir=tmp_path)


def test_omniglot_download_uses_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls = []

    def fake_omniglot(root: str, background: bool, download: bool) -> None:
        calls.append((root, background, download))
        (Path(root) / "omniglot-py" / "images_evaluation").mkdir(parents=True)

    monkeypatch.setattr(torchvision.datasets, "Omniglot", fake_omniglot)
    found = omniglot._find_source(tmp_path, "images_evaluation", download=True)
    assert found == tmp_path / "omniglot-py" / "images_evaluation"
    assert calls == [(str(tmp_path), False, True)]

    def offline(root: str, background: bool, download: bool) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "Omniglot", offline)
    with pytest.raises(DataError, match="could not download omniglot into .*network is unreachable"):
        omniglot._find_source(tmp_path, "images_background", download=True)


def test_a_failed_download_leaves_no_folder_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def cut_off(root: str, background: bool, download: bool) -> None:
        (Path(root) / "omniglot-py").mkdir()  # as torchvision does before it fetches anything
        raise RuntimeError("connection reset")

    monkeypatch.setattr(torchvision.datasets, "Omniglot", cut_off)
    with pytest.raises(DataError, match="could not download omniglot"):
        omniglot._find_source(tmp_path, "images_background", download=True)
    assert list(tmp_path.iterdir()) == []


def test_omniglot_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown omniglot split 'ravi'"):
        load_dataset("omniglot", root=tmp_path, split="ravi", cache_dir=tmp_path)


# ---------------------------------------------------------------- cache

def test_cache_rebuilds_only_when_key_changes(tmp_path: Path) -> None:
    builds = []

    def build() -> dict:
        builds.append(1)
        return {"x": torch.arange(4, dtype=torch.uint8), "names": ["a", "b"]}

    first = cached(tmp_path, "demo", {"size": 28}, build)
    again = cached(tmp_path, "demo", {"size": 28}, build)
    assert len(builds) == 1 and torch.equal(first["x"], again["x"]) and again["names"] == ["a", "b"]
    cached(tmp_path, "demo", {"size": 32}, build)
    assert len(builds) == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWSHOT_HPO_CACHE", str(tmp_path / "env-cache"))
    cached(None, "demo", {}, lambda: {"x": torch.zeros(1)})
    assert len(list((tmp_path / "env-cache").glob("demo-*.pt"))) == 1


# ---------------------------------------------------------------- image folders (miniImageNet layouts)

CLASS_SIZES = {"train": {"n01": 4, "n02": 3, "n03": 5}, "val": {"n04": 3, "n05": 4}, "test": {"n06": 4, "n07": 3}}


def make_image(label: str, i: int) -> Image.Image:
    """A small RGB image whose colour depends on the class and index (sizes vary, as in real data)."""
    colour = (int(label[1:]) * 30 % 256, i * 40 % 256, 128)
    return Image.new("RGB", (100 + 10 * i, 90), colour)


def write_csv_layout(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    for part, classes in CLASS_SIZES.items():
        with (root / f"{part}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for label, count in classes.items():
                for i in range(count):
                    make_image(label, i).save(root / "images" / f"{label}_{i:03d}.png")
                    writer.writerow([f"{label}_{i:03d}.png", label])


def write_folder_layout(root: Path) -> None:
    for part, classes in CLASS_SIZES.items():
        for label, count in classes.items():
            (root / part / label).mkdir(parents=True)
            for i in range(count):
                make_image(label, i).save(root / part / label / f"{label}_{i:03d}.png")


@pytest.mark.parametrize("write_layout", [write_csv_layout, write_folder_layout])
def test_image_folder_layouts(write_layout, tmp_path: Path) -> None:
    write_layout(tmp_path / "mini")
    splits = load_dataset("miniimagenet", root=tmp_path / "mini", cache_dir=tmp_path / "cache")
    for part, classes in CLASS_SIZES.items():
        split = splits[part]
        assert split.class_names == list(classes)
        assert split.class_count.tolist() == list(classes.values())
        assert split.class_start.tolist() == [0, *torch.tensor(list(classes.values())).cumsum(0)[:-1].tolist()]
        assert split.images.shape == (sum(classes.values()), 3, 84, 84) and split.images.dtype == torch.uint8
        assert split.mean == imagefolder.IMAGENET_MEAN and split.std == imagefolder.IMAGENET_STD
    # Second image of class n02: a flat colour survives resizing exactly.
    expected = torch.tensor([60, 40, 128], dtype=torch.uint8).view(3, 1, 1).expand(3, 84, 84)
    assert torch.equal(splits.train.images[5], expected)


def test_image_folder_layouts_agree_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_csv_layout(tmp_path / "a")
    write_folder_layout(tmp_path / "b")
    a = load_dataset("tieredimagenet", root=tmp_path / "a", cache_dir=tmp_path / "cache")
    b = load_dataset("tieredimagenet", root=tmp_path / "b", cache_dir=tmp_path / "cache")
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)

    def no_decoding(preprocessing: Preprocessing, path: Path) -> None:
        raise AssertionError(f"decoded {path} although it is cached")

    monkeypatch.setattr(Preprocessing, "read", no_decoding)
    again = load_dataset("tieredimagenet", root=tmp_path / "b", cache_dir=tmp_path / "cache")
    assert torch.equal(again.val.images, b.val.images)
    # A new image changes its class folder's mtime, which invalidates the cache.
    make_image("n04", 9).save(tmp_path / "b" / "val" / "n04" / "n04_009.png")
    os.utime(tmp_path / "b" / "val" / "n04", ns=(1, 1))
    with pytest.raises(AssertionError, match="although it is cached"):
        load_dataset("tieredimagenet", root=tmp_path / "b", cache_dir=tmp_path / "cache")


def test_image_folder_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no miniimagenet data in .*train.csv"):
        load_dataset("miniimagenet", root=tmp_path, cache_dir=tmp_path / "cache")
    write_csv_layout(tmp_path / "mini")
    (tmp_path / "mini" / "val.csv").unlink()
    with pytest.raises(DataError, match=f"missing: {tmp_path / 'mini' / 'val.csv'}"):
        load_dataset("miniimagenet", root=tmp_path / "mini", cache_dir=tmp_path / "cache")

    write_csv_layout(tmp_path / "mini2")
    missing = tmp_path / "mini2" / "images" / "n05_001.png"
    missing.unlink()
    with pytest.raises(DataError, match=f"cannot read image {missing}"):
        load_dataset("miniimagenet", root=tmp_path / "mini2", cache_dir=tmp_path / "cache")


def test_image_folder_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("file,class\nx.jpg,n01\n")
    for part in ("val", "test"):
        (tmp_path / f"{part}.csv").write_text("filename,label\n")
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="must have the header 'filename,label'"):
        load_dataset("miniimagenet", root=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="unknown miniimagenet split 'lake'"):
        load_dataset("miniimagenet", root=tmp_path, split="lake")
    with pytest.raises(DataError, match="needs a root folder"):
        load_dataset("miniimagenet", root=None)
    with pytest.raises(DataError, match="cannot be downloaded automatically"):
        load_dataset("miniimagenet", root=tmp_path / "nowhere", download=True)


# ---------------------------------------------------------------- synthetic data

def test_synthetic_is_fast_deterministic_and_not_trivial() -> None:
    start = time.perf_counter()
    splits = load_dataset("synthetic")
    assert time.perf_counter() - start < 2.0
    assert [splits[p].num_classes for p in ("train", "val", "test")] == [64, 16, 20]
    assert torch.equal(synthetic_split("x", 5, seed=3).images, synthetic_split("x", 5, seed=3).images)
    assert not torch.equal(synthetic_split("x", 5, seed=3).images, synthetic_split("x", 5, seed=4).images)
    # Nearest class mean in pixel space, 5-way 1-shot: far from perfect, above chance.
    val, spec = splits.val, TaskSpec(5, 1, 15)
    correct = []
    for batch in fixed_episodes(val, spec, count=200, seed=0, batch_size=50):
        support, query = batch.support.flatten(2), batch.query.flatten(2)
        correct.append((torch.cdist(query, support).argmin(-1) == batch.query_labels).float().mean(-1))
    accuracy = float(torch.cat(correct).mean())
    assert 0.25 < accuracy < 0.6


# ---------------------------------------------------------------- episodes

def uneven_split() -> ImageSplit:
    """Ten classes of 6..15 images (like tieredImageNet), each image's pixels set to its class index."""
    counts = torch.arange(6, 16)
    labels = torch.repeat_interleave(torch.arange(10), counts)
    images = labels.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return ImageSplit("uneven", images, torch.cumsum(counts, 0) - counts, counts, [f"c{i}" for i in range(10)])


@pytest.mark.parametrize("split", [synthetic_split("syn", 12, seed=1), uneven_split()], ids=["equal", "uneven"])
def test_sampled_indices_are_disjoint_and_in_their_class(split: ImageSplit) -> None:
    spec = TaskSpec(ways=5, shots=2, queries=3)
    index = _sample_indices(split, spec, tasks=200, generator=torch.Generator().manual_seed(0))
    assert index.shape == (200, 5, 5)
    labels = split.labels()[index]  # [tasks, ways, shots+queries]
    assert bool((labels == labels[..., :1]).all()), "every image of a way comes from one class"
    assert all(len(set(task[:, 0].tolist())) == 5 for task in labels), "ways are distinct classes"
    for task in index:
        support, query = set(task[:, :2].flatten().tolist()), set(task[:, 2:].flatten().tolist())
        assert len(support) == 10 and len(query) == 15 and not support & query
    assert len(set(index.flatten().tolist())) > 0.8 * len(split.images), "sampling covers the split"


def test_episode_labels_and_shapes() -> None:
    split = uneven_split()
    spec = TaskSpec(ways=4, shots=3, queries=2)
    batch = EpisodeSampler(split, spec, seed=0).sample(tasks=6)
    assert batch.support.shape == (6, 12, 1, 2, 2) and batch.query.shape == (6, 8, 1, 2, 2)
    for task in range(6):
        assert torch.bincount(batch.support_labels[task]).tolist() == [3] * 4
        assert torch.bincount(batch.query_labels[task]).tolist() == [2] * 4
        # Each label maps to one class (the pixel value is the class index), the same in support and query.
        support_class = batch.support[task, :, 0, 0, 0].view(4, 3)
        query_class = batch.query[task, :, 0, 0, 0].view(4, 2)
        assert bool((support_class == support_class[:, :1]).all())
        assert torch.equal(support_class[:, 0], query_class[:, 0])


def test_episodes_deterministic_per_seed() -> None:
    split, spec = synthetic_split("syn", 10, seed=2), TaskSpec(5, 1, 2)
    a, b, c = (EpisodeSampler(split, spec, seed=s).sample(4) for s in (7, 7, 8))
    assert torch.equal(a.support, b.support) and torch.equal(a.query, b.query)
    assert not torch.equal(a.support, c.support)
    first = torch.cat([e.query for e in fixed_episodes(split, spec, count=5, seed=3)])
    again = torch.cat([e.query for e in fixed_episodes(split, spec, count=5, seed=3, batch_size=2)])
    assert torch.equal(first, again)


def test_fixed_episodes_prefix_property() -> None:
    split, spec = synthetic_split("syn", 10, seed=2), TaskSpec(5, 2, 3)
    short = torch.cat([e.support for e in fixed_episodes(split, spec, count=3, seed=11, batch_size=2)])
    long = torch.cat([e.support for e in fixed_episodes(split, spec, count=9, seed=11, batch_size=4)])
    assert len(long) == 9 and torch.equal(short, long[:3])


# ---------------------------------------------------------------- bad requests

def test_bad_requests_raise_one_line_data_errors(tmp_path: Path) -> None:
    split = synthetic_split("val", 6, per_class=10)
    with pytest.raises(DataError, match="ways=7 is more than the 6 classes of the 'val' split"):
        EpisodeSampler(split, TaskSpec(7, 1, 1), seed=0)
    with pytest.raises(DataError, match="shots\\+queries=11 is more than the 10 images"):
        list(fixed_episodes(split, TaskSpec(5, 5, 6), count=1, seed=0))
    with pytest.raises(DataError, match="shots must be at least 1"):
        TaskSpec(5, 0, 1)
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DataError) as info:
        load_dataset("omniglot", root=tmp_path / "missing-root", cache_dir=tmp_path)
    assert "\n" not in str(info.value) and str(tmp_path / "missing-root") in str(info.value)
