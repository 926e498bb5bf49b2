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
from matplotlib import patheffects  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline.reporting import coldstart  # noqa: E402
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


# A qualitative palette of 12 distinct colours: matplotlib's tab10 with its grey swapped for
# black (a grey arm reads as "disabled"), then wine and teal (Paul Tol's "muted"). Arms past
# the 12th reuse the colours with a dash pattern (lines) or a hatch (bars), so that no two
# arms ever look the same.
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#000000", "#bcbd22", "#17becf",
    "#882255", "#44aa99",
)
DASHES: tuple[str, ...] = ("-", "--", ":", "-.")
HATCHES: tuple[str, ...] = ("", "//", "..", "xx")


@dataclass(frozen=True)
class ArmStyle:
    """How one arm is drawn in every figure: `color`, line `dash` and bar `hatch`."""

    color: str
    dash: str = "-"
    hatch: str = ""


def arm_styles(arms: Sequence[str]) -> dict[str, ArmStyle]:
    """A distinct style per arm, by position in `arms` (pass every arm of the results, so that
    an arm looks the same in every figure): the `PALETTE` colours, then the same colours with
    the next dash pattern / hatch; past ``len(PALETTE) * len(DASHES)`` arms, evenly spaced hues
    of a continuous colormap, dashed."""
    n, out = len(PALETTE), {}
    for i, arm in enumerate(arms):
        if i < n * len(DASHES):
            out[arm] = ArmStyle(PALETTE[i % n], DASHES[i // n], HATCHES[i // n])
        else:
            hue = matplotlib.colormaps["turbo"]((i - n * len(DASHES)) / max(1, len(arms) - n * len(DASHES)))
            out[arm] = ArmStyle(matplotlib.colors.to_hex(hue), "--", "//")
    return out


def _colors(arms: Sequence[str]) -> dict[str, str]:
    """The colour of each arm's `arm_styles` (colours repeat past 12 arms: use the dashes too)."""
    return {arm: style.color for arm, style in arm_styles(arms).items()}


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


Limits = tuple[float, float]  # (bottom, top) of an accuracy axis, in percent


def percent_limits(lows: Sequence[float], highs: Sequence[float], *, margin: float = 1.0) -> Limits:
    """An accuracy axis (percent) from 5-point steps that holds every value in [min(lows),
    max(highs)] with `margin` to spare below and above, never below 0 nor above 100."""
    lows = [v for v in lows if not math.isnan(v)] or [0.0]
    highs = [v for v in highs if not math.isnan(v)] or [100.0]
    bottom = max(0.0, 5.0 * math.floor((min(lows) - margin) / 5))
    top = min(100.0, 5.0 * math.ceil((max(highs) + margin) / 5))
    return bottom, max(top, bottom + 5)


def curve_limits(results: pd.DataFrame) -> Limits:
    """One accuracy axis for every curve figure: mean ± std over seeds of every arm and cycle."""
    table = curves(results)
    m, s = 100 * table["top1"].to_numpy(), 100 * _std0(table["top1_std"])
    return percent_limits(list(m - s), list(m + s))


def bar_limits(results: pd.DataFrame) -> Limits:
    """One accuracy axis for every bar chart of final accuracy (Tables 3 and 4): every arm's
    final mean ± std, with room below the lowest error bar for the value labels."""
    summary = res.final_summary(results)
    m, s = 100 * summary["top1_mean"].to_numpy(), 100 * _std0(summary["top1_std"])
    bottom, top = percent_limits(list(m - s), list(m + s), margin=2.5)
    low = float(np.min(m - s)) if len(m) else bottom
    while bottom > 0 and low - bottom < 0.1 * (top - bottom):  # a label is ~1/10 of the axis
        bottom = max(0.0, bottom - 5)
    return bottom, top


def _curve_figure(results: pd.DataFrame, arms: Sequence[str], out: Path, title: str,
                  ylim: Limits | None = None) -> Path:
    table = curves(results, arms)
    write_csv(out.with_suffix(".csv"), table)
    fig = _figure()
    if table.empty:
        _nothing(fig, f"{title}:\nnone of the arms {', '.join(arms) or '(none)'} are in the results")
        return _save(fig, out)
    styles = arm_styles(res.arms_in_order(results))
    ax = fig.add_subplot()
    for arm, g in table.groupby("arm", sort=False):
        x, y, s = g["labeled_equiv_pct"].to_numpy(), 100 * g["top1"].to_numpy(), 100 * _std0(g["top1_std"])
        st = styles[arm]
        ax.plot(x, y, marker="o", color=st.color, linestyle=st.dash, label=f"{arm} (n={int(g['n_seeds'].min())})")
        ax.fill_between(x, y - s, y + s, color=st.color, alpha=0.15, linewidth=0)
    ax.set_ylim(*(ylim or curve_limits(results[results["arm"].isin(list(arms))])))
    ax.set_xlabel("labeled-equivalent % of train set (bits / log2 C)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, out)


def _ink(color: str) -> str:
    """Black or white, whichever reads better on `color`."""
    r, g, b = matplotlib.colors.to_rgb(color)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _over_seeds(n_seeds: pd.Series) -> str:
    """``mean ± std over 3 seeds`` (or ``one seed``) for a title."""
    n = int(pd.to_numeric(n_seeds).max()) if len(n_seeds) else 0
    return f"mean ± std over {n} seeds" if n > 1 else "one seed"


def _bars(ax: Axes, names: Sequence[str], means: np.ndarray, stds: np.ndarray, styles: Sequence[ArmStyle],
          ylim: Limits) -> None:
    """Bars of final top-1 (fractions in, percent drawn) with ± std error bars; each value is
    written inside its bar, below the error bar's lower end, so the two never cross."""
    x = np.arange(len(names))
    raw = np.asarray(stds, dtype=np.float64)
    m, s = 100 * np.asarray(means, dtype=np.float64), 100 * np.nan_to_num(raw)
    ax.bar(x, m, color=[st.color for st in styles], hatch=[st.hatch or None for st in styles],
           edgecolor="white", linewidth=0)
    has = ~np.isnan(raw)  # one seed: no std, no error bar
    if has.any():
        bars = ax.errorbar(x[has], m[has], yerr=s[has], fmt="none", ecolor="0.1", elinewidth=1.2, capsize=4)
        halo = [patheffects.withStroke(linewidth=3, foreground="white")]  # visible on a dark bar too
        for artist in (*bars.lines[1], *bars.lines[2]):
            artist.set_path_effects(halo)
    ax.set_ylim(*ylim)
    for xi, mi, si, st in zip(x, m, s, styles):
        if (mi - si - ylim[0]) >= 0.1 * (ylim[1] - ylim[0]):  # room inside the bar, under the error bar
            ax.annotate(f"{mi:.1f}", (xi, mi - si), ha="center", va="top", xytext=(0, -4), textcoords="offset points",
                        fontsize=9, color=_ink(st.color))
        else:  # a short bar: above the error bar
            ax.annotate(f"{mi:.1f}", (xi, mi + si), ha="center", va="bottom", xytext=(0, 4),
                        textcoords="offset points", fontsize=9)
    ax.set_xticks(x, names, rotation=20 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    ax.set_ylabel("final test top-1 (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


# --------------------------------------------------------------------------- figures


def accuracy_vs_labels(results: pd.DataFrame, out: str | os.PathLike, *, ylim: Limits | None = None) -> Path:
    """Paper Fig. 4: top-1 vs labeled-equivalent % for the main arms (obcp, onebit, fullbit).

    Mean line and ± std band over seeds; CSV columns `CURVE_COLUMNS`. `ylim`: the accuracy
    axis (default: what these arms need), shared with Fig. 5 by `write_report`.
    """
    return _curve_figure(results, res.main_arms(results), Path(out),
                         "ObCP vs one-bit vs full labels at equal bits", ylim)


def selection_strategies(results: pd.DataFrame, out: str | os.PathLike, *, ylim: Limits | None = None) -> Path:
    """Paper Fig. 5: top-1 vs labeled-equivalent % for obcp and the random/max/diff2/entropy arms."""
    return _curve_figure(results, res.strategy_arms(results), Path(out), "Selection strategies", ylim)


def equal_bits(results: pd.DataFrame, out: str | os.PathLike, *, ylim: Limits | None = None) -> Path:
    """Paper Table 3 as a bar chart; writes the CSV and the markdown table (``.md``) beside it.
    `ylim`: the accuracy axis (default `bar_limits`), shared with Table 4 by `write_report`."""
    out = Path(out)
    table = res.equal_bits_table(results)
    write_csv(out.with_suffix(".csv"), table)
    write_text(out.with_suffix(".md"), res.equal_bits_markdown(table))
    fig = _figure(5.0, 4.0)
    if table.empty:
        _nothing(fig, "Table 3: no onebit / obcp / fullbit arm in the results")
        return _save(fig, out)
    styles = arm_styles(res.arms_in_order(results))
    ax = fig.add_subplot()
    _bars(ax, [f"{m}\n({a})" if m != a else m for m, a in zip(table["method"], table["arm"])],
          table["top1_mean"].to_numpy(), table["top1_std"].to_numpy(dtype=np.float64),
          [styles[a] for a in table["arm"]], ylim or bar_limits(results))
    ax.set_title(f"Equal bits (≈{table['bits_total'].mean():.0f} bits), {_over_seeds(table['n_seeds'])}")
    return _save(fig, out)


def ablations(results: pd.DataFrame, arms: Mapping[str, ArmParams], out: str | os.PathLike, *,
              ylim: Limits | None = None) -> Path:
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
    styles = arm_styles(res.arms_in_order(results))
    ax = fig.add_subplot()
    _bars(ax, list(table["arm"]), table["top1_mean"].to_numpy(dtype=np.float64),
          table["top1_std"].to_numpy(dtype=np.float64), [styles[a] for a in table["arm"]],
          ylim or bar_limits(results))
    ax.set_title(f"Ablations (one switch off each), {_over_seeds(table['n_seeds'])}")
    return _save(fig, out)


# the selection-quality panels: (scale to draw, y limits or None for data-driven from 0, unit)
_QUALITY_AXES: dict[str, tuple[float, tuple[float, float] | None, str]] = {
    "yes_rate": (100.0, (0.0, 100.0), "%"),
    "answer_bits": (1.0, None, "bits"),
    "auroc_wrong": (1.0, (0.4, 1.0), "AUROC (0.5: chance)"),  # lowered to hold a value under 0.4
    "selected_confidence": (100.0, (0.0, 100.0), "%"),
}


def selection_quality(results: pd.DataFrame, out: str | os.PathLike) -> Path:
    """The four selection-quality numbers (`pipeline.selection.diagnostics.QUALITY`) per arm and query
    cycle, mean ± std over seeds, one panel each; the yes-rate panel is the report's only
    yes-rate figure. Rates and confidences are drawn in percent on 0–100, the AUROC on 0–1 (with
    chance at 0.5). CSV columns: ``arm, cycle, quantity, mean, std, n_seeds`` (fractions as
    computed; cycles and arms where a number is undefined are left out)."""
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
    styles = arm_styles(res.arms_in_order(results))
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, q in zip(axes, QUALITY):
        scale, limits, unit = _QUALITY_AXES[q]
        mine = table[table["quantity"] == q]
        for arm, g in mine.groupby("arm", sort=False):
            st = styles[arm]
            ax.errorbar(g["cycle"], scale * g["mean"], yerr=scale * _std0(g["std"]), marker="o", ms=4, capsize=3,
                        color=st.color, linestyle=st.dash, label=arm)
        if limits is None:
            top = float(np.nanmax(scale * (mine["mean"] + _std0(mine["std"])))) if len(mine) else 1.0
            limits = (0.0, max(1.0, math.ceil(top * 1.1 * 2) / 2))
        elif q == "auroc_wrong" and len(mine):
            low = float(np.nanmin(mine["mean"] - _std0(mine["std"])))
            limits = (min(limits[0], math.floor(low * 10) / 10), limits[1])
        ax.set_ylim(*limits)
        if q == "auroc_wrong":
            ax.axhline(0.5, color="0.5", linewidth=1, linestyle=":")
        ax.set_title(TITLES[q], fontsize=10)
        ax.set_ylabel(unit)
        ax.set_xticks(sorted(table["cycle"].unique()))
        ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("query cycle")
    handles, labels = {}, {}
    for ax in axes:  # every arm once, even one that has no number in the first panel
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    order = [a for a in res.arms_in_order(results) if a in handles]
    fig.legend([handles[a] for a in order], order, loc="outside right center", fontsize=8)
    fig.suptitle("Selection quality per query cycle (mean ± std over seeds)")
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
    """Per-class query counts per arm (`class_query_counts`, written as the CSV beside the
    PNG) drawn by `draw_class_queries`."""
    out = Path(out)
    table = class_query_counts(ledgers, num_classes)
    if class_names is not None and len(table):
        names = list(class_names)
        table.insert(2, "class_name", [names[c] if c < len(names) else str(c) for c in table["class"]])
    write_csv(out.with_suffix(".csv"), table)
    return draw_class_queries(table, out)


def draw_class_queries(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Two heatmaps, arms × classes, on one row: where each arm's questions went (% of the
    arm's questions per asked class; full labels per given label for full-label arms; the
    count in each cell) and the yes-rate per asked class (%; none for full labels).

    `table`: `class_query_counts` rows (``class_name`` optional), e.g. read back from the CSV.
    """
    out = Path(out)
    arms = list(dict.fromkeys(table["arm"])) if len(table) else []
    if not arms:
        fig = _figure()
        _nothing(fig, "no questions in the query ledgers")
        return _save(fig, out)
    n = int(table["class"].max()) + 1

    def grid(column: str) -> np.ndarray:
        wide = table.pivot_table(index="arm", columns="class", values=column, aggfunc="sum", fill_value=0)
        return wide.reindex(index=arms, columns=range(n), fill_value=0).to_numpy(dtype=np.float64)

    asked, yes, full = grid("asked"), grid("yes"), grid("full")
    counts = asked + full  # an arm asks questions or takes full labels, not both
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(100 * counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    rate = np.divide(100 * yes, asked, out=np.full_like(asked, np.nan), where=asked > 0)
    seeds = table.drop_duplicates("arm").set_index("arm")["n_seeds"]
    full_arms = {a for a, f, q in zip(arms, full.sum(axis=1), asked.sum(axis=1)) if f > 0 and q == 0}
    rows = [f"{a} (full labels)" if a in full_arms else a for a in arms]
    if "class_name" in table.columns:
        names = table.drop_duplicates("class").set_index("class")["class_name"].reindex(range(n)).astype(str).tolist()
    else:
        names = [str(c) for c in range(n)]

    cell = 0.42 if n <= 12 else max(0.1, 6.0 / n)
    fig = _figure(2 * cell * n + 4.2, 0.34 * len(arms) + 1.9)
    axes = fig.subplots(1, 2, sharey=True)
    panels = [(axes[0], share, counts, "Blues", (0.0, float(np.nanmax(share)) if np.isfinite(share).any() else 1.0),
               "where the questions went (count in each cell)", "% of the arm's questions"),
              (axes[1], rate, rate, "viridis", (0.0, 100.0), "yes-rate per asked class", "% answered yes")]
    for ax, values, text, cmap_name, (vmin, vmax), title, unit in panels:
        cmap = matplotlib.colormaps[cmap_name].with_extremes(bad="0.92")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                          interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label=unit)
        if n <= 20:
            for (i, j), v in np.ndenumerate(values):
                if np.isfinite(v):
                    shade = cmap(min(1.0, max(0.0, (v - vmin) / max(vmax - vmin, 1e-9))))
                    ink = _ink(matplotlib.colors.to_hex(shade))
                    ax.text(j, i, f"{text[i, j]:.0f}", ha="center", va="center", fontsize=7, color=ink)
        step = 1 if n <= 20 else int(math.ceil(n / 20))
        ax.set_xticks(range(0, n, step), names[::step], rotation=45 if max(map(len, names)) > 2 else 0,
                      ha="right" if max(map(len, names)) > 2 else "center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("class (asked class; given label for full labels)")
    for i, arm in enumerate(arms):
        if arm in full_arms:
            axes[1].text((n - 1) / 2, i, "full labels: no yes/no answers", ha="center", va="center", fontsize=7,
                         color="0.35")
    axes[0].set_yticks(range(len(arms)), rows, fontsize=8)
    fig.suptitle(f"Questions per class, all cycles and {'/'.join(map(str, sorted(set(seeds))))} seed(s)")
    return _save(fig, out)


def query_times(frame: pd.DataFrame, out: str | os.PathLike, *, x: str = "query_times",
                label: str | None = None) -> Path:
    """Paper Fig. 6 (right): final top-1 vs query_times (or another params key `x`) per arm,
    mean ± std over seeds.

    ``frame``: `pipeline.tools.exps.exps_table` rows (``<x>, arm, top1, top1_std, n_seeds``: one
    experiment's summary per arm). Rows without a result are ignored; when several
    experiments give the same (arm, x), the first row wins (exps_table lists the newest
    first). CSV columns: ``arm, <x>, top1, top1_std, n_seeds``. `label`: the x axis' words
    (default: the key `x`).
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
    styles = arm_styles(order)
    ax = fig.add_subplot()
    for arm, g in table.groupby("arm", sort=False):
        m, s = 100 * g["top1"].astype(float).to_numpy(), 100 * _std0(g["top1_std"])
        ax.errorbar(g[x].astype(float), m, yerr=s, marker="o", capsize=3, color=styles[arm].color,
                    linestyle=styles[arm].dash, label=arm)
    m, s = 100 * table["top1"].astype(float).to_numpy(), 100 * _std0(table["top1_std"])
    ax.set_ylim(*percent_limits(list(m - s), list(m + s)))
    ax.set_xticks(sorted(table[x].astype(float).unique()))
    ax.set_xlabel(label or ("query times (cycles sharing the one-bit budget)" if x == "query_times" else x))
    ax.set_ylabel("final test top-1 (%)")
    ax.set_title("Query times" if x == "query_times" else f"Final accuracy vs {label or x}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


# --------------------------------------------------------------------------- report page


def index_markdown(entries: Sequence[FigureEntry], index_dir: Path, sections: Sequence[tuple[str, str]],
                   header: Sequence[tuple[str, str]] = ()) -> str:
    """The report page: `header` (label, value) lines saying what produced it, markdown
    `sections` (title, body), then every figure with caption and data link.

    Links are relative to `index_dir` (the folder of the index file).
    """
    lines = ["# obcp results", ""]
    if header:
        lines += [f"- **{label}:** {value}" for label, value in header] + [""]
    for title, body in sections:
        lines += [f"## {title}", "", body.rstrip("\n"), ""]
    lines += ["## Figures", ""]
    for e in entries:
        png = Path(os.path.relpath(e.png, index_dir)).as_posix()
        csv = Path(os.path.relpath(e.png.with_suffix(".csv"), index_dir)).as_posix()
        lines += [f"### {e.title}", "", f"![{e.title}]({png})", "", f"{e.caption} Data: [{csv}]({csv}).", ""]
    return "\n".join(lines)


FIGURES: tuple[str, ...] = ("accuracy_vs_labels", "selection_strategies", "equal_bits", "ablations",
                            "selection_quality", "class_queries")  # reports/figures/<name>.png, in page order


def write_report(results: pd.DataFrame, arms: Mapping[str, ArmParams], ledgers: Mapping[str, pd.DataFrame],
                 reports_dir: str | os.PathLike, *, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, header: Sequence[tuple[str, str]] = ()) -> Path:
    """Every figure and table of the figures stage, and ``<reports_dir>/index.md``; returns the index path.

    Writes ``results.csv`` and ``figures/<name>.{png,csv}`` for each of `FIGURES` (+ ``.md``
    for the tables) under `reports_dir`. The two accuracy curves share one y axis, and so do
    the two bar charts. `header`: (label, value) lines that open the page (`provenance`).
    """
    reports = Path(reports_dir)
    figs = reports / "figures"
    write_csv(reports / "results.csv", results)
    curve_ylim = curve_limits(results[results["arm"].isin([*res.main_arms(results), *res.strategy_arms(results)])])
    bar_ylim = bar_limits(results)
    entries = [
        FigureEntry(accuracy_vs_labels(results, figs / "accuracy_vs_labels.png", ylim=curve_ylim),
                    "Accuracy vs labels (Fig. 4)",
                    "Test top-1 vs labeled-equivalent % (bits / log2 C) of ObCP, one-bit and full-label active "
                    "learning at equal bits; mean ± std over seeds."),
        FigureEntry(selection_strategies(results, figs / "selection_strategies.png", ylim=curve_ylim),
                    "Selection strategies (Fig. 5)",
                    "ObCP with each selection strategy of the run (its arms with every switch on: the default "
                    "`eig`, the paper's Eq. 7, random, max, diff2, entropy); mean ± std over seeds. Same y axis as "
                    "Fig. 4."),
        FigureEntry(equal_bits(results, figs / "equal_bits.png", ylim=bar_ylim), "Equal bits (Table 3)",
                    "Final top-1 of one-bit, ObCP and full labels spending the same number of bits."),
        FigureEntry(ablations(results, arms, figs / "ablations.png", ylim=bar_ylim), "Ablations (Table 4)",
                    "Final top-1 with one ObCP module switched off, against the full method. Same y axis as "
                    "Table 3."),
        FigureEntry(selection_quality(results, figs / "selection_quality.png"), "Selection quality per cycle",
                    "At each query, for the questions each strategy chose: the yes-rate (the share answered "
                    "*yes*), the answers' entropy (bits of information per question), the AUROC of the selection "
                    "score against 'the asked class is wrong' over every candidate (reads the ground truth: a "
                    "diagnostic), and the mean clean-view confidence of the selected samples; mean ± std over "
                    "seeds (pipeline/selection/diagnostics.py)."),
        FigureEntry(class_queries(ledgers, figs / "class_queries.png", num_classes=num_classes,
                                  class_names=class_names), "Questions per class",
                    "Left: the share of each arm's one-bit questions that asked each class (full labels per "
                    "given label for full-label arms), with the count in each cell. Right: the share of those "
                    "questions answered *yes*. All cycles and seeds."),
    ]
    summary = res.final_summary(results)
    note = res.top1_note(results)
    sections = ([("How top-1 was measured", note)] if note else []) + [
        ("Final accuracy per arm", res.summary_markdown(summary)
         + "\nMean ± std (ddof=1) over seeds of the last cycle's test top-1. All points: "
           "[results.csv](results.csv)."),
        ("Equal bits (Table 3)", (figs / "equal_bits.md").read_text()),
        ("Ablations (Table 4)", (figs / "ablations.md").read_text()),
        coldstart.section(results),  # cycle 1 against stage 1, flagging an arm that loses accuracy
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
    write_text(index, index_markdown(entries, reports, sections, header))
    return index
