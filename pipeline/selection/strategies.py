"""Which unlabeled samples to ask about, and which class to ask.

Strategies (higher score = more uncertain = asked first):

- ``obcp``: paper Eq. 7 from the :class:`~pipeline.method.history.PredictionHistory`.
- ``max``: 1 - max_c p_c.
- ``diff2``: 1 - (p_(1) - p_(2)), the margin of the two most likely classes.
- ``entropy``: -sum_c p_c log p_c.
- ``random``: a uniform score in [0, 1) that is a hash of (seed, sample_id), so it does
  not depend on the order or chunking of the candidates.

The non-``obcp`` strategies use the current model's clean-view probabilities [n, C].
Everything works per chunk: :func:`score_chunks` scores a stream of
(ids, probs) chunks and :func:`select_top_streaming` merges them into the top k with
memory O(chunk * C + k), so ImageNet's 1.28 M x 1000 never has to be in memory at once.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from pipeline.core.errors import ObcpError
from pipeline.method.history import PredictionHistory

STRATEGIES: tuple[str, ...] = ("obcp", "random", "max", "diff2", "entropy")
_PROB_TOLERANCE = 1e-2
_MAX_LISTED = 10


class SelectionError(ObcpError):
    """Bad input to sample selection (strategy, shapes, ids, fully denied samples)."""


def _as_ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise SelectionError(f"ids must be a 1-D integer array [n], got shape {ids.shape}, dtype {ids.dtype}.")
    return ids.astype(np.int64, copy=False)


def _check_probs(probs: np.ndarray | None, n: int, strategy: str) -> np.ndarray:
    if probs is None:
        raise SelectionError(
            f"strategy {strategy!r} needs the current model's probabilities [n, C]; pass probs=."
        )
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != n or probs.shape[1] < 2:
        raise SelectionError(f"probs must have shape [n, C] with n = {n} and C >= 2, got {probs.shape}.")
    probs = probs.astype(np.float64, copy=False)
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise SelectionError("probs contain NaN, inf or negative values; pass softmax outputs.")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > _PROB_TOLERANCE
    if off.any():
        raise SelectionError(
            f"probs rows must sum to 1 (softmax outputs, not logits); {int(off.sum())} row(s) "
            f"do not, e.g. row {int(np.flatnonzero(off)[0])} sums to {sums[off][0]:.4f}."
        )
    return probs


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Bijective 64-bit hash (SplitMix64 finalizer), elementwise on uint64."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def random_scores(ids: np.ndarray, seed: int) -> np.ndarray:
    """[n] float64 uniform in [0, 1), a function of (seed, sample_id) only."""
    ids = _as_ids(ids)
    key = _splitmix64(np.full(1, np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        hashed = _splitmix64(ids.astype(np.uint64) ^ key)
    return (hashed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def score_candidates(
    strategy: str,
    ids: np.ndarray,
    *,
    probs: np.ndarray | None = None,
    history: PredictionHistory | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Uncertainty scores [n] float64 of candidates ``ids`` [n]; higher = ask first.

    Args:
        strategy: one of :data:`STRATEGIES`.
        ids: [n] sample ids of the candidates (unlabeled samples).
        probs: [n, C] current-model clean-view softmax; needed by max/diff2/entropy.
        history: prediction history; needed by ``obcp`` (samples it never recorded get NaN).
        seed: for ``random``.
    """
    if strategy not in STRATEGIES:
        raise SelectionError(f"unknown selection strategy {strategy!r}; choose one of {list(STRATEGIES)}.")
    ids = _as_ids(ids)
    if strategy == "obcp":
        if history is None:
            raise SelectionError("strategy 'obcp' needs the prediction history (Eq. 7); pass history=.")
        return history.uncertainty(ids)
    if strategy == "random":
        return random_scores(ids, seed)
    p = _check_probs(probs, ids.size, strategy)
    if strategy == "max":
        return 1.0 - p.max(axis=1)
    if strategy == "diff2":
        top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=1)


def score_chunks(
    strategy: str,
    chunks: Iterable[tuple[np.ndarray, np.ndarray | None]],
    *,
    history: PredictionHistory | None = None,
    seed: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Score a stream of (ids [b], probs [b, C] or None) chunks; yields (ids, scores [b])."""
    for ids, probs in chunks:
        yield np.asarray(ids), score_candidates(strategy, ids, probs=probs, history=history, seed=seed)


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
