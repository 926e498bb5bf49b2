"""Deterministic top-k over scored candidates, whole or streamed, and the class asked about.

:func:`select_top` and :func:`select_top_streaming` order by score descending, NaN last,
ties by sample_id ascending, so a selection never depends on the order or chunking of the
candidates; the streamed form keeps memory O(chunk + k) (ImageNet's 1.28 M candidates).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from pipeline.selection.base import SelectionError, as_ids as _as_ids

_MAX_LISTED = 10


def _order(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices sorting by score descending, NaN last, ties by sample_id ascending."""
    nan = np.isnan(scores)
    neg = np.where(nan, 0.0, -scores)
    return np.lexsort((ids, neg, nan))


def _frame(ids: np.ndarray, scores: np.ndarray, extra: dict[str, np.ndarray]) -> pd.DataFrame:
    for name, values in extra.items():
        if len(values) != ids.size or name in ("sample_id", "score", "rank"):
            raise SelectionError(
                f"extra column {name!r} must have one value per candidate ({ids.size}) and not "
                "be named sample_id, score or rank."
            )
    cols = {"sample_id": ids.astype(np.int64), "score": scores.astype(np.float64)}
    cols.update(extra)
    return pd.DataFrame(cols)


def _check_no_duplicates(ids: np.ndarray) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = ", ".join(str(int(i)) for i in uniq[counts > 1][:_MAX_LISTED])
        raise SelectionError(f"candidate sample ids must be unique; repeated: {dup}.")


def _top(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    ids = frame["sample_id"].to_numpy()
    _check_no_duplicates(ids)
    order = _order(ids, frame["score"].to_numpy())[: max(int(k), 0)]
    return frame.iloc[order].reset_index(drop=True)


def select_top(
    ids: np.ndarray, scores: np.ndarray, k: int, *, extra: dict[str, np.ndarray] | None = None
) -> pd.DataFrame:
    """The ``k`` highest scores as DataFrame[sample_id, score, rank, *extra].

    Highest first, ties by sample_id ascending, NaN scores last; rank is 1-based.
    ``k`` > n returns all. ``extra`` columns ([n] each, e.g. the asked class) travel
    with their rows.
    """
    ids = _as_ids(ids)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != ids.shape:
        raise SelectionError(f"scores {scores.shape} and ids {ids.shape} must have the same shape [n].")
    if int(k) < 0:
        raise SelectionError(f"k must be >= 0, got {k}.")
    top = _top(_frame(ids, scores, dict(extra or {})), k)
    top.insert(2, "rank", np.arange(1, len(top) + 1, dtype=np.int64))
    return top


def select_top_streaming(
    chunks: Iterable[tuple[np.ndarray, np.ndarray] | pd.DataFrame], k: int
) -> pd.DataFrame:
    """Top ``k`` over a stream of chunks; equals :func:`select_top` on their concatenation.

    Each chunk is (ids [b], scores [b]) or a DataFrame with ``sample_id``, ``score`` and
    any extra columns (carried along). Memory O(chunk + k). Ids must be unique across
    chunks (a repeat that reaches the running top k raises).
    """
    if int(k) < 0:
        raise SelectionError(f"k must be >= 0, got {k}.")
    best: pd.DataFrame | None = None
    for chunk in chunks:
        if isinstance(chunk, pd.DataFrame):
            if not {"sample_id", "score"} <= set(chunk.columns):
                raise SelectionError("a chunk DataFrame needs columns sample_id and score.")
            frame = chunk.drop(columns=["rank"], errors="ignore").reset_index(drop=True)
        else:
            ids, scores = chunk
            ids = _as_ids(ids)
            scores = np.asarray(scores, dtype=np.float64)
            if scores.shape != ids.shape:
                raise SelectionError(f"chunk scores {scores.shape} and ids {ids.shape} differ in shape.")
            frame = _frame(ids, scores, {})
        frame = _top(frame, k)
        best = frame if best is None else _top(pd.concat([best, frame], ignore_index=True), k)
    if best is None:
        best = _frame(np.zeros(0, np.int64), np.zeros(0), {})
    best = best.reset_index(drop=True)
    best.insert(2, "rank", np.arange(1, len(best) + 1, dtype=np.int64))
    return best


def asked_classes(probs: np.ndarray, denied: np.ndarray) -> np.ndarray:
    """The class to ask about per sample: argmax of probs [n, C] over classes not denied.

    ``denied`` [n, C] bool marks classes the oracle already denied (see
    :func:`pipeline.pool.pools.denied_matrix`). Ties go to the lowest class index.
    Returns [n] int64. A sample with every class denied raises :class:`SelectionError`.
    """
    probs = np.asarray(probs, dtype=np.float64)
    denied = np.asarray(denied, dtype=bool)
    if probs.ndim != 2 or probs.shape != denied.shape:
        raise SelectionError(f"probs {probs.shape} and denied {denied.shape} must both be [n, C].")
    if np.isnan(probs).any():
        raise SelectionError("probs contain NaN; pass the current model's softmax outputs.")
    full = denied.all(axis=1)
    if full.any():
        rows = ", ".join(str(int(r)) for r in np.flatnonzero(full)[:_MAX_LISTED])
        raise SelectionError(
            f"row(s) {rows} have every class denied, so no question is left to ask; drop them "
            "from the candidates (the oracle's answers contradict each other)."
        )
    masked = np.where(denied, -np.inf, probs)
    return masked.argmax(axis=1).astype(np.int64)
