"""Dataset sources, FFCV conversion, index/classes artifacts and beton validation."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data import (
    ArraySource,
    ConversionError,
    ConvertedDataMissingError,
    CorruptArtifactError,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageFolderSource,
    UnknownDatasetError,
    check_beton,
    convert,
    get_source,
    known_sources,
    make_loader,
    read_classes,
    read_index,
)
from pipeline.data.sources import SPLITS
from pipeline.core.errors import ObcpError

FILES = ("train.beton", "test.beton", "index.parquet", "classes.json")


def synthetic_source(n_train: int = 70, n_test: int = 30, size: tuple[int, int] = (12, 10), seed: int = 0,
                     classes: int = 4) -> ArraySource:
    rng = np.random.default_rng(seed)
    splits = {
        split: (rng.integers(0, 256, (n, *size, 3), dtype=np.uint8), rng.integers(0, classes, n))
        for split, n in (("train", n_train), ("test", n_test))
    }
    return ArraySource("synthetic", [f"c{i}" for i in range(classes)], splits)


def decoded_pixels(beton: Path, n: int, *, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All images ``[N, H, W, 3]`` uint8 and labels ``[N]`` of a beton, via the ``raw`` view."""
    loader = make_loader(beton, batch_size=32, views=["raw"], order="sequential", seed=0,
                         mean=(0.5,) * 3, std=(0.5,) * 3, image_size=image_size)
    images, labels, ids = [], [], []
    for batch in loader:
        images.append(batch.views[0].permute(0, 2, 3, 1).numpy())
        labels.append(batch.labels.numpy())
        ids.append(batch.ids.numpy())
    assert np.array_equal(np.concatenate(ids), np.arange(n))
    return np.concatenate(images), np.concatenate(labels)


def md5s(folder: Path) -> dict[str, str]:
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in FILES}


@pytest.fixture(scope="module")
def synthetic_converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArraySource, Path, dict]:
    source = synthetic_source()
    out = tmp_path_factory.mktemp("synthetic")
    summary = convert(source, out)
    return source, out, summary


# --------------------------------------------------------------------------- sources


def test_registry_lists_known_and_rejects_unknown() -> None:
    assert known_sources() == ["cifar10", "cifar100", "digits", "folder", "glyphs", "imagefolder"]
    with pytest.raises(UnknownDatasetError) as err:
        get_source("mnist", Path("data/raw"))
    message = str(err.value)
    assert "mnist" in message and all(name in message for name in known_sources())
    assert isinstance(err.value, ObcpError)


