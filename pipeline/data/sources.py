"""Dataset sources by name: where raw images come from, in a fixed order.

A :class:`Source` exposes two splits, ``train`` and ``test``, each an indexable list of
``([H, W, 3] uint8 image, int label)`` pairs. Row ``i`` of a split is the sample whose
``sample_id`` is ``i`` after conversion, so the order here must never change.

Registered names (see :func:`get_source`):

- ``digits``: scikit-learn's bundled 8x8 digits (offline). Pixels 0..16 become
  ``round(v * 255 / 16)``, replicated to 3 channels; a stratified 80/20 split with
  seed 0, each split in the original row order.
- ``glyphs``: letters rendered with matplotlib's bundled fonts over crops of
  scikit-learn's bundled photos, 16x16, generated offline and deterministically
  (:mod:`pipeline.data.glyphs`).
- ``cifar10`` / ``cifar100``: torchvision's CIFAR under ``root`` (downloaded only with
  ``download=True``).
- ``imagefolder``: ``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageNet
  layout); ``val`` is exposed as ``test``. Classes and files are sorted by name.
- ``folder``: your own images under ``root`` whose labels are unknown (label -1), with the
  class names from params (:mod:`pipeline.data.folder`).
"""
from __future__ import annotations

import abc
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from pipeline.data.errors import DatasetFormatError, DatasetNotFoundError, UnknownDatasetError

SPLITS: tuple[str, str] = ("train", "test")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Channel statistics used for folders of natural images, where computing them would
# need a full pass over the data (the usual ImageNet values).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class Source(abc.ABC):
    """A named dataset with ``train``/``test`` splits of RGB uint8 images and int labels."""

    name: str
    classes: list[str]
    splits: tuple[str, ...] = SPLITS

    @abc.abstractmethod
    def num_samples(self, split: str) -> int:
        """Number of samples in ``split``."""

    @abc.abstractmethod
    def load(self, split: str, index: int) -> tuple[np.ndarray, int]:
        """Sample ``index`` of ``split``: (``[H, W, 3]`` uint8 image, label in ``[0, C)``)."""

    @abc.abstractmethod
    def labels(self, split: str) -> np.ndarray:
        """All labels of ``split`` in sample_id order: ``[N]`` int64 (no image is read); -1 where
        the label is not known (the ``folder`` dataset's train split)."""

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(H, W, 3)`` when every image has that shape, else ``None`` (variable size)."""

    @abc.abstractmethod
    def max_side(self) -> int:
        """Largest image side in pixels over all splits."""

    @property
    @abc.abstractmethod
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of pixel values scaled to [0, 1] (for normalisation)."""

    @property
    @abc.abstractmethod
    def std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation of pixel values scaled to [0, 1]."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def extra_columns(self, split: str) -> dict[str, np.ndarray]:
        """More ``index.parquet`` columns of ``split`` ([N] arrays in sample_id order); none by default."""
        return {}

    def facts(self) -> dict:
        """More ``classes.json`` keys; none by default."""
        return {}

    def iter_images(self, split: str) -> Iterator[tuple[np.ndarray, int]]:
        """Yield every ``([H, W, 3] uint8, label)`` of ``split`` in sample_id order."""
        for index in range(self.num_samples(split)):
            yield self.load(split, index)

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise DatasetFormatError(
                f"Dataset {self.name!r} has no split {split!r}. Use one of {list(self.splits)}."
            )


