"""Selection-quality diagnostics on a fabricated cycle, with a hand-computed AUROC."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.selection.diagnostics import answer_entropy_bits, auroc, selection_quality, yes_rate

TRUTH = np.array([0, 1, 2, 0, 1, 2])
# asked class wrong for samples 1, 3, 5; sample 4 was never recorded by Eq. 7 (NaN)
SCORES = pd.DataFrame({
    "sample_id": [1, 5, 2, 3, 0, 4],
    "score": [0.9, 0.7, 0.5, 0.5, 0.1, np.nan],
    "rank": [1, 2, 3, 4, 5, 6],
    "asked_class": [2, 0, 2, 1, 0, 1],
    "pred_class": [2, 0, 2, 1, 0, 1],
    "pred_prob": [0.4, 0.3, 0.8, 0.5, 0.9, 0.6],
    "selected": [True, True, False, False, False, False],
})


def test_auroc_by_hand():
    wrong = SCORES["asked_class"].to_numpy() != TRUTH[SCORES["sample_id"]]
    assert wrong.tolist() == [True, True, False, True, False, False]
    # 3 wrong x 3 right pairs: 0.9 and 0.7 beat 0.5, 0.1 and NaN (6); 0.5 beats 0.1 and NaN
    # and ties the right 0.5 (2.5): 8.5 / 9
    assert auroc(SCORES["score"].to_numpy(), wrong) == pytest.approx(8.5 / 9)
    assert math.isnan(auroc(np.array([1.0, 2.0]), np.array([True, True])))  # one class only
    assert math.isnan(auroc(np.array([1.0, 2.0]), np.array([False, False])))
    assert auroc(np.array([np.nan, np.nan, 0.0]), np.array([True, False, False])) == pytest.approx(0.25)
    assert auroc(np.array([3.0, 3.0, 3.0, 3.0]), np.array([True, False, True, False])) == 0.5


def test_auroc_matches_counting_pairs_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(float)
    labels = rng.random(200) < 0.3
    scores[rng.random(200) < 0.1] = np.nan
    key = np.where(np.isnan(scores), -1.0, scores)  # NaN lowest
    pos, neg = key[labels][:, None], key[~labels][None, :]
    expected = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert auroc(scores, labels) == pytest.approx(expected)


def test_answers_by_hand():
    assert yes_rate(np.array([True, False, False, False])) == 0.25
    # H(1/4) = 1/4·2 + 3/4·log2(4/3) bits
    assert answer_entropy_bits(np.array([True, False, False, False])) == pytest.approx(0.811278, abs=1e-6)
    assert answer_entropy_bits(np.array([True, True])) == 0.0
    assert answer_entropy_bits(np.array([0, 1, 1, 2])) == pytest.approx(1.5)  # full labels
    assert math.isnan(yes_rate(np.array([], dtype=bool))) and math.isnan(answer_entropy_bits(np.array([])))


def test_selection_quality_of_a_fabricated_cycle():
    asked = SCORES[SCORES["selected"]]
    queries = pd.DataFrame({"sample_id": asked["sample_id"], "asked_class": asked["asked_class"],
                            "answer": [False, False], "label_given": [-1, -1]})
    got = selection_quality(SCORES, queries, TRUTH)
    assert got == {"yes_rate": 0.0, "answer_bits": 0.0, "auroc_wrong": round(8.5 / 9, 6),
                   "selected_confidence": 0.35, "wrong_fraction": 0.5, "candidates": 6}
    full = pd.DataFrame({"sample_id": [1, 5], "asked_class": [-1, -1], "answer": [True, True], "label_given": [1, 2]})
    got = selection_quality(SCORES, full, TRUTH)
    assert got["yes_rate"] is None and got["answer_bits"] == 1.0
    right = SCORES.assign(asked_class=TRUTH[SCORES["sample_id"]])
    assert selection_quality(right, queries, TRUTH)["auroc_wrong"] is None  # one class only
