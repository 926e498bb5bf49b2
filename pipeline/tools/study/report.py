"""The study report: ``reports/study.md`` and the CSVs and figures behind it, from the run table.

Every number comes from the run table (`pipeline.tools.study.table`) and the spec: the final
test top-1 (last cycle) per dataset, block, variant, arm and seed. Means ± std (ddof = 1)
are over seeds. A paired difference compares two results of the same seed (same initial
pool and stage 1); its 95 % interval is the t-interval with n − 1 degrees of freedom,
``mean ± t(0.975, n−1) · sd / √n`` (none for n < 2).

Written beside the report, under ``reports/study/``: ``summary.csv`` (mean ± std per cell
and arm), ``paired.csv`` (every paired difference), ``rule.csv`` (the rule's ranking) and
``pick.json`` (what the rule picked, and why), ``figures/`` (per-cycle selection quality; final
top-1 vs query_times), each PNG with its CSV; a study whose rule ranks arms adds ``coldstart.csv``.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.reporting import coldstart, plots
from pipeline.core.io import write_csv, write_json, write_text
from pipeline.reporting.results import markdown_table, pct, seed_std, signed_pct
from pipeline.tools.study.rule import ArmPick, Pick, pick, pick_arm
from pipeline.tools.study.spec import Spec, StudyError, base_params
from pipeline.tools.study.table import KEYS, STANDARD, final_points

PAIRED_COLUMNS = ["dataset", "block", "variant", "arm", "versus", "n", "diff_mean", "diff_std", "lo", "hi"]
NOT_QUALITY = set(KEYS) | set(STANDARD)


# --------------------------------------------------------------------------- statistics


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sd, lo, hi) of paired differences; sd uses ddof = 1, the interval n − 1 dof (NaN for n < 2)."""
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    if n == 0:
        return (math.nan,) * 4
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Final top-1 per dataset, block, variant and arm: ``n, top1_mean, top1_std`` (run-table order)."""
    final = final_points(runs)
    rows = []
    for (dataset, block, variant, arm), g in final.groupby(["dataset", "block", "variant", "arm"], sort=False):
        rows.append({"dataset": dataset, "block": block, "variant": variant, "arm": arm, "query_times":
                     int(g["query_times"].iloc[0]), "n": int(g["seed"].nunique()),
                     "top1_mean": float(g["top1"].mean()), "top1_std": seed_std(g["top1"])})
    return pd.DataFrame(rows, columns=["dataset", "block", "variant", "arm", "query_times", "n",
                                       "top1_mean", "top1_std"])


def _paired_row(a: pd.DataFrame, b: pd.DataFrame, **keys: Any) -> dict:
    both = a[["seed", "top1"]].merge(b[["seed", "top1"]], on="seed", suffixes=("_a", "_b"))
    mean, sd, lo, hi = t_interval((both["top1_a"] - both["top1_b"]).to_numpy())
    return {**keys, "n": len(both), "diff_mean": mean, "diff_std": sd, "lo": lo, "hi": hi}


def paired_arms(runs: pd.DataFrame, ref: str) -> pd.DataFrame:
    """Per dataset, block and variant: final top-1 of arm `ref` minus each other arm's, paired by seed.

    Column ``arm`` is the other arm, ``versus`` is `ref`; a row's difference is ``ref − arm``.
    """
    final = final_points(runs)
    rows = []
    for (dataset, block, variant), g in final.groupby(["dataset", "block", "variant"], sort=False):
        mine = g[g["arm"] == ref]
        if mine.empty:
            continue
        for arm in dict.fromkeys(g["arm"]):
            if arm != ref:
                rows.append(_paired_row(mine, g[g["arm"] == arm], dataset=dataset, block=block, variant=variant,
                                        arm=arm, versus=ref))
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def paired_variants(runs: pd.DataFrame, arm: str, first: dict[str, str]) -> pd.DataFrame:
    """Per dataset and block: arm `arm`'s final top-1 in each variant minus in the block's `first` variant.

    Column ``variant`` is the variant, ``versus`` the block's first one; the difference is ``variant − versus``.
    """
    final = final_points(runs)
    final = final[final["arm"] == arm]
    rows = []
    for (dataset, block), g in final.groupby(["dataset", "block"], sort=False):
        ref = first.get(block)
        base = g[g["variant"] == ref]
        if base.empty:
            continue
        for variant in dict.fromkeys(g["variant"]):
            if variant != ref:
                rows.append(_paired_row(g[g["variant"] == variant], base, dataset=dataset, block=block,
                                        variant=variant, arm=arm, versus=ref))
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def quality_keys(runs: pd.DataFrame) -> list[str]:
    """Per-cycle selection-quality columns of the run table: ``yes_rate`` (derived) and every extra number."""
    extra = [c for c in runs.columns if c not in NOT_QUALITY and c != "yes_rate" and runs[c].notna().any()]
    return (["yes_rate"] if {"yes", "asked"} <= set(runs.columns) else []) + extra


def with_yes_rate(runs: pd.DataFrame) -> pd.DataFrame:
    """The run table plus ``yes_rate`` = yes / asked (NaN without one-bit questions or for full labels)."""
    out = runs.copy()
    if {"yes", "asked"} <= set(out.columns):
        ok = (out["asked"] > 0) & (out["method"] != "fullbit")
        out["yes_rate"] = np.where(ok, out["yes"] / out["asked"].where(ok, 1.0), np.nan)
    return out


# --------------------------------------------------------------------------- figures


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def quality_figure(runs: pd.DataFrame, key: str, out: str | os.PathLike, title: str) -> Path | None:
    """`key` per cycle (mean over seeds), one panel per variant, one line per arm; None when all NaN.

    CSV beside the PNG: ``variant, arm, cycle, <key>, <key>_std, n_seeds``.
    """
    out = Path(out)
    data = runs.dropna(subset=[key])
    if data.empty:
        return None
    variants, arms = list(dict.fromkeys(data["variant"])), list(dict.fromkeys(runs["arm"]))
    rows = []
    for variant in variants:
        for arm in arms:
            mine = data[(data["variant"] == variant) & (data["arm"] == arm)]
            for cycle, g in mine.groupby("cycle"):
                rows.append({"variant": variant, "arm": arm, "cycle": int(cycle), key: float(g[key].mean()),
                             f"{key}_std": seed_std(g[key]), "n_seeds": int(g["seed"].nunique())})
    table = pd.DataFrame(rows)
    write_csv(out.with_suffix(".csv"), table)
    styles = plots.arm_styles(arms)
    ncols = min(4, len(variants))
    nrows = -(-len(variants) // ncols)
    fig = plots._figure(3.6 * ncols, 2.8 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, variant in zip(axes.flat, variants):
        for arm, g in table[table["variant"] == variant].groupby("arm", sort=False):
            ax.errorbar(g["cycle"], g[key], yerr=plots._std0(g[f"{key}_std"]), marker="o", ms=3, capsize=2,
                        color=styles[arm].color, linestyle=styles[arm].dash, label=arm)
        ax.set_xticks(sorted(data["cycle"].unique()))
        ax.set_title(variant, fontsize=9)
        ax.set_xlabel("query cycle")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(variants):]:
        ax.set_axis_off()
    axes[0][0].set_ylabel(key)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(labels)), fontsize=8)
    fig.suptitle(title)
    return plots._save(fig, out)


# --------------------------------------------------------------------------- markdown


def _interval_text(row: Any) -> str:
    if row.n == 0:
        return "—"
    if row.n < 2:
        return f"{signed_pct(row.diff_mean)} (n=1)"
    return f"{signed_pct(row.diff_mean)} [{signed_pct(row.lo)}, {signed_pct(row.hi)}] (n={row.n})"


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _overrides_text(overrides: dict) -> str:
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in overrides.items()) or "(none: the dataset's params)"


def _grid_section(spec: Spec) -> list[str]:
    lines = [f"Seeds: {', '.join(map(str, spec.seeds))}. Datasets:", ""]
    lines += [f"- `{d.name}`: {d.source}; overrides {_overrides_text(d.overrides)}" for d in spec.datasets.values()]
    for block in spec.blocks.values():
        arms = ", ".join(f"`{a}`" for a in block.arms) if block.arms is not None else \
            "every arm of the dataset's params" if spec.arms is None else \
            "every arm of the spec, with the same settings on every dataset: " + "; ".join(
                f"`{a}` ({', '.join(f'{k} {v}' for k, v in settings.items())})" for a, settings in spec.arms.items())
        base = " Each variant starts from the variant the rule picks." if block.base == "rule" else ""
        seeds = "" if block.seeds is None else f" Seeds: {', '.join(map(str, block.seeds))}."
        lines += ["", f"### Block `{block.name}`", "", f"Arms: {arms}.{base}{seeds}", ""]
        if block.why:
            lines += [f"Why: {block.why}", ""]
        view = pd.DataFrame({"variant": list(block.variants),
                             "overrides": [_overrides_text(o) for o in block.variants.values()]})
        lines.append(markdown_table(view))
    return lines


def _arm_table(summ: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
    arms = list(dict.fromkeys(summ["arm"]))
    rows = []
    for variant in variants:
        s = summ[summ["variant"] == variant].set_index("arm")
        row = {"variant": variant}
        for arm in arms:
            row[arm] = (f"{pct(s.loc[arm, 'top1_mean'], s.loc[arm, 'top1_std'])} (n={s.loc[arm, 'n']})"
                        if arm in s.index else "—")
        rows.append(row)
    return pd.DataFrame(rows, columns=["variant", *arms])


def _paired_table(paired: pd.DataFrame, rows: Sequence[str], row_col: str, col_col: str) -> pd.DataFrame:
    cols = list(dict.fromkeys(paired[col_col]))
    out = []
    for r in rows:
        sub = paired[paired[row_col] == r]
        if sub.empty:
            continue
        entry = {row_col: r}
        for c in cols:
            hit = sub[sub[col_col] == c]
            entry[c] = _interval_text(next(hit.itertuples())) if len(hit) else "—"
        out.append(entry)
    return pd.DataFrame(out, columns=[row_col, *cols])


def _implied_params(spec: Spec, chosen: Pick, root: Path) -> list[str]:
    overrides = spec.blocks[spec.rule.block].variants[chosen.variant]
    lines = [f"Overrides of `{chosen.variant}`: {_overrides_text(overrides)}; every arm shares them.", ""]
    if not overrides:
        return lines + ["The datasets' params stay as they are.", ""]
    rows = []
    for dataset in spec.datasets:
        try:
            base = base_params(spec, dataset, root)
        except StudyError as exc:
            lines += [f"(`{dataset}`: {exc})", ""]
            continue
        for key, value in overrides.items():
            node: Any = base
            for part in key.split("."):
                node = node.get(part, "(unset: the code's default)") if isinstance(node, dict) else node
            rows.append({"dataset": dataset, "param": key, "now": json.dumps(node), "picked": json.dumps(value)})
    if rows:
        lines += ["The params this implies (`now`: the dataset's params as the spec reads them):", "",
                  markdown_table(pd.DataFrame(rows))]
    return lines


def build_report(spec: Spec, runs: pd.DataFrame, out: str | os.PathLike, *, root: str | os.PathLike = ".",
                 cells: pd.DataFrame | None = None) -> Path:
    """Write the study report `out` (markdown) and, under ``<out's folder>/study/``, its CSVs and figures."""
    out, root = Path(out), Path(root)
    tables = out.parent / out.stem  # reports/study.md → reports/study/
    figs = tables / "figures"
    runs = with_yes_rate(runs)
    summ = summary(runs)
    rule_arm = spec.rule.arm
    first = {name: next(iter(b.variants)) for name, b in spec.blocks.items()}
    p_arms = paired_arms(runs, rule_arm)
    p_vars = paired_variants(runs, rule_arm, first)
    if spec.rule.kind == "arms":
        chosen = pick_arm(runs, block=spec.rule.block, reference=rule_arm, candidates=spec.rule.candidates,
                          datasets=spec.rule_datasets, seeds=spec.seeds)
    else:
        chosen = pick(runs, block=spec.rule.block, arm=rule_arm,
                      variants=list(spec.blocks[spec.rule.block].variants), datasets=spec.rule_datasets,
                      seeds=spec.seeds)
    write_csv(tables / "summary.csv", summ)
    write_csv(tables / "paired.csv", pd.concat([p_arms, p_vars], ignore_index=True) if len(p_vars) else p_arms)
    write_csv(tables / "rule.csv", chosen.ranking)
    write_json(tables / "pick.json", {"kind": spec.rule.kind, "block": spec.rule.block, "reference": rule_arm,
                                      "pick": chosen.arm if isinstance(chosen, ArmPick) else chosen.variant,
                                      "reason": chosen.reason})

    spec_path = spec.path.resolve()
    shown = spec_path.relative_to(root.resolve()) if spec_path.is_relative_to(root.resolve()) else spec_path
    lines = [f"# {spec.title}", "",
             f"Spec: `{shown}`. "
             f"Run table: [study/runs.csv](study/runs.csv) (one row per dataset, variant, arm, seed and cycle); "
             "behind this page: [study/summary.csv](study/summary.csv), [study/paired.csv](study/paired.csv), "
             "[study/rule.csv](study/rule.csv).", "",
             "## The rule (pre-registered)", ""]
    lines += [f"> {line}" if line else ">" for line in spec.rule.text.splitlines()]
    if spec.rule.kind == "arms":
        lines += ["", f"Implemented by `pipeline.tools.study.rule.pick_arm` (block `{spec.rule.block}`, reference "
                      f"`{rule_arm}`, candidates {', '.join(f'`{c}`' for c in spec.rule.candidates)}, final test "
                      f"top-1, datasets {', '.join(f'`{d}`' for d in spec.rule_datasets)}).", "", "## The grid", ""]
    else:
        lines += ["", f"Implemented by `pipeline.tools.study.rule.pick` (block `{spec.rule.block}`, arm `{rule_arm}`, "
                      f"final test top-1, datasets {', '.join(f'`{d}`' for d in spec.rule_datasets)}).", "",
                  "## The grid", ""]
    lines += _grid_section(spec)
    if cells is not None and len(cells):
        view = cells[["cell", "status", "attempts", "wall_s", "stages_ran", "from_run_cache"]]
        lines += ["", "## Cells", "", markdown_table(view)]
    lines += ["", "## Results", "",
              "Final test top-1 % (last cycle), mean ± std over seeds (n = seeds). Paired differences are in "
              "percentage points, same seed, with the 95 % t-interval (n − 1 dof) in brackets.", ""]
    for block in spec.blocks.values():
        in_block = summ[summ["block"] == block.name]
        lines += [f"### Block `{block.name}`", ""]
        if in_block.empty:
            lines += ["No finished cells yet.", ""]
            continue
        for dataset in spec.datasets:
            s = in_block[in_block["dataset"] == dataset]
            if s.empty:
                lines += [f"#### `{dataset}`", "", "No finished cells yet.", ""]
                continue
            variants = [v for v in block.variants if v in set(s["variant"])]
            lines += [f"#### `{dataset}`", "", markdown_table(_arm_table(s, variants))]
            pa = p_arms[(p_arms["block"] == block.name) & (p_arms["dataset"] == dataset)]
            if len(pa):
                lines += [f"`{rule_arm}` minus each arm, paired by seed:", "",
                          markdown_table(_paired_table(pa, variants, "variant", "arm"))]
            pv = p_vars[(p_vars["block"] == block.name) & (p_vars["dataset"] == dataset)]
            if len(pv):
                lines += [f"`{rule_arm}` in each variant minus in `{first[block.name]}`, paired by seed:", "",
                          markdown_table(_paired_table(pv, list(dict.fromkeys(pv["variant"])), "variant", "arm"))]
            final = final_points(runs[(runs["block"] == block.name) & (runs["dataset"] == dataset)])
            if final["query_times"].nunique() > 1:
                png = plots.query_times(final, figs / f"{_slug(block.name)}_{_slug(dataset)}_query_times.png")
                csv = _rel(png.with_suffix(".csv"), out.parent)
                lines += [f"![final top-1 vs query_times, {dataset}]({_rel(png, out.parent)})", "",
                          f"Final top-1 vs query_times (paper Fig. 6). Data: [{csv}]({csv}).", ""]
            cell_runs = runs[(runs["block"] == block.name) & (runs["dataset"] == dataset)]
            for key in quality_keys(runs):
                png = quality_figure(cell_runs, key, figs / f"{_slug(block.name)}_{_slug(dataset)}_{_slug(key)}.png",
                                     f"{key} per query cycle, {dataset}, block {block.name} (mean ± std over seeds)")
                if png is not None:
                    lines += [f"![{key}, {dataset}]({_rel(png, out.parent)})", ""]
    if spec.name == "fig4" and len(runs):  # the fig4 spec's curves, tables and claims (pipeline/tools/study/fig4.py)
        from pipeline.tools.study import fig4

        lines += fig4.section(runs, tables, out.parent)
    if isinstance(chosen, ArmPick):
        lines += ["## The rule's pick", "", f"**{chosen.reason}.**", "", markdown_table(_arm_rank_view(chosen, spec)),
                  f"Each arm's final top-1 minus `{rule_arm}`'s, paired by dataset and seed and pooled, in "
                  "percentage points with its 95 % t-interval; the candidates compete, the other arms are listed "
                  "for the record.", ""]
        lines += _cold_start_section(runs[runs["block"] == spec.rule.block], tables)
        write_text(out, "\n".join(lines).rstrip("\n") + "\n")
        return out
    lines += ["## The rule's pick", "", f"**{chosen.reason}.**", "", markdown_table(_rank_view(chosen, spec))]
    if chosen.variant is not None:
        lines += _implied_params(spec, chosen, root)
    write_text(out, "\n".join(lines).rstrip("\n") + "\n")
    return out


