"""``coreset``: k-center greedy on penultimate-layer embeddings.

Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach"
(ICLR 2018). Each pick is the candidate farthest (Euclidean) from every labeled sample and
every earlier pick, which greedily minimises the largest distance from a sample to its
nearest labeled one (a 2-approximation of the k-center cover).

Memory O(N·D) for the embeddings plus O(N) for the distance to the nearest center: the
distances to the labeled set are computed in blocks of `ROWS × COLS`, and each pick adds
one O(N·D) matrix-vector product. Never an N × N matrix.

Differs from the authors' code (ozansener/active_learning_coreset): no robust k-center
(their mixed-integer program with outliers, solved with Gurobi, which starts from this
greedy solution); the embedding is our encoder's penultimate feature (theirs: VGG-16's last
fully connected layer); with no labeled sample, the first pick is the candidate farthest
from the candidates' mean (theirs: not defined).
"""
from __future__ import annotations

import numpy as np

from pipeline.core.registry import STRATEGIES
from pipeline.selection import strategies as _builtins  # noqa: F401  (the first built-ins register first)
from pipeline.selection.base import Candidates, SelectionError, Strategy

ROWS = 16_384  # candidate rows per block of distances
COLS = 2_048  # labeled rows per block: a block is ROWS × COLS float32 (128 MiB)


def _as_matrix(x: np.ndarray | None, what: str, n: int | None = None) -> np.ndarray:
    if x is None:
        raise SelectionError(f"{what} are missing.")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or (n is not None and x.shape[0] != n) or not np.isfinite(x).all():
        raise SelectionError(f"{what} must be a finite [n, D] array{f' with n = {n}' if n is not None else ''}, "
                             f"got shape {x.shape}.")
    return x


def embedding_pair(cands: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """(candidates' embeddings [n, D], labeled embeddings [m, D]) float32, checked to match."""
    x = _as_matrix(cands.embeddings, "the candidates' embeddings", len(cands))
    lab = _as_matrix(cands.labeled_embeddings, "the labeled embeddings")
    if len(lab) and lab.shape[1] != x.shape[1]:
        raise SelectionError(f"labeled embeddings have {lab.shape[1]} features, candidates {x.shape[1]}.")
    return x, lab


def min_distances(x: np.ndarray, centers: np.ndarray, *, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    """[n] float32: the Euclidean distance of each row of x [n, D] to its nearest row of
    centers [m, D] (+inf when m = 0), in blocks of rows × cols."""
    out = np.full(len(x), np.inf, dtype=np.float32)
    if len(centers) == 0:
        return out
    c2 = np.einsum("ij,ij->i", centers, centers)
    for i in range(0, len(x), rows):
        xi = x[i:i + rows]
        x2 = np.einsum("ij,ij->i", xi, xi)
        best = out[i:i + rows]
        for j in range(0, len(centers), cols):
            d2 = x2[:, None] + c2[None, j:j + cols] - 2.0 * (xi @ centers[j:j + cols].T)
            np.minimum(best, d2.min(axis=1), out=best)
    return np.sqrt(np.maximum(out, 0.0))


def k_center_greedy(x: np.ndarray, labeled: np.ndarray, k: int) -> np.ndarray:
    """The k picks (indices into x [n, D], in pick order) of greedy k-center with the rows of
    labeled [m, D] as the initial centers. Ties go to the lower index."""
    n = len(x)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    dist = min_distances(x, labeled)
    if len(labeled) == 0:  # no center yet: start from the candidate farthest from the mean
        dist = np.sqrt(np.maximum(((x - x.mean(axis=0)) ** 2).sum(axis=1), 0.0)).astype(np.float32)
    x2 = np.einsum("ij,ij->i", x, x)
    picks = np.empty(k, np.int64)
    for t in range(k):
        j = int(np.argmax(dist))
        picks[t] = j
        to_j = np.sqrt(np.maximum(x2 + x2[j] - 2.0 * (x @ x[j]), 0.0))
        if t == 0 and len(labeled) == 0:
            dist = to_j.astype(np.float32)  # the first center replaces the mean
        else:
            np.minimum(dist, to_j, out=dist)
        dist[j] = -np.inf  # never again, even where rounding left a tiny distance to itself
    return picks


def pick_scores(n: int, picks: np.ndarray) -> np.ndarray:
    """[n] scores of a batch strategy's picks: k, k − 1, …, 1 in pick order, NaN for the rest."""
    scores = np.full(n, np.nan)
    scores[picks] = np.arange(len(picks), 0, -1, dtype=np.float64)
    return scores


class CoreSet(Strategy):
    """k-center greedy on the candidates' penultimate embeddings, the labeled set as the first centers."""

    name = "coreset"
    needs = frozenset({"embeddings", "labeled_embeddings"})
    per_sample = False

    def scores(self, cands: Candidates, k: int) -> np.ndarray:
        self.check(cands)
        x, lab = embedding_pair(cands)
        return pick_scores(len(cands), k_center_greedy(x, lab, k))


STRATEGIES.register(CoreSet())
