"""``badge``: k-means++ seeding on gradient embeddings.

Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds" (ICLR 2020). A candidate's gradient embedding is the
gradient of the cross-entropy at its predicted label with respect to the last layer's
weights, g = (p − onehot(argmax p)) ⊗ h for softmax p [C] and penultimate features h [F]:
its norm grows with the uncertainty, its direction spreads the picks. The first pick is the
largest-norm embedding; each next one is drawn with probability proportional to the squared
distance to the nearest pick (k-means++ seeding, D² sampling).

Memory O(N·(C + F)): the [N, C·F] embeddings are never built. The distances come from the
factors, ||g_i − g_j||² = ||a_i||²·||h_i||² + ||a_j||²·||h_j||² − 2·(a_i·a_j)·(h_i·h_j) with
a = p − onehot(argmax p), so a pick costs one O(N·(C + F)) pass (the same numbers as on the
materialised `grad_embeddings`; tests/test_baselines.py checks it).

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
from pipeline.selection.base import Candidates, SelectionError, Strategy, check_probs
from pipeline.selection.coreset import _as_matrix, pick_scores


def gradient_factors(probs: np.ndarray) -> np.ndarray:
    """a = p − onehot(argmax p), [n, C] float32, from probs [n, C]."""
    a = np.asarray(probs, dtype=np.float32).copy()
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    return a


def kmeans_pp(a: np.ndarray, h: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The k picks (indices, in pick order) of k-means++ seeding on g_i = a_i ⊗ h_i, for
    a [n, C] and h [n, F], without building g."""
    n = len(a)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    a = np.asarray(a, np.float32)
    h = np.asarray(h, np.float32)
    norm2 = (np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", h, h)).astype(np.float64)  # ||g_i||²
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
        to_j = norm2 + norm2[j] - 2.0 * (a @ a[j]).astype(np.float64) * (h @ h[j]).astype(np.float64)
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
        probs = np.asarray(cands.probs)
        if probs.ndim != 2 or len(probs) != len(cands):
            raise SelectionError(f"probs must have shape [n, C] with n = {len(cands)}, got {probs.shape}.")
        for i in range(0, len(probs), 65_536):  # validated in blocks: no float64 copy of [n, C]
            check_probs(probs[i:i + 65_536], len(probs[i:i + 65_536]), self.name)
        h = _as_matrix(cands.embeddings, "the candidates' embeddings", len(cands))
        return pick_scores(len(cands), kmeans_pp(gradient_factors(probs), h, k, cands.seed))


STRATEGIES.register(Badge())
