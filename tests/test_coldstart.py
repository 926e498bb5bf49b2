"""The report's cold-start table: cycle 1 against stage 1, paired by seed, flagging a loss."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.reporting import coldstart
from pipeline.reporting.results import from_rows


def point(arm: str, seed: int, cycle: int, top1: float, yes_rate: float | None = None) -> dict:
    row = {"arm": arm, "seed": seed, "method": "obcp", "strategy": arm, "cycle": cycle, "bits": 100.0 + cycle,
           "labeled_equiv_pct": 1.0, "top1": top1, "yes": None, "asked": None,
           "yes_in_sup": True, "yes_in_ctr": True, "neg_ctr": True, "neg_loss": True}
    if yes_rate is not None:
        row["selection.yes_rate"] = yes_rate
        row["selection.answer_bits"] = float(-(yes_rate * np.log2(yes_rate) + (1 - yes_rate) * np.log2(1 - yes_rate)))
    return row


def test_first_cycle_pairs_by_seed_and_flags_a_loss():
    rows = []
    for seed, s1 in ((0, 0.80), (1, 0.70)):
        rows += [point("good", seed, 0, s1), point("good", seed, 1, s1 + 0.05, 0.5), point("good", seed, 2, 0.9, 0.9)]
        rows += [point("bad", seed, 0, s1), point("bad", seed, 1, s1 - 0.02 * (seed + 1), 0.2),
                 point("bad", seed, 2, 0.9, 0.6)]
    table = coldstart.first_cycle(from_rows(rows))
    good, bad = table.set_index("arm").loc["good"], table.set_index("arm").loc["bad"]
    assert good["delta_mean"] == pytest.approx(0.05) and good["delta_std"] == pytest.approx(0.0, abs=1e-12)
    assert good["stage1_top1"] == pytest.approx(0.75) and good["seeds_lost"] == 0 and good["flag"] == ""
    assert bad["delta_mean"] == pytest.approx(-0.03) and bad["seeds_lost"] == 2 and bad["flag"] == coldstart.FLAG
    assert good["yes_rate_c1"] == pytest.approx(0.5) and good["yes_rate"] == pytest.approx(0.7)
    assert good["answer_bits_c1"] == pytest.approx(1.0)
    title, body = coldstart.section(from_rows(rows))
    assert "cycle 1" in title and "| bad | bad | 75.0 | 72.0 | −3.0 ± 1.4 | 2/2 |" in body
    assert f"Flagged ({coldstart.FLAG}): bad." in body
