"""The fig4 study's own results (spec ``pipeline/tools/study/fig4.yaml``): the Fig. 4 curves and the
labeled-% table per dataset, Fig. 6 (left), and the claims its rule judges (``claims.csv``).

The rule (quoted in the report) fixes the claims before any cell ran; this module only measures
them: for each conventional arm X (method ``supervised``),

1. "obcp at 25 % > X at 40 %": obcp's top-1 after cycle `LOW_CYCLE` against X's after the last;
2. "obcp ≥ X at equal bits": both after the last cycle;

and, from block ``fig6left``, 3. "I^S 1 % ≥ I^S 5 %": obcp's final top-1 with the smallest
against the largest I^S. Paired by seed; the 95 % t-interval and the rule's verdict.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipeline.core.io import write_csv
from pipeline.reporting import baselines, plots
from pipeline.reporting.results import final_points, seed_std
from pipeline.tools.study.report import t_interval

LOW_CYCLE = 3  # 25 % labeled-equivalent in the fig4 preset (10 % + 3 × 5 %)
CLAIM_COLUMNS = ["dataset", "claim", "kind", "a", "b", "a_pct", "b_pct", "n", "diff_mean", "diff_std", "lo", "hi",
                 "verdict"]


def verdict(kind: str, mean: float, lo: float, hi: float) -> str:
    """The study's rule on a paired difference A − B."""
    if kind == ">":
        return "holds" if lo > 0 else "fails" if hi < 0 else "not shown"
    return "fails" if hi < 0 else "holds" if mean >= 0 else "cannot tell"


def _at(runs: pd.DataFrame, arm: str, cycle: int) -> pd.DataFrame:
    return runs[(runs["arm"] == arm) & (runs["cycle"] == cycle)]


