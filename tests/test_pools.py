"""Pool state: construction, invariants, answer updates, bit accounting (paper Table 1), files."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.pool import budget, pools
from pipeline.core.errors import ObcpError
from pipeline.oracle.sheets import simulated_answers
from pipeline.selection.strategies import asked_classes


def _labels(n: int = 30, c: int = 3) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % c


# -- initial pool -------------------------------------------------------------


def test_initial_pool_columns_and_invariants():
    labels = _labels()
    pool = pools.initial_pool(labels, 9, class_balanced=True, seed=0)
    assert list(pool.columns) == list(pools.POOL_COLUMNS)
    assert pool["sample_id"].tolist() == list(range(30))
    initial = pool[pool["status"] == "initial"]
    assert len(initial) == 9
    assert (initial["label"].to_numpy() == labels[initial["sample_id"]]).all()
    assert (initial["labeled_cycle"] == 0).all()
    rest = pool[pool["status"] == "unlabeled"]
    assert (rest["label"] == -1).all() and (rest["labeled_cycle"] == -1).all()
    assert all(n == [] for n in pool["negatives"])
    pools.check_invariants(pool, 3, num_samples=30)


def test_initial_pool_fraction_and_balance():
    labels = _labels(100, 4)
    pool = pools.initial_pool(labels, 0.1, class_balanced=True, seed=3)
    counts = pool[pool["status"] == "initial"]["label"].value_counts().sort_index()
    assert counts.sum() == 10
    assert counts.max() - counts.min() <= 1
    assert len(counts) == 4


def test_initial_pool_balanced_water_fills_small_classes():
    labels = np.array([0] * 2 + [1] * 20 + [2] * 20)
    pool = pools.initial_pool(labels, 12, class_balanced=True, seed=1)
    counts = pool[pool["status"] == "initial"]["label"].value_counts().to_dict()
    assert counts == {0: 2, 1: 5, 2: 5}


def test_initial_pool_deterministic_by_seed():
    labels = _labels(200, 5)
    a = pools.initial_pool(labels, 20, class_balanced=False, seed=7)
    b = pools.initial_pool(labels, 20, class_balanced=False, seed=7)
    c = pools.initial_pool(labels, 20, class_balanced=False, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a["status"].equals(c["status"])
    assert (a["status"] == "initial").sum() == 20


@pytest.mark.parametrize("size", [0, 31, 0.0, 1.5, -2, True])
def test_initial_pool_bad_size(size):
    with pytest.raises(pools.PoolError) as info:
        pools.initial_pool(_labels(), size, class_balanced=True, seed=0)
    assert isinstance(info.value, ObcpError)


def test_initial_pool_bad_labels():
    with pytest.raises(pools.PoolError, match="class indices"):
        pools.initial_pool(np.array([0, -1, 2]), 1, class_balanced=False, seed=0)
    with pytest.raises(pools.PoolError, match="1-D integer"):
        pools.initial_pool(np.array([0.0, 1.0]), 1, class_balanced=False, seed=0)


# -- invariants ---------------------------------------------------------------


def test_check_invariants_lists_every_violation():
    pool = pd.DataFrame(
        {
            "sample_id": [0, 1, 1, 3, 4, 5],
            "status": ["initial", "unlabeled", "yes", "unlabeled", "bogus", "yes"],
            "label": [0, 2, 5, 1, 0, 1],
            "negatives": [[], [2, 1], [], [0, 1, 2], [], [1]],
            "labeled_cycle": [0, -1, 1, -1, 0, 0],
        }
    )
    with pytest.raises(pools.PoolInvariantError) as info:
        pools.check_invariants(pool, 3, num_samples=7, budget=2)
    msg = str(info.value)
    for fragment in (
        "sample_id appears more than once: 1 sample(s), sample_id 1",
        "sample_id missing from the pool: 2 sample(s), sample_id 2, 6",
        "status not one of",
        "unlabeled sample with a label != -1",
        "label >= num_classes (3)",
        "labeled_cycle inconsistent with status",
        "negatives not sorted / not unique",
        "label among the sample's own negatives: 1 sample(s), sample_id 5",
        "every class denied",
        "exceed the budget of 2",
    ):
        assert fragment in msg, fragment


def test_check_invariants_missing_columns():
    with pytest.raises(pools.PoolInvariantError, match="lacks column"):
        pools.check_invariants(pd.DataFrame({"sample_id": [0]}), 3)


# -- updates ------------------------------------------------------------------


def _queries(ids, asked, answers) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": ids, "asked_class": asked, "answer": np.array(answers, dtype=bool)})


def test_apply_answers_yes_and_no():
    pool = pools.initial_pool(_labels(6), 2, class_balanced=False, seed=0)
    unl = pool.loc[pool["status"] == "unlabeled", "sample_id"].to_numpy()
    new = pools.apply_answers(pool, _queries(unl[:2], [2, 1], [True, False]), cycle=1, num_classes=3)
    row_yes = new.set_index("sample_id").loc[unl[0]]
    row_no = new.set_index("sample_id").loc[unl[1]]
    assert (row_yes["status"], row_yes["label"], row_yes["labeled_cycle"]) == ("yes", 2, 1)
    assert (row_no["status"], row_no["label"], row_no["negatives"]) == ("unlabeled", -1, [1])
    assert all(n == [] for n in pool["negatives"]), "the input pool must not change"
    newer = pools.apply_answers(new, _queries([unl[1]], [0], [False]), cycle=2, num_classes=3)
    assert newer.set_index("sample_id").loc[unl[1], "negatives"] == [0, 1]
    pools.check_invariants(newer, 3, num_samples=6, budget=3)
    assert pools.queries_answered(newer) == 3


@pytest.mark.parametrize(
    "ids, asked, answers, match",
    [
        ([0], [0], [True], "already labeled"),
        ([1, 1], [0, 1], [False, False], "more than once"),
        ([99], [0], [False], "not in the pool"),
        ([1], [7], [False], "out of range"),
        ([2], [1], [True], "already denied"),
    ],
)
def test_apply_answers_rejects(ids, asked, answers, match):
    pool = pools.initial_pool(np.array([0, 1, 2, 0]), 1, class_balanced=False, seed=0)
    pool = pool.assign(status=["initial", "unlabeled", "unlabeled", "unlabeled"], label=[0, -1, -1, -1])
    pool.at[2, "negatives"] = [1]
    with pytest.raises(pools.PoolError, match=match):
        pools.apply_answers(pool, _queries(ids, asked, answers), cycle=1, num_classes=3)


def test_apply_answers_rejects_non_bool_and_cycle_zero():
    pool = pools.initial_pool(_labels(6), 1, class_balanced=False, seed=0)
    unl = int(pool.loc[pool["status"] == "unlabeled", "sample_id"].iloc[0])
    bad = pd.DataFrame({"sample_id": [unl], "asked_class": [0], "answer": ["yes"]})
    with pytest.raises(pools.PoolError, match="bool"):
        pools.apply_answers(pool, bad, cycle=1)
    with pytest.raises(pools.PoolError, match="cycle must be >= 1"):
        pools.apply_answers(pool, _queries([unl], [0], [True]), cycle=0)


def test_apply_full_labels():
    pool = pools.initial_pool(_labels(6), 1, class_balanced=False, seed=0)
    unl = pool.loc[pool["status"] == "unlabeled", "sample_id"].to_numpy()[:2]
    new = pools.apply_full_labels(pool, unl, np.array([2, 0]), cycle=1, num_classes=3)
    rows = new.set_index("sample_id").loc[unl]
    assert rows["status"].tolist() == ["full", "full"]
    assert rows["label"].tolist() == [2, 0] and rows["labeled_cycle"].tolist() == [1, 1]
    pools.check_invariants(new, 3, num_samples=6, budget=2)
    assert pools.labels_spent(new) == 2
    assert pools.bits_used(new, 3) == pytest.approx(3 * math.log2(3))
    with pytest.raises(pools.PoolError, match="already"):
        pools.apply_full_labels(new, unl[:1], np.array([1]), cycle=2)
    with pytest.raises(pools.PoolError, match="one label per sample"):
        pools.apply_full_labels(pool, unl, np.array([1]), cycle=1)


def test_apply_full_labels_rejects_denied_label():
    pool = pools.initial_pool(_labels(6), 1, class_balanced=False, seed=0)
    unl = int(pool.loc[pool["status"] == "unlabeled", "sample_id"].iloc[0])
    pool = pools.apply_answers(pool, _queries([unl], [1], [False]), cycle=1)
    with pytest.raises(pools.PoolError, match="denied"):
        pools.apply_full_labels(pool, np.array([unl]), np.array([1]), cycle=2)


def test_denied_matrix():
    pool = pools.initial_pool(_labels(6), 1, class_balanced=False, seed=0)
    unl = pool.loc[pool["status"] == "unlabeled", "sample_id"].to_numpy()
    pool = pools.apply_answers(pool, _queries(unl[:2], [0, 2], [False, False]), cycle=1)
    pool = pools.apply_answers(pool, _queries(unl[:1], [1], [False]), cycle=2)
    denied = pools.denied_matrix(pool, unl[:3], 3)
    expected = np.array([[True, True, False], [False, False, True], [False, False, False]])
    np.testing.assert_array_equal(denied, expected)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(5, 40),
    c=st.integers(2, 6),
    seed=st.integers(0, 2**16),
    cycles=st.integers(1, 5),
    data=st.data(),
)
def test_property_answer_sequences_keep_invariants(n, c, seed, cycles, data):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    pool = pools.initial_pool(labels, max(1, n // 5), class_balanced=bool(seed % 2), seed=seed)
    spent = 0
    for cycle in range(1, cycles + 1):
        unl = pool.loc[pool["status"] == "unlabeled", "sample_id"].to_numpy()
        if unl.size == 0:
            break
        k = data.draw(st.integers(1, unl.size), label="k")
        ids = np.sort(rng.choice(unl, size=k, replace=False))
        probs = rng.dirichlet(np.ones(c), size=k)
        denied = pools.denied_matrix(pool, ids, c)
        asked = asked_classes(probs, denied)
        assert not denied[np.arange(k), asked].any(), "asked a denied class"
        queries = _queries(ids, asked, np.zeros(k, bool))
        queries["answer"] = simulated_answers(queries, labels)
        before = pools.summary(pool)
        pool = pools.apply_answers(pool, queries, cycle=cycle, num_classes=c)
        spent += k
        pools.check_invariants(pool, c, num_samples=n, budget=spent)
        after = pools.summary(pool)
        assert after.questions == before.questions + k == spent
        assert after.yes == before.yes + int(queries["answer"].sum())
        known = pool["status"] != "unlabeled"
        assert (pool.loc[known, "label"].to_numpy() == labels[pool.loc[known, "sample_id"]]).all()
        assert pools.bits_used(pool, c, spent) == pytest.approx(after.initial * math.log2(c) + spent)
    assert spent >= 1
    with pytest.raises(pools.PoolInvariantError, match="exceed the budget"):
        pools.check_invariants(pool, c, budget=spent - 1)


def test_bits_used_rejects_out_of_sync_count():
    pool = pools.initial_pool(_labels(6), 1, class_balanced=False, seed=0)
    with pytest.raises(pools.PoolInvariantError, match="out of sync"):
        pools.bits_used(pool, 3, one_bit_queries=5)


# -- budgets ------------------------------------------------------------------


def test_table1_numbers():
    rows = {r.dataset: r for r in budget.table1()}
    k = lambda x: round(x / 1000, 1)  # noqa: E731
    assert [round(r.log2_c, 4) for r in rows.values()] == [3.3219, 6.6439, 9.9658]
    assert (k(rows["cifar10"].labeled_pool_bits), k(rows["cifar10"].one_bit), k(rows["cifar10"].one_bit_bits)) == (33.2, 16.6, 33.2)
    assert (k(rows["cifar100"].labeled_pool_bits), k(rows["cifar100"].one_bit), k(rows["cifar100"].one_bit_bits)) == (66.4, 33.2, 66.4)
    imagenet = rows["imagenet"]
    assert (round(imagenet.labeled_pool_bits / 1000), round(imagenet.one_bit / 1000), round(imagenet.one_bit_bits / 1000)) == (1276, 1146, 1276)
    assert (imagenet.labeled_pool, imagenet.initial) == (128_000, 13_000)
    for r in rows.values():
        assert budget.labeled_equivalent(r.initial, r.one_bit, r.num_classes) == pytest.approx(r.labeled_pool, abs=0.5)
        full = budget.full_label_budget(r.one_bit, r.num_classes)
        assert r.labeled_pool - r.initial - 1 <= full <= r.labeled_pool - r.initial
        assert budget.label_bits(full, r.num_classes) <= r.one_bit < budget.label_bits(full + 1, r.num_classes)
    # |T^O| is rounded to whole questions, so CIFAR-100's 33219 questions buy 4999 full labels
    assert budget.full_label_budget(rows["cifar100"].one_bit, 100) == 4999
    assert budget.full_label_budget(rows["cifar10"].one_bit, 10) == 5000


def test_budget_helpers():
    assert budget.label_bits(4, 16) == 16.0
    assert budget.one_bit_budget(10, 6, 16) == 16
    assert budget.full_label_budget(16, 16) == 4
    assert budget.full_label_budget(15, 16) == 3
    assert budget.labeled_equivalent(6, 16, 16) == 10.0
    assert budget.cycle_budgets(10, 4) == [3, 3, 2, 2]
    assert budget.cycle_budgets(16610, 4) == [4153, 4153, 4152, 4152]
    assert sum(budget.cycle_budgets(16610, 4)) == 16610
    assert budget.cycle_budgets(2, 4) == [1, 1, 0, 0]
    assert pools.budget_through([3, 3, 2, 2], 2) == 6
    assert pools.budget_through([3, 3, 2, 2], 0) == 0
    with pytest.raises(pools.PoolError):
        budget.cycle_budgets(10, 0)
    with pytest.raises(pools.PoolError):
        budget.one_bit_budget(5, 6, 10)
    with pytest.raises(pools.PoolError):
        budget.label_bits(3, 1)


# -- summary and files --------------------------------------------------------


def test_summary_counts():
    pool = pools.initial_pool(_labels(10), 2, class_balanced=False, seed=0)
    unl = pool.loc[pool["status"] == "unlabeled", "sample_id"].to_numpy()
    pool = pools.apply_answers(pool, _queries(unl[:3], [0, 1, 2], [True, False, False]), cycle=1)
    pool = pools.apply_full_labels(pool, unl[3:4], np.array([1]), cycle=1)
    s = pools.summary(pool)
    assert s.as_dict() == {
        "num_samples": 10, "initial": 2, "yes": 1, "full": 1, "unlabeled": 6, "labeled": 4,
        "with_negatives": 2, "negatives": 2, "questions": 3,
    }


def test_write_read_roundtrip(tmp_path):
    pool = pools.initial_pool(_labels(12), 3, class_balanced=True, seed=0)
    unl = pool.loc[pool["status"] == "unlabeled", "sample_id"].to_numpy()
    pool = pools.apply_answers(pool, _queries(unl[:3], [0, 1, 2], [True, False, False]), cycle=1)
    pool = pools.apply_answers(pool, _queries(unl[1:2], [0], [False]), cycle=2)
    path = tmp_path / "cycle_002" / "pool.parquet"
    pools.write_pool(path, pool, 3, num_samples=12, budget=4)
    back = pools.read_pool(path)
    assert list(back.columns) == list(pools.POOL_COLUMNS)
    assert back["negatives"].tolist() == pool["negatives"].tolist()
    assert all(type(n) is list and all(type(c) is int for c in n) for n in back["negatives"])
    pd.testing.assert_frame_equal(back.drop(columns="negatives"), pool.drop(columns="negatives"), check_dtype=False)
    assert back["sample_id"].dtype == np.int64 and back["label"].dtype == np.int64
    empty = pools.initial_pool(_labels(4), 1, class_balanced=False, seed=0)
    pools.write_pool(tmp_path / "empty.parquet", empty, 3)
    assert pools.read_pool(tmp_path / "empty.parquet")["negatives"].tolist() == [[]] * 4


def test_write_pool_refuses_invalid_and_writes_nothing(tmp_path):
    pool = pools.initial_pool(_labels(6), 1, class_balanced=False, seed=0)
    pool.loc[0, "label"] = 9
    with pytest.raises(pools.PoolInvariantError):
        pools.write_pool(tmp_path / "pool.parquet", pool, 3)
    assert list(tmp_path.iterdir()) == []


def test_read_pool_errors(tmp_path):
    with pytest.raises(pools.PoolFileError, match="does not exist"):
        pools.read_pool(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(pools.PoolFileError, match="not readable"):
        pools.read_pool(tmp_path / "bad.parquet")
    pd.DataFrame({"sample_id": [0]}).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(pools.PoolFileError, match="lacks column"):
        pools.read_pool(tmp_path / "cols.parquet")
