"""The fig4 preset (conventional learners against ObCP at equal bits) end to end on tiny data;
dropout arms leave the other arms untouched; the supervised method and two batch strategies
under DDP (2 gloo ranks)."""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT, project_from, run, torchrun
from ddp.arms_run import digest
from pipeline.core.config import load_params, resolve_one_bit, resolve_size
from pipeline.pool import ledger
from pipeline.reporting.baselines import _crossing, match_table
from pipeline.reporting.results import from_rows

PRESETS = ROOT / "pipeline" / "presets"
ACTIVE = [sys.executable, "-m", "stages.active", "--seed", "0"]
LEDGERS = Path("reports/ledger/seed0")
ARMS = Path("data/runs/seed0/arms")
CONVENTIONAL = ("random", "entropy", "coreset", "mc_dropout", "bald", "varratio", "ll4al", "vaal", "badge", "typiclust")
# the preset's arms with tiny settings for the baselines (the budgets stay the fixture's: its stage 1)
TINY_BASELINES = {"mc_samples": 3, "ensemble": 2, "vaal_epochs": 1, "typiclust_knn": 5}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fig4_preset_validates_with_equal_bits_from_10_to_40_percent():
    p = load_params(PRESETS / "fig4.yaml")
    assert {a.strategy for a in p.arms.values() if a.method == "supervised"} == set(CONVENTIONAL)
    assert {a.method for a in p.arms.values()} == {"obcp", "onebit", "fullbit", "supervised"}
    for name, n in (("digits", 1437), ("glyphs", 3000)):
        q = load_params(PRESETS / "fig4.yaml", pool_size=n, num_classes=10)
        initial, one_bit = resolve_size(q.budget.initial, n), resolve_one_bit(q.budget, n, 10)
        share = [(initial + one_bit * k / q.query_times / math.log2(10)) / n for k in range(q.query_times + 1)]
        assert share[0] == pytest.approx(0.10, abs=0.002) and share[-1] == pytest.approx(0.40, abs=0.002), name
    fig6 = load_params(PRESETS / "fig6left.yaml", pool_size=1437, num_classes=10)
    for initial in (0.01, 0.05):  # moving I^S alone keeps |P^L| = 10 %
        b = fig6.budget.__class__(initial=initial, one_bit=None, labeled_pool=0.1)
        i = resolve_size(initial, 1437)
        assert (i + resolve_one_bit(b, 1437, 10) / math.log2(10)) / 1437 == pytest.approx(0.10, abs=0.001)


@pytest.fixture(scope="module")
def fig4_run(stage1_data, tmp_path_factory) -> Path:
    """Every arm of the fig4 preset, 2 query cycles, on the tiny digits fixture: active, evaluate, figures."""
    preset = yaml.safe_load((PRESETS / "fig4.yaml").read_text())
    project = project_from(stage1_data, tmp_path_factory.mktemp("fig4") / "p", {
        "arms": preset["arms"], "baselines": TINY_BASELINES})
    run([*ACTIVE, "--workers", "2"], project, timeout=1500)
    run([sys.executable, "-m", "stages.evaluate", "--seed", "0"], project)
    run([sys.executable, "-m", "stages.figures"], project)
    return project


