"""The built-in selection strategies (higher score = more uncertain = asked first).

- ``obcp``: paper Eq. 7 from the :class:`~pipeline.method.history.PredictionHistory`.
- ``max``: least confidence, 1 - max_c p_c.
- ``diff2``: 1 - (p_(1) - p_(2)), the margin of the two most likely classes.
- ``entropy``: -sum_c p_c log p_c.
- ``random``: a uniform score in [0, 1) that is a hash of (seed, sample_id), so it does
  not depend on the order or chunking of the candidates.

The probability-based strategies read the asking network's clean-view softmax [n, C].
Each is a per-sample :class:`~pipeline.selection.base.ScoreStrategy`, registered in
`pipeline.core.registry.STRATEGIES`; :func:`score_candidates` scores by name.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from pipeline.core.registry import STRATEGIES
from pipeline.selection.base import Candidates, ScoreStrategy, SelectionError, as_ids as _as_ids
from pipeline.selection.ranking import asked_classes, select_top, select_top_streaming  # noqa: F401  (re-exported)


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


class Eq7(ScoreStrategy):
    """Paper Eq. 7: -Σ_i Σ_c p̃_c log q_{i,c} over the recorded history; NaN for samples it never saw."""

    name = "obcp"
    needs = frozenset({"history"})

    def score(self, c: Candidates) -> np.ndarray:
        return c.history.uncertainty(c.ids)


class Random(ScoreStrategy):
    """A uniform score hashed from (seed, sample_id)."""

    name = "random"
    needs = frozenset()

    def score(self, c: Candidates) -> np.ndarray:
        return random_scores(c.ids, c.seed)


class LeastConfidence(ScoreStrategy):
    """1 - max_c p_c."""

    name = "max"

    def score(self, c: Candidates) -> np.ndarray:
        return 1.0 - c.probs.max(axis=1)


class Margin(ScoreStrategy):
    """1 - (p_(1) - p_(2))."""

    name = "diff2"

    def score(self, c: Candidates) -> np.ndarray:
        top2 = np.partition(c.probs, c.probs.shape[1] - 2, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])


class Entropy(ScoreStrategy):
    """-Σ_c p_c log p_c."""

    name = "entropy"

    def score(self, c: Candidates) -> np.ndarray:
        logp = np.log(np.where(c.probs > 0, c.probs, 1.0))
        return -(c.probs * logp).sum(axis=1)


for _strategy in (Eq7(), Random(), LeastConfidence(), Margin(), Entropy()):
    STRATEGIES.register(_strategy)


def score_candidates(strategy: str, ids: np.ndarray, *, probs: np.ndarray | None = None,
                     history=None, seed: int = 0) -> np.ndarray:
    """Scores [n] float64 of candidates ``ids`` [n] by a per-sample strategy's name; higher = ask first.

    probs: [n, C] clean-view softmax (max/diff2/entropy); history: the Eq. 7 history (obcp;
    samples it never recorded get NaN); seed: for random.
    """
    if strategy not in STRATEGIES:
        raise SelectionError(f"unknown selection strategy {strategy!r}; choose one of {list(STRATEGIES.names())}.")
    ids = _as_ids(ids)
    cands = Candidates(ids=ids, probs=probs, history=history, seed=seed)
    return STRATEGIES.get(strategy).scores(cands, ids.size)


def score_chunks(strategy: str, chunks: Iterable[tuple[np.ndarray, np.ndarray | None]], *, history=None,
                 seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Score a stream of (ids [b], probs [b, C] or None) chunks; yields (ids, scores [b])."""
    for ids, probs in chunks:
        yield np.asarray(ids), score_candidates(strategy, ids, probs=probs, history=history, seed=seed)
