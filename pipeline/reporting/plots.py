"""The paper's figures and tables (§4) from the results table, query ledgers and experiments.

Every figure function takes the output PNG path ``out``, writes the PNG **and the CSV
behind it** (``out.with_suffix(".csv")``, plus ``.md`` for tables) atomically, and
returns ``out``. Arms absent from the inputs are skipped; a figure with nothing to show
says so in the image instead of failing. Accuracies in CSVs are fractions in [0, 1];
axes and markdown show percent. Figures use `matplotlib.figure.Figure` directly (no
pyplot state), so they are deterministic and safe to build in any process.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline.reporting import results as res  # noqa: E402
from pipeline.core.config import ArmParams  # noqa: E402
from pipeline.selection.diagnostics import QUALITY, TITLES  # noqa: E402
from pipeline.core.io import atomic_path, write_csv, write_text  # noqa: E402

CURVE_COLUMNS: tuple[str, ...] = ("arm", "cycle", "bits", "labeled_equiv_pct", "top1", "top1_std", "n_seeds")


@dataclass(frozen=True)
class FigureEntry:
    """One figure of the report: its PNG, a title and a one-line caption."""

    png: Path
    title: str
    caption: str


# --------------------------------------------------------------------------- helpers


def _save(fig: Figure, out: Path) -> Path:
    """Write `fig` to `out` as PNG, atomically (no version-dependent metadata)."""
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    return out


def _figure(width: float = 6.0, height: float = 4.0) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _nothing(fig: Figure, message: str) -> None:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)


# matplotlib's default cycle (tab10), then ten more hues that differ from all of them
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#000000", "#000075", "#800000", "#008080", "#ffd700", "#f032e6", "#00ff7f", "#d2b48c", "#4b0082", "#fa8072",
)


def _colors(arms: Sequence[str]) -> dict[str, str]:
    """A distinct colour per arm, by position: `PALETTE` up to 20 arms, beyond that evenly
    spaced hues of a continuous colormap (so no two arms ever share a colour)."""
    if len(arms) <= len(PALETTE):
        return dict(zip(arms, PALETTE))
    cmap = matplotlib.colormaps["turbo"]
    return {arm: matplotlib.colors.to_hex(cmap(i / (len(arms) - 1))) for i, arm in enumerate(arms)}


def _std0(values: pd.Series) -> np.ndarray:
    """Std for error bands: NaN (one seed) drawn as no band."""
    return np.nan_to_num(values.to_numpy(dtype=np.float64), nan=0.0)


def curves(results: pd.DataFrame, arms: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean ± std over seeds of each arm's accuracy per cycle, columns `CURVE_COLUMNS`.

    ``bits`` and ``labeled_equiv_pct`` are seed means (they agree across seeds by design);
    ``top1_std`` uses ddof=1 and is NaN with one seed. Arms of `arms` absent from
    `results` are skipped; `arms=None` takes every arm in results order.
    """
    order = res.arms_in_order(results)
    chosen = [a for a in (order if arms is None else arms) if a in order]
    rows = []
    for arm in chosen:
        g = results[results["arm"] == arm]
        for cycle, c in g.groupby("cycle", sort=True):
            rows.append({
                "arm": arm, "cycle": int(cycle), "bits": float(c["bits"].mean()),
                "labeled_equiv_pct": float(c["labeled_equiv_pct"].mean()), "top1": float(c["top1"].mean()),
                "top1_std": res.seed_std(c["top1"]), "n_seeds": int(c["seed"].nunique()),
            })
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def _curve_figure(results: pd.DataFrame, arms: Sequence[str], out: Path, title: str) -> Path:
    table = curves(results, arms)
    write_csv(out.with_suffix(".csv"), table)
    fig = _figure()
    if table.empty:
        _nothing(fig, f"{title}:\nnone of the arms {', '.join(arms) or '(none)'} are in the results")
        return _save(fig, out)
    colors = _colors(res.arms_in_order(results))
    ax = fig.add_subplot()
    for arm, g in table.groupby("arm", sort=False):
        x, y, s = g["labeled_equiv_pct"].to_numpy(), 100 * g["top1"].to_numpy(), 100 * _std0(g["top1_std"])
        ax.plot(x, y, marker="o", color=colors[arm], label=f"{arm} (n={int(g['n_seeds'].min())})")
        ax.fill_between(x, y - s, y + s, color=colors[arm], alpha=0.2, linewidth=0)
    ax.set_xlabel("labeled-equivalent % of train set (bits / log2 C)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out)


def _bars(ax: Axes, names: Sequence[str], means: np.ndarray, stds: np.ndarray, colors: Sequence[str]) -> None:
    x = np.arange(len(names))
    ax.bar(x, 100 * means, yerr=100 * np.nan_to_num(stds, nan=0.0), color=colors, capsize=4)
    for xi, m in zip(x, means):
        ax.annotate(f"{100 * m:.1f}", (xi, 100 * m), ha="center", va="bottom", xytext=(0, 3),
                    textcoords="offset points", fontsize=8)
    ax.set_xticks(x, names, rotation=20 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    low = 100 * float(np.nanmin(means - np.nan_to_num(stds, nan=0.0)))
    ax.set_ylim(bottom=max(0.0, 5 * math.floor(low / 5) - 5))  # zoom in: differences are a few points
    ax.set_ylabel("final test top-1 (%)")
    ax.grid(axis="y", alpha=0.3)


# --------------------------------------------------------------------------- figures


def accuracy_vs_labels(results: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Paper Fig. 4: top-1 vs labeled-equivalent % for the main arms (obcp, onebit, fullbit).

    Mean line and ± std band over seeds; CSV columns `CURVE_COLUMNS`.
    """
    return _curve_figure(results, res.main_arms(results), Path(out),
                         "ObCP vs one-bit vs full labels at equal bits")


def selection_strategies(results: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Paper Fig. 5: top-1 vs labeled-equivalent % for obcp and the random/max/diff2/entropy arms."""
    return _curve_figure(results, res.strategy_arms(results), Path(out), "Selection strategies")


def arm_curves(results: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """One CSV per arm, ``<out_dir>/<arm>.csv`` (columns `CURVE_COLUMNS` minus ``arm``).

    DVC's built-in plot templates colour series by file, not by a column, so ``dvc plots``
    needs one file per arm to draw one accuracy curve per arm.
    """
    table = curves(results)
    paths = []
    for arm, g in table.groupby("arm", sort=False):
        path = Path(out_dir) / f"{arm}.csv"
        write_csv(path, g.drop(columns="arm"))
        paths.append(path)
    return paths


def equal_bits(results: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Paper Table 3 as a bar chart; writes the CSV and the markdown table (``.md``) beside it."""
    out = Path(out)
    table = res.equal_bits_table(results)
    write_csv(out.with_suffix(".csv"), table)
    write_text(out.with_suffix(".md"), res.equal_bits_markdown(table))
    fig = _figure(5.0, 4.0)
    if table.empty:
        _nothing(fig, "Table 3: no onebit / obcp / fullbit arm in the results")
        return _save(fig, out)
    colors = _colors(res.arms_in_order(results))
    ax = fig.add_subplot()
    _bars(ax, [f"{m}\n({a})" if m != a else m for m, a in zip(table["method"], table["arm"])],
          table["top1_mean"].to_numpy(), table["top1_std"].to_numpy(dtype=np.float64),
          [colors[a] for a in table["arm"]])
    ax.set_title(f"Equal bits (≈{table['bits_total'].mean():.0f} bits)")
    return _save(fig, out)


def ablations(results: pd.DataFrame, arms: Mapping[str, ArmParams], out: str | os.PathLike) -> Path:
    """Paper Table 4 as a bar chart; writes the CSV and the markdown table (``.md``) beside it."""
    out = Path(out)
    table = res.ablation_table(results, arms)
    write_csv(out.with_suffix(".csv"), table)
    write_text(out.with_suffix(".md"), res.ablation_markdown(table) if len(table) else
               "No full obcp arm in the results: no ablation table.\n")
    fig = _figure(max(4.0, 1.2 * len(table) + 1), 4.0)
    if table.empty:
        _nothing(fig, "Table 4: the full obcp arm is not in the results")
        return _save(fig, out)
    colors = _colors(res.arms_in_order(results))
    ax = fig.add_subplot()
    _bars(ax, list(table["arm"]), table["top1_mean"].to_numpy(dtype=np.float64),
          table["top1_std"].to_numpy(dtype=np.float64), [colors[a] for a in table["arm"]])
    ax.set_title("Ablations (one switch off each)")
    return _save(fig, out)


def yes_rate(results: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Per-cycle *yes* rate (yes / asked) per arm, mean ± std over seeds.

    Skips cycles without one-bit questions (cycle 0, ``asked`` 0 or missing) and the
    full-label arms (method ``fullbit``). CSV columns: ``arm, cycle, asked, yes`` (means over
    seeds), ``yes_rate, yes_rate_std, n_seeds``.
    """
    out = Path(out)
    columns = ["arm", "cycle", "asked", "yes", "yes_rate", "yes_rate_std", "n_seeds"]
    keep = results[(results["method"] != "fullbit") & results["asked"].notna() & results["yes"].notna()]
    keep = keep[keep["asked"] > 0].copy()
    keep["rate"] = keep["yes"].astype(np.float64) / keep["asked"].astype(np.float64)
    rows = []
    for arm in res.arms_in_order(keep):
        g = keep[keep["arm"] == arm]
        for cycle, c in g.groupby("cycle", sort=True):
            rows.append({"arm": arm, "cycle": int(cycle), "asked": float(c["asked"].astype(float).mean()),
                         "yes": float(c["yes"].astype(float).mean()), "yes_rate": float(c["rate"].mean()),
                         "yes_rate_std": res.seed_std(c["rate"]), "n_seeds": int(c["seed"].nunique())})
    table = pd.DataFrame(rows, columns=columns)
    write_csv(out.with_suffix(".csv"), table)
    fig = _figure()
    if table.empty:
        _nothing(fig, "no one-bit questions in the results")
        return _save(fig, out)
    colors = _colors(res.arms_in_order(results))
    ax = fig.add_subplot()
    for arm, g in table.groupby("arm", sort=False):
        ax.errorbar(g["cycle"], 100 * g["yes_rate"], yerr=100 * _std0(g["yes_rate_std"]), marker="o",
                    capsize=3, color=colors[arm], label=arm)
    ax.set_xticks(sorted(table["cycle"].unique()))
    ax.set_xlabel("query cycle")
    ax.set_ylabel("yes answers / questions (%)")
    ax.set_title("Yes-rate per cycle")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def selection_quality(results: pd.DataFrame, out: str | os.PathLike) -> Path:
    """The four selection-quality numbers (`pipeline.selection.diagnostics.QUALITY`) per arm and query
    cycle, mean ± std over seeds, one panel each. CSV columns: ``arm, cycle, quantity, mean,
    std, n_seeds`` (cycles and arms where a number is undefined are left out)."""
    out = Path(out)
    columns = ["arm", "cycle", "quantity", "mean", "std", "n_seeds"]
    rows = []
    for q in QUALITY:
        col = f"selection.{q}"
        if col not in results.columns:
            continue
        have = results[results[col].notna()]
        for arm in res.arms_in_order(have):
            for cycle, c in have[have["arm"] == arm].groupby("cycle", sort=True):
                rows.append({"arm": arm, "cycle": int(cycle), "quantity": q, "mean": float(c[col].mean()),
                             "std": res.seed_std(c[col]), "n_seeds": int(c["seed"].nunique())})
    table = pd.DataFrame(rows, columns=columns)
    write_csv(out.with_suffix(".csv"), table)
    fig = _figure(11.0, 7.0)
    if table.empty:
        _nothing(fig, "no selection-quality numbers in the results (they come with each query cycle)")
        return _save(fig, out)
    colors = _colors(res.arms_in_order(results))
    axes = fig.subplots(2, 2).ravel()
    for ax, q in zip(axes, QUALITY):
        for arm, g in table[table["quantity"] == q].groupby("arm", sort=False):
            ax.errorbar(g["cycle"], g["mean"], yerr=_std0(g["std"]), marker="o", capsize=3, color=colors[arm],
                        label=arm)
        ax.set_title(TITLES[q], fontsize=10)
        ax.set_xlabel("query cycle")
        ax.set_xticks(sorted(table["cycle"].unique()))
        ax.grid(alpha=0.3)
    handles, labels = axes[2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    return _save(fig, out)


def class_query_counts(ledgers: Mapping[str, pd.DataFrame], num_classes: int | None = None) -> pd.DataFrame:
    """Per arm and class, over every cycle and seed: one-bit questions ``asked`` (by asked class),
    their ``yes`` answers, and ``full`` labels (by the label given), plus ``n_seeds``.

    Arms with empty ledgers are skipped. `num_classes` defaults to 1 + the largest class seen.
    """
    columns = ["arm", "class", "asked", "yes", "full", "n_seeds"]
    present = {a: f for a, f in ledgers.items() if len(f)}
    if not present:
        return pd.DataFrame(columns=columns)
    if num_classes is None:
        seen = [np.concatenate([f["asked_class"].to_numpy(), f["label_given"].to_numpy()]) for f in present.values()]
        num_classes = int(max(s.max() for s in seen)) + 1
    parts = []
    for arm, frame in present.items():
        one_bit = frame[frame["kind"] == "one_bit"]
        yes = one_bit[one_bit["answer"].fillna(False).astype(bool)]
        full = frame[frame["kind"] == "full"]

        def count(f: pd.DataFrame, column: str) -> np.ndarray:
            return np.bincount(f[column].to_numpy(dtype=np.int64), minlength=num_classes)[:num_classes]

        parts.append(pd.DataFrame({
            "arm": arm, "class": np.arange(num_classes, dtype=np.int64),
            "asked": count(one_bit, "asked_class"), "yes": count(yes, "asked_class"),
            "full": count(full, "label_given"), "n_seeds": int(frame["seed"].nunique()),
        }))
    return pd.concat(parts, ignore_index=True)[columns]


def class_queries(ledgers: Mapping[str, pd.DataFrame], out: str | os.PathLike, *,
                  num_classes: int | None = None, class_names: Sequence[str] | None = None) -> Path:
    """Per-class query counts per arm (`class_query_counts`): one panel per arm.

    One-bit arms show ``asked`` bars with their ``yes`` part; full-label arms show ``full``
    bars (full rows have ``asked_class`` −1 and are never counted as questions).
    """
    out = Path(out)
    table = class_query_counts(ledgers, num_classes)
    if class_names is not None and len(table):
        names = list(class_names)
        table.insert(2, "class_name", [names[c] if c < len(names) else str(c) for c in table["class"]])
    write_csv(out.with_suffix(".csv"), table)
    arms = list(dict.fromkeys(table["arm"]))
    fig = _figure(7.0, max(2.2 * len(arms), 2.5))
    if not arms:
        _nothing(fig, "no questions in the query ledgers")
        return _save(fig, out)
    colors = _colors(arms)
    axes = fig.subplots(len(arms), 1, sharex=True, squeeze=False)[:, 0]
    for ax, arm in zip(axes, arms):
        g = table[table["arm"] == arm]
        x = g["class"].to_numpy()
        if g["asked"].sum() > 0:
            ax.bar(x, g["asked"], color=colors[arm], alpha=0.35, label="asked")
            ax.bar(x, g["yes"], color=colors[arm], label="yes")
        if g["full"].sum() > 0:
            ax.bar(x, g["full"], color="0.4", alpha=0.6, label="full labels")
        ax.set_ylabel("count")
        ax.set_title(f"{arm} (all cycles, {int(g['n_seeds'].iloc[0])} seed(s))", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    n = int(table["class"].max()) + 1
    if n <= 20:  # name every class; with more, the default integer ticks
        if "class_name" in table.columns:
            axes[-1].set_xticks(np.arange(n), list(table["class_name"].iloc[:n]), rotation=45, ha="right")
        else:
            axes[-1].set_xticks(np.arange(n), [str(c) for c in range(n)])
    axes[-1].set_xlabel("class (asked class for questions, label for full labels)")
    return _save(fig, out)


def query_times(frame: pd.DataFrame, out: str | os.PathLike, *, x: str = "query_times") -> Path:
    """Paper Fig. 6 (right): final top-1 vs query_times (or another params key `x`) per arm,
    mean ± std over seeds.

    ``frame``: `pipeline.tools.exps.exps_table` rows (``<x>, arm, top1, top1_std, n_seeds``: one
    experiment's summary per arm). Rows without a result are ignored; when several
    experiments give the same (arm, x), the first row wins (exps_table lists the newest
    first). CSV columns: ``arm, <x>, top1, top1_std, n_seeds``.
    """
    out = Path(out)
    columns = ["arm", x, "top1", "top1_std", "n_seeds"]
    ok = frame.dropna(subset=[x, "arm", "top1"]) if len(frame) else frame
    ok = ok.drop_duplicates(["arm", x], keep="first") if len(ok) else ok
    order = list(dict.fromkeys(ok["arm"].tolist() if len(ok) else []))
    table = pd.DataFrame(ok, columns=columns) if len(ok) else pd.DataFrame(columns=columns)
    table = table.assign(_arm=table["arm"].map(order.index)).sort_values(["_arm", x], kind="stable")
    table = table.drop(columns="_arm").reset_index(drop=True)
    write_csv(out.with_suffix(".csv"), table)
    fig = _figure()
    if table.empty:
        _nothing(fig, f"no finished experiments with results\n(run `obcp sweep {x} V1 V2 …`)")
        return _save(fig, out)
    colors = _colors(order)
    ax = fig.add_subplot()
    for arm, g in table.groupby("arm", sort=False):
        ax.errorbar(g[x].astype(float), 100 * g["top1"].astype(float), yerr=100 * _std0(g["top1_std"]), marker="o",
                    capsize=3, color=colors[arm], label=arm)
    ax.set_xticks(sorted(table[x].astype(float).unique()))
    ax.set_xlabel("query times (cycles sharing the one-bit budget)" if x == "query_times" else x)
    ax.set_ylabel("final test top-1 (%)")
    ax.set_title("Query times" if x == "query_times" else f"Final accuracy vs {x}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


# --------------------------------------------------------------------------- report page


def index_markdown(entries: Sequence[FigureEntry], index_dir: Path, sections: Sequence[tuple[str, str]]) -> str:
    """The report page: markdown `sections` (title, body) then every figure with caption and data link.

    Links are relative to `index_dir` (the folder of the index file).
    """
    lines = ["# obcp results", ""]
    for title, body in sections:
        lines += [f"## {title}", "", body.rstrip("\n"), ""]
    lines += ["## Figures", ""]
    for e in entries:
        png = Path(os.path.relpath(e.png, index_dir)).as_posix()
        csv = Path(os.path.relpath(e.png.with_suffix(".csv"), index_dir)).as_posix()
        lines += [f"### {e.title}", "", f"![{e.title}]({png})", "", f"{e.caption} Data: [{csv}]({csv}).", ""]
    return "\n".join(lines)


def write_report(results: pd.DataFrame, arms: Mapping[str, ArmParams], ledgers: Mapping[str, pd.DataFrame],
                 reports_dir: str | os.PathLike, *, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None) -> Path:
    """Every figure and table of the figures stage, and ``<reports_dir>/index.md``; returns the index path.

    Writes ``results.csv``, ``figures/<name>.{png,csv}`` (+ ``.md`` for the tables) and
    ``figures/curves/<arm>.csv`` (for ``dvc plots``) under `reports_dir`.
    """
    reports = Path(reports_dir)
    figs = reports / "figures"
    write_csv(reports / "results.csv", results)
    entries = [
        FigureEntry(accuracy_vs_labels(results, figs / "accuracy_vs_labels.png"), "Accuracy vs labels (Fig. 4)",
                    "Test top-1 vs labeled-equivalent % (bits / log2 C) of ObCP, one-bit and full-label active "
                    "learning at equal bits; mean ± std over seeds."),
        FigureEntry(selection_strategies(results, figs / "selection_strategies.png"),
                    "Selection strategies (Fig. 5)",
                    "ObCP's uncertainty (Eq. 7) against random, max, diff2 and entropy selection; mean ± std over "
                    "seeds."),
        FigureEntry(equal_bits(results, figs / "equal_bits.png"), "Equal bits (Table 3)",
                    "Final top-1 of one-bit, ObCP and full labels spending the same number of bits."),
        FigureEntry(ablations(results, arms, figs / "ablations.png"), "Ablations (Table 4)",
                    "Final top-1 with one ObCP module switched off, against the full method."),
        FigureEntry(yes_rate(results, figs / "yes_rate.png"), "Yes-rate per cycle",
                    "Share of one-bit questions answered *yes* in each query cycle; mean ± std over seeds."),
        FigureEntry(selection_quality(results, figs / "selection_quality.png"), "Selection quality per cycle",
                    "At each query, for the questions each strategy chose: the yes-rate, the answers' entropy "
                    "(bits of information per question), the AUROC of the selection score against 'the asked "
                    "class is wrong' over every candidate (reads the ground truth: a diagnostic), and the mean "
                    "clean-view confidence of the selected samples; mean ± std over seeds "
                    "(pipeline/selection/diagnostics.py)."),
        FigureEntry(class_queries(ledgers, figs / "class_queries.png", num_classes=num_classes,
                                  class_names=class_names), "Questions per class",
                    "One-bit questions per asked class (and their yes answers), full labels per class; all "
                    "cycles and seeds."),
    ]
    arm_curves(results, figs / "curves")
    summary = res.final_summary(results)
    sections = [
        ("Final accuracy per arm", res.summary_markdown(summary)
         + "\nMean ± std (ddof=1) over seeds of the last cycle's test top-1. All points: "
           "[results.csv](results.csv)."),
        ("Equal bits (Table 3)", (figs / "equal_bits.md").read_text()),
        ("Ablations (Table 4)", (figs / "ablations.md").read_text()),
    ]
    from pipeline.reporting import baselines  # the conventional learners: only where the results have one

    if baselines.conventional_arms(results):
        entries.insert(0, FigureEntry(
            baselines.fig4(results, figs / "conventional.png"), "ObCP vs conventional active learners (Fig. 4)",
            "Test top-1 vs labeled-equivalent % of ObCP, one-bit, full-bit and the conventional learners (full "
            "labels, cross-entropy alone; docs/baselines.md) at equal bits; mean ± std over seeds."))
        sections.insert(1, ("Labeled % to reach ObCP (Fig. 4)",
                            baselines.match(results, figs / "conventional_match").read_text()))
    index = reports / "index.md"
    write_text(index, index_markdown(entries, reports, sections))
    return index