def test_fig4_preset_runs_end_to_end(fig4_run):
    project = fig4_run
    arms = yaml.safe_load((project / "params.yaml").read_text())["arms"]
    results = pd.read_csv(project / "reports/results.csv")
    assert set(results["arm"]) == set(arms)
    final = results[results["cycle"] == results["cycle"].max()]
    bits = final.groupby("method")["bits"].mean()
    # equal bits: a full label costs log2 C, so full-label arms are within one label of the one-bit ones
    assert abs(bits["supervised"] - bits["obcp"]) <= math.log2(10) + 1e-6
    assert bits["supervised"] == pytest.approx(bits["fullbit"])
    for arm, a in arms.items():
        led = ledger.read(project / LEDGERS / f"{arm}.parquet")
        assert (led["kind"] == ("full" if a["method"] in ("supervised", "fullbit") else "one_bit")).all(), arm
        full = a["method"] in ("supervised", "fullbit")  # a label is asked once; a yes/no once per class
        assert not led.duplicated(["sample_id"] if full else ["sample_id", "asked_class"]).any(), arm
    cycle = project / ARMS
    assert (cycle / "sup_varratio/cycle_002/members/member_1.pt").is_file()
    assert (cycle / "sup_ll4al/cycle_002/loss_head.pt").is_file()
    sup_log = pd.read_csv(cycle / "sup_entropy/cycle_001/log.csv")
    assert sorted(c for c in sup_log.columns if c.startswith("loss_")) == ["loss_sup", "loss_total"]
    ll_log = pd.read_csv(cycle / "sup_ll4al/cycle_001/log.csv")
    assert "loss_lpl" in ll_log.columns and (ll_log["loss_lpl"] > 0).all()
    figs = project / "reports/figures"
    assert (figs / "conventional.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = pd.read_csv(figs / "conventional.csv")
    assert set(curves["arm"]) == set(arms)
    match = pd.read_csv(figs / "conventional_match.csv")
    assert set(match["arm"]) == {a for a, v in arms.items() if v["method"] == "supervised"}
    index = (project / "reports/index.md").read_text()
    assert "Labeled % to reach ObCP (Fig. 4)" in index and "conventional.png" in index


def test_dropout_arms_leave_the_other_arms_byte_identical(fig4_run, stage1_data, tmp_path):
    """The same non-dropout arms alone, without the dropout (and every other new) arm beside them:
    the same ledgers, byte for byte, and the same weights."""
    preset = yaml.safe_load((PRESETS / "fig4.yaml").read_text())
    alone = {a: preset["arms"][a] for a in ("obcp", "fullbit", "sup_entropy")}
    project = project_from(stage1_data, tmp_path / "alone", {"arms": alone, "baselines": TINY_BASELINES})
    run([*ACTIVE, "--workers", "2"], project)
    for arm in alone:
        assert sha(project / LEDGERS / f"{arm}.parquet") == sha(fig4_run / LEDGERS / f"{arm}.parquet"), arm
        for k in (1, 2):
            a, b = (torch.load(p / ARMS / arm / f"cycle_00{k}/checkpoint.pt", weights_only=False)
                    for p in (project, fig4_run))
            assert digest(a["model"]) == digest(b["model"]), (arm, k)
    # ...while the dropout arms did train with dropout: their stage-2 weights differ from the same
    # method and selection trained without it (mc_dropout's and entropy's first query both rank by entropy
    # of the same stage-1 model, modulo the dropout samples, so the difference is the training)
    drop = torch.load(fig4_run / ARMS / "sup_mc_dropout/cycle_001/checkpoint.pt", weights_only=False)
    plain = torch.load(fig4_run / ARMS / "sup_entropy/cycle_001/checkpoint.pt", weights_only=False)
    assert digest(drop["model"]) != digest(plain["model"])


def test_match_table_interpolates_the_budget_each_arm_needs():
    rows = []
    for seed in (0, 1):
        for cycle, (pct, top1) in enumerate([(10, 0.50), (20, 0.80), (30, 0.90)]):
            rows.append({"arm": "obcp", "seed": seed, "method": "obcp", "strategy": "obcp", "cycle": cycle,
                         "bits": pct, "labeled_equiv_pct": pct, "top1": top1})
        for cycle, (pct, top1) in enumerate([(10, 0.50), (20, 0.60), (30, 0.70), (40, 0.90)]):
            rows.append({"arm": "sup", "seed": seed, "method": "supervised", "strategy": "entropy", "cycle": cycle,
                         "bits": pct, "labeled_equiv_pct": pct, "top1": top1})
        for cycle, (pct, top1) in enumerate([(10, 0.50), (40, 0.70)]):
            rows.append({"arm": "weak", "seed": seed, "method": "supervised", "strategy": "random", "cycle": cycle,
                         "bits": pct, "labeled_equiv_pct": pct, "top1": top1})
    t = match_table(from_rows(rows)).set_index("arm")
    assert t.loc["sup", "obcp_pct"] == 20 and t.loc["sup", "obcp_top1"] == pytest.approx(0.80)
    assert t.loc["sup", "needed_pct"] == pytest.approx(35.0)  # 0.70 at 30 %, 0.90 at 40 %: 0.80 halfway
    assert t.loc["sup", "ratio"] == pytest.approx(1.75)
    assert math.isnan(t.loc["weak", "needed_pct"])
    assert _crossing(pd.Series([1.0, 2.0]).to_numpy(), pd.Series([0.9, 0.95]).to_numpy(), 0.5) == 1.0


def test_supervised_method_and_two_batch_strategies_under_ddp(stage1_data, tmp_path):
    """2 gloo ranks: the supervised method (random), and coreset and badge, whose candidates are
    gathered on rank 0: identical weights on both ranks after every retrain, rank 0 alone writes,
    each ledger holds its cycle's picks once."""
    arms = {"sup_random": {"method": "supervised", "strategy": "random"},
            "sup_coreset": {"method": "supervised", "strategy": "coreset"},
            "sup_badge": {"method": "supervised", "strategy": "badge"}}
    project = project_from(stage1_data, tmp_path / "ddp", {
        "arms": arms, "query_times": 1, "train": {"stage2_epochs": 1}, "ddp": {"backend": "gloo"}})
    torchrun(2, [str(ROOT / "tests/ddp/arms_run.py"), str(project), str(tmp_path / "out")], ROOT)
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["states"]) == len(arms) and ranks[0]["states"] == ranks[1]["states"]
    assert ranks[1]["writes"] == []
    for arm, state in zip(arms, ranks[0]["states"]):
        cycle = project / ARMS / arm / "cycle_001"
        assert digest(torch.load(cycle / "checkpoint.pt", weights_only=False)["model"]) == state["model"], arm
        scores = pd.read_parquet(cycle / "scores.parquet")
        led = ledger.read(project / LEDGERS / f"{arm}.parquet")
        manifest = json.loads((cycle / "manifest.json").read_text())
        assert len(led) == manifest["asked"] == int(scores["selected"].sum()) > 0, arm
        assert set(led["sample_id"]) == set(scores.loc[scores["selected"], "sample_id"]), arm
        if arm != "sup_random":  # a batch strategy ranks exactly its k picks (k, k−1, …), NaN for the rest
            assert scores["score"].notna().sum() == manifest["asked"], arm


