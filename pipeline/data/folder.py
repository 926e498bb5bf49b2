"""`dataset.name: folder`: your own images, whose labels are not known.

Reads (:class:`FolderSource`):

- ``root``: a folder of images, flat or nested (any depth; hidden files and folders are
  skipped, so are files without an image extension). Images are ordered by their path
  relative to ``root``; row ``i`` of that order is ``sample_id`` ``i`` of the train split.
  File names must be unique across subfolders: an initial-labels CSV and ``labels.csv``
  may name an image by its file name alone.
- the class names: a ``classes.txt`` (one name a line; blank lines and lines starting
  with ``#`` are skipped) or a list;
- optionally ``val``: a labeled folder ``val/<class>/...`` (class folder names from the
  class list) whose accuracy the pipeline measures. Without it the test split holds one
  placeholder (the first train image, label -1) because every dataset has two splits;
  it is never scored: accuracy is then estimated from random yes/no questions
  (pipeline/selection/audit.py) and the report says so;
- optionally ``initial_labels``: a CSV of the initial labeled set I^S (header with an
  image column ``path``/``file``/``image``/``filename``, a path relative to ``root`` or a
  bare file name, and a class column ``label``/``class``, a class name).

Every image is decoded once when the source is built (so a bad file stops everything
before anything is written), turned upright by its EXIF orientation, converted to RGB,
center-cropped to a square and resized to
``image_size`` (:func:`fit_square`, the same function `obcp predict` uses). Train labels
are -1 (unknown); ``index.parquet`` also gets the columns ``path`` (relative to ``root``;
``val/<rel>`` for the test split of a val folder) and ``initial_label`` (the CSV's class
or -1), and ``classes.json`` the key ``files_sha256`` (of the ordered train paths), so
the answer store can tell the folder it was filled for.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.data.errors import DatasetFormatError, DatasetNotFoundError
from pipeline.data.sources import IMAGE_EXTENSIONS, Source

_LISTED = 10
IMAGE_COLUMNS = ("path", "file", "image", "filename")
CLASS_COLUMNS = ("label", "class")


def fit_square(image, size: int) -> np.ndarray:
    """A PIL image → ``[size, size, 3]`` uint8: turned upright (EXIF orientation), RGB, the
    central square, resized (bilinear).

    The exported model's input contract: `obcp predict` and the documented loader do this."""
    from PIL import Image, ImageOps

    upright = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(ImageOps.fit(upright, (size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def read_image(path: Path, size: int) -> np.ndarray:
    """Decode `path` and :func:`fit_square` it; ``OSError``/``ValueError`` for an undecodable file."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return fit_square(image, size)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _LISTED else "")


def read_class_list(classes: str | os.PathLike | Sequence[str]) -> list[str]:
    """The class names from a classes.txt path or a list; an error for duplicates or fewer than 2."""
    if isinstance(classes, (str, os.PathLike)):
        path = Path(classes)
        if not path.is_file():
            raise DatasetNotFoundError(
                f"The class list {path} does not exist. Write one class name a line into it, or give "
                "`dataset.classes` as a list of names."
            )
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetFormatError(f"Cannot read the class list {path} as UTF-8 text ({err}).") from err
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        where = str(path)
    else:
        names = [str(c).strip() for c in classes]
        where = "dataset.classes"
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DatasetFormatError(f"The class list {where} names {_listing(dup)} more than once; list each class once.")
    if len(names) < 2:
        raise DatasetFormatError(f"The class list {where} has {len(names)} class(es); give at least 2 names.")
    return names


def _walk(root: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under `root`, recursively, sorted by relative path; hidden entries (and the
    folder `exclude`) skipped."""
    found: list[Path] = []
    skip = exclude.resolve() if exclude is not None else None
    for folder, dirs, files in os.walk(root, onerror=_walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (Path(folder) / d).resolve() != skip)
        found += [Path(folder) / f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _walk_error(err: OSError) -> None:
    raise DatasetNotFoundError(f"Cannot read the folder {err.filename} ({err.strerror or err}); check permissions.")


@dataclass(frozen=True)
class _Decoded:
    files: list[Path]
    unreadable: list[tuple[Path, str]]
    total: np.ndarray  # [3] float64 sums of pixel values in [0, 1]
    total_sq: np.ndarray  # [3]
    pixels: int


def _decode_all(files: list[Path], size: int) -> _Decoded:
    total, total_sq, pixels = np.zeros(3), np.zeros(3), 0
    ok, bad = [], []
    for path in files:
        try:
            image = read_image(path, size).reshape(-1, 3).astype(np.float64) / 255.0
        except (OSError, ValueError, SyntaxError) as err:  # PIL raises these for corrupt or non-image files
            bad.append((path, f"{type(err).__name__}: {err}"))
            continue
        ok.append(path)
        total += image.sum(axis=0)
        total_sq += np.square(image).sum(axis=0)
        pixels += image.shape[0]
    return _Decoded(ok, bad, total, total_sq, pixels)


class FolderSource(Source):
    """Unlabeled images under `root` (+ an optional labeled `val` folder); see the module docstring."""

    name = "folder"

    def __init__(self, root: str | os.PathLike, classes: str | os.PathLike | Sequence[str], *,
                 val: str | os.PathLike | None = None, initial_labels: str | os.PathLike | None = None,
                 image_size: int = 32, skip_unreadable: bool = False):
        self.root = Path(root)
        self.classes = read_class_list(classes)
        self.size = int(image_size)
        if not 4 <= self.size <= 1024:
            raise DatasetFormatError(f"image_size must lie in [4, 1024] pixels, got {self.size}.")
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"The image folder {self.root} does not exist (or is not a folder). Point `dataset.root` "
                "(`obcp preset label --images`) at the folder that holds your images."
            )
        self.val = Path(val) if val else None
        files = _walk(self.root, exclude=self.val)  # a val/ inside the image folder is not unlabeled
        if not files:
            raise DatasetFormatError(
                f"The image folder {self.root} holds no images (extensions {list(IMAGE_EXTENSIONS)}, "
                "searched recursively). Put your images there."
            )
        by_name: dict[str, list[str]] = {}
        for path in files:
            by_name.setdefault(path.name, []).append(path.relative_to(self.root).as_posix())
        dup = [f"{name} ({' and '.join(paths[:3])})" for name, paths in by_name.items() if len(paths) > 1]
        if dup:
            raise DatasetFormatError(
                f"{len(dup)} file name(s) occur in more than one subfolder of {self.root}: {_listing(dup)}. "
                "Images are named by their file name (initial labels, labels.csv), so each name must be "
                "unique: rename the copies."
            )
        decoded = _decode_all(files, self.size)
        self.skipped = [self._rel(p) for p, _ in decoded.unreadable]
        if decoded.unreadable and not skip_unreadable:
            raise DatasetFormatError(
                f"{len(decoded.unreadable)} image(s) under {self.root} cannot be decoded: "
                + _listing([f"{self._rel(p)} ({why})" for p, why in decoded.unreadable])
                + ". Replace or delete them, or leave them out with `dataset.skip_unreadable: true` "
                "(`obcp preset label --skip-unreadable`)."
            )
        if not decoded.files:
            raise DatasetFormatError(f"None of the {len(files)} image(s) under {self.root} can be decoded.")
        self._train = decoded.files
        mean = decoded.total / decoded.pixels
        std = np.sqrt(np.maximum(decoded.total_sq / decoded.pixels - mean**2, 0.0))
        self._mean = tuple(float(v) for v in mean)
        self._std = tuple(float(v) if v > 0 else 1.0 for v in std)
        self._val: list[Path] = []
        self._val_labels = np.zeros(0, dtype=np.int64)
        if self.val is not None:
            self._read_val(skip_unreadable)
        self._initial = np.full(len(self._train), -1, dtype=np.int64)
        if initial_labels:
            self._initial = self._read_initial(Path(initial_labels))

    # ------------------------------------------------------------------ reading

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _read_val(self, skip_unreadable: bool) -> None:
        val = self.val
        assert val is not None
        if not val.is_dir():
            raise DatasetNotFoundError(
                f"The validation folder {val} does not exist. Give `dataset.val` a folder of val/<class>/ "
                "subfolders of labeled images, or leave it empty (accuracy is then estimated)."
            )
        folders = sorted(p for p in val.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown = [p.name for p in folders if p.name not in self.classes]
        if unknown:
            raise DatasetFormatError(
                f"{val} has class folder(s) {_listing(unknown)} that are not in the class list "
                f"({_listing(self.classes)}); rename them to class names or remove them."
            )
        files, labels = [], []
        for folder in folders:
            found = _walk(folder)
            files += found
            labels += [self.classes.index(folder.name)] * len(found)
        if not files:
            raise DatasetFormatError(f"The validation folder {val} holds no images in val/<class>/ subfolders.")
        decoded = _decode_all(files, self.size)
        if decoded.unreadable and not skip_unreadable:
            raise DatasetFormatError(
                f"{len(decoded.unreadable)} image(s) under {val} cannot be decoded: "
                + _listing([f"{p} ({why})" for p, why in decoded.unreadable])
                + ". Replace or delete them, or set `dataset.skip_unreadable: true`."
            )
        keep = set(decoded.files)
        self.skipped += [str(p) for p, _ in decoded.unreadable]
        self._val = [f for f in files if f in keep]
        self._val_labels = np.asarray([lab for f, lab in zip(files, labels) if f in keep], dtype=np.int64)

    def _read_initial(self, path: Path) -> np.ndarray:
        """[N] class per train sample from the initial-labels CSV (-1 where none)."""
        if not path.is_file():
            raise DatasetNotFoundError(f"The initial-labels CSV {path} does not exist; fix `dataset.initial_labels`.")
        try:
            rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DatasetFormatError(f"Cannot read the initial-labels CSV {path} ({err}).") from err
        rows = [r for r in rows if any(f.strip() for f in r)]
        help_ = (f"Write {path} with a header row naming an image column ({'/'.join(IMAGE_COLUMNS)}: a path "
                 f"relative to {self.root} or a file name) and a class column ({'/'.join(CLASS_COLUMNS)}: a name "
                 "from the class list), one row per image.")
        if not rows:
            raise DatasetFormatError(f"The initial-labels CSV {path} is empty. {help_}")
        header = [h.strip().lower() for h in rows[0]]
        i_img = next((header.index(c) for c in IMAGE_COLUMNS if c in header), None)
        i_cls = next((header.index(c) for c in CLASS_COLUMNS if c in header), None)
        if i_img is None or i_cls is None:
            raise DatasetFormatError(f"The initial-labels CSV {path} has the header {rows[0]!r}. {help_}")
        by_rel = {self._rel(p): i for i, p in enumerate(self._train)}
        by_name = {p.name: i for i, p in enumerate(self._train)}
        skipped = set(self.skipped)
        out = np.full(len(self._train), -1, dtype=np.int64)
        problems: list[str] = []
        seen: dict[int, int] = {}
        for line, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                problems.append(f"line {line}: {len(row)} field(s) instead of {len(header)}")
                continue
            name, cls = row[i_img].strip(), row[i_cls].strip()
            sid = by_rel.get(name.replace("\\", "/"), by_name.get(name))
            if sid is None:
                why = "cannot be decoded (skipped)" if name in skipped else f"is not an image under {self.root}"
                problems.append(f"line {line}: {name!r} {why}")
            elif sid in seen:
                problems.append(f"line {line}: {name!r} is labeled again (first on line {seen[sid]})")
            else:
                seen[sid] = line
            if cls not in self.classes:
                problems.append(f"line {line}: class {cls!r} is not in the class list")
            elif sid is not None:
                out[sid] = self.classes.index(cls)
        if problems:
            raise DatasetFormatError(
                f"The initial-labels CSV {path} has {len(problems)} problem(s): {_listing(problems)}. "
                f"Classes: {_listing(self.classes)}. {help_}"
            )
        if not seen:
            raise DatasetFormatError(f"The initial-labels CSV {path} labels no image. {help_}")
        return out

    # ------------------------------------------------------------------ Source

    @property
    def has_val(self) -> bool:
        return bool(self._val)

    def _files(self, split: str) -> list[Path]:
        self._check_split(split)
        if split == "train":
            return self._train
        return self._val if self._val else self._train[:1]

    def num_samples(self, split: str) -> int:
        return len(self._files(split))

    def labels(self, split: str) -> np.ndarray:
        self._check_split(split)
        if split == "test" and self._val:
            return self._val_labels.copy()
        return np.full(self.num_samples(split), -1, dtype=np.int64)

    def path(self, split: str, index: int) -> Path:
        return self._files(split)[index]

    def load(self, split: str, index: int) -> tuple[np.ndarray, int]:
        path = self.path(split, index)
        try:
            image = read_image(path, self.size)
        except (OSError, ValueError, SyntaxError) as err:
            raise DatasetFormatError(f"Cannot read image {path} ({err}); it changed since the folder was read.") from err
        return image, int(self.labels(split)[index])

    def extra_columns(self, split: str) -> dict[str, np.ndarray]:
        if split == "train":
            paths = [self._rel(p) for p in self._train]
            return {"path": np.asarray(paths, dtype=object), "initial_label": self._initial.copy()}
        paths = [f"val/{p.relative_to(self.val).as_posix()}" for p in self._val] if self._val else [""]
        return {"path": np.asarray(paths, dtype=object), "initial_label": np.full(len(paths), -1, np.int64)}

    def facts(self) -> dict:
        return {"files_sha256": self.fingerprint, "root": str(self.root), "test_labels": self.has_val,
                "skipped": list(self.skipped)}

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the ordered train paths: sample ids mean the same images iff it is equal."""
        return hashlib.sha256("\n".join(self._rel(p) for p in self._train).encode()).hexdigest()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.size, self.size, 3

    def max_side(self) -> int:
        return self.size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self._mean  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        return self._std  # type: ignore[return-value]


def folder_source(root: str | os.PathLike, settings) -> FolderSource:
    """The `folder` dataset from params' `dataset` block (`pipeline.core.config.DatasetParams`)."""
    if settings is None:
        raise DatasetFormatError("dataset folder needs its settings (dataset.classes, ...): pass params.dataset.")
    classes = settings.classes
    return FolderSource(root, list(classes) if isinstance(classes, tuple) else classes,
                        val=settings.val or None, initial_labels=settings.initial_labels or None,
                        image_size=settings.image_size, skip_unreadable=settings.skip_unreadable)
