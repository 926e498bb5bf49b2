"""Convert a :class:`~pipeline.data.sources.Source` into FFCV files plus an index.

``convert(source, out_dir)`` writes, each atomically (temporary sibling + rename):

- ``train.beton``, ``test.beton``: fields ``image``, ``label``, ``sample_id``; images
  are stored raw (exact pixels) when the largest side of the dataset is at most
  ``raw_max_side``, otherwise as JPEG (``jpeg_quality``), downscaled so that their
  longest side is at most ``max_resolution``;
- ``index.parquet``: ``sample_id`` (int64), ``label`` (int64, -1 where unknown), ``split``
  (str), one row per sample, train rows first; plus the source's ``extra_columns`` (the
  ``folder`` dataset's ``path`` and ``initial_label``);
- ``classes.json``: ``classes``, ``num_classes``, ``image_shape`` (``[H, W, 3]`` as
  stored, ``null`` for variable sizes), ``dataset``, ``storage``, ``mean``, ``std``, plus
  the source's ``facts``.

``sample_id`` is the row of the sample in its split (stable across conversions).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.beton import image_field, write_beton
from pipeline.data.errors import ConversionError
from pipeline.data.index import CLASSES_FILE, INDEX_FILE, beton_path
from pipeline.data.sources import SPLITS, Source
from pipeline.core.io import atomic_path, write_json, write_parquet

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
                                    "split": split, **source.extra_columns(split)}))
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
        **source.facts(),
    })
    seconds = time.perf_counter() - started
    total = sum(counts.values())
    return {"dataset": source.name, "storage": storage, "counts": counts, "seconds": seconds,
            "images_per_second": total / seconds if seconds > 0 else float("inf")}