def _claim(dataset: str, claim: str, kind: str, a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> dict:
    both = a[["seed", "top1"]].merge(b[["seed", "top1"]], on="seed", suffixes=("_a", "_b"))
    mean, sd, lo, hi = t_interval((both["top1_a"] - both["top1_b"]).to_numpy())
    return {"dataset": dataset, "claim": claim, "kind": kind, "a": names[0], "b": names[1],
            "a_pct": float(a["labeled_equiv_pct"].mean()), "b_pct": float(b["labeled_equiv_pct"].mean()),
            "n": len(both), "diff_mean": mean, "diff_std": sd, "lo": lo, "hi": hi,
            "verdict": verdict(kind, mean, lo, hi) if len(both) > 1 else "not run"}


def claims(runs: pd.DataFrame) -> pd.DataFrame:
    """The rule's claims (`CLAIM_COLUMNS`; differences are fractions) from the run table."""
    rows = []
    for dataset, d in runs.groupby("dataset", sort=False):
        f4 = d[d["block"] == "fig4"]
        if len(f4):
            last = int(f4["cycle"].max())
            conventional = baselines.conventional_arms(f4)
            for arm in conventional:
                strategy = f4.loc[f4["arm"] == arm, "strategy"].iloc[0]
                low, high = _at(f4, "obcp", LOW_CYCLE), _at(f4, arm, last)
                rows.append(_claim(dataset, f"obcp at {low['labeled_equiv_pct'].mean():.0f} % > {strategy} at "
                                   f"{high['labeled_equiv_pct'].mean():.0f} % (Fig. 4)", ">", low, high,
                                   ("obcp", arm)))
            for arm in conventional:
                strategy = f4.loc[f4["arm"] == arm, "strategy"].iloc[0]
                a, b = _at(f4, "obcp", last), _at(f4, arm, last)
                # obcp may not spend its whole budget: once every sample is labeled nothing is left to ask
                rows.append(_claim(dataset, f"obcp ({a['labeled_equiv_pct'].mean():.0f} %) ≥ {strategy} "
                                   f"({b['labeled_equiv_pct'].mean():.0f} %), the same budget (Fig. 4)", "≥", a, b,
                                   ("obcp", arm)))
        f6 = final_points(d[(d["block"] == "fig6left") & (d["arm"] == "obcp")])
        if f6["variant"].nunique() > 1:
            first = d[(d["block"] == "fig6left") & (d["cycle"] == 0)].groupby("variant")["labeled_equiv_pct"].mean()
            small, large = first.idxmin(), first.idxmax()
            a, b = f6[f6["variant"] == small], f6[f6["variant"] == large]
            rows.append(_claim(dataset, f"I^S {first[small]:.0f} % ≥ I^S {first[large]:.0f} % at a fixed budget "
                               "(Fig. 6 left)", "≥", a, b, (small, large)))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def initial_share(runs: pd.DataFrame) -> pd.DataFrame:
    """Fig. 6 (left) per dataset: ``dataset, arm, initial_pct`` (I^S, % of the train set, from the
    stage-1 point), ``top1, top1_std, n_seeds`` (final), one row per variant of block fig6left."""
    rows = []
    f6 = runs[runs["block"] == "fig6left"]
    for (dataset, variant, arm), g in f6.groupby(["dataset", "variant", "arm"], sort=False):
        final = final_points(g)
        rows.append({"dataset": dataset, "arm": arm, "variant": variant,
                     "initial_pct": round(float(g.loc[g["cycle"] == 0, "labeled_equiv_pct"].mean()), 2),
                     "top1": float(final["top1"].mean()), "top1_std": seed_std(final["top1"]),
                     "n_seeds": int(final["seed"].nunique())})
    return pd.DataFrame(rows, columns=["dataset", "arm", "variant", "initial_pct", "top1", "top1_std", "n_seeds"])


def _rel(path: Path, base: Path) -> str:
    import os

    return Path(os.path.relpath(path, base)).as_posix()


def section(runs: pd.DataFrame, tables: Path, out_dir: Path) -> list[str]:
    """The report's section: per dataset the Fig. 4 figure and table, Fig. 6 (left), then the claims;
    writes ``claims.csv`` and the figures under `tables`."""
    figs = tables / "figures"
    lines = ["## Fig. 4, Fig. 6 (left) and the paper's claims", ""]
    table = claims(runs)
    write_csv(tables / "claims.csv", table)
    share = initial_share(runs)
    for dataset in dict.fromkeys(runs["dataset"]):
        d = runs[runs["dataset"] == dataset]
        f4 = d[d["block"] == "fig4"]
        if len(f4):
            png = baselines.fig4(f4, figs / f"fig4_{dataset}.png")
            md = baselines.match(f4, figs / f"fig4_{dataset}_match")
            lines += [f"### `{dataset}`", "", f"![Fig. 4, {dataset}]({_rel(png, out_dir)})", "",
                      f"Test top-1 vs labeled-equivalent %, mean ± std over seeds. Data: "
                      f"[{_rel(png.with_suffix('.csv'), out_dir)}]({_rel(png.with_suffix('.csv'), out_dir)}).", "",
                      md.read_text()]
        s = share[share["dataset"] == dataset]
        if len(s) > 1:
            png = plots.query_times(s.drop(columns=["dataset", "variant"]), figs / f"fig6left_{dataset}.png",
                                    x="initial_pct", label="I^S, % of the train set (|P^L| = 10 %)")
            lines += [f"![Fig. 6 (left), {dataset}]({_rel(png, out_dir)})", "",
                      f"Final top-1 vs I^S (% of the train set, x axis) at |P^L| = 10 %, the one-bit budget following "
                      f"(paper Fig. 6, left). Data: [{_rel(png.with_suffix('.csv'), out_dir)}]"
                      f"({_rel(png.with_suffix('.csv'), out_dir)}).", ""]
    if len(table):
        view = table.assign(**{
            "A − B (pp)": [f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" if not math.isnan(lo) else "—"
                           for m, lo, hi in zip(table["diff_mean"], table["lo"], table["hi"])]})
        lines += ["### Claims (judged by the rule above)", "",
                  _markdown(view[["dataset", "claim", "n", "A − B (pp)", "verdict"]]), "",
                  "Paired by seed; 95 % t-interval in brackets. Data: [claims.csv]"
                  f"({_rel(tables / 'claims.csv', out_dir)}).", ""]
    return lines


def _markdown(frame: pd.DataFrame) -> str:
    from pipeline.reporting.results import markdown_table

    return markdown_table(frame)


__all__ = ["claims", "initial_share", "section", "verdict"]
