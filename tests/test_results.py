"""Results table and paper tables: collect metrics JSONs, summaries, Table 3/4, markdown."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.pool import ledger
from pipeline.reporting import results as R
from pipeline.core.config import ArmParams

BITS = [166.1, 249.1, 332.1]
PCT = [3.48, 5.2, 6.94]


def write_metrics(root: Path, arm: str, seed: int, settings_: ArmParams, top1: list[float], *,
                  yes: list[int] | None = None, asked: list[int] | None = None, top5: list[float] | None = None,
                  **extra) -> Path:
    """A metrics JSON in the evaluate stage's format with one point per entry of `top1`."""
    points = []
    for c, acc in enumerate(top1):
        p = {"cycle": c, "bits": BITS[c], "labeled_equiv_pct": PCT[c], "top1": acc,
             "yes": (yes or [0, 40, 45])[c], "asked": (asked or [0, 83, 83])[c]}
        if top5 is not None:
            p["top5"] = top5[c]
        points.append(p)
    doc = {"arm": arm, "seed": seed, "method": settings_.method, "strategy": settings_.strategy,
           "switches": {k: getattr(settings_, k) for k in R.SWITCHES}, "num_classes": 10, "num_train": 1437,
           "final": {"top1": top1[-1], "bits": BITS[len(top1) - 1], "labeled_equiv_pct": PCT[len(top1) - 1]},
           "points": points, **extra}
    path = root / f"seed{seed}" / f"{arm}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


ARMS = {"obcp": ArmParams(), "onebit": ArmParams(method="onebit")}
TOP1 = {("obcp", 0): [0.50, 0.60, 0.70], ("obcp", 1): [0.52, 0.64, 0.74],
        ("onebit", 0): [0.50, 0.55, 0.60], ("onebit", 1): [0.52, 0.57, 0.66]}


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    for (arm, seed), acc in TOP1.items():
        write_metrics(tmp_path, arm, seed, ARMS[arm], acc)
    return tmp_path


def test_collect_rows_columns_and_values(metrics_dir):
    frame = R.collect(metrics_dir, ARMS, [0, 1])
    assert list(frame.columns) == ["arm", "seed", "method", "strategy", "cycle", "bits", "labeled_equiv_pct",
                                   "top1", "yes", "asked", *R.SWITCHES, "selection.yes_rate",
                                   "selection.answer_bits", "selection.auroc_wrong", "selection.selected_confidence"]
    assert frame["selection.auroc_wrong"].isna().all()  # these fabricated points carry no selection block
    assert len(frame) == 2 * 2 * 3
    assert frame["arm"].tolist() == ["obcp"] * 6 + ["onebit"] * 6  # params order, then seed, cycle
    assert frame["seed"].tolist() == [0, 0, 0, 1, 1, 1] * 2
    assert frame["cycle"].tolist() == [0, 1, 2] * 4
    assert frame["method"].tolist() == ["obcp"] * 6 + ["onebit"] * 6
    got = frame.set_index(["arm", "seed", "cycle"])["top1"]
    for (arm, seed), acc in TOP1.items():
        assert [got[(arm, seed, c)] for c in range(3)] == acc
    assert frame["yes"].tolist() == [0, 40, 45] * 4 and str(frame["yes"].dtype) == "Int64"
    assert frame["bits"].tolist() == BITS * 4
    assert frame[list(R.SWITCHES)].all().all()


def test_collect_top5_and_missing_yes(tmp_path):
    arms = {"obcp": ArmParams()}
    path = write_metrics(tmp_path, "obcp", 0, arms["obcp"], [0.3, 0.4, 0.5], top5=[0.6, 0.7, 0.8])
    doc = json.loads(path.read_text())
    for p in doc["points"]:
        del p["yes"], p["asked"]
    path.write_text(json.dumps(doc))
    frame = R.collect(tmp_path, arms, [0])
    assert frame["top5"].tolist() == [0.6, 0.7, 0.8]
    assert frame["yes"].isna().all() and frame["asked"].isna().all()


def test_metrics_path_is_per_seed_folder(tmp_path):
    assert R.metrics_path(tmp_path, "obcp", 3) == tmp_path / "seed3" / "obcp.json"


def test_missing_metrics_file_names_file_and_fix(metrics_dir):
    with pytest.raises(R.MetricsMissingError) as err:
        R.collect(metrics_dir, ARMS, [0, 1, 7])
    assert "seed7/obcp.json" in str(err.value) and "dvc repro evaluate" in str(err.value)


def test_malformed_metrics(metrics_dir):
    (metrics_dir / "seed0" / "obcp.json").write_text("{not json")
    with pytest.raises(R.MetricsFormatError, match="seed0/obcp.json"):
        R.collect(metrics_dir, ARMS, [0])
    (metrics_dir / "seed0" / "obcp.json").write_text(json.dumps({"points": [{"cycle": 0, "bits": 1.0}]}))
    with pytest.raises(R.MetricsFormatError, match="labeled_equiv_pct, top1"):
        R.collect(metrics_dir, ARMS, [0])
    (metrics_dir / "seed0" / "obcp.json").write_text(json.dumps({"points": []}))
    with pytest.raises(R.MetricsFormatError, match="points"):
        R.collect(metrics_dir, ARMS, [0])


