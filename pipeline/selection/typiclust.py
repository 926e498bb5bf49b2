"""``typiclust``: the most typical sample of the least covered clusters.

Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High and
Low Budgets" (ICML 2022). Built for the low budgets where ObCP claims its gains. The
labeled and candidate embeddings together are split by k-means into K = min(|labeled| + k,
`typiclust_max_clusters`) clusters; clusters are visited by fewest labeled members, then
largest size (clusters of at most `typiclust_min_cluster` samples are skipped), cyclically;
from each visited cluster the candidate of highest typicality is picked,

    typicality(x) = 1 / (mean distance from x to its K_NN nearest candidates of the cluster + 1e-5),

with K_NN = min(`typiclust_knn`, cluster size // 2), as in the authors' code.

Embeddings: the asking network's penultimate features. Our encoder is trained with MoCo's
contrastive term from stage 1 on (every arm shares that stage), so these are the
self-supervised-shaped features the method wants; the authors use SimCLR (or SCAN)
features trained on the whole dataset beforehand.

Memory O(N·D) plus one block of rows × cluster size for the neighbour distances; k-means is
scikit-learn's (`KMeans` up to 50 clusters, `MiniBatchKMeans` with batches of 5 000
beyond, as the authors do), seeded by the query.

Differs from the authors' code (avihu111/TypiClust): a cluster's typicalities are computed
once, when it is first visited, and a later visit takes its next most typical candidate
(theirs recompute them without the picked sample, which changes only the neighbour sets that
held it); a visited cluster with no candidate left is skipped (theirs fail); no SCAN variant.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.registry import STRATEGIES
from pipeline.selection import strategies as _builtins  # noqa: F401  (the first built-ins register first)
from pipeline.selection.base import Candidates, SelectionError, Strategy
from pipeline.selection.coreset import embedding_pair, pick_scores

ROWS = 4_096  # rows per block of within-cluster distances


def kmeans_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """[n] cluster of each row of x [n, D] (scikit-learn, seeded)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = max(1, min(int(k), len(x)))
    rs = int(seed) % (2**32)
    if k <= 50:
        model = KMeans(n_clusters=k, n_init=1, random_state=rs)
    else:
        model = MiniBatchKMeans(n_clusters=k, batch_size=5_000, n_init=1, random_state=rs)
    return model.fit_predict(x).astype(np.int64)


def typicality(x: np.ndarray, knn: int, *, rows: int = ROWS) -> np.ndarray:
    """[n] 1 / (mean Euclidean distance to the knn nearest other rows of x [n, D] + 1e-5);
    memory O(rows · n)."""
    n = len(x)
    if n == 0:
        return np.zeros(0)
    knn = max(1, min(int(knn), n - 1)) if n > 1 else 0
    if knn == 0:
        return np.ones(n)
    x2 = np.einsum("ij,ij->i", x, x)
    out = np.empty(n)
    for i in range(0, n, rows):
        d2 = x2[i:i + rows, None] + x2[None, :] - 2.0 * (x[i:i + rows] @ x.T)
        d2[np.arange(len(d2)), np.arange(i, i + len(d2))] = np.inf  # not its own neighbour
        near = np.partition(d2, knn - 1, axis=1)[:, :knn]
        out[i:i + rows] = 1.0 / (np.sqrt(np.maximum(near, 0.0)).mean(axis=1) + 1e-5)
    return out


def typiclust_picks(cand: np.ndarray, labeled: np.ndarray, k: int, seed: int, *, max_clusters: int = 500,
                    knn: int = 20, min_cluster: int = 5) -> np.ndarray:
    """The k picks (indices into cand [n, D], in pick order)."""
    n, m = len(cand), len(labeled)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    x = np.concatenate([labeled, cand]) if m else cand
    clusters = kmeans_labels(x, min(m + k, max_clusters), seed)
    lab_c, cand_c = clusters[:m], clusters[m:]
    ids, sizes = np.unique(clusters, return_counts=True)
    labeled_counts = np.bincount(lab_c, minlength=ids.max() + 1)[ids]
    keep = sizes > min_cluster
    if not keep.any():  # every cluster is small: visit them all rather than none
        keep[:] = True
    ids, sizes, labeled_counts = ids[keep], sizes[keep], labeled_counts[keep]
    order = ids[np.lexsort((ids, -sizes, labeled_counts))]  # fewest labeled, then largest, then lowest id
    queue: dict[int, list[int]] = {}  # cluster → its candidates, most typical last
    picks: list[int] = []
    active = list(order)
    while len(picks) < k and active:
        still = []
        for cl in active:
            if len(picks) == k:
                still.append(cl)
                continue
            if cl not in queue:
                members = np.flatnonzero(cand_c == cl)
                typ = typicality(cand[members], min(knn, len(members) // 2))
                queue[cl] = list(members[np.lexsort((-members, typ))])  # ties: lower index last = first out
            if queue[cl]:
                picks.append(int(queue[cl].pop()))
            if queue[cl]:
                still.append(cl)
        active = still
    return np.asarray(picks, np.int64)


class TypiClust(Strategy):
    """The most typical candidate of each of the least covered k-means clusters."""

    name = "typiclust"
    needs = frozenset({"embeddings", "labeled_embeddings"})
    per_sample = False

    def own_params(self, params: Any) -> dict[str, Any]:
        b = params.baselines
        return {"typiclust_max_clusters": b.typiclust_max_clusters, "typiclust_knn": b.typiclust_knn,
                "typiclust_min_cluster": b.typiclust_min_cluster}

    def scores(self, cands: Candidates, k: int) -> np.ndarray:
        self.check(cands)
        x, lab = embedding_pair(cands)
        s = cands.settings
        picks = typiclust_picks(x, lab, k, cands.seed, max_clusters=s.get("typiclust_max_clusters", 500),
                                knn=s.get("typiclust_knn", 20), min_cluster=s.get("typiclust_min_cluster", 5))
        return pick_scores(len(cands), picks)


STRATEGIES.register(TypiClust())