def test_digits_source_is_fixed_stratified_and_exactly_mapped() -> None:
    from sklearn.datasets import load_digits

    source = get_source("digits", Path("unused"))
    again = get_source("digits", Path("unused"))
    assert source.classes == [str(i) for i in range(10)]
    assert source.num_samples("train") == 1437 and source.num_samples("test") == 360
    assert source.image_shape == (8, 8, 3) and source.max_side() == 8
    for split in SPLITS:
        assert np.array_equal(source.images(split), again.images(split))
        assert np.array_equal(source.labels(split), again.labels(split))
    # Stratified: every class keeps ~20 % of its rows in test.
    bunch = load_digits()
    counts = np.bincount(bunch.target, minlength=10)
    test_counts = np.bincount(source.labels("test"), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)
    # Pixel mapping round(v * 255 / 16), replicated to 3 channels, rows kept in original order.
    expected = {np.rint(v * 255 / 16).astype(np.uint8).tobytes() for v in bunch.images}
    images = source.images("train")
    assert images.dtype == np.uint8 and images.shape == (1437, 8, 8, 3)
    assert np.array_equal(images[..., 0], images[..., 2])
    assert all(img[..., 0].tobytes() in expected for img in images[:50])
    assert int(images.max()) == 255
    image, label = source.load("test", 3)
    assert np.array_equal(image, source.images("test")[3]) and label == source.labels("test")[3]
    assert len(list(source.iter_images("test"))) == 360


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(DatasetFormatError, match="no split 'val'"):
        get_source("digits", Path(".")).num_samples("val")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_without_download_names_path_and_fix(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        get_source(name, tmp_path / "raw", download=False)
    message = str(err.value)
    assert str(tmp_path / "raw") in message and "download=True" in message
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_image_folder(root: Path, sizes: dict[str, list[tuple[int, int]]], seed: int = 0) -> dict:
    """root/{train,val}/{cat,dog}/NN.png with random pixels; returns {split: [(array, label)]}."""
    rng = np.random.default_rng(seed)
    written: dict[str, list] = {"train": [], "test": []}
    for split, folder in (("train", "train"), ("test", "val")):
        for label, cls in enumerate(["cat", "dog"]):
            for k, (h, w) in enumerate(sizes[split]):
                array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                write_png(root / folder / cls / f"{k:02d}.png", array)
                written[split].append((array, label))
    return written


def test_imagefolder_source_reads_sorted_classes_and_val_as_test(tmp_path: Path) -> None:
    written = make_image_folder(tmp_path, {"train": [(6, 6)] * 3, "test": [(6, 6)] * 2})
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    source = get_source("imagefolder", tmp_path)
    assert isinstance(source, ImageFolderSource)
    assert source.classes == ["cat", "dog"]
    assert source.num_samples("train") == 6 and source.num_samples("test") == 4
    assert source.image_shape == (6, 6, 3) and source.max_side() == 6
    for split in SPLITS:
        loaded = list(source.iter_images(split))
        assert [label for _, label in loaded] == [label for _, label in written[split]]
        assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(loaded, written[split]))
    assert source.path("test", 0) == tmp_path / "val" / "cat" / "00.png"


def test_imagefolder_class_mismatch_and_missing_folders(tmp_path: Path) -> None:
    make_image_folder(tmp_path, {"train": [(4, 4)], "test": [(4, 4)]})
    write_png(tmp_path / "train" / "emu" / "0.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetFormatError) as err:
        get_source("imagefolder", tmp_path)
    assert "3 class folders" in str(err.value) and "emu" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="Missing folder .*nowhere/train"):
        get_source("imagefolder", tmp_path / "nowhere")
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    (empty / "val" / "a").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match="holds no images"):
        get_source("imagefolder", empty)


def test_imagefolder_unreadable_image_names_the_file(tmp_path: Path) -> None:
    make_image_folder(tmp_path, {"train": [(4, 4)], "test": [(4, 4)]})
    bad = tmp_path / "train" / "dog" / "zz.png"
    bad.write_bytes(b"not a png at all")
    source = get_source("imagefolder", tmp_path)
    with pytest.raises(DatasetFormatError, match="zz.png"):
        source.load("train", source.num_samples("train") - 1)


def test_array_source_validates_input() -> None:
    good = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(DatasetFormatError, match="uint8"):
        ArraySource("x", ["a"], {"train": (good.astype(np.float32), np.zeros(3, int)),
                                 "test": (good, np.zeros(3, int))})
    with pytest.raises(DatasetFormatError, match=r"\[0, 1\)"):
        ArraySource("x", ["a"], {"train": (good, np.array([0, 1, 0])), "test": (good, np.zeros(3, int))})
    with pytest.raises(DatasetFormatError, match="splits"):
        ArraySource("x", ["a"], {"train": (good, np.zeros(3, int))})
    with pytest.raises(DatasetFormatError, match="differ in shape"):
        ArraySource("x", ["a"], {"train": (good, np.zeros(3, int)),
                                 "test": (np.zeros((3, 5, 5, 3), np.uint8), np.zeros(3, int))})


# --------------------------------------------------------------------------- conversion


