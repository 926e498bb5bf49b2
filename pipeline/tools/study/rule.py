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


@dataclass(frozen=True)
class ArmPick:
    """A rule of kind `arms`: the arm it picks (the reference while no candidate qualifies,
    None while undecided), why, and the ranking.

    ``ranking`` columns: ``arm``, one per dataset (mean over seeds of the final top-1),
    ``mean`` (over datasets), ``diff_mean``, ``lo``, ``hi``, ``n`` (the arm minus the reference,
    paired by dataset and seed, pooled; 95 % t-interval), ``seeds`` (found / needed), ``role``
    (reference | candidate | other).
    """

    arm: str | None
    reason: str
    ranking: pd.DataFrame


def pick_arm(runs: pd.DataFrame, *, block: str, reference: str, candidates: Sequence[str], datasets: Sequence[str],
             seeds: Sequence[int]) -> ArmPick:
    """A rule of kind `arms` on the run table: among `candidates`, the arm with the highest mean
    final top-1 (over the seeds of each dataset, then over `datasets` with equal weight; a tie
    within 0.1 percentage points goes to the one listed first) replaces `reference` when its
    final top-1 minus the reference's, paired by dataset and seed and pooled over every pair,
    has a 95 % t-interval above 0; otherwise the reference stays. Decides only when every arm
    of the block has a result for every dataset and seed. Every other arm of the block is
    ranked too (role `other`), for the record."""
    from pipeline.tools.study.report import t_interval

    final = final_points(runs[runs["block"] == block]) if len(runs) else runs
    final = final[final["dataset"].isin(list(datasets)) & final["seed"].isin(list(seeds))] if len(final) else final
    present = list(dict.fromkeys(final["arm"])) if len(final) else []
    arms = [reference, *candidates, *[a for a in present if a != reference and a not in candidates]]
    need = len(datasets) * len(seeds)
    ref = final[final["arm"] == reference].set_index(["dataset", "seed"])["top1"] if len(final) else pd.Series(dtype=float)
    rows, incomplete = [], []
    for arm in arms:
        mine = final[final["arm"] == arm] if len(final) else final
        row: dict = {"arm": arm, "role": "reference" if arm == reference else
                     "candidate" if arm in candidates else "other"}
        for dataset in datasets:
            g = mine[mine["dataset"] == dataset] if len(mine) else mine
            row[dataset] = float(g["top1"].mean()) if len(g) else float("nan")
        row["mean"] = float(pd.Series([row[d] for d in datasets]).mean(skipna=False))
        got = mine.set_index(["dataset", "seed"])["top1"] if len(mine) else pd.Series(dtype=float)
        both = got.index.intersection(ref.index)
        mean, _, lo, hi = t_interval((got.loc[both] - ref.loc[both]).to_numpy()) if arm != reference \
            else (float("nan"),) * 4
        row.update({"diff_mean": mean, "lo": lo, "hi": hi, "n": int(len(both)) if arm != reference else 0,
                    "seeds": f"{len(got)}/{need}"})
        if len(got) < need:
            incomplete.append(f"{arm} ({len(got)}/{need})")
        rows.append(row)
    ranking = pd.DataFrame(rows, columns=["arm", "role", *datasets, "mean", "diff_mean", "lo", "hi", "n", "seeds"])
    if incomplete:
        return ArmPick(None, f"not decided: results missing for {', '.join(incomplete)} (dataset × seed results "
                             f"in block {block!r})", ranking)
    cands = ranking[ranking["role"] == "candidate"]
    best_mean = cands["mean"].max()
    best = next(r for r in cands.itertuples() if r.mean >= best_mean - TIE)
    if best.lo > 0:
        return ArmPick(best.arm, f"{best.arm}: the best candidate ({100 * best.mean:.2f} % mean final top-1), "
                                 f"{100 * best.diff_mean:+.2f} points over {reference} with a 95 % interval "
                                 f"[{100 * best.lo:+.2f}, {100 * best.hi:+.2f}] above 0 over {best.n} pairs", ranking)
    return ArmPick(reference, f"{reference} stays: the best candidate {best.arm} ({100 * best.mean:.2f} % mean final "
                              f"top-1) is {100 * best.diff_mean:+.2f} points from {reference}, 95 % interval "
                              f"[{100 * best.lo:+.2f}, {100 * best.hi:+.2f}] over {best.n} pairs, not above 0", ranking)
