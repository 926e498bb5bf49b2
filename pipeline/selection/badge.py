"""``badge``: k-means++ seeding on gradient embeddings.

Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds" (ICLR 2020). A candidate's gradient embedding is the
gradient of the cross-entropy at its predicted label with respect to the last layer's
weights, g = (p − onehot(argmax p)) ⊗ h for softmax p [C] and penultimate features h [F]:
its norm grows with the uncertainty, its direction spreads the picks. The first pick is the
largest-norm embedding; each next one is drawn with probability proportional to the squared
distance to the nearest pick (k-means++ seeding, D² sampling).

Memory: the inputs (probs [N, C], features [N, F]) and O(N); the [N, C·F] embeddings are
never built, nor a copy of probs. The distances come from the factors,
||g_i − g_j||² = ||a_i||²·||h_i||² + ||a_j||²·||h_j||² − 2·(a_i·a_j)·(h_i·h_j) with
a = p − onehot(y), y = argmax p, and a_i·a_j = p_i·p_j − p_i[y_j] − p_j[y_i] + [y_i = y_j], so a
pick costs one O(N·(C + F)) pass (the same numbers as on the materialised
`grad_embeddings`; tests/test_baselines.py checks it).

Differs from the authors' code (JordanAsh/badge): they materialise the embeddings and use
scipy's `rv_discrete` with the global random state, resampling while a drawn index was
already picked; here the draw is one seeded uniform per pick (`Candidates.seed`) on the
cumulative D² of the samples not yet picked, so the picks are reproducible and never
repeat; when every remaining D² is 0 the lowest remaining index is taken (theirs stops in
the debugger).
"""
from __future__ import annotations

import numpy as np

from pipeline.core.registry import STRATEGIES
from pipeline.selection import strategies as _builtins  # noqa: F401  (the first built-ins register first)
from pipeline.selection.base import Candidates, SelectionError, Strategy, check_probs
from pipeline.selection.coreset import _as_matrix, pick_scores


def gradient_factors(probs: np.ndarray) -> np.ndarray:
    """a = p − onehot(argmax p), [n, C] float32, from probs [n, C]."""
    a = np.asarray(probs, dtype=np.float32).copy()
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    return a


def kmeans_pp(probs: np.ndarray, h: np.ndarray, k: int, seed: int, *, rows: int = 65_536) -> np.ndarray:
    """The k picks (indices, in pick order) of k-means++ seeding on the gradient embeddings
    g_i = (p_i − onehot(argmax p_i)) ⊗ h_i of probs [n, C] and h [n, F], without building g."""
    n = len(probs)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    h = np.asarray(h, np.float32)
    y = np.empty(n, np.int64)
    pp = np.empty(n, np.float64)  # ||p_i||²
    py = np.empty(n, np.float64)  # p_i[y_i]
    for i in range(0, n, rows):  # in blocks: never a float64 (or any) copy of probs
        block = np.asarray(probs[i:i + rows], np.float32)
        y[i:i + rows] = block.argmax(axis=1)
        pp[i:i + rows] = np.einsum("ij,ij->i", block, block)
        py[i:i + rows] = block[np.arange(len(block)), y[i:i + rows]]
    aa = pp - 2.0 * py + 1.0  # ||a_i||²
    hh = np.einsum("ij,ij->i", h, h).astype(np.float64)
    norm2 = aa * hh  # ||g_i||²

    def a_dot(j: int) -> np.ndarray:  # [n] a_i · a_j = p_i·p_j − p_i[y_j] − p_j[y_i] + [y_i = y_j]
        pj = np.asarray(probs[j], np.float32)
        return ((probs @ pj).astype(np.float64) - np.asarray(probs[:, y[j]], np.float64)
                - pj[y].astype(np.float64) + (y == y[j]))

    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    picks = np.empty(k, np.int64)
    picked = np.zeros(n, bool)
    d2 = np.full(n, np.inf)
    j = int(np.argmax(norm2))
    for t in range(k):
        picks[t] = j
        picked[j] = True
        if t == k - 1:
            break
        to_j = norm2 + norm2[j] - 2.0 * a_dot(j) * (h @ h[j]).astype(np.float64)
        np.minimum(d2, np.maximum(to_j, 0.0), out=d2)
        weights = np.where(picked, 0.0, d2)
        total = weights.sum()
        if not total > 0:  # every remaining embedding coincides with a pick
            j = int(np.flatnonzero(~picked)[0])
            continue
        cum = np.cumsum(weights)
        j = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), n - 1)
        if weights[j] == 0:  # rounding at an edge of the cumulative sum: the next index with weight
            valid = np.flatnonzero(weights > 0)
            j = int(valid[min(np.searchsorted(valid, j), len(valid) - 1)])
    return picks


class Badge(Strategy):
    """k-means++ on the candidates' gradient embeddings, from their probs and penultimate features."""

    name = "badge"
    needs = frozenset({"probs", "embeddings"})
    per_sample = False

    def scores(self, cands: Candidates, k: int) -> np.ndarray:
        self.check(cands)
        probs = np.asarray(cands.probs, np.float32)  # the pass's float32: no copy
        if probs.ndim != 2 or len(probs) != len(cands):
            raise SelectionError(f"probs must have shape [n, C] with n = {len(cands)}, got {probs.shape}.")
        for i in range(0, len(probs), 65_536):  # validated in blocks: no float64 copy of [n, C]
            check_probs(probs[i:i + 65_536], len(probs[i:i + 65_536]), self.name)
        h = _as_matrix(cands.embeddings, "the candidates' embeddings", len(cands))
        return pick_scores(len(cands), kmeans_pp(probs, h, k, cands.seed))


STRATEGIES.register(Badge())
