"""The random audit set (pipeline/selection/audit.py) and reports without ground truth:
the audit's yes-rate estimates top-1 without bias, it lives inside the cycle's budget, and
nothing that needs true labels is ever computed from missing ones."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipeline.selection import audit, diagnostics


def ranked_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """n candidates ranked by a strategy (rank 1 = first choice), with the model's guesses."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1000, 1000 + n))
    return pd.DataFrame({"sample_id": ids, "score": np.linspace(1, 0, n), "rank": np.arange(1, n + 1),
                         "asked_class": rng.integers(0, 10, n), "pred_class": rng.integers(0, 10, n),
                         "pred_prob": rng.uniform(0.1, 1, n), "strategy": "max"})


def test_choose_draws_the_audit_inside_the_budget():
    ranked = ranked_frame(200)
    out = audit.choose(ranked, budget=30, size=8, seed=7)
    assert out["selected"].sum() == 30 and out["audit"].sum() == 8
    assert (out.loc[out["audit"], "selected"]).all()
    strategy = out[out["selected"] & ~out["audit"]]
    rest = out[~out["audit"]].nsmallest(22, "rank")  # the strategy's best 22 outside the audit
    assert set(strategy["sample_id"]) == set(rest["sample_id"])
    again = audit.choose(ranked.sample(frac=1, random_state=3), budget=30, size=8, seed=7)
    assert set(again.loc[again["audit"], "sample_id"]) == set(out.loc[out["audit"], "sample_id"])  # row order free
    assert set(audit.choose(ranked, budget=30, size=8, seed=8).query("audit")["sample_id"]) != \
        set(out.loc[out["audit"], "sample_id"])
    assert audit.choose(ranked, budget=5, size=8, seed=0)["selected"].sum() == 5  # clamped to the budget
    none = audit.choose(ranked, budget=30, size=0, seed=0)
    assert not none["audit"].any() and set(none.loc[none["selected"], "rank"]) == set(range(1, 31))


def test_the_audit_is_uniform_over_candidates_not_the_strategy():
    ranked = ranked_frame(50)
    counts = np.zeros(50)
    for seed in range(2000):
        counts += audit.choose(ranked, budget=20, size=5, seed=seed).sort_values("rank")["audit"].to_numpy()
    share = counts / 2000  # every candidate: 5/50 = 0.1, top-ranked or not
    assert abs(share[:10].mean() - 0.1) < 0.01 and abs(share[-10:].mean() - 0.1) < 0.01
    assert share.min() > 0.06 and share.max() < 0.14


def answers_for(frame: pd.DataFrame, correct: np.ndarray) -> pd.DataFrame:
    """queries.parquet of the selected rows: yes iff the guess is correct."""
    q = frame[frame["selected"]][["sample_id", "asked_class", "audit"]].copy()
    yes = correct[q.index.to_numpy()]
    q["answer"] = yes
    q["label_given"] = np.where(yes, q["asked_class"], -1)
    return q


def test_estimate_is_unbiased_and_its_interval_covers():
    ranked = ranked_frame(400, seed=1)
    rng = np.random.default_rng(0)
    # the strategy ranks uncertain (wrong) guesses first: its own yes-rate is biased low
    correct = np.zeros(400, dtype=bool)
    correct[np.argsort(ranked["rank"].to_numpy())[120:]] = True
    correct[rng.choice(120, 20, replace=False)] = True
    truth = correct.mean()
    estimates, covered, own = [], 0, []
    for seed in range(400):
        out = audit.choose(ranked, budget=60, size=25, seed=seed)
        q = answers_for(out, correct)
        est = audit.estimate(out, q)
        estimates.append(est["top1"])
        covered += est["ci95"][0] <= truth <= est["ci95"][1]
        own.append(q.loc[~q["audit"], "answer"].mean())
        assert est["n"] == 25 and est["candidates"] == 400
    assert abs(np.mean(estimates) - truth) < 0.01  # unbiased
    assert covered / 400 > 0.9  # the Wilson interval covers about 95 %
    assert np.mean(own) < truth - 0.3  # what the strategy's own questions would have said


