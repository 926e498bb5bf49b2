"""Metrics of every arm and seed → one results table, and the paper's summary tables.

The ``evaluate`` stage writes ``reports/metrics/seed<S>/<arm>.json`` (one per arm and
seed) with a ``points`` list: one test evaluation per query cycle (cycle 0 is the
stage-1 checkpoint). :func:`collect` flattens them into the **results table**, one row
per (arm, seed, cycle):

=================  =======  ==============================================================
column             dtype    meaning
=================  =======  ==============================================================
arm                str      arm name (a key of ``arms`` in params.yaml)
seed               int64    seed
method             str      ``obcp`` | ``onebit`` | ``fullbit``
strategy           str      selection strategy
cycle              int64    query cycle, 0 = stage-1 checkpoint
bits               float64  bits of supervision spent so far (|labeled|·log2 C + questions)
labeled_equiv_pct  float64  bits / log2 C / num_train · 100, in percent of the train set
top1               float64  test top-1 accuracy, a fraction in [0, 1]; NaN when not measured
top5               float64  test top-5 accuracy (only when some metrics file has it)
top1_source        str      only when some top-1 is not a test-split measurement: ``test``,
                            ``audit`` (estimated from random yes/no questions,
                            pipeline/selection/audit.py) or empty (not measured)
yes                Int64    *yes* answers in this cycle (<NA> when not reported)
asked              Int64    one-bit questions asked in this cycle (<NA> when not reported)
yes_in_sup …       bool     paper Table 4's four switches of the arm (from params.yaml)
selection.<q>      float64  the cycle's selection quality (`pipeline.selection.diagnostics.QUALITY`:
                            yes_rate, answer_bits, auroc_wrong, selected_confidence); NaN
                            for cycle 0 and where undefined
=================  =======  ==============================================================

Accuracies stay fractions in every table and CSV; the markdown renderings, the figures
and the summary metrics (``reports/metrics.json``, `summary_metrics`) show percentages.
Standard deviations are over seeds with ``ddof=1`` (NaN for one seed).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.core.config import ArmParams
from pipeline.selection.diagnostics import QUALITY
from pipeline.core.errors import ObcpError
from pipeline.core.layout import metrics_file as metrics_path  # <dir>/seed<S>/<arm>.json

SWITCHES: tuple[str, ...] = ("yes_in_sup", "yes_in_ctr", "neg_ctr", "neg_loss")
SWITCH_TITLES: dict[str, str] = {  # paper Table 4's column headers
    "yes_in_sup": "Adding in sup.",
    "yes_in_ctr": "Adding in ctr.",
    "neg_ctr": "Neg ctr.",
    "neg_loss": "Neg loss.",
}
MAIN_METHODS: tuple[str, ...] = ("obcp", "onebit", "fullbit")  # paper Fig. 4 / Table 3
BASE_COLUMNS: tuple[str, ...] = (
    "arm", "seed", "method", "strategy", "cycle", "bits", "labeled_equiv_pct", "top1",
)
_POINT_REQUIRED: tuple[str, ...] = ("cycle", "bits", "labeled_equiv_pct", "top1")
_REPRO_HINT = "Run `dvc repro evaluate` (or plain `dvc repro`) to (re)create it."


class ResultsError(ObcpError):
    """Metrics files are missing, malformed or inconsistent with params.yaml."""


class MetricsMissingError(ResultsError):
    """A metrics file that params.yaml's arms and seeds call for does not exist."""


class MetricsFormatError(ResultsError):
    """A metrics file is not valid JSON or lacks required fields."""


class StaleMetricsError(ResultsError):
    """A metrics file was produced for other arm settings than params.yaml has now."""


# --------------------------------------------------------------------------- collect