def test_stale_metrics_rejected(metrics_dir):
    changed = {"obcp": ArmParams(strategy="random"), "onebit": ARMS["onebit"]}
    with pytest.raises(R.StaleMetricsError, match="strategy='obcp'"):
        R.collect(metrics_dir, changed, [0])
    switched = {"obcp": ArmParams(neg_loss=False), "onebit": ARMS["onebit"]}
    with pytest.raises(R.StaleMetricsError, match="switches.neg_loss"):
        R.collect(metrics_dir, switched, [0])


def test_read_results_roundtrip(metrics_dir, tmp_path):
    frame = R.collect(metrics_dir, ARMS, [0, 1])
    frame.to_csv(tmp_path / "results.csv", index=False)
    back = R.read_results(tmp_path / "results.csv")
    pd.testing.assert_frame_equal(back[frame.columns], frame, check_dtype=False)
    with pytest.raises(R.ResultsError, match="dvc repro figures"):
        R.read_results(tmp_path / "nope.csv")


def test_final_summary_by_hand(metrics_dir):
    summary = R.final_summary(R.collect(metrics_dir, ARMS, [0, 1])).set_index("arm")
    assert summary.loc["obcp", "top1_mean"] == pytest.approx((0.70 + 0.74) / 2)
    assert summary.loc["obcp", "top1_std"] == pytest.approx(math.sqrt(2 * 0.02 ** 2))  # ddof=1 of 2 values
    assert summary.loc["onebit", "top1_mean"] == pytest.approx(0.63)
    assert summary.loc["onebit", "top1_std"] == pytest.approx(np.std([0.60, 0.66], ddof=1))
    assert summary.loc["obcp", "n_seeds"] == 2 and summary.loc["obcp", "cycle"] == 2
    assert summary.loc["obcp", "bits"] == pytest.approx(332.1)


def test_final_summary_one_seed_has_nan_std(metrics_dir):
    summary = R.final_summary(R.collect(metrics_dir, ARMS, [0]))
    assert summary["top1_std"].isna().all()
    assert R.pct(summary["top1_mean"].iloc[0], summary["top1_std"].iloc[0]) == "70.0"
    doc = R.summary_metrics(summary)  # valid JSON: one seed's std is null, not NaN
    assert doc["std"] == {"obcp": None, "onebit": None} and doc["n_seeds"] == 1
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


def test_summary_metrics_nested_in_percent(metrics_dir):
    """reports/metrics.json: `top1.<arm>` and `std.<arm>` in percent (0.1), `bits.<arm>`, `n_seeds`."""
    doc = R.summary_metrics(R.final_summary(R.collect(metrics_dir, ARMS, [0, 1])))
    assert list(doc) == list(R.SUMMARY_GROUPS) == ["top1", "std", "bits", "n_seeds"]
    assert doc["top1"] == {"obcp": 72.0, "onebit": 63.0}  # (0.70 + 0.74) / 2, (0.60 + 0.66) / 2
    assert doc["std"] == {"obcp": round(100 * math.sqrt(2 * 0.02 ** 2), 1), "onebit": 4.2}
    assert doc["bits"] == {"obcp": 332.1, "onebit": 332.1} and doc["n_seeds"] == 2
    # an arm may be called like a group now: the arms are one level down
    renamed = R.final_summary(R.collect(metrics_dir, ARMS, [0])).replace({"arm": {"onebit": "bits"}})
    assert R.summary_metrics(renamed)["top1"] == {"obcp": 70.0, "bits": 60.0}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=4), min_size=1, max_size=4))
def test_final_summary_matches_numpy(accs):
    """Property: the summary is the numpy mean/std (ddof=1) of each seed's last-cycle accuracy."""
    rows = [{"arm": "obcp", "seed": s, "method": "obcp", "strategy": "obcp", "cycle": c, "bits": 1.0 + c,
             "labeled_equiv_pct": 1.0, "top1": a, "yes": 0, "asked": 0}
            for s, curve in enumerate(accs) for c, a in enumerate(curve)]
    summary = R.final_summary(pd.DataFrame(rows))
    last = np.array([curve[-1] for curve in accs])
    assert summary["top1_mean"].iloc[0] == pytest.approx(last.mean(), abs=1e-12)
    if len(last) > 1:
        assert summary["top1_std"].iloc[0] == pytest.approx(last.std(ddof=1), abs=1e-12)
    else:
        assert math.isnan(summary["top1_std"].iloc[0])
    assert summary["n_seeds"].iloc[0] == len(accs)


ABL_ARMS = {
    "obcp": ArmParams(),
    "random": ArmParams(strategy="random"),
    "onebit": ArmParams(method="onebit"),
    "fullbit": ArmParams(method="fullbit", strategy="entropy"),
    "no_nctr": ArmParams(neg_ctr=False),
    "no_ysup": ArmParams(yes_in_sup=False),
    "no_nloss": ArmParams(neg_loss=False),  # configured but not run: skipped
}
FINAL = {"obcp": (0.80, 0.82), "random": (0.75, 0.77), "onebit": (0.70, 0.74), "fullbit": (0.72, 0.72),
         "no_nctr": (0.78, 0.80), "no_ysup": (0.60, 0.64)}


