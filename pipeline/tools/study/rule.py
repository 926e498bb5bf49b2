"""The pre-registered rule that picks the defaults: a pure function of the run table.

For every variant of the rule's block: the final test top-1 (last cycle) of the rule's arm,
averaged over the spec's seeds within each dataset, then over the datasets with equal
weight. The variant with the highest average is picked; a variant within 0.1 percentage
points of the highest counts as tied, and a tie goes to the variant listed first in the spec. The rule decides only when every variant has a result for every dataset
and seed; until then it picks nothing. Every arm then runs with the picked variant's
settings (variants set params for all arms alike; the spec forbids per-arm overrides).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from pipeline.tools.study.table import final_points

TIE = 0.001  # averages within 0.1 percentage points of the best count as equal (the first listed wins)


@dataclass(frozen=True)
class Pick:
    """The rule's outcome: the picked variant (None while undecided), why, and the ranking.

    ``ranking`` columns: ``variant``, one per dataset (mean over seeds of the final top-1),
    ``mean`` (over datasets), ``seeds`` (results found / needed), in spec order.
    """

    variant: str | None
    reason: str
    ranking: pd.DataFrame


def pick(runs: pd.DataFrame, *, block: str, arm: str, variants: Sequence[str], datasets: Sequence[str],
         seeds: Sequence[int]) -> Pick:
    """Apply the rule (module docstring) to the run table `runs` (`pipeline.tools.study.table`)."""
    final = final_points(runs[(runs["block"] == block) & (runs["arm"] == arm)]) if len(runs) else runs
    need = len(datasets) * len(seeds)
    rows, incomplete = [], []
    for variant in variants:
        row: dict = {"variant": variant}
        found = 0
        for dataset in datasets:
            g = final[(final["variant"] == variant) & (final["dataset"] == dataset)] if len(final) else final
            g = g[g["seed"].isin(list(seeds))] if len(g) else g
            found += int(g["seed"].nunique()) if len(g) else 0
            row[dataset] = float(g["top1"].mean()) if len(g) else float("nan")
        row["mean"] = float(pd.Series([row[d] for d in datasets]).mean(skipna=False))
        row["seeds"] = f"{found}/{need}"
        if found < need:
            incomplete.append(f"{variant} ({found}/{need})")
        rows.append(row)
    ranking = pd.DataFrame(rows, columns=["variant", *datasets, "mean", "seeds"])
    if incomplete:
        return Pick(None, f"not decided: results missing for {', '.join(incomplete)} "
                          f"(dataset × seed results of arm {arm!r} in block {block!r})", ranking)
    best = ranking["mean"].max()
    winner = next(r.variant for r in ranking.itertuples() if r.mean >= best - TIE)
    return Pick(winner, f"{winner}: highest mean final top-1 of arm {arm!r} over "
                        f"{len(datasets)} dataset(s) × {len(seeds)} seeds ({100 * best:.2f} %)", ranking)
