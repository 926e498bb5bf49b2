"""Selection strategies, deterministic top-k, streaming top-k, the class asked about."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.registry import STRATEGIES
from pipeline.method.history import PredictionHistory
from pipeline.selection.strategies import (

    SelectionError,
    asked_classes,
    random_scores,
    score_candidates,
    score_chunks,
    select_top,
    select_top_streaming,
)

PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.4, 0.4, 0.2],
        [1.0, 0.0, 0.0],
        [1 / 3, 1 / 3, 1 / 3],
    ]
)
IDS = np.array([10, 11, 12, 13])


def test_strategy_names():
    assert STRATEGIES.names()[:5] == ("obcp", "random", "max", "diff2", "entropy")


def test_max_diff2_entropy_by_hand():
    np.testing.assert_allclose(score_candidates("max", IDS, probs=PROBS), [0.3, 0.6, 0.0, 2 / 3])
    np.testing.assert_allclose(score_candidates("diff2", IDS, probs=PROBS), [0.5, 1.0, 0.0, 1.0])
    ent = [
        -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)),
        -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)),
        0.0,
        math.log(3),
    ]
    np.testing.assert_allclose(score_candidates("entropy", IDS, probs=PROBS), ent, atol=1e-12)


def test_random_is_seeded_and_order_free():
    a = score_candidates("random", IDS, seed=5)
    assert ((a >= 0) & (a < 1)).all()
    np.testing.assert_array_equal(a, score_candidates("random", IDS, seed=5))
    np.testing.assert_array_equal(a[::-1], score_candidates("random", IDS[::-1], seed=5))
    assert not np.array_equal(a, score_candidates("random", IDS, seed=6))
    many = random_scores(np.arange(20000), seed=0)
    assert abs(many.mean() - 0.5) < 0.02 and np.unique(many).size == 20000


def test_obcp_uses_history():
    hist = PredictionHistory(14, 3, m=2, t=1, start_epoch=0, query_epoch=2)
    for epoch in range(2):
        hist.record(epoch, IDS[:3], PROBS[:3])
    scores = score_candidates("obcp", IDS, history=hist)
    np.testing.assert_array_equal(scores, hist.uncertainty(IDS))
    assert np.isnan(scores[3])


@pytest.mark.parametrize(
    "strategy, kwargs, match",
    [
        ("nonesuch", {"probs": PROBS}, "unknown selection strategy"),
        ("max", {}, "needs the current model's probabilities"),
        ("obcp", {"probs": PROBS}, "needs the prediction history"),
        ("entropy", {"probs": PROBS * 3}, "sum to 1"),
        ("diff2", {"probs": PROBS[:2]}, "shape"),
        ("max", {"probs": -PROBS}, "negative"),
    ],
)
def test_score_errors(strategy, kwargs, match):
    with pytest.raises(SelectionError, match=match):
        score_candidates(strategy, IDS, **kwargs)


def test_select_top_order_ties_nan():
    ids = np.array([5, 3, 9, 1, 7, 2])
    scores = np.array([0.5, 0.9, np.nan, 0.5, 0.9, -np.inf])
    top = select_top(ids, scores, 10)
    assert list(top.columns) == ["sample_id", "score", "rank"]
    assert top["sample_id"].tolist() == [3, 7, 1, 5, 2, 9]
    assert top["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert select_top(ids, scores, 3)["sample_id"].tolist() == [3, 7, 1]
    assert len(select_top(ids, scores, 0)) == 0
    with_extra = select_top(ids, scores, 2, extra={"asked_class": np.array([0, 1, 2, 3, 4, 5])})
    assert with_extra["asked_class"].tolist() == [1, 4]
    with pytest.raises(SelectionError, match="unique"):
        select_top(np.array([1, 1]), np.array([0.1, 0.2]), 1)
    with pytest.raises(SelectionError, match="k must be"):
        select_top(ids, scores, -1)


@settings(max_examples=50, deadline=None)
@given(
    scores=st.lists(st.one_of(st.integers(0, 4).map(float), st.just(math.nan)), min_size=0, max_size=60),
    k=st.integers(0, 70),
    chunk=st.integers(1, 17),
    seed=st.integers(0, 1000),
)
def test_streaming_equals_full(scores, k, chunk, seed):
    scores = np.array(scores, dtype=np.float64)
    ids = np.random.default_rng(seed).permutation(1000)[: scores.size]
    full = select_top(ids, scores, k)
    chunks = [(ids[i : i + chunk], scores[i : i + chunk]) for i in range(0, scores.size, chunk)]
    streamed = select_top_streaming(iter(chunks), k)
    pd.testing.assert_frame_equal(streamed, full)


def test_streaming_scores_with_extra_columns():
    rng = np.random.default_rng(0)
    ids = rng.permutation(500)
    probs = rng.dirichlet(np.ones(6) * 0.5, size=500)
    chunks = [(ids[i : i + 64], probs[i : i + 64]) for i in range(0, 500, 64)]
    frames = (
        pd.DataFrame({"sample_id": c_ids, "score": s, "predicted": p.argmax(1)})
        for (c_ids, s), (_, p) in zip(score_chunks("entropy", iter(chunks)), chunks)
    )
    streamed = select_top_streaming(frames, 25)
    full = select_top(ids, score_candidates("entropy", ids, probs=probs), 25, extra={"predicted": probs.argmax(1)})
    pd.testing.assert_frame_equal(streamed, full)


def test_asked_classes_skips_denied():
    probs = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.2, 0.4, 0.4], [0.0, 0.0, 1.0]])
    denied = np.array([[False] * 3, [True, False, False], [False, False, False], [False, False, True]])
    assert asked_classes(probs, denied).tolist() == [0, 1, 1, 0]
    with pytest.raises(SelectionError, match="row\\(s\\) 1 have every class denied"):
        asked_classes(probs[:2], np.array([[False, True, True], [True, True, True]]))
    with pytest.raises(SelectionError, match="both be"):
        asked_classes(probs, denied[:2])