def _cold_start_section(runs: pd.DataFrame, tables: Path) -> list[str]:
    """Per dataset: every arm's cycle 1 against stage 1, yes-rate and bits per question
    (`pipeline.reporting.coldstart`, as in the baseline report); all datasets in
    ``<tables>/coldstart.csv``."""
    lines, frames = ["## Cold start: cycle 1 against stage 1", ""], []
    for dataset in dict.fromkeys(runs["dataset"]):
        table = coldstart.first_cycle(runs[runs["dataset"] == dataset])
        frames.append(table.assign(dataset=dataset))
        flagged = table.loc[table["flag"] != "", "arm"].tolist()
        lines += [f"### `{dataset}`", "", coldstart.first_cycle_markdown(table),
                  f"Flagged ({coldstart.FLAG}): {', '.join(flagged)}." if flagged
                  else "No arm loses accuracy in cycle 1 on average.", ""]
    if frames:
        write_csv(tables / "coldstart.csv", pd.concat(frames, ignore_index=True))
    lines += ["Every arm of a seed starts from the same stage-1 checkpoint; the change is cycle 1's test top-1 minus "
              "stage 1's, paired by seed (mean ± std, ddof=1); bits/question is the answers' entropy (at most 1 bit "
              "for a yes/no question). Data: [study/coldstart.csv](study/coldstart.csv).", ""]
    return lines


def _arm_rank_view(chosen: ArmPick, spec: Spec) -> pd.DataFrame:
    r = chosen.ranking
    view = pd.DataFrame({"picked": ["✓" if a == chosen.arm else "" for a in r["arm"]], "arm": r["arm"],
                         "role": r["role"]})
    for col in [*spec.rule_datasets, "mean"]:
        view[col] = [pct(v, digits=2) for v in r[col]]
    view[f"minus {spec.rule.arm} (pp)"] = [
        "—" if role == "reference" else f"{signed_pct(m, 2)} [{signed_pct(lo, 2)}, {signed_pct(hi, 2)}] (n={n})"
        for role, m, lo, hi, n in zip(r["role"], r["diff_mean"], r["lo"], r["hi"], r["n"])]
    view["seeds"] = r["seeds"]
    return view


def _rank_view(chosen: Pick, spec: Spec) -> pd.DataFrame:
    view = chosen.ranking.copy()
    for col in [*spec.rule_datasets, "mean"]:
        view[col] = [pct(v, digits=2) for v in view[col]]
    view.insert(0, "picked", ["✓" if v == chosen.variant else "" for v in view["variant"]])
    return view
