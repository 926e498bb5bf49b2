"""Prediction history: Eq. 7 windows, a hand-checked value, dedupe, state round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.history import (
    HistoryError,
    HistoryFileError,
    PredictionHistory,
    epoch_shares,
    query_epochs,
    query_windows,
    window_epochs,
)

# Sample 0 flips between classes, sample 1 is stable (paper Fig. 3).
EPOCHS = {
    0: [[0.9, 0.05, 0.05], [0.3, 0.3, 0.4]],  # outside the m=3 window of Q=4
    1: [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]],
    2: [[0.6, 0.2, 0.2], [0.1, 0.8, 0.1]],
    3: [[0.2, 0.4, 0.4], [0.1, 0.8, 0.1]],
}


def _filled(start: int = 0, query: int = 4, m: int = 3, t: int = 2) -> PredictionHistory:
    hist = PredictionHistory(2, 3, m=m, t=t, start_epoch=start, query_epoch=query)
    for epoch, probs in EPOCHS.items():
        hist.record(epoch, np.array([0, 1]), np.array(probs, dtype=np.float32))
    return hist


def test_query_epochs_and_windows():
    assert epoch_shares(100, 4) == [25, 25, 25, 25]
    assert epoch_shares(7, 3) == [3, 2, 2]
    assert query_epochs(100, 100, 4) == [100, 125, 150, 175]
    assert query_epochs(10, 7, 3) == [10, 13, 15]
    assert query_epochs(5, 3, 1) == [5]
    assert query_windows(10, 7, 3) == [(0, 10), (10, 13), (13, 15)]
    assert list(window_epochs(0, 10, 3)) == [7, 8, 9]
    assert list(window_epochs(8, 10, 30)) == [8, 9]
    with pytest.raises(HistoryError, match="at least one epoch"):
        query_epochs(10, 2, 4)
    with pytest.raises(HistoryError, match="stage 1"):
        query_epochs(0, 8, 4)


def test_eq7_by_hand():
    hist = _filled()
    # p~ = mean of epochs 1..3 (m = 3), log q summed over epochs 2..3 (t = 2)
    e1, e2, e3 = EPOCHS[1][0], EPOCHS[2][0], EPOCHS[3][0]
    p_mean = [(a + b + c) / 3 for a, b, c in zip(e1, e2, e3)]
    u0 = -sum(p_mean[c] * (math.log(e2[c]) + math.log(e3[c])) for c in range(3))
    u1 = -sum(0.8 * 2 * math.log(0.8) if c == 1 else 0.1 * 2 * math.log(0.1) for c in range(3))
    scores = hist.uncertainty(np.array([0, 1]))
    np.testing.assert_allclose(scores, [u0, u1], rtol=1e-6)
    np.testing.assert_allclose(scores, [2.3500271, 1.2780637], rtol=1e-6)
    assert scores[0] > scores[1], "the flipping sample is more uncertain"
    assert hist.count_p.tolist() == [3, 3] and hist.count_q.tolist() == [2, 2]


def test_window_stops_at_start_epoch():
    hist = _filled(start=3)
    e3 = EPOCHS[3][0]
    expected = -sum(e3[c] * math.log(e3[c]) for c in range(3))
    np.testing.assert_allclose(hist.uncertainty(np.array([0]))[0], expected, rtol=1e-6)
    assert hist.count_p.tolist() == [1, 1]


def test_outside_windows_is_noop_and_lazy():
    hist = PredictionHistory(4, 3, m=2, t=1, start_epoch=0, query_epoch=10)
    for epoch in range(8):
        hist.record(epoch, np.arange(4), np.full((4, 3), 1 / 3))
    assert not hist.allocated
    assert np.isnan(hist.uncertainty(np.arange(4))).all()
    hist.record(8, np.arange(4), np.full((4, 3), 1 / 3))
    assert hist.allocated
    # epoch 8 is in the p-window (8, 9) but not the t-window (9): still undefined
    assert np.isnan(hist.uncertainty(np.arange(4))).all()
    hist.record(9, np.array([0, 2]), np.full((2, 3), 1 / 3))
    scores = hist.uncertainty(np.arange(4))
    assert np.isnan(scores[[1, 3]]).all()
    np.testing.assert_allclose(scores[[0, 2]], math.log(3), rtol=1e-6)
    hist.record(10, np.arange(4), np.zeros((4, 3)))  # after the query: ignored
    np.testing.assert_allclose(hist.uncertainty(np.array([0]))[0], math.log(3), rtol=1e-6)


def test_dedupe_within_batch_and_epoch():
    hist = PredictionHistory(3, 2, m=2, t=2, start_epoch=0, query_epoch=2)
    hist.record(0, np.array([0, 0, 1]), np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]]))
    hist.record(0, np.array([1, 2]), np.array([[0.2, 0.8], [0.3, 0.7]]))  # 1 again: ignored
    np.testing.assert_allclose(hist.p_sum, [[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]], rtol=1e-6)
    assert hist.count_p.tolist() == [1, 1, 1]
    hist.record(1, np.array([0]), np.array([[0.5, 0.5]]))
    assert hist.count_p.tolist() == [2, 1, 1]
    np.testing.assert_allclose(hist.p_sum[0], [1.4, 0.6], rtol=1e-6)


def test_missed_epoch_is_extrapolated_not_undercounted():
    hist = PredictionHistory(2, 2, m=2, t=2, start_epoch=0, query_epoch=2)
    p = np.array([[0.5, 0.5]])
    hist.record(0, np.array([0]), p)
    hist.record(1, np.array([0, 1]), np.vstack([p, p]))
    scores = hist.uncertainty(np.array([0, 1]))
    np.testing.assert_allclose(scores, [2 * math.log(2), 2 * math.log(2)], rtol=1e-6)


def test_zero_probabilities_are_clipped():
    hist = PredictionHistory(1, 2, m=1, t=1, start_epoch=0, query_epoch=1)
    hist.record(0, np.array([0]), np.array([[1.0, 0.0]]))
    assert np.isfinite(hist.logq_sum).all()
    np.testing.assert_allclose(hist.logq_sum[0, 1], math.log(1e-8), rtol=1e-5)
    assert hist.uncertainty(np.array([0]))[0] == pytest.approx(0.0, abs=1e-6)


def test_chunked_uncertainty_matches():
    rng = np.random.default_rng(0)
    hist = PredictionHistory(50, 5, m=3, t=2, start_epoch=0, query_epoch=3)
    for epoch in range(3):
        hist.record(epoch, rng.permutation(50), rng.dirichlet(np.ones(5), size=50))
    ids = rng.permutation(50)
    np.testing.assert_array_equal(hist.uncertainty(ids, chunk_size=7), hist.uncertainty(ids))


def test_record_validation():
    hist = PredictionHistory(3, 2, m=2, t=2, start_epoch=0, query_epoch=2)
    with pytest.raises(HistoryError, match="shape"):
        hist.record(0, np.array([0]), np.ones((1, 3)) / 3)
    with pytest.raises(HistoryError, match="0..2"):
        hist.record(0, np.array([3]), np.ones((1, 2)) / 2)
    with pytest.raises(HistoryError, match="NaN"):
        hist.record(0, np.array([0]), np.array([[np.nan, 1.0]]))
    hist.record(1, np.array([0]), np.ones((1, 2)) / 2)
    with pytest.raises(HistoryError, match="in order"):
        hist.record(0, np.array([1]), np.ones((1, 2)) / 2)
    with pytest.raises(HistoryError):
        PredictionHistory(3, 2, m=0, t=1, start_epoch=0, query_epoch=2)
    with pytest.raises(HistoryError):
        PredictionHistory(3, 2, m=1, t=1, start_epoch=3, query_epoch=2)


def test_state_roundtrip(tmp_path):
    hist = _filled()
    clone = PredictionHistory.from_state_dict(hist.state_dict())
    np.testing.assert_array_equal(clone.uncertainty(np.array([0, 1])), hist.uncertainty(np.array([0, 1])))
    path = tmp_path / "stage1" / "history.npz"
    hist.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["history.npz"]
    loaded = PredictionHistory.load(path)
    for key, value in hist.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    assert loaded.p_sum.dtype == np.float32 and loaded.latest_epoch == 3
    # resumed recording behaves like uninterrupted recording
    partial = PredictionHistory(2, 3, m=3, t=2, start_epoch=0, query_epoch=4)
    for epoch in (0, 1):
        partial.record(epoch, np.array([0, 1]), np.array(EPOCHS[epoch], dtype=np.float32))
    partial.save(tmp_path / "partial.npz")
    resumed = PredictionHistory.load(tmp_path / "partial.npz")
    for epoch in (2, 3):
        resumed.record(epoch, np.array([0, 1]), np.array(EPOCHS[epoch], dtype=np.float32))
    np.testing.assert_array_equal(resumed.uncertainty(np.array([0, 1])), hist.uncertainty(np.array([0, 1])))


def test_unallocated_roundtrip(tmp_path):
    hist = PredictionHistory(5, 4, m=2, t=1, start_epoch=3, query_epoch=9)
    hist.save(tmp_path / "h.npz")
    back = PredictionHistory.load(tmp_path / "h.npz")
    assert not back.allocated
    assert (back.num_samples, back.num_classes, back.m, back.t, back.start_epoch, back.query_epoch) == (5, 4, 2, 1, 3, 9)


def test_load_errors(tmp_path):
    with pytest.raises(HistoryFileError, match="does not exist"):
        PredictionHistory.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(HistoryFileError, match="unreadable"):
        PredictionHistory.load(tmp_path / "bad.npz")
    state = _filled().state_dict()
    state["count_p"] = state["count_p"][:1]
    with pytest.raises(HistoryFileError, match="count_p"):
        PredictionHistory.from_state_dict(state)