class ArraySource(Source):
    """A source held in memory: per split ``images [N, H, W, 3]`` uint8 and ``labels [N]``.

    Also the base of ``digits`` and ``cifar*``, and the way to convert synthetic data.
    ``mean``/``std`` are computed from the train split.
    """

    def __init__(self, name: str, classes: Sequence[str], splits: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.name = name
        self.classes = [str(c) for c in classes]
        if set(splits) != set(SPLITS):
            raise DatasetFormatError(
                f"ArraySource {name!r} needs exactly the splits {list(SPLITS)}, got {sorted(splits)}."
            )
        self._images: dict[str, np.ndarray] = {}
        self._labels: dict[str, np.ndarray] = {}
        for split, (images, labels) in splits.items():
            images = np.asarray(images)
            labels = np.asarray(labels)
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise DatasetFormatError(
                    f"ArraySource {name!r} split {split!r}: images must be a uint8 array of shape "
                    f"[N, H, W, 3], got {images.dtype} {images.shape}. Convert grayscale images "
                    "by repeating the channel and scale pixels to 0..255."
                )
            if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
                raise DatasetFormatError(
                    f"ArraySource {name!r} split {split!r}: labels must be an integer array of "
                    f"shape [{len(images)}], got {labels.dtype} {labels.shape}."
                )
            if len(images) == 0:
                raise DatasetFormatError(f"ArraySource {name!r} split {split!r} is empty; give it samples.")
            if labels.min() < 0 or labels.max() >= len(self.classes):
                raise DatasetFormatError(
                    f"ArraySource {name!r} split {split!r}: labels must lie in [0, {len(self.classes)}), "
                    f"found [{labels.min()}, {labels.max()}]. Fix the labels or the class list."
                )
            self._images[split] = images
            self._labels[split] = labels.astype(np.int64)
        shapes = {self._images[s].shape[1:] for s in SPLITS}
        if len(shapes) != 1:
            raise DatasetFormatError(
                f"ArraySource {name!r}: train and test images differ in shape ({sorted(shapes)}); "
                "resize them to one shape."
            )

    def num_samples(self, split: str) -> int:
        self._check_split(split)
        return len(self._images[split])

    def load(self, split: str, index: int) -> tuple[np.ndarray, int]:
        self._check_split(split)
        return self._images[split][index], int(self._labels[split][index])

    def images(self, split: str) -> np.ndarray:
        """All images of ``split``: ``[N, H, W, 3]`` uint8 (read-only view)."""
        self._check_split(split)
        view = self._images[split].view()
        view.flags.writeable = False
        return view

    def labels(self, split: str) -> np.ndarray:
        """All labels of ``split``: ``[N]`` int64."""
        self._check_split(split)
        return self._labels[split].copy()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self._images["train"].shape[1:]
        return int(h), int(w), int(c)

    def max_side(self) -> int:
        return max(self.image_shape[:2])

    @functools.cached_property
    def _stats(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        images = self._images["train"]
        total = np.zeros(3, dtype=np.float64)
        total_sq = np.zeros(3, dtype=np.float64)
        for start in range(0, len(images), 4096):
            chunk = images[start:start + 4096].reshape(-1, 3).astype(np.float64)
            total += chunk.sum(axis=0)
            total_sq += np.square(chunk).sum(axis=0)
        count = images.shape[0] * images.shape[1] * images.shape[2]
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        std = np.where(std > 0, std, 255.0)  # a constant channel: leave it unscaled
        return tuple(float(v) for v in mean / 255.0), tuple(float(v) for v in std / 255.0)

    @property
    def mean(self) -> tuple[float, float, float]:
        return self._stats[0]

    @property
    def std(self) -> tuple[float, float, float]:
        return self._stats[1]


def digits_source() -> ArraySource:
    """scikit-learn's 8x8 digits as ``[8, 8, 3]`` uint8, split 80/20 stratified with seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64)  # [N, 8, 8], values 0..16
    gray = np.rint(pixels * 255.0 / 16.0).astype(np.uint8)
    images = np.repeat(gray[..., None], 3, axis=-1)  # [N, 8, 8, 3]
    labels = np.asarray(bunch.target, dtype=np.int64)
    rows = np.arange(len(labels))
    train_rows, test_rows = train_test_split(rows, test_size=0.2, stratify=labels, random_state=0)
    train_rows, test_rows = np.sort(train_rows), np.sort(test_rows)
    return ArraySource(
        "digits",
        [str(c) for c in range(10)],
        {"train": (images[train_rows], labels[train_rows]), "test": (images[test_rows], labels[test_rows])},
    )


def cifar_source(name: str, root: Path, *, download: bool = False) -> ArraySource:
    """torchvision's CIFAR-10/100 stored under ``root`` (the raw folder, e.g. ``data/raw``)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset_cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    root = Path(root)
    folder = root / dataset_cls.base_folder
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    classes: list[str] = []
    for split in SPLITS:
        try:
            dataset = dataset_cls(str(root), train=split == "train", download=download)
        except RuntimeError as err:
            raise DatasetNotFoundError(
                f"{name} was not found (or failed its checksum) in {folder}. Either allow the "
                f"download (download=True, e.g. `obcp convert --download`) or place the extracted "
                f"'{dataset_cls.base_folder}' folder from {dataset_cls.url} under {root}. ({err})"
            ) from err
        splits[split] = (np.ascontiguousarray(dataset.data), np.asarray(dataset.targets, dtype=np.int64))
        classes = list(dataset.classes)
    return ArraySource(name, classes, splits)


class ImageFolderSource(Source):
    """``root/train/<class>/<file>`` and ``root/val/<class>/<file>``; ``val`` is split ``test``.

    Images are read with PIL and converted to RGB on :meth:`load`; ``mean``/``std`` are
    the ImageNet statistics.
    """

    _FOLDERS = {"train": "train", "test": "val"}

    def __init__(self, root: Path, name: str = "imagefolder"):
        self.name = name
        self.root = Path(root)
        self._files: dict[str, list[Path]] = {}
        self._labels: dict[str, np.ndarray] = {}
        per_split_classes: dict[str, list[str]] = {}
        for split, folder_name in self._FOLDERS.items():
            folder = self.root / folder_name
            per_split_classes[split] = _class_folders(folder)
        train_classes, test_classes = per_split_classes["train"], per_split_classes["test"]
        if train_classes != test_classes:
            only_train = sorted(set(train_classes) - set(test_classes))
            only_val = sorted(set(test_classes) - set(train_classes))
            raise DatasetFormatError(
                f"{self.root}: train/ has {len(train_classes)} class folders and val/ has "
                f"{len(test_classes)}; they must be the same. Only in train: {only_train[:10]}; "
                f"only in val: {only_val[:10]}. Arrange val/ into one folder per train class "
                "(for ImageNet, run the usual valprep script)."
            )
        self.classes = train_classes
        for split, folder_name in self._FOLDERS.items():
            files: list[Path] = []
            labels: list[int] = []
            for label, cls in enumerate(self.classes):
                class_dir = self.root / folder_name / cls
                found = sorted(
                    p for p in _list_dir(class_dir) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                )
                if not found:
                    raise DatasetFormatError(
                        f"{class_dir} holds no images (extensions {list(IMAGE_EXTENSIONS)}). "
                        "Put the class's images there or remove the class folder from both splits."
                    )
                files.extend(found)
                labels.extend([label] * len(found))
            self._files[split] = files
            self._labels[split] = np.asarray(labels, dtype=np.int64)

    def num_samples(self, split: str) -> int:
        self._check_split(split)
        return len(self._files[split])

    def labels(self, split: str) -> np.ndarray:
        self._check_split(split)
        return self._labels[split].copy()

    def path(self, split: str, index: int) -> Path:
        """File of sample ``index`` in ``split``."""
        self._check_split(split)
        return self._files[split][index]

    def load(self, split: str, index: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        path = self.path(split, index)
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except OSError as err:
            raise DatasetFormatError(
                f"Cannot read image {path} ({err}). Replace or delete the file, then convert again."
            ) from err
        return rgb, int(self._labels[split][index])

    @functools.cached_property
    def _sizes(self) -> np.ndarray:
        """``[N_train + N_test, 2]`` (height, width) from image headers (no decoding)."""
        from PIL import Image

        sizes = []
        for split in SPLITS:
            for path in self._files[split]:
                try:
                    with Image.open(path) as image:
                        width, height = image.size
                except OSError as err:
                    raise DatasetFormatError(
                        f"Cannot read image {path} ({err}). Replace or delete the file, then convert again."
                    ) from err
                sizes.append((height, width))
        return np.asarray(sizes, dtype=np.int64)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        sizes = self._sizes
        if (sizes == sizes[0]).all():
            return int(sizes[0, 0]), int(sizes[0, 1]), 3
        return None

    def max_side(self) -> int:
        return int(self._sizes.max())

    @property
    def mean(self) -> tuple[float, float, float]:
        return IMAGENET_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        return IMAGENET_STD


def _list_dir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as err:
        raise DatasetNotFoundError(
            f"Cannot read the folder {folder} ({err.strerror or err}). The imagefolder dataset "
            "needs root/train/<class>/ and root/val/<class>/ folders of images: create them "
            "(or point `root` at the folder that holds train/ and val/) and check permissions."
        ) from err


def _class_folders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"Missing folder {folder}. The imagefolder dataset needs root/train/<class>/ and "
            "root/val/<class>/ folders of images: create them or point `root` at the folder "
            "that holds train/ and val/."
        )
    classes = sorted(p.name for p in _list_dir(folder) if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetFormatError(
            f"{folder} has no class folders. Put each class's images in {folder}/<class name>/."
        )
    return classes


def _glyphs() -> ArraySource:
    from pipeline.data.glyphs import glyphs_source

    return glyphs_source()


def _folder(root: Path, settings) -> Source:
    from pipeline.data.folder import folder_source

    return folder_source(root, settings)


SourceFactory = Callable[[Path, bool, object], Source]  # (root, download, params' `dataset` block or None)

_REGISTRY: dict[str, SourceFactory] = {
    "digits": lambda root, download, settings: digits_source(),
    "glyphs": lambda root, download, settings: _glyphs(),
    "cifar10": lambda root, download, settings: cifar_source("cifar10", root, download=download),
    "cifar100": lambda root, download, settings: cifar_source("cifar100", root, download=download),
    "imagefolder": lambda root, download, settings: ImageFolderSource(root),
    "folder": lambda root, download, settings: _folder(root, settings),
}


def known_sources() -> list[str]:
    """Names accepted by :func:`get_source`."""
    return sorted(_REGISTRY)


def get_source(name: str, root: Path | str | os.PathLike, *, download: bool = False, settings=None) -> Source:
    """Build the source ``name`` reading from ``root`` (ignored by ``digits``); ``settings``: params'
    ``dataset`` block (`pipeline.core.config.DatasetParams`), which ``folder`` needs."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownDatasetError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(known_sources())}. "
            "Fix `dataset.name` in params.yaml."
        ) from None
    return factory(Path(root), download, settings)