def test_fig4_study_claims_follow_its_rule(tmp_path):
    """The fig4 spec's claims from a run table: obcp at 25 % against each conventional arm at 40 %,
    at equal bits, and Fig. 6 (left)'s smallest against largest I^S, paired by seed."""
    from pipeline.tools.study.fig4 import claims, section

    rows = []
    for seed in range(5):
        for cycle in range(7):
            pct = 10 + 5 * cycle
            rows.append({"dataset": "digits", "block": "fig4", "variant": "preset", "query_times": 6, "arm": "obcp",
                         "method": "obcp", "strategy": "obcp", "seed": seed, "cycle": cycle, "bits": pct,
                         "labeled_equiv_pct": pct, "top1": 0.5 + 0.05 * cycle + 0.001 * seed})
            rows.append({"dataset": "digits", "block": "fig4", "variant": "preset", "query_times": 6, "arm": "sup_x",
                         "method": "supervised", "strategy": "coreset", "seed": seed, "cycle": cycle, "bits": pct,
                         "labeled_equiv_pct": pct, "top1": 0.5 + 0.02 * cycle + 0.003 * seed})
        for variant, initial, top1 in (("i1", 1.0, 0.90), ("i5", 5.0, 0.80 + 0.02 * seed)):
            for cycle in range(5):
                rows.append({"dataset": "digits", "block": "fig6left", "variant": variant, "query_times": 4,
                             "arm": "obcp", "method": "obcp", "strategy": "obcp", "seed": seed, "cycle": cycle,
                             "bits": 1.0, "labeled_equiv_pct": initial if cycle == 0 else 10.0, "top1": top1})
    runs = pd.DataFrame(rows)
    t = claims(runs).set_index("claim")
    low = t.loc["obcp at 25 % > coreset at 40 % (Fig. 4)"]
    # obcp at cycle 3: 0.65 + s/1000; sup_x at cycle 6: 0.62 + 3s/1000 → 0.03 − 2s/1000, all > 0
    assert low["diff_mean"] == pytest.approx(0.03 - 0.002 * 2) and low["verdict"] == "holds" and low["n"] == 5
    eq = t.loc["obcp (40 %) ≥ coreset (40 %), the same budget (Fig. 4)"]
    assert eq["diff_mean"] == pytest.approx(0.18 - 0.004) and eq["verdict"] == "holds"
    f6 = t.loc["I^S 1 % ≥ I^S 5 % at a fixed budget (Fig. 6 left)"]
    assert f6["diff_mean"] == pytest.approx(0.10 - 0.04) and f6["verdict"] == "holds"
    lines = section(runs, tmp_path / "fig4", tmp_path)
    assert (tmp_path / "fig4/claims.csv").is_file() and (tmp_path / "fig4/figures/fig4_digits.png").is_file()
    assert (tmp_path / "fig4/figures/fig6left_digits.png").is_file()
    assert any("obcp at 25 % > coreset at 40 %" in line for line in lines)