def read_metrics(path: str | os.PathLike) -> dict:
    """Load and check one metrics JSON; raise a `ResultsError` subclass naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise MetricsMissingError(
            f"metrics file {path} does not exist: the evaluate stage of this arm and seed has not "
            f"run yet. {_REPRO_HINT}"
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetricsFormatError(f"metrics file {path} is not readable JSON ({exc}). Delete it. {_REPRO_HINT}") from exc
    points = doc.get("points") if isinstance(doc, dict) else None
    if not isinstance(points, list) or not points:
        raise MetricsFormatError(
            f"metrics file {path} has no non-empty `points` list (one entry per query cycle). "
            f"It was written by another version of the evaluate stage; delete it. {_REPRO_HINT}"
        )
    for i, point in enumerate(points):
        missing = [k for k in _POINT_REQUIRED if not isinstance(point, dict) or k not in point]
        if missing:
            raise MetricsFormatError(
                f"metrics file {path}: points[{i}] lacks {', '.join(missing)} (needs "
                f"{', '.join(_POINT_REQUIRED)}). Delete it. {_REPRO_HINT}"
            )
    cycles = [int(p["cycle"]) for p in points]
    if len(set(cycles)) != len(cycles):
        raise MetricsFormatError(f"metrics file {path}: repeated cycles {sorted(cycles)}. Delete it. {_REPRO_HINT}")
    return doc


def _check_matches(doc: dict, path: Path, arm: str, seed: int, settings: ArmParams) -> None:
    """The metrics file must describe this arm and seed as params.yaml defines them now."""
    expected = {"arm": arm, "seed": seed, "method": settings.method, "strategy": settings.strategy}
    wrong = [f"{k}={doc[k]!r} (params.yaml: {v!r})" for k, v in expected.items() if k in doc and doc[k] != v]
    switches = doc.get("switches")
    if isinstance(switches, dict):
        wrong += [
            f"switches.{k}={switches[k]!r} (params.yaml: {getattr(settings, k)!r})"
            for k in SWITCHES if k in switches and bool(switches[k]) != getattr(settings, k)
        ]
    if wrong:
        raise StaleMetricsError(
            f"metrics file {path} does not match params.yaml: {'; '.join(wrong)}. It is stale or was "
            f"copied from another run; {_REPRO_HINT}"
        )


def collect(metrics_dir: str | os.PathLike, arms: Mapping[str, ArmParams], seeds: Iterable[int]) -> pd.DataFrame:
    """The results table (module docstring) of every arm × seed, sorted by arm (params order), seed, cycle.

    Raises `MetricsMissingError` naming the first missing file, `MetricsFormatError` or
    `StaleMetricsError` for a file that cannot be used.
    """
    seeds = list(seeds)
    rows: list[dict] = []
    for arm, settings in arms.items():
        for seed in seeds:
            path = metrics_path(metrics_dir, arm, seed)
            doc = read_metrics(path)
            _check_matches(doc, path, arm, seed, settings)
            for point in doc["points"]:
                row = {
                    "arm": arm,
                    "seed": int(seed),
                    "method": settings.method,
                    "strategy": settings.strategy,
                    "cycle": int(point["cycle"]),
                    "bits": float(point["bits"]),
                    "labeled_equiv_pct": float(point["labeled_equiv_pct"]),
                    "top1": _float(point["top1"]),
                    "top1_source": point.get("top1_source", "test") or "",
                    "yes": point.get("yes"),
                    "asked": point.get("asked"),
                }
                if "top5" in point:
                    row["top5"] = float(point["top5"])
                row.update({k: bool(getattr(settings, k)) for k in SWITCHES})
                quality = point.get("selection") or {}
                row.update({f"selection.{q}": _float(quality.get(q)) for q in QUALITY})
                rows.append(row)
    return from_rows(rows)


def _float(value: object) -> float:
    """A metrics number, or NaN for a missing or null one."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def from_rows(rows: list[dict]) -> pd.DataFrame:
    """Build a results table (module docstring) from one dict per point.

    Canonical columns and dtypes; sorted by arm (first-appearance order), seed and cycle. ``top5`` is kept when any row has it.
    """
    has_top5 = any("top5" in r for r in rows)
    has_source = any(r.get("top1_source", "test") != "test" for r in rows)
    quality = [f"selection.{q}" for q in QUALITY]
    columns = (list(BASE_COLUMNS) + (["top5"] if has_top5 else []) + (["top1_source"] if has_source else [])
               + ["yes", "asked", *SWITCHES, *quality])
    first = {arm: i for i, arm in enumerate(dict.fromkeys(r["arm"] for r in rows))}
    rows = [{"_order": first[r["arm"]], **r} for r in rows]
    frame = pd.DataFrame(rows, columns=["_order", *columns])
    frame = frame.sort_values(["_order", "seed", "cycle"], kind="stable").drop(columns="_order")
    dtypes = {"arm": "str", "seed": "int64", "method": "str", "strategy": "str", "cycle": "int64",
              "bits": "float64", "labeled_equiv_pct": "float64", "top1": "float64", "yes": "Int64",
              "asked": "Int64", **{k: "bool" for k in SWITCHES}, **{c: "float64" for c in quality}}
    if has_top5:
        dtypes["top5"] = "float64"
    if has_source:
        dtypes["top1_source"] = "str"
    return frame.astype(dtypes).reset_index(drop=True)


