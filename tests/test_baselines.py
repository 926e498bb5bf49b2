"""The conventional learners' strategies (docs/baselines.md), each on a case checked by hand,
and the pieces of the loop they add (dropout masks, the supervised step, the ranking loss)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from pipeline.core.config import parse_params
from pipeline.core.registry import STRATEGIES
from pipeline.loop.inference import dropout_keep
from pipeline.loop.train import loss_prediction_loss
from pipeline.loop.poolpass import grad_embeddings
from pipeline.selection.badge import gradient_factors, kmeans_pp
from pipeline.selection.base import Candidates, SelectionError
from pipeline.selection.bayesian import bald, mean_entropy
from pipeline.selection.coreset import k_center_greedy, min_distances
from pipeline.selection.ensemble import variation_ratio
from pipeline.selection.ranking import select_top
from pipeline.selection.typiclust import typiclust_picks, typicality

NEW = ("coreset", "badge", "mc_dropout", "bald", "varratio", "ll4al", "vaal", "typiclust")


def picked(scores: np.ndarray, k: int) -> list[int]:
    """The k ids a score vector selects (ids = positions), in rank order."""
    ids = np.arange(len(scores))
    return select_top(ids, scores, k)["sample_id"].tolist()


def test_the_baselines_are_registered_and_say_what_they_train():
    assert set(NEW) <= set(STRATEGIES.names())
    get = STRATEGIES.get
    assert get("mc_dropout").dropout and get("bald").dropout and not get("entropy").dropout
    assert get("varratio").ensemble and get("ll4al").loss_head
    assert not any(get(n).dropout or get(n).ensemble or get(n).loss_head for n in ("obcp", "random", "coreset"))
    p = parse_params({"baselines": {"mc_samples": 7}})
    assert get("bald").own_params(p) == {"mc_samples": 7, "dropout": 0.5}
    assert get("entropy").own_params(p) == {}  # no strategy key: the other arms' cycle keys do not change


def test_k_center_picks_the_farthest_point():
    x = np.array([[0.0, 0], [1, 0], [10, 0], [4, 0], [9, 0]], np.float32)
    lab = np.array([[0.0, 0]], np.float32)
    # 10 is farthest from 0; then 4 (distances to {0, 10}: 1→1, 4→4, 9→1) ...
    assert k_center_greedy(x, lab, 3).tolist() == [2, 3, 1]
    s = STRATEGIES.get("coreset").scores(Candidates(ids=np.arange(5), embeddings=x, labeled_embeddings=lab), 2)
    assert picked(s, 2) == [2, 3] and np.isnan(s[[0, 1, 4]]).all()
    # no labeled sample: the first center is the candidate farthest from the mean (4.8), 10; then 0
    assert k_center_greedy(x, np.zeros((0, 2), np.float32), 2).tolist() == [2, 0]


def test_min_distances_in_blocks_equal_the_full_matrix():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(300, 5)).astype(np.float32), rng.normal(size=(70, 5)).astype(np.float32)
    full = np.sqrt(((x[:, None] - c[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(min_distances(x, c, rows=64, cols=16), full, rtol=1e-4, atol=1e-4)


def test_badge_distances_from_the_factors_equal_the_materialised_gradients():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=60).astype(np.float32)
    h = rng.normal(size=(60, 3)).astype(np.float32)
    g = grad_embeddings(probs, h)  # [n, C·F], what the authors build
    a = gradient_factors(probs)
    for i, j in [(0, 1), (5, 40), (7, 7)]:
        via = (a[i] @ a[i]) * (h[i] @ h[i]) + (a[j] @ a[j]) * (h[j] @ h[j]) - 2 * (a[i] @ a[j]) * (h[i] @ h[j])
        assert via == pytest.approx(((g[i] - g[j]) ** 2).sum(), abs=1e-5)
    first = int(np.argmax((g ** 2).sum(1)))
    picks = kmeans_pp(probs, h, 10, seed=3)
    assert picks[0] == first and len(set(picks.tolist())) == 10
    assert kmeans_pp(probs, h, 10, seed=3).tolist() == picks.tolist()  # seeded
    # the second pick is drawn ∝ D² to the first: check the D² badge uses against the materialised g
    d2 = ((g - g[first]) ** 2).sum(1)
    y, pj = probs.argmax(1), probs[first]
    via = (a * a).sum(1) * (h * h).sum(1) + d2[first] * 0 + (a[first] @ a[first]) * (h[first] @ h[first]) - 2 * (
        probs @ pj - probs[:, y[first]] - pj[y] + (y == y[first])) * (h @ h[first])
    np.testing.assert_allclose(via, d2, atol=1e-4)


def test_badge_never_repicks_duplicates_and_spreads_over_clusters():
    # two tight groups of gradient embeddings: after the largest-norm one, D² sampling must
    # take the other group (its D² is ~1e4 against ~1e-6 inside the first)
    probs = np.tile(np.array([[0.6, 0.4]], np.float32), (20, 1))
    h = np.concatenate([np.full((10, 2), 100.0), np.full((10, 2), -1.0)]).astype(np.float32)
    h[:, 0] += np.linspace(0, 1e-3, 20, dtype=np.float32)
    picks = kmeans_pp(probs, h, 2, seed=0)
    assert picks[0] < 10 <= picks[1]
    same = kmeans_pp(probs[:4], np.ones((4, 2), np.float32), 4, seed=0)
    assert sorted(same.tolist()) == [0, 1, 2, 3]  # all D² are 0: lowest remaining index


def test_bald_is_zero_when_every_sample_agrees_and_mc_entropy_is_the_entropy_of_the_mean():
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    agree = np.stack([p] * 6)
    assert np.abs(bald(agree)).max() < 1e-12
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident samples that disagree
    assert bald(disagree)[0] == pytest.approx(np.log(2))  # the full bit of mutual information
    assert mean_entropy(disagree)[0] == pytest.approx(np.log(2))
    s = STRATEGIES.get("bald").scores(Candidates(ids=np.arange(2), probs=p, mc_probs=agree), 1)
    assert np.abs(s).max() < 1e-12
    with pytest.raises(SelectionError, match="mc_probs"):
        STRATEGIES.get("mc_dropout").scores(Candidates(ids=np.arange(2), probs=p), 1)


def test_variation_ratio_of_a_unanimous_ensemble_is_zero():
    one = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]])
    assert variation_ratio(np.stack([one] * 5)).tolist() == [0.0, 0.0]
    split = np.stack([one, one, one[:, [1, 0, 2]], one[:, [2, 1, 0]], one[:, [1, 0, 2]]])  # votes 0,0,1,2,1 / 2,2,2,0,2
    assert variation_ratio(split).tolist() == pytest.approx([1 - 2 / 5, 1 - 4 / 5])
    s = STRATEGIES.get("varratio").scores(Candidates(ids=np.arange(2), probs=one, ensemble_probs=split), 1)
    assert picked(s, 1) == [0]


def test_typiclust_picks_the_densest_point_of_each_cluster():
    rng = np.random.default_rng(0)
    blobs = []
    for center in ((0.0, 0.0), (50.0, 50.0)):
        core = np.array(center) + np.array([[0, 0], [0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1]])
        ring = np.array(center) + 3.0 * np.stack([np.cos(a := rng.uniform(0, 2 * np.pi, 25)), np.sin(a)], 1)
        blobs.append(np.concatenate([core, ring]))
    x = np.concatenate(blobs).astype(np.float32)  # 30 per blob; the densest point: 0 and 30
    picks = typiclust_picks(x, np.zeros((0, 2), np.float32), 2, seed=0, knn=4)
    assert sorted(picks.tolist()) == [0, 30]
    t = typicality(x[:30], 4)
    assert int(np.argmax(t)) == 0
    # a labeled sample in the first blob: the second blob (no labeled member) is visited first
    lab = np.array([[0.0, 0.2]], np.float32)
    assert typiclust_picks(x, lab, 1, seed=0, knn=4).tolist() == [30]


def test_ranking_loss_is_zero_for_a_head_that_orders_pairs_by_the_margin():
    target = torch.tensor([3.0, 1.0, 2.0, 0.0])  # pairs (0, 3) and (1, 2)
    good = torch.tensor([5.0, 0.0, 1.5, 1.0])  # 5 − 1 ≥ 1 and 0 − 1.5 ≤ −1
    assert loss_prediction_loss(good, target, 1.0).item() == 0.0
    bad = torch.tensor([0.0, 0.0, 0.0, 0.0])
    assert loss_prediction_loss(bad, target, 1.0).item() == pytest.approx(1.0)
    assert loss_prediction_loss(torch.tensor([1.0]), torch.tensor([2.0])).item() == 0.0


def test_dropout_masks_depend_on_the_sample_not_the_batch():
    ids = torch.arange(400)
    keep = dropout_keep(ids, 32, 0.5, seed=7, t=0)
    assert torch.equal(dropout_keep(ids[100:200], 32, 0.5, seed=7, t=0), keep[100:200])
    assert not torch.equal(dropout_keep(ids, 32, 0.5, seed=7, t=1), keep)
    assert abs(float((keep > 0).float().mean()) - 0.5) < 0.02 and set(keep.unique().tolist()) == {0.0, 2.0}


def test_coreset_and_badge_memory_is_linear_in_n():
    """O(N) memory: 20 000 candidates would need 1.6 GB for an N × N float32 matrix; the peak
    stays within a few times the inputs."""
    rng = np.random.default_rng(0)
    n, d, c = 20_000, 16, 10
    x = rng.normal(size=(n, d)).astype(np.float32)
    probs = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
    inputs = x.nbytes + probs.nbytes
    for run in (lambda: k_center_greedy(x, x[:50], 20), lambda: kmeans_pp(probs, x, 20, 0)):
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < inputs + 64 * n * 8, peak  # a few [n] float64 vectors beyond the inputs, never [n, n]


class _Images:
    """An in-memory ImageSource: id → image [3, 8, 8]."""

    def __init__(self, images: torch.Tensor):
        self.images, self.device = images, torch.device("cpu")

    def batches(self, ids, *, batch_size, shuffle=False, seed=0, epoch=0):
        ids = np.asarray(ids, np.int64)
        if shuffle:
            ids = np.random.default_rng(seed * 1000 + epoch).permutation(ids)
        for i in range(0, len(ids), batch_size):
            b = ids[i:i + batch_size]
            yield b, self.images[torch.from_numpy(b)]


def test_vaal_is_seeded_and_at_chance_when_nothing_tells_labeled_from_unlabeled():
    """Labeled and candidate images drawn alike: the discriminator cannot tell them apart, so every
    score 1 − D(μ) stays near ½ (no candidate stands out); the same query seed, the same scores.
    (With the authors' loss, MSE averaged but KL summed over batch and latent, the latent is pulled
    hard to the prior: docs/baselines.md.)"""
    g = torch.Generator().manual_seed(0)
    images = _Images(torch.rand(120, 3, 8, 8, generator=g) * 2 - 1)
    labeled, cands = np.arange(60), np.arange(60, 120)
    settings = {"vaal_epochs": 3, "vaal_latent": 8}
    s = STRATEGIES.get("vaal").scores(Candidates(ids=cands, images=images, labeled_ids=labeled, seed=1,
                                                 settings=settings), 10)
    assert s.shape == (60,) and ((s > 0) & (s < 1)).all() and s.max() - s.min() < 0.1
    assert abs(s.mean() - 0.5) < 0.1
    again = STRATEGIES.get("vaal").scores(Candidates(ids=cands, images=images, labeled_ids=labeled, seed=1,
                                                     settings=settings), 10)
    np.testing.assert_array_equal(s, again)
    with pytest.raises(SelectionError, match="labeled"):
        STRATEGIES.get("vaal").scores(Candidates(ids=cands, images=images, labeled_ids=np.zeros(0, np.int64)), 10)


def test_ll4al_asks_the_highest_predicted_loss_first():
    s = STRATEGIES.get("ll4al").scores(Candidates(ids=np.arange(4), predicted_loss=np.array([0.1, 2.0, 0.5, 1.0])), 2)
    assert picked(s, 2) == [1, 3]


def test_only_plans_with_dropout_or_a_head_train_through_a_wrapper():
    from pipeline.loop.train import QueryNet, query_net
    from pipeline.method.models import build_encoder
    from pipeline.method.plan import LossPlan

    enc = build_encoder("smallcnn", 3, width=4, proj_dim=8)
    assert query_net(enc, LossPlan(lambda_ctr=0.1)) is enc  # every other arm: the encoder itself
    net = query_net(enc, LossPlan(lambda_ctr=0.1, dropout=0.5))
    assert isinstance(net, QueryNet) and set(net.state_dict()) == {f"encoder.{k}" for k in enc.state_dict()}
    x = torch.randn(4, 3, 8, 8)
    enc.eval()
    net.eval()  # no dropout at evaluation: the same outputs as the encoder
    torch.testing.assert_close(net(x)[0], enc(x)[0])
    net.train()
    torch.manual_seed(0)
    assert not torch.allclose(net(x)[0], enc.train()(x)[0])
