"""Paper Fig. 4 against the conventional active learners, and the table behind its claim.

The ObCP paper's headline: "ObCP at 25 % labels beats the others at 40 %" (CIFAR-10: 92.6 %
with 25 % against SRAAL's 92.3 % with 40 %). Measured here from the results table:

- :func:`fig4`: test top-1 against labeled-equivalent %, one line per arm (ObCP, Hu et
  al.'s one-bit, ObCP's training with full labels, and every conventional learner: method
  ``supervised``), mean ± std over seeds;
- :func:`match_table`: for each conventional arm, the labeled-equivalent % at which its mean
  curve first reaches ObCP's mean accuracy at ObCP's lowest budget (its first query cycle),
  linearly interpolated between cycles; "not reached" when it never does within its budgets.

Both only appear in the report when the results have a ``supervised`` arm (the fig4 preset,
`obcp preset fig4`); the default run's report does not change.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.io import write_csv, write_text
from pipeline.reporting import plots
from pipeline.reporting import results as res

CONVENTIONAL = "supervised"  # the method of the conventional learners
MATCH_COLUMNS = ["arm", "strategy", "n_seeds", "obcp_pct", "obcp_top1", "needed_pct", "ratio",
                 "start_pct", "start_top1", "final_pct", "final_top1", "final_top1_std"]


def conventional_arms(results: pd.DataFrame) -> list[str]:
    """Arms of method ``supervised``, in results order."""
    info = results.drop_duplicates("arm")
    return [a for a in res.arms_in_order(results) if info.loc[info["arm"] == a, "method"].iloc[0] == CONVENTIONAL]


def fig4_arms(results: pd.DataFrame) -> list[str]:
    """ObCP, one-bit and full-bit (paper Table 3's arms), the paper's Eq. 7 where ObCP's arm
    uses another strategy (`eq7`), then every conventional arm."""
    eq7 = res.eq7_arm(results)
    return res.main_arms(results) + ([eq7] if eq7 else []) + conventional_arms(results)


def fig4(results: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Paper Fig. 4: top-1 vs labeled-equivalent %, one line per arm of :func:`fig4_arms`,
    mean ± std band over seeds; the CSV beside it has `plots.CURVE_COLUMNS`."""
    return plots._curve_figure(results, fig4_arms(results), Path(out),
                               "ObCP vs conventional active learners at equal bits (Fig. 4)")


def _crossing(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """The smallest x where the piecewise-linear curve (x, y), x increasing, reaches target; NaN if never."""
    if len(x) == 0:
        return math.nan
    if y[0] >= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] >= target:
            return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
    return math.nan


def match_table(results: pd.DataFrame) -> pd.DataFrame:
    """For each conventional arm: the labeled-equivalent % it needs to reach ObCP's mean top-1
    at ObCP's lowest query budget (columns `MATCH_COLUMNS`; percentages in % of the train set,
    accuracies as fractions). ``ratio`` = needed_pct / obcp_pct. Empty without an obcp or a
    conventional arm."""
    full = res.full_arm(results)
    arms = conventional_arms(results)
    if full is None or not arms:
        return pd.DataFrame(columns=MATCH_COLUMNS)
    table = plots.curves(results, [full, *arms])
    ob = table[(table["arm"] == full) & (table["cycle"] > 0)].sort_values("cycle")
    if ob.empty:
        return pd.DataFrame(columns=MATCH_COLUMNS)
    obcp_pct, obcp_top1 = float(ob["labeled_equiv_pct"].iloc[0]), float(ob["top1"].iloc[0])
    info = results.drop_duplicates("arm").set_index("arm")
    rows = []
    for arm in arms:
        g = table[table["arm"] == arm].sort_values("labeled_equiv_pct")
        needed = _crossing(g["labeled_equiv_pct"].to_numpy(), g["top1"].to_numpy(), obcp_top1)
        first, last = g.iloc[0], g.iloc[-1]
        rows.append({"arm": arm, "strategy": info.loc[arm, "strategy"], "n_seeds": int(g["n_seeds"].min()),
                     "obcp_pct": obcp_pct, "obcp_top1": obcp_top1, "needed_pct": needed,
                     "ratio": needed / obcp_pct if obcp_pct > 0 else math.nan,
                     "start_pct": float(first["labeled_equiv_pct"]), "start_top1": float(first["top1"]),
                     "final_pct": float(last["labeled_equiv_pct"]), "final_top1": float(last["top1"]),
                     "final_top1_std": float(last["top1_std"])})
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)


def match_markdown(table: pd.DataFrame) -> str:
    """`match_table` as markdown (percent)."""
    if table.empty:
        return "No obcp arm or no conventional (`supervised`) arm in the results.\n"
    head = ("| arm | strategy | labeled % to reach obcp's top-1 | × obcp's % | final labeled % | final top-1 % |\n"
            "|---|---|---|---|---|---|\n")
    lines = []
    for r in table.itertuples():
        needed = (f"{r.needed_pct:.1f}" if not math.isnan(r.needed_pct)
                  else f"not reached (≤ {r.final_pct:.1f})")
        ratio = f"{r.ratio:.2f}" if not math.isnan(r.ratio) else "—"
        lines.append(f"| {r.arm} | {r.strategy} | {needed} | {ratio} | {r.final_pct:.1f} | "
                     f"{res.pct(r.final_top1, r.final_top1_std)} |")
    first = table.iloc[0]
    at_start = table[table["needed_pct"] <= table["start_pct"]]
    note = ""
    if len(at_start):
        note = (f" {len(at_start)} of {len(table)} arms reach it at their first point ({first['start_pct']:.1f} %, the "
                f"stage-1 checkpoint every arm of a seed shares, {100 * first['start_top1']:.2f} % top-1): ObCP's first "
                "query cycle ended below stage 1.")
    return (head + "\n".join(lines) + f"\n\nObCP reaches {100 * first['obcp_top1']:.2f} % top-1 at "
            f"{first['obcp_pct']:.1f} % labeled-equivalent (its first query cycle; mean over seeds). Each row: the "
            "labeled-equivalent % at which the arm's mean curve first reaches that accuracy, linearly interpolated "
            f"between its cycles.{note}\n")


def match(results: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write the match table as ``out`` (.csv) and its markdown (.md); returns the .md path."""
    out = Path(out)
    table = match_table(results)
    write_csv(out.with_suffix(".csv"), table)
    write_text(out.with_suffix(".md"), match_markdown(table))
    return out.with_suffix(".md")
