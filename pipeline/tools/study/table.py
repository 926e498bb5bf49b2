"""The run table (``reports/study/runs.csv``): one row per dataset, block, variant, arm, seed and cycle.

=================  ========  =============================================================
column             dtype     meaning
=================  ========  =============================================================
dataset            str       a dataset of the study spec
block, variant     str       the block and variant of the cell
query_times        int       the cell's query cycles
arm                str       arm name
method, strategy   str       the arm's method and selection strategy
seed               int       seed
cycle              int       query cycle, 0 = the stage-1 checkpoint
top1, bits, …      float     every numeric key of the metrics point (``top1, top5, bits,
                             labeled_equiv_pct, yes, asked`` and whatever selection-quality
                             numbers the evaluate stage adds; nested mappings as ``a.b``)
=================  ========  =============================================================

The rows of a cell come from its DVC metrics files (``reports/metrics/seed<S>/<arm>.json``,
read with `pipeline.reporting.results.read_metrics`), so the table holds exactly what the pipeline wrote.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from pipeline.core.io import write_csv
from pipeline.core.layout import metrics_file
from pipeline.reporting.results import read_metrics
from pipeline.tools.study.spec import Cell, StudyError, flatten

KEYS: tuple[str, ...] = ("dataset", "block", "variant", "query_times", "arm", "method", "strategy", "seed", "cycle")
STANDARD: tuple[str, ...] = ("top1", "top5", "bits", "labeled_equiv_pct", "yes", "asked")
REQUIRED: tuple[str, ...] = (*KEYS, "top1", "bits")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def point_row(point: dict) -> dict[str, float]:
    """Every numeric value of one metrics point, nested mappings flattened to dotted names."""
    out = {}
    for key, value in flatten(point).items():
        number = _number(value)
        if number is not None and key != "cycle":
            out[key] = number
    return out


def cell_rows(cell: Cell, cell_dir: Path) -> list[dict]:
    """The run-table rows of one finished cell, read from its metrics files."""
    rows = []
    for arm in cell.arms:
        for seed in cell.params["seeds"]:
            doc = read_metrics(metrics_file(Path(cell_dir) / "reports" / "metrics", arm, seed))
            for point in doc["points"]:
                rows.append({"dataset": cell.dataset, "block": cell.block, "variant": cell.variant,
                             "query_times": int(cell.params.get("query_times", 0)), "arm": arm,
                             "method": doc.get("method", ""), "strategy": doc.get("strategy", ""),
                             "seed": int(seed), "cycle": int(point["cycle"]), **point_row(point)})
    return rows


def from_rows(rows: Iterable[dict]) -> pd.DataFrame:
    """The run table: `KEYS`, then the standard numbers, then every other numeric key (first-seen order)."""
    rows = list(rows)
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in KEYS and k not in STANDARD]
    standard = [k for k in STANDARD if any(k in r for r in rows)]
    frame = pd.DataFrame(rows, columns=[*KEYS, *standard, *extra])
    return typed(frame)


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("dataset", "block", "variant", "arm", "method", "strategy"):
        frame[col] = frame[col].astype(str)
    for col in ("query_times", "seed", "cycle"):
        frame[col] = frame[col].astype("int64")
    for col in frame.columns:
        if col not in KEYS:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame.reset_index(drop=True)


def write_table(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    write_csv(path, frame)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a run table back with its dtypes; a missing file or column is a `StudyError`."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"run table {path} does not exist; run `obcp study run` first (or pass --runs FILE).")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise StudyError(f"run table {path} is not readable CSV ({exc}); rerun `obcp study run` to rewrite "
                         "it.") from None
    if frame.empty and all(c in frame.columns for c in KEYS):  # what a run with no finished cell writes
        return from_rows([])
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise StudyError(f"run table {path} lacks columns {missing}; rerun `obcp study run` to rewrite it.")
    bad = frame[list(KEYS)].isna().any(axis=1)
    if bad.any():
        raise StudyError(f"run table {path}: rows {[int(i) + 2 for i in frame.index[bad][:5]]} have empty key columns "
                         f"({', '.join(KEYS)}); rerun `obcp study run` to rewrite it.")
    return typed(frame)


def final_points(runs: pd.DataFrame) -> pd.DataFrame:
    """The last cycle of every (dataset, block, variant, arm, seed)."""
    if runs.empty:
        return runs.copy()
    group = ["dataset", "block", "variant", "arm", "seed"]
    last = runs.groupby(group, sort=False)["cycle"].transform("max")
    return runs[runs["cycle"] == last].reset_index(drop=True)