def test_convert_writes_index_classes_and_summary(synthetic_converted) -> None:
    source, out, summary = synthetic_converted
    assert all((out / name).is_file() for name in FILES)
    assert summary["counts"] == {"train": 70, "test": 30} and summary["storage"] == "raw"
    assert summary["seconds"] > 0 and summary["images_per_second"] > 0
    index = read_index(out)
    assert list(index.columns) == ["sample_id", "label", "split"]
    assert index["sample_id"].dtype == np.int64 and index["label"].dtype == np.int64
    for split in SPLITS:
        rows = index[index["split"] == split]
        assert np.array_equal(rows["sample_id"], np.arange(source.num_samples(split)))
        assert np.array_equal(rows["label"], source.labels(split))
    classes = read_classes(out)
    assert classes["classes"] == ["c0", "c1", "c2", "c3"] and classes["num_classes"] == 4
    assert classes["image_shape"] == [12, 10, 3] and classes["dataset"] == "synthetic"
    np.testing.assert_allclose(classes["mean"], source.mean)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_convert_round_trip_is_exact_on_synthetic(synthetic_converted) -> None:
    source, out, _ = synthetic_converted
    for split in SPLITS:
        info = check_beton(out / f"{split}.beton")
        assert info.num_samples == source.num_samples(split) and info.fixed_shape == (12, 10)
        images, labels = decoded_pixels(out / f"{split}.beton", source.num_samples(split))
        assert np.array_equal(images, source.images(split))
        assert np.array_equal(labels, source.labels(split))


def test_convert_is_byte_deterministic(synthetic_converted, tmp_path: Path) -> None:
    source, out, _ = synthetic_converted
    convert(synthetic_source(), tmp_path / "again")
    assert md5s(tmp_path / "again") == md5s(out)


def test_convert_digits_round_trip_is_exact(tmp_path: Path) -> None:
    source = get_source("digits", tmp_path)
    summary = convert(source, tmp_path / "digits")
    assert summary["counts"] == {"train": 1437, "test": 360}
    images, labels = decoded_pixels(tmp_path / "digits" / "test.beton", 360)
    assert np.array_equal(images, source.images("test")) and np.array_equal(labels, source.labels("test"))
    assert read_classes(tmp_path / "digits")["image_shape"] == [8, 8, 3]


def test_large_images_are_stored_as_jpeg_and_downscaled(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:32, 0:40]
    smooth = np.stack([np.stack([yy * 6 + k, xx * 5, np.full_like(xx, 20 * k)], axis=-1)
                       for k in range(8)]).astype(np.uint8)  # [8, 32, 40, 3] gentle ramps
    source = ArraySource("big", ["a", "b"], {"train": (smooth, np.arange(8) % 2), "test": (smooth[:2], [0, 1])})
    summary = convert(source, tmp_path / "jpg", raw_max_side=16, jpeg_quality=95, max_resolution=20)
    assert summary["storage"] == "jpg"
    assert read_classes(tmp_path / "jpg")["image_shape"] == [16, 20, 3]
    info = check_beton(tmp_path / "jpg" / "train.beton")
    assert (info.modes == 0).all() and info.fixed_shape == (16, 20)
    images, _ = decoded_pixels(tmp_path / "jpg" / "train.beton", 8)
    reference = smooth.reshape(8, 16, 2, 20, 2, 3).mean(axis=(2, 4))  # INTER_AREA halving
    assert np.abs(images - reference).mean() < 3


def test_variable_size_imagefolder_converts_raw_and_loads_at_image_size(tmp_path: Path) -> None:
    written = make_image_folder(tmp_path / "folder", {"train": [(6, 9), (10, 7)], "test": [(8, 8)]})
    source = get_source("imagefolder", tmp_path / "folder")
    assert source.image_shape is None and source.max_side() == 10
    convert(source, tmp_path / "conv")
    assert read_classes(tmp_path / "conv")["image_shape"] is None
    info = check_beton(tmp_path / "conv" / "train.beton")
    assert info.fixed_shape is None and (info.modes == 1).all()
    assert [(int(h), int(w)) for h, w in zip(info.heights, info.widths)] == [(6, 9), (10, 7)] * 2
    images, labels = decoded_pixels(tmp_path / "conv" / "train.beton", 4, image_size=7)
    assert images.shape == (4, 8, 8, 3)  # the decoded center square: round(7 / 0.875)
    assert list(labels) == [label for _, label in written["train"]]


