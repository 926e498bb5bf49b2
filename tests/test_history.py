"""Prediction history: Eq. 7 windows, a hand-checked value, dedupe, state round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.method.history import (
    HistoryError,
    HistoryFileError,
    HistorySet,
    PredictionHistory,
    cycle_history,
    load_query_history,
    window_history,
)
from pipeline.method.schedule import (
    ScheduleError,
    epoch_shares,
    max_open_accumulators,
    open_windows,
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
    assert [(w.start_epoch, w.query_epoch) for w in query_windows(10, 7, 3, m=3, t=1)] == [(0, 10), (10, 13), (13, 15)]
    assert list(window_epochs(0, 10, 3)) == [7, 8, 9]
    assert list(window_epochs(8, 10, 30)) == [8, 9]
    with pytest.raises(ScheduleError, match="at least one epoch"):
        query_epochs(10, 2, 4)
    with pytest.raises(ScheduleError, match="stage 1"):
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
    assert hist.p_sum is not None and hist.logq_sum is None  # each sum from its own window's first epoch
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


# --------------------------------------------------------------------------- windows across queries


def _ranges(rule: str, s1: int, s2: int, k: int, m: int, t: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    return [((w.p.start, w.p.stop), (w.q.start, w.q.stop)) for w in query_windows(s1, s2, k, m=m, t=t, rule=rule)]


def test_windows_digits_defaults():
    """stage 1 = 15, stage 2 = 12 over 4 cycles (Q = 15, 18, 21, 24), m = 10, t = 3."""
    assert _ranges("since_query", 15, 12, 4, 10, 3) == [
        ((5, 15), (12, 15)), ((15, 18), (15, 18)), ((18, 21), (18, 21)), ((21, 24), (21, 24))]
    # p~ reaches back to the end of stage 1 (never into it), log q stays on the last t epochs
    assert _ranges("across_queries", 15, 12, 4, 10, 3) == [
        ((5, 15), (12, 15)), ((15, 18), (15, 18)), ((15, 21), (18, 21)), ((15, 24), (21, 24))]


def test_windows_paper_settings():
    """stage 1 = 100, stage 2 = 100 over 4 cycles (Q = 100, 125, 150, 175), m = 30, t = 5."""
    assert _ranges("since_query", 100, 100, 4, 30, 5) == [
        ((70, 100), (95, 100)), ((100, 125), (120, 125)), ((125, 150), (145, 150)), ((150, 175), (170, 175))]
    assert _ranges("across_queries", 100, 100, 4, 30, 5) == [
        ((70, 100), (95, 100)), ((100, 125), (120, 125)), ((120, 150), (145, 150)), ((145, 175), (170, 175))]


def test_open_windows_and_memory_bound():
    paper = query_windows(100, 100, 4, m=30, t=5, rule="across_queries")
    spans = [(0, 100), (100, 125), (125, 150), (150, 175), (175, 200)]  # stage 1, cycles 1..4
    assert [[w.k for w in open_windows(paper, a, b)] for a, b in spans] == [[1], [2, 3], [3, 4], [4], []]
    assert max_open_accumulators(100, 100, 4, m=30, t=5, rule="across_queries") == 3  # 2 p-sums + 1 log-q sum
    assert max_open_accumulators(100, 100, 4, m=30, t=5, rule="since_query") == 2
    digits = query_windows(15, 12, 4, m=10, t=3, rule="across_queries")
    assert [[w.k for w in open_windows(digits, a, b)] for a, b in [(0, 15), (15, 18), (18, 21), (21, 24)]] == [
        [1], [2, 3, 4], [3, 4], [4]]
    assert max_open_accumulators(15, 12, 4, m=10, t=3, rule="across_queries") == 4
    assert max_open_accumulators(15, 12, 4, m=10, t=3, rule="since_query") == 2
    with pytest.raises(ScheduleError, match="window rule"):
        query_windows(15, 12, 4, m=10, t=3, rule="sliding")


def _eq7(p_epochs: list[np.ndarray], q_epochs: list[np.ndarray]) -> np.ndarray:
    """Eq. 7 from the full per-epoch record: [N]."""
    p_mean = np.mean(p_epochs, axis=0, dtype=np.float64)
    return -(p_mean * np.sum([np.log(q.astype(np.float64)) for q in q_epochs], axis=0)).sum(axis=1)


@pytest.mark.parametrize("rule", ["since_query", "across_queries"])
def test_cycles_carry_partial_accumulators(tmp_path, rule):
    """Stage 1 = 2, stage 2 = 6 over 3 cycles (Q = 2, 4, 6), m = 4, t = 2. across_queries:
    query 3 averages p over epochs 2..5, across query 2 at epoch 4, so cycle 1 starts its
    p-sum and hands it to cycle 2 in history.npz; its log-q sum starts at epoch 4."""
    n, c = 5, 3
    rng = np.random.default_rng(0)
    probs = {e: rng.dirichlet(np.ones(c), size=n).astype(np.float32) for e in range(8)}
    windows = query_windows(2, 6, 3, m=4, t=2, rule=rule)
    assert [(w.p.start, w.q.start) for w in windows] == (
        [(0, 0), (2, 2), (4, 4)] if rule == "since_query" else [(0, 0), (2, 2), (2, 4)])
    ids = np.arange(n)
    prev = None
    for k, (first, end) in enumerate([(2, 4), (4, 6), (6, 8)], 1):
        hist = cycle_history(windows, first, end, n, c, carried=prev)
        if end == 8:
            assert hist is None  # the last cycle feeds no query
            break
        for e in range(first, end):
            hist.record(e, ids[::-1], probs[e][::-1])
        prev = tmp_path / f"cycle{k}.npz"
        hist.save(prev)
        nxt = windows[k]  # query k + 1
        got = load_query_history(prev, nxt).uncertainty(ids)
        want = _eq7([probs[e] for e in nxt.p], [probs[e] for e in nxt.q])
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with np.load(tmp_path / "cycle1.npz") as data:
        if rule == "since_query":
            assert sorted(data.files) == sorted(PredictionHistory(n, c, m=4, t=2, start_epoch=2,
                                                                  query_epoch=4).state_dict())
        else:  # query 3's partial: a p-sum over epochs 2, 3 and no log-q sum yet
            assert data["query6/p_sum"].shape == (n, c) and data["query6/logq_sum"].shape == (0, c)
            np.testing.assert_allclose(data["query6/p_sum"], probs[2] + probs[3], rtol=1e-6)


def test_history_set_file_and_errors(tmp_path):
    windows = query_windows(2, 6, 3, m=4, t=2, rule="across_queries")
    one = HistorySet([window_history(windows[1], 2, 3)])
    one.save(tmp_path / "one.npz")
    window_history(windows[1], 2, 3).save(tmp_path / "single.npz")
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "single.npz").read_bytes()
    with pytest.raises(HistoryFileError, match="no matching partial"):
        cycle_history(windows, 4, 6, 2, 3, carried=tmp_path / "one.npz")  # query 3's p-sum is missing
    with pytest.raises(HistoryFileError, match="query 3 is at epoch 6"):
        load_query_history(tmp_path / "one.npz", windows[2])
    with pytest.raises(HistoryError, match="one accumulator per query"):
        HistorySet([window_history(windows[1], 2, 3), window_history(windows[1], 2, 3)])