def top1_note(results: pd.DataFrame) -> str | None:
    """What the report must say when some top-1 is not a test-split measurement, else None."""
    if "top1_source" not in results.columns:
        return None
    audit = int((results["top1_source"] == "audit").sum())
    missing = int(results["top1"].isna().sum())
    return (
        "There is no labeled test split (a dataset of your own images without `dataset.val`). "
        f"{audit} top-1 value(s) are **estimates**: the share of *yes* among random audit questions "
        "\"is this a <the model's guess>?\" about uniformly drawn unlabeled images, asked in the next cycle "
        "(pipeline/selection/audit.py; `audit.size` per cycle, counted in the bits spent). "
        f"{missing} value(s) are not measured (no later audit asked about that model, e.g. the last cycle's): "
        "blank, never guessed."
    )


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results table written as CSV (``reports/results.csv``) back with its dtypes."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results table {path} does not exist; run `dvc repro figures` to write it.")
    frame = pd.read_csv(path)
    missing = [c for c in (*BASE_COLUMNS, "yes", "asked") if c not in frame.columns]
    if missing:
        raise ResultsError(f"results table {path} lacks columns {missing}; run `dvc repro figures` to rewrite it.")
    frame["yes"] = frame["yes"].astype("Int64")
    frame["asked"] = frame["asked"].astype("Int64")
    frame["arm"] = frame["arm"].astype(str)
    return frame


# --------------------------------------------------------------------------- arm choice


def arms_in_order(results: pd.DataFrame) -> list[str]:
    """Arm names in the order they first appear in the results table."""
    return list(dict.fromkeys(results["arm"].tolist()))