def test_failing_sample_stops_conversion_with_its_message(tmp_path: Path) -> None:
    class Broken(ArraySource):
        def load(self, split: str, index: int):
            if index == 5:
                raise OSError("disk sector unreadable")
            return super().load(split, index)

    base = synthetic_source(n_train=10, n_test=4)
    broken = Broken("broken", base.classes, {s: (base.images(s), base.labels(s)) for s in SPLITS})
    with pytest.raises(ConversionError, match="disk sector unreadable"):
        convert(broken, tmp_path / "out")
    assert not (tmp_path / "out" / "train.beton").exists()
    assert not list((tmp_path / "out").iterdir()), "no partial or temporary file may remain"


def test_convert_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="jpeg_quality"):
        convert(synthetic_source(), tmp_path, jpeg_quality=0)
    with pytest.raises(ConversionError, match="num_workers"):
        convert(synthetic_source(), tmp_path, num_workers=0)


def test_parallel_conversion_decodes_identically(synthetic_converted, tmp_path: Path) -> None:
    source, out, _ = synthetic_converted
    convert(source, tmp_path / "par", num_workers=2)
    images, labels = decoded_pixels(tmp_path / "par" / "train.beton", 70)
    assert np.array_equal(images, source.images("train")) and np.array_equal(labels, source.labels("train"))
    assert md5s(tmp_path / "par")["index.parquet"] == md5s(out)["index.parquet"]


# --------------------------------------------------------------------------- artifacts


def test_missing_artifacts_say_run_convert(tmp_path: Path) -> None:
    for reader in (read_index, read_classes):
        with pytest.raises(ConvertedDataMissingError, match="dvc repro convert"):
            reader(tmp_path)
    with pytest.raises(ConvertedDataMissingError, match="dvc repro convert"):
        check_beton(tmp_path / "train.beton")
    with pytest.raises(ConvertedDataMissingError, match="dvc repro convert"):
        make_loader(tmp_path / "train.beton", batch_size=4, views=["clean"], seed=0)


def test_corrupt_index_and_classes_are_reported(tmp_path: Path) -> None:
    (tmp_path / "index.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(CorruptArtifactError, match="index.parquet"):
        read_index(tmp_path)
    pd.DataFrame({"sample_id": [0, 2], "label": [1, 1], "split": ["train", "train"]}).to_parquet(
        tmp_path / "index.parquet")
    with pytest.raises(CorruptArtifactError, match="0..N-1"):
        read_index(tmp_path)
    (tmp_path / "classes.json").write_text("{not json")
    with pytest.raises(CorruptArtifactError):
        read_classes(tmp_path)
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a"], "num_classes": 2}))
    with pytest.raises(CorruptArtifactError, match="inconsistent"):
        read_classes(tmp_path)


@pytest.mark.parametrize("keep", [0, 10, 24, 2000, 1 << 21, -24, -1])
def test_truncated_beton_gives_a_clear_error_not_a_crash(synthetic_converted, tmp_path: Path, keep: int) -> None:
    _, out, _ = synthetic_converted
    data = (out / "train.beton").read_bytes()
    bad = tmp_path / "train.beton"
    bad.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(CorruptArtifactError, match="dvc repro convert"):
        check_beton(bad)
    with pytest.raises(CorruptArtifactError):
        make_loader(bad, batch_size=8, views=["clean"], seed=0, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_beton_with_wrong_fields_is_rejected(tmp_path: Path) -> None:
    from ffcv.fields import IntField
    from ffcv.writer import DatasetWriter

    class Rows:
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int):
            return (i,)

    DatasetWriter(str(tmp_path / "x.beton"), {"label": IntField()}, num_workers=1).from_indexed_dataset(Rows())
    with pytest.raises(CorruptArtifactError, match="fields"):
        check_beton(tmp_path / "x.beton")
