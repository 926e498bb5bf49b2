"""What `convert` leaves beside the betons: `index.parquet` and `classes.json`, read and
validated. Light on purpose (pandas + json): stages that only need the dataset's facts
import this, not FFCV."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.errors import ConvertedDataMissingError, CorruptArtifactError
from pipeline.data.sources import SPLITS
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


def read_files(out_dir: Path | str) -> pd.DataFrame:
    """The ``folder`` dataset's file columns of ``index.parquet``: DataFrame[split, sample_id,
    path, initial_label] (one row per sample, train rows first)."""
    path = Path(out_dir) / INDEX_FILE
    frame = read_index(out_dir)  # validated first
    extra = pd.read_parquet(path, columns=None)
    missing = [c for c in ("path", "initial_label") if c not in extra.columns]
    if missing:
        raise CorruptArtifactError(
            f"{path} has no {missing} column(s): it is not the index of a `folder` dataset (dataset.name: folder). "
            "Run `dvc repro convert` after setting dataset.name: folder."
        )
    return pd.DataFrame({"split": frame["split"], "sample_id": frame["sample_id"],
                         "path": extra["path"].astype(str).to_numpy(),
                         "initial_label": extra["initial_label"].astype("int64").to_numpy()})