@pytest.fixture
def many(tmp_path: Path) -> pd.DataFrame:
    run = {k: v for k, v in ABL_ARMS.items() if k in FINAL}
    for arm, (a, b) in FINAL.items():
        write_metrics(tmp_path, arm, 0, run[arm], [0.4, 0.5, a])
        write_metrics(tmp_path, arm, 1, run[arm], [0.4, 0.5, b])
    return R.collect(tmp_path, run, [0, 1])


def test_arm_choice(many):
    assert R.full_arm(many) == "obcp"
    assert R.main_arms(many) == ["obcp", "onebit", "fullbit"]
    assert R.strategy_arms(many) == ["obcp", "random"]
    assert R.ablation_arms(ABL_ARMS, "obcp") == ["no_nctr", "no_ysup", "no_nloss"]
    assert R.main_arms(many[many["arm"] == "onebit"]) == ["onebit"]
    assert R.full_arm(many[many["arm"] != "obcp"]) is None


def test_ablation_table(many):
    table = R.ablation_table(many, ABL_ARMS)
    assert table["arm"].tolist() == ["no_nctr", "no_ysup", "obcp"]  # absent no_nloss skipped
    assert table.loc[0, ["Adding in sup.", "Adding in ctr.", "Neg ctr.", "Neg loss."]].tolist() == ["✓", "✓", "✗", "✓"]
    assert table.loc[1, "Adding in sup."] == "✗"
    assert (table.loc[2, list(R.SWITCH_TITLES.values())] == "✓").all()
    assert table["top1_mean"].tolist() == pytest.approx([0.79, 0.62, 0.81])
    assert table["delta"].tolist() == pytest.approx([-0.02, -0.19, 0.0])
    md = R.ablation_markdown(table)
    assert "| no_nctr | ✓ | ✓ | ✗ | ✓ | 79.0 ± 1.4 (−2.0) | 2 |" in md
    assert "| obcp | ✓ | ✓ | ✓ | ✓ | 81.0 ± 1.4 | 2 |" in md
    assert R.ablation_table(many[many["arm"] != "obcp"], ABL_ARMS).empty


def test_equal_bits_table(many):
    table = R.equal_bits_table(many)
    assert table["method"].tolist() == ["onebit", "obcp", "fullbit"]
    assert table["top1_mean"].tolist() == pytest.approx([0.72, 0.81, 0.72])
    assert table["delta"].tolist() == pytest.approx([-0.09, 0.0, -0.09])
    assert table["bits_initial"].tolist() == pytest.approx([BITS[0]] * 3)
    assert table["bits_total"].tolist() == pytest.approx([BITS[2]] * 3)
    assert table["top1_std"].iloc[2] == 0.0  # fullbit: both seeds 0.72
    no_obcp = R.equal_bits_table(many[many["arm"].isin(["onebit", "fullbit"])])
    assert no_obcp["method"].tolist() == ["onebit", "fullbit"] and no_obcp["delta"].isna().all()
    md = R.equal_bits_markdown(table)
    assert "| onebit | onebit | 166.1 | 332.1 | 6.94 | 72.0 ± 2.8 | −9.0 | 2 |" in md


def test_markdown_helpers():
    assert R.pct(0.9612, 0.0041) == "96.1 ± 0.4"
    assert R.pct(math.nan) == "—"
    assert R.signed_pct(0.012) == "+1.2" and R.signed_pct(-0.008) == "−0.8" and R.signed_pct(0.0) == "0.0"
    md = R.markdown_table(pd.DataFrame({"a|b": [1, 2], "x": [0.5, math.nan]}))
    assert md.splitlines() == ["| a\\|b | x |", "|---|---|", "| 1 | 0.5 |", "| 2 | — |"]


def test_load_ledgers_concatenates_seeds(tmp_path):
    def rows(seed: int, asked: list[int]) -> pd.DataFrame:
        q = pd.DataFrame({"sample_id": range(len(asked)), "asked_class": asked, "answer": [True] * len(asked),
                          "score": 1.0, "rank": range(1, len(asked) + 1)})
        return ledger.ledger_rows(q, cycle=1, epoch=2, strategy="obcp", oracle="simulated", arm="obcp", seed=seed)

    paths = [tmp_path / "seed0" / "obcp.parquet", tmp_path / "seed1" / "obcp.parquet"]
    ledger.append(paths[0], rows(0, [1, 2]))
    ledger.append(paths[1], rows(1, [0]))
    out = R.load_ledgers({"obcp": paths})
    assert len(out["obcp"]) == 3 and sorted(out["obcp"]["seed"].unique()) == [0, 1]
    with pytest.raises(ledger.LedgerError, match="seed5"):
        R.load_ledgers({"obcp": [tmp_path / "seed5" / "obcp.parquet"]})