def _arm_info(results: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: method, strategy, switches (first row of each arm)."""
    cols = ["arm", "method", "strategy", *[k for k in SWITCHES if k in results.columns]]
    return results[cols].drop_duplicates("arm").reset_index(drop=True)


def _all_switches_on(row: pd.Series) -> bool:
    return all(bool(row[k]) for k in SWITCHES if k in row.index)


def _pick(candidates: pd.DataFrame, preferred_name: str) -> str | None:
    """The arm named `preferred_name` if among the candidates, else the first candidate."""
    if candidates.empty:
        return None
    names = candidates["arm"].tolist()
    return preferred_name if preferred_name in names else names[0]


def _obcp_all_on(results: pd.DataFrame) -> pd.DataFrame:
    """`_arm_info` rows of method obcp with every switch on."""
    info = _arm_info(results)
    info = info[info["method"] == "obcp"]
    return info[info.apply(_all_switches_on, axis=1)] if len(info) else info


def full_arm(results: pd.DataFrame) -> str | None:
    """The full ObCP arm: method obcp, every switch on; the arm named ``obcp`` (whatever its
    strategy: the default's is `eig`), else the first such arm with Eq. 7 (strategy obcp)."""
    full = _obcp_all_on(results)
    if "obcp" in set(full["arm"]):
        return "obcp"
    return _pick(full[full["strategy"] == "obcp"], "obcp")


def eq7_arm(results: pd.DataFrame) -> str | None:
    """The paper's ObCP when it is not the full arm: method and strategy obcp (Eq. 7), every
    switch on, another arm than :func:`full_arm` (the default run's ``eq7``); else None."""
    eq7 = _obcp_all_on(results)
    eq7 = eq7[(eq7["strategy"] == "obcp") & (eq7["arm"] != full_arm(results))]
    return _pick(eq7, "eq7")


def main_arms(results: pd.DataFrame) -> list[str]:
    """Arms of the main comparison (paper Fig. 4, Table 3): one per method of `MAIN_METHODS` present.

    For ``obcp`` the full arm (:func:`full_arm`); for the baselines the arm named after the
    method if there is one, else the first arm of that method with every switch on.
    """
    info = _arm_info(results)
    chosen: list[str] = []
    for method in MAIN_METHODS:
        if method == "obcp":
            name = full_arm(results)
        else:
            cands = info[info["method"] == method]
            on = cands[cands.apply(_all_switches_on, axis=1)] if len(cands) else cands
            name = _pick(on if len(on) else cands, method)
        if name is not None:
            chosen.append(name)
    return chosen


def strategy_arms(results: pd.DataFrame) -> list[str]:
    """Arms of the selection comparison (paper Fig. 5): method obcp, every switch on, one per strategy.

    Ordered as the arms first name each strategy, Eq. 7 (`obcp`) first; an arm named after its
    strategy is preferred when several share it.
    """
    info = _arm_info(results)
    info = info[info["method"] == "obcp"]
    info = info[info.apply(_all_switches_on, axis=1)] if len(info) else info
    order = dict.fromkeys(["obcp", *info["strategy"]])
    chosen = []
    for strategy in order:
        name = _pick(info[info["strategy"] == strategy], strategy)
        if name is not None:
            chosen.append(name)
    return chosen


def ablation_arms(arms: Mapping[str, ArmParams], full: str) -> list[str]:
    """Arms of paper Table 4: method obcp, the full arm's strategy, at least one switch off (params order)."""
    ref = arms[full]
    return [
        name for name, a in arms.items()
        if name != full and a.method == "obcp" and a.strategy == ref.strategy
        and not all(getattr(a, k) for k in SWITCHES)
    ]


# --------------------------------------------------------------------------- summaries


def final_points(results: pd.DataFrame) -> pd.DataFrame:
    """The last cycle of every (arm, seed): its final accuracy and bits."""
    if results.empty:
        return results.copy()
    last = results.groupby(["arm", "seed"], sort=False)["cycle"].transform("max")
    return results[results["cycle"] == last].reset_index(drop=True)


def seed_std(values: pd.Series) -> float:
    """Sample standard deviation (ddof=1) over seeds; NaN for a single value."""
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def final_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per arm (results order): final top-1 mean and std over seeds, number of seeds, bits.

    Columns: ``arm, method, strategy, n_seeds, cycle, bits, labeled_equiv_pct, top1_mean,
    top1_std`` (+ ``top5_mean, top5_std``). ``bits``/``labeled_equiv_pct`` are means over seeds
    of the final cycle's values.
    """
    final = final_points(results)
    has_top5 = "top5" in results.columns
    rows = []
    for arm in arms_in_order(final):
        g = final[final["arm"] == arm]
        row = {
            "arm": arm,
            "method": g["method"].iloc[0],
            "strategy": g["strategy"].iloc[0],
            "n_seeds": int(g["seed"].nunique()),
            "cycle": int(g["cycle"].max()),
            "bits": float(g["bits"].mean()),
            "labeled_equiv_pct": float(g["labeled_equiv_pct"].mean()),
            "top1_mean": float(g["top1"].mean()),
            "top1_std": seed_std(g["top1"]),
        }
        if has_top5:
            row["top5_mean"] = float(g["top5"].mean())
            row["top5_std"] = seed_std(g["top5"])
        rows.append(row)
    columns = ["arm", "method", "strategy", "n_seeds", "cycle", "bits", "labeled_equiv_pct",
               "top1_mean", "top1_std"] + (["top5_mean", "top5_std"] if has_top5 else [])
    return pd.DataFrame(rows, columns=columns)


SUMMARY_GROUPS: tuple[str, ...] = ("top1", "std", "bits", "n_seeds")  # the summary metrics' top-level keys


def summary_metrics(summary: pd.DataFrame) -> dict:
    """The summary metrics document (``reports/metrics.json``, what ``dvc exp show``, ``dvc
    metrics diff`` and ``obcp exps`` show) from a `final_summary`::

        {"top1": {"obcp": 96.9, ...},   # final test top-1 per arm, mean over seeds, percent (0.1)
         "std": {"obcp": 1.3, ...},     # its std over seeds (ddof=1), percentage points (0.1); null for one seed
         "bits": {"obcp": 498.1, ...},  # bits of supervision spent, mean over seeds (0.1)
         "n_seeds": 3}

    Arms in params order inside each group, so ``dvc exp show --keep top1`` keeps one column
    per arm (``top1.<arm>``) whatever else it drops. Percent, as in every table and figure.
    No lists: DVC drops them.
    """
    def rounded(value: float, scale: float) -> float | None:
        return None if math.isnan(value) else round(scale * float(value), 1)

    arms = list(summary["arm"])
    return {
        "top1": {arm: rounded(m, 100) for arm, m in zip(arms, summary["top1_mean"])},
        "std": {arm: rounded(s, 100) for arm, s in zip(arms, summary["top1_std"])},
        "bits": {arm: rounded(b, 1) for arm, b in zip(arms, summary["bits"])},
        "n_seeds": int(summary["n_seeds"].max()) if len(summary) else 0,
    }


def ablation_table(results: pd.DataFrame, arms: Mapping[str, ArmParams]) -> pd.DataFrame:
    """Paper Table 4: one row per ablation arm present in `results`, then the full ObCP arm.

    Columns: ``arm``, the four switches as ``✓``/``✗`` (headers as in the paper,
    `SWITCH_TITLES`), ``n_seeds, top1_mean, top1_std, delta`` (``top1_mean`` minus the full
    arm's; 0 for the full arm). Empty when the full arm is not in the results.
    """
    columns = ["arm", *SWITCH_TITLES.values(), "n_seeds", "top1_mean", "top1_std", "delta"]
    full = full_arm(results)
    if full is None or full not in arms:
        return pd.DataFrame(columns=columns)
    summary = final_summary(results).set_index("arm")
    present = [a for a in ablation_arms(arms, full) if a in summary.index] + [full]
    base = summary.loc[full, "top1_mean"]
    rows = []
    for name in present:
        s = summary.loc[name]
        row = {"arm": name}
        row.update({title: "✓" if getattr(arms[name], key) else "✗" for key, title in SWITCH_TITLES.items()})
        row.update({"n_seeds": int(s["n_seeds"]), "top1_mean": float(s["top1_mean"]),
                    "top1_std": float(s["top1_std"]), "delta": float(s["top1_mean"] - base)})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def equal_bits_table(results: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 3: final accuracy of the main arms (onebit, obcp, fullbit) at equal bits.

    One row per method present, in the order onebit, obcp, fullbit. Columns: ``method, arm,
    n_seeds, bits_initial`` (cycle-0 bits, |I^S|·log2 C), ``bits_total`` (final bits, mean over
    seeds), ``labeled_equiv_pct, top1_mean, top1_std, delta`` (``top1_mean`` minus the obcp
    arm's; NaN without an obcp arm).
    """
    columns = ["method", "arm", "n_seeds", "bits_initial", "bits_total", "labeled_equiv_pct",
               "top1_mean", "top1_std", "delta"]
    chosen = main_arms(results)
    if not chosen:
        return pd.DataFrame(columns=columns)
    summary = final_summary(results).set_index("arm")
    first = results[results["cycle"] == results.groupby(["arm", "seed"])["cycle"].transform("min")]
    initial = first.groupby("arm")["bits"].mean()
    by_method = {summary.loc[a, "method"]: a for a in chosen}
    ref = summary.loc[by_method["obcp"], "top1_mean"] if "obcp" in by_method else math.nan
    rows = []
    for method in ("onebit", "obcp", "fullbit"):
        if method not in by_method:
            continue
        arm = by_method[method]
        s = summary.loc[arm]
        rows.append({
            "method": method, "arm": arm, "n_seeds": int(s["n_seeds"]),
            "bits_initial": float(initial[arm]), "bits_total": float(s["bits"]),
            "labeled_equiv_pct": float(s["labeled_equiv_pct"]), "top1_mean": float(s["top1_mean"]),
            "top1_std": float(s["top1_std"]), "delta": float(s["top1_mean"] - ref),
        })
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- ledgers


def load_ledgers(paths: Mapping[str, Sequence[str | os.PathLike]]) -> dict[str, pd.DataFrame]:
    """Read every arm's query ledgers (one file per seed) into one frame per arm.

    ``paths``: arm → ledger files (``reports/ledger/seed<S>/<arm>.parquet``). A missing or
    unreadable file raises `pipeline.pool.ledger.LedgerError`.
    """
    from pipeline.pool import ledger

    out: dict[str, pd.DataFrame] = {}
    for arm, files in paths.items():
        frames = [ledger.read(p) for p in files]
        out[arm] = pd.concat(frames, ignore_index=True) if frames else ledger.empty()
    return out


# --------------------------------------------------------------------------- markdown


def pct(mean: float, std: float = math.nan, digits: int = 1) -> str:
    """Accuracy fractions as ``"96.0 ± 0.4"`` percent (``"96.0"`` when std is NaN, ``"—"`` when mean is)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = f"{100 * mean:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {100 * std:.{digits}f}"
    return text


def signed_pct(delta: float, digits: int = 1) -> str:
    """A difference of fractions as signed percentage points: ``"+1.2"``, ``"−0.8"``, ``"0.0"``."""
    if delta is None or (isinstance(delta, float) and math.isnan(delta)):
        return "—"
    value = round(100 * delta, digits)
    if value == 0:
        return f"{0:.{digits}f}"
    return f"{'+' if value > 0 else '−'}{abs(value):.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `frame` (cells as ``str``; NaN as ``—``)."""
    def cell(v: object) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "—"
        if isinstance(v, (float, np.floating)):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(cell(str(c)) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def summary_markdown(summary: pd.DataFrame) -> str:
    """`final_summary` as markdown: arm, method, strategy, seeds, labeled-equivalent %, top-1 (%)."""
    view = pd.DataFrame({
        "arm": summary["arm"],
        "method": summary["method"],
        "strategy": summary["strategy"],
        "seeds": summary["n_seeds"],
        "bits": [f"{b:.1f}" for b in summary["bits"]],
        "labeled equiv. %": [f"{v:.2f}" for v in summary["labeled_equiv_pct"]],
        "top-1 % (mean ± std)": [pct(m, s) for m, s in zip(summary["top1_mean"], summary["top1_std"])],
    })
    if "top5_mean" in summary.columns:
        view["top-5 %"] = [pct(m, s) for m, s in zip(summary["top5_mean"], summary["top5_std"])]
    return markdown_table(view)


def ablation_markdown(table: pd.DataFrame) -> str:
    """`ablation_table` as paper Table 4: switches ✓/✗ and ``Acc.`` as ``78.5 ± 0.3 (−0.8)``."""
    view = table[["arm", *SWITCH_TITLES.values()]].copy()
    view["Acc. %"] = [
        pct(m, s) + ("" if d == 0 else f" ({signed_pct(d)})")
        for m, s, d in zip(table["top1_mean"], table["top1_std"], table["delta"])
    ]
    view["seeds"] = table["n_seeds"]
    return markdown_table(view)


def equal_bits_markdown(table: pd.DataFrame) -> str:
    """`equal_bits_table` as paper Table 3: method, arm, bits (initial = |I^S|·log2 C, total), top-1 %."""
    view = pd.DataFrame({
        "method": table["method"],
        "arm": table["arm"],
        "initial bits": [f"{v:.1f}" for v in table["bits_initial"]],
        "bits total": [f"{v:.1f}" for v in table["bits_total"]],
        "labeled equiv. %": [f"{v:.2f}" for v in table["labeled_equiv_pct"]],
        "top-1 %": [pct(m, s) for m, s in zip(table["top1_mean"], table["top1_std"])],
        "vs obcp": [signed_pct(d) for d in table["delta"]],
        "seeds": table["n_seeds"],
    })
    return markdown_table(view)
