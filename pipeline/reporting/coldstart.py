"""Cold start and the answers' worth, per arm: the first cycle against stage 1, yes-rate and bits.

With few labels the first query decides a lot: a rule whose first answers are mostly *no*
(hard negatives) can leave the model below where stage 1 left it. `first_cycle` compares
every arm's test top-1 after cycle 1 with the same seed's stage-1 checkpoint (cycle 0 of
the results table: every arm of a seed starts from the same one), paired by seed, and
flags an arm whose mean change is negative. It also gives each arm's yes-rate and answer
entropy (bits of information per one-bit question, `pipeline.selection.diagnostics`) in
cycle 1 and over all cycles. Reads only the results table (`reports/results.csv`).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.reporting.results import arms_in_order, markdown_table, seed_std, signed_pct

FLAG = "⚠ loses accuracy in cycle 1"
COLUMNS = ["arm", "strategy", "seeds", "stage1_top1", "cycle1_top1", "delta_mean", "delta_std", "seeds_lost",
           "yes_rate_c1", "answer_bits_c1", "yes_rate", "answer_bits", "flag"]


def _mean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def first_cycle(results: pd.DataFrame) -> pd.DataFrame:
    """One row per arm (`COLUMNS`): stage-1 and cycle-1 top-1 (means over seeds), the paired
    change cycle 1 − stage 1 (mean, std ddof=1, seeds where it is < 0), the yes-rate and
    answer bits of cycle 1 and of all cycles (means over seeds), and `FLAG` when the mean
    change is < 0. Arms without a cycle 1 are left out."""
    rows = []
    for arm in arms_in_order(results):
        r = results[results["arm"] == arm]
        s1 = r[r["cycle"] == 0].set_index("seed")["top1"]
        c1 = r[r["cycle"] == 1].set_index("seed")
        seeds = sorted(set(s1.index) & set(c1.index))
        if not seeds:
            continue
        delta = c1.loc[seeds, "top1"] - s1.loc[seeds]
        asked = r[r["cycle"] >= 1]
        mean = float(delta.mean())
        rows.append({
            "arm": arm, "strategy": str(r["strategy"].iloc[0]), "seeds": len(seeds),
            "stage1_top1": float(s1.loc[seeds].mean()), "cycle1_top1": float(c1.loc[seeds, "top1"].mean()),
            "delta_mean": mean, "delta_std": seed_std(delta), "seeds_lost": int((delta < 0).sum()),
            "yes_rate_c1": _mean(c1.loc[seeds].get("selection.yes_rate", pd.Series(dtype=float))),
            "answer_bits_c1": _mean(c1.loc[seeds].get("selection.answer_bits", pd.Series(dtype=float))),
            "yes_rate": _mean(asked.get("selection.yes_rate", pd.Series(dtype=float))),
            "answer_bits": _mean(asked.get("selection.answer_bits", pd.Series(dtype=float))),
            "flag": FLAG if mean < 0 else "",
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def _pct(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _num(v: float, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def first_cycle_markdown(table: pd.DataFrame) -> str:
    """`first_cycle` as a markdown table (accuracies in %, changes in percentage points)."""
    view = pd.DataFrame({
        "arm": table["arm"],
        "strategy": table["strategy"],
        "stage 1 top-1 %": [_pct(v) for v in table["stage1_top1"]],
        "cycle 1 top-1 %": [_pct(v) for v in table["cycle1_top1"]],
        "change (pp)": [signed_pct(m) + ("" if np.isnan(s) else f" ± {100 * s:.1f}")
                        for m, s in zip(table["delta_mean"], table["delta_std"])],
        "seeds lost": [f"{lost}/{n}" for lost, n in zip(table["seeds_lost"], table["seeds"])],
        "yes-rate c1": [_num(v) for v in table["yes_rate_c1"]],
        "bits/question c1": [_num(v) for v in table["answer_bits_c1"]],
        "yes-rate all": [_num(v) for v in table["yes_rate"]],
        "bits/question all": [_num(v) for v in table["answer_bits"]],
        "flag": table["flag"],
    })
    return markdown_table(view)


def section(results: pd.DataFrame) -> tuple[str, str]:
    """The report page's section (title, body) on the first cycle and the answers."""
    table = first_cycle(results)
    flagged = table.loc[table["flag"] != "", "arm"].tolist()
    verdict = (f"Flagged ({FLAG}): {', '.join(flagged)}." if flagged
               else "No arm loses accuracy in cycle 1 on average.")
    body = (first_cycle_markdown(table)
            + "\nEvery arm of a seed starts from the same stage-1 checkpoint; the change is cycle 1's test "
              "top-1 minus stage 1's, paired by seed (mean ± std over seeds, ddof=1), and *seeds lost* counts "
              "the seeds where it is negative. Yes-rate and bits/question (the answers' entropy: at most 1 bit "
              "for a yes/no question, log2 C for a full label) in cycle 1 and over all cycles, means over seeds. "
              f"{verdict} (pipeline/reporting/coldstart.py)\n")
    return "Cold start: cycle 1 against stage 1", body