def test_estimate_for_full_labels_and_without_audit():
    ranked = audit.choose(ranked_frame(40), budget=10, size=4, seed=1)
    q = ranked[ranked["selected"]][["sample_id", "asked_class", "audit"]].copy()
    q["answer"] = True
    q["label_given"] = np.where(np.arange(len(q)) % 2 == 0, q["asked_class"], (q["asked_class"] + 1) % 10)
    q["asked_class"] = -1  # a full-label arm's questions
    est = audit.estimate(ranked, q)
    expect = (q.loc[q["audit"], "label_given"].to_numpy() ==
              ranked.set_index("sample_id").loc[q.loc[q["audit"], "sample_id"], "asked_class"].to_numpy()).mean()
    assert est["top1"] == pytest.approx(expect)
    assert audit.estimate(ranked_frame(10).assign(selected=True), q) is None  # no audit column: nothing


def test_selection_quality_never_uses_missing_truth():
    ranked = audit.choose(ranked_frame(60), budget=12, size=3, seed=0)
    correct = np.arange(60) % 3 == 0
    q = answers_for(ranked, correct)
    unknown = np.full(3000, -1)
    out = audit.selection_quality(ranked, q, unknown)
    assert out["auroc_wrong"] is None and out["wrong_fraction"] is None and "no ground truth" in out["note"]
    own = q[~q["audit"]]
    assert out["yes_rate"] == pytest.approx(own["answer"].mean()) and out["audit_questions"] == 3
    truth = np.full(3000, -1)
    ids = ranked["sample_id"].to_numpy()
    truth[ids] = np.where(correct, ranked["asked_class"], (ranked["asked_class"] + 1) % 10)
    known = audit.selection_quality(ranked, q, truth)
    plain = diagnostics.selection_quality(ranked.assign(selected=ranked["selected"] & ~ranked["audit"]), own, truth)
    assert known["auroc_wrong"] == plain["auroc_wrong"] is not None and "note" not in known


def test_metrics_take_top1_from_the_next_cycles_audit(tmp_path):
    from pipeline.core.config import parse_params
    from pipeline.core.layout import Layout
    from pipeline.reporting.metrics import run_metrics
    from pipeline.reporting.plots import write_report
    from pipeline.reporting.results import collect, top1_note

    params = parse_params({"query_times": 2, "budget": {"initial": 10, "one_bit": 20}, "seeds": [0],
                           "arms": {"label": {"method": "obcp", "strategy": "max"}}})
    layout = Layout("folder", tmp_path)
    note = {"top1": None, "note": "no labeled test split"}
    layout.stage1_dir(0).mkdir(parents=True)
    (layout.stage1_dir(0) / "test.json").write_text(json.dumps(note))
    for k, est in ((1, {"top1": 0.5, "n": 4, "ci95": [0.15, 0.85]}), (2, {"top1": 0.75, "n": 4, "ci95": [0.3, 0.95]})):
        d = layout.cycle_dir(0, "label", k)
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"bits_used": 33.2 + 10 * k, "test": note, "asked": 10, "yes": 6,
                                                     "audit": est, "selection": {"yes_rate": 0.6}}))
    doc = run_metrics(params, layout, "label", 0, num_classes=10, num_train=100)
    points = doc["points"]
    assert [p["top1"] for p in points] == [0.5, 0.75, None]  # cycle k's audit asked about cycle k-1's model
    assert [p["top1_source"] for p in points] == ["audit", "audit", None]
    assert points[0]["audit_n"] == 4 and doc["final"]["top1"] is None
    path = layout.metrics("label", 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    results = collect(layout.metrics_root, params.arms, [0])
    assert results["top1_source"].tolist() == ["audit", "audit", ""] and math.isnan(results["top1"].iloc[2])
    text = top1_note(results)
    assert "2 top-1 value(s) are **estimates**" in text and "1 value(s) are not measured" in text
    index = write_report(results, params.arms, {}, tmp_path / "reports", num_classes=10)
    assert "## How top-1 was measured" in index.read_text()
    # with a labeled test split the measured value stays, the estimate beside it
    (layout.stage1_dir(0) / "test.json").write_text(json.dumps({"top1": 0.4}))
    first = run_metrics(params, layout, "label", 0, num_classes=10, num_train=100)["points"][0]
    assert first["top1"] == 0.4 and first["top1_source"] == "test" and first["audit_top1"] == 0.5