def test_a_pool_with_nothing_left_unlabeled_still_trains_and_scores(stage1_data):
    """A one-bit budget can label the whole pool (the fig4 preset's 40 % on digits: most answers
    are yes): then an epoch is one pass over the labeled set, and a query has no candidate."""
    import numpy as np

    from pipeline.core.context import open_run
    from pipeline.loop.poolpass import score_pool
    from pipeline.loop.runs import fresh_state, loop_config
    from pipeline.loop.train import load_checkpoint, pool_view, train_epochs
    from pipeline.method.methods import ObCP
    from pipeline.pool.pools import initial_pool
    from pipeline.core.config import ArmParams, LossParams, OnebitParams
    from pipeline.core.registry import STRATEGIES
    from pipeline.loop.runs import stage1_meta

    ctx = open_run(stage1_data / "params.yaml", 0, root=stage1_data, names=False)
    pool = initial_pool(ctx.train_labels, ctx.num_samples, class_balanced=False, seed=0)  # everything labeled
    assert (pool["status"] != "unlabeled").all()
    state = fresh_state(ctx)
    load_checkpoint(stage1_data / "data/runs/seed0/stage1/checkpoint.pt", state, expect=stage1_meta(ctx))
    start = state.epoch
    plan = ObCP().loss_plan(ArmParams(), LossParams(), OnebitParams(), start)
    rows = train_epochs(state, pool_view(pool, ctx.num_classes), plan, loop_config(ctx), until_epoch=start + 1,
                        log=None, progress=False)
    assert rows[0]["steps"] == -(-ctx.num_samples // ctx.params.train.batch_size) and state.epoch == start + 1
    assert math.isfinite(rows[0]["loss_total"])
    frame = score_pool(state.model, STRATEGIES.get("entropy"), np.zeros(0, np.int64), 5, denied=lambda b: b,
                       run_pass=lambda *a, **k: iter(()))
    assert frame.empty and list(frame.columns) == ["sample_id", "score", "asked_class", "pred_class", "pred_prob"]
