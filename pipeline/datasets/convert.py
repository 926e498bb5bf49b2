"""Convert a :class:`~pipeline.datasets.sources.Source` into FFCV files plus an index.

``convert(source, out_dir)`` writes, each atomically (temporary sibling + rename):

- ``train.beton``, ``test.beton``: fields ``image``, ``label``, ``sample_id``; images
  are stored raw (exact pixels) when the largest side of the dataset is at most
  ``raw_max_side``, otherwise as JPEG (``jpeg_quality``), downscaled so that their
  longest side is at most ``max_resolution``;
- ``index.parquet``: ``sample_id`` (int64), ``label`` (int64), ``split`` (str), one row
  per sample, train rows first;
- ``classes.json``: ``classes``, ``num_classes``, ``image_shape`` (``[H, W, 3]`` as
  stored, ``null`` for variable sizes), ``dataset``, ``storage``, ``mean``, ``std``.

``sample_id`` is the row of the sample in its split (stable across conversions).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.datasets.beton import image_field, write_beton
from pipeline.datasets.errors import ConversionError, ConvertedDataMissingError, CorruptArtifactError
from pipeline.datasets.sources import SPLITS, Source
from pipeline.io import atomic_path, write_json, write_parquet

INDEX_FILE = "index.parquet"
CLASSES_FILE = "classes.json"
INDEX_COLUMNS: dict[str, str] = {"sample_id": "int64", "label": "int64", "split": "object"}
_CLASSES_KEYS = ("classes", "num_classes", "image_shape", "dataset", "storage", "mean", "std")
_MISSING_HINT = "Run `dvc repro convert` (or `obcp convert`) to create it."


def beton_path(out_dir: Path | str, split: str) -> Path:
    """Location of the ``.beton`` of ``split`` inside a converted dataset folder."""
    if split not in SPLITS:
        raise ConvertedDataMissingError(f"There is no split {split!r}; converted datasets have {list(SPLITS)}.")
    return Path(out_dir) / f"{split}.beton"


class _SplitSamples:
    """Indexable view of one split for FFCV's writer: ``[i] -> (image, label, i)``."""

    def __init__(self, source: Source, split: str):
        self.source = source
        self.split = split
        self.length = source.num_samples(split)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, int]:
        image, label = self.source.load(self.split, int(index))
        return np.ascontiguousarray(image), int(label), int(index)


def stored_shape(shape: tuple[int, int, int] | None, max_resolution: int | None) -> list[int] | None:
    """Shape after FFCV's ``max_resolution`` downscale (same rounding as ``ffcv.fields.rgb_image.resizer``)."""
    if shape is None:
        return None
    height, width, channels = shape
    if max_resolution is not None:
        ratio = max_resolution / max(height, width)
        if ratio < 1:
            width, height = (ratio * np.array([width, height])).astype(int)
    return [int(height), int(width), int(channels)]


def convert(
    source: Source,
    out_dir: Path | str,
    *,
    jpeg_quality: int = 90,
    raw_max_side: int = 64,
    max_resolution: int = 512,
    num_workers: int = 1,
) -> dict[str, Any]:
    """Write ``{train,test}.beton``, ``index.parquet`` and ``classes.json`` into ``out_dir``.

    Returns a summary: ``dataset``, ``storage`` (``raw``/``jpg``), ``counts`` per split,
    ``seconds`` (wall time) and ``images_per_second``.
    """
    if not 1 <= jpeg_quality <= 100:
        raise ConversionError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}. Fix `convert.jpeg_quality`.")
    if raw_max_side < 1 or max_resolution < 1:
        raise ConversionError(
            f"raw_max_side ({raw_max_side}) and max_resolution ({max_resolution}) must be positive pixel counts."
        )
    if num_workers < 1:
        raise ConversionError(f"num_workers must be >= 1, got {num_workers}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    raw = source.max_side() <= raw_max_side
    storage = "raw" if raw else "jpg"
    field_args = {"write_mode": storage, "jpeg_quality": jpeg_quality,
                  "max_resolution": None if raw else max_resolution}
    counts: dict[str, int] = {}
    frames = []
    for split in SPLITS:
        samples = _SplitSamples(source, split)
        with atomic_path(beton_path(out_dir, split)) as tmp:
            write_beton(tmp, samples, image=image_field(**field_args), num_workers=num_workers)
        counts[split] = len(samples)
        labels = np.asarray(source.labels(split), dtype=np.int64)
        frames.append(pd.DataFrame({"sample_id": np.arange(len(samples), dtype=np.int64), "label": labels,
                                    "split": split}))
    index = pd.concat(frames, ignore_index=True)
    write_parquet(out_dir / INDEX_FILE, index)
    write_json(out_dir / CLASSES_FILE, {
        "classes": list(source.classes),
        "num_classes": len(source.classes),
        "image_shape": stored_shape(source.image_shape, field_args["max_resolution"]),
        "dataset": source.name,
        "storage": storage,
        "mean": list(source.mean),
        "std": list(source.std),
    })
    seconds = time.perf_counter() - started
    total = sum(counts.values())
    return {"dataset": source.name, "storage": storage, "counts": counts, "seconds": seconds,
            "images_per_second": total / seconds if seconds > 0 else float("inf")}


def read_index(out_dir: Path | str) -> pd.DataFrame:
    """``index.parquet`` of a converted dataset, validated: columns ``sample_id``, ``label``, ``split``."""
    path = Path(out_dir) / INDEX_FILE
    if not path.is_file():
        raise ConvertedDataMissingError(f"Missing dataset index {path}. {_MISSING_HINT}")
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise CorruptArtifactError(
            f"Cannot read {path} ({type(err).__name__}: {err}). Delete it and run `dvc repro convert` again."
        ) from err
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise CorruptArtifactError(f"{path} lacks columns {missing}. Delete it and run `dvc repro convert` again.")
    frame = frame[list(INDEX_COLUMNS)]
    for split, rows in frame.groupby("split", sort=False):
        if split not in SPLITS or not np.array_equal(rows["sample_id"].to_numpy(), np.arange(len(rows))):
            raise CorruptArtifactError(
                f"{path}: split {split!r} is not a known split with sample_id 0..N-1 in order. "
                "Delete it and run `dvc repro convert` again."
            )
    return frame.astype({"sample_id": "int64", "label": "int64"}).reset_index(drop=True)


def read_classes(out_dir: Path | str) -> dict[str, Any]:
    """``classes.json`` of a converted dataset, validated (keys listed in the module docstring)."""
    path = Path(out_dir) / CLASSES_FILE
    if not path.is_file():
        raise ConvertedDataMissingError(f"Missing class list {path}. {_MISSING_HINT}")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptArtifactError(
            f"Cannot parse {path} ({err}). Delete it and run `dvc repro convert` again."
        ) from err
    missing = [k for k in _CLASSES_KEYS if not isinstance(info, dict) or k not in info]
    if missing or len(info["classes"]) != info["num_classes"]:
        raise CorruptArtifactError(
            f"{path} is inconsistent (missing keys {missing} or num_classes != len(classes)). "
            "Delete it and run `dvc repro convert` again."
        )
    return info
