"""What a *yes* and a *no* are worth: the counterfactual arms' accuracy gain per answer.

`python -m pipeline.tools.answer_values PROJECT [PROJECT …] --out reports/onebit_aware/values`
reads each project's per-seed metrics (`reports/metrics/seed<S>/<arm>.json`, the evaluate
stage's) for the arms ``all_yes`` and ``all_no`` (`pipeline.selection.onebit_aware`: they
follow the obcp arm, same bits, but every answer is *yes*, or every answer is *no*; they read
the ground truth as only the simulated oracle can) and, when present, ``obcp``. Per seed,
paired with that seed's stage-1 checkpoint (cycle 0, shared by every arm):

    value per yes = (final top-1 of all_yes − stage-1 top-1) / yes answers of all_yes
    value per no  = (final top-1 of all_no  − stage-1 top-1) / no answers of all_no

in top-1 percentage points per answer; both include what the stage-2 epochs add without any
answer (the arms train equally long), so their difference is the answers' own. Also the
paired final difference all_yes − all_no with a 95 % t-interval, and per arm the first
cycle's change against stage 1, yes-rate and bits per question (`pipeline.reporting.coldstart`).
Writes ``<out>.json`` (every number) and ``<out>.md`` (the tables).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import typer

from pipeline.core.config import load_params
from pipeline.core.errors import ObcpError, reported
from pipeline.core.io import write_text
from pipeline.core.layout import Layout
from pipeline.reporting import coldstart
from pipeline.reporting.results import collect, markdown_table

ARMS = ("all_yes", "all_no", "obcp")


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sd ddof=1, lo, hi) of paired differences (NaN where undefined)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    if len(d) == 0:
        return (math.nan,) * 4
    if len(d) < 2:
        return float(d.mean()), math.nan, math.nan, math.nan
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * sd / math.sqrt(len(d))
    return float(d.mean()), sd, float(d.mean()) - half, float(d.mean()) + half


def project_values(root: Path) -> dict:
    """The values of one project (module docstring) as a JSON-ready dict."""
    params = load_params(root / "params.yaml", names=False)
    missing = [a for a in ARMS[:2] if a not in params.arms]
    if missing:
        raise ObcpError(f"{root}/params.yaml has no arm(s) {missing}: add `all_yes` and `all_no` arms "
                        "(strategy all_yes / all_no, method obcp) and run them.")
    arms = dict(params.arms)  # every arm of the project: the per-arm tables cover them all
    layout = Layout(params.dataset.name, root)
    results = collect(layout.metrics_root, arms, params.seeds)
    seeds = []
    for seed in params.seeds:
        r = results[results["seed"] == seed]
        stage1 = float(r[r["cycle"] == 0]["top1"].iloc[0])
        row: dict = {"seed": int(seed), "stage1_top1": stage1}
        for arm in (a for a in ARMS if a in arms):
            a = r[(r["arm"] == arm) & (r["cycle"] > 0)]
            final = float(a[a["cycle"] == a["cycle"].max()]["top1"].iloc[0])
            yes, asked = int(a["yes"].sum()), int(a["asked"].sum())
            row[arm] = {"final_top1": final, "gain_pp": 100 * (final - stage1), "yes": yes, "no": asked - yes,
                        "asked": asked}
        row["value_yes_pp"] = row["all_yes"]["gain_pp"] / row["all_yes"]["yes"]
        row["value_no_pp"] = row["all_no"]["gain_pp"] / row["all_no"]["no"]
        seeds.append(row)
    vy = [s["value_yes_pp"] for s in seeds]
    vn = [s["value_no_pp"] for s in seeds]
    diff = t_interval([100 * (s["all_yes"]["final_top1"] - s["all_no"]["final_top1"]) for s in seeds])
    first = coldstart.first_cycle(results)
    finals = []
    last = results[results["cycle"] == results.groupby(["arm", "seed"])["cycle"].transform("max")]
    ref = last[last["arm"] == "obcp"].set_index("seed")["top1"] if "obcp" in arms else None
    for arm in arms:
        f = last[last["arm"] == arm].set_index("seed")["top1"]
        versus = t_interval(100 * (f - ref.loc[f.index]).to_numpy()) if ref is not None and arm != "obcp" \
            else (math.nan,) * 4
        finals.append({"arm": arm, "strategy": arms[arm].strategy, "rounds": arms[arm].rounds,
                       "final_top1_mean": float(f.mean()), "final_top1_std": float(f.std(ddof=1)) if len(f) > 1
                       else None, "minus_obcp_pp": {"mean": versus[0], "lo": versus[2], "hi": versus[3]}})
    return {
        "dataset": params.dataset.name, "project": str(root), "seeds": [int(s) for s in params.seeds],
        "budget": {"initial": params.budget.initial, "one_bit": params.budget.one_bit,
                   "query_times": params.query_times},
        "value_yes_pp": float(np.mean(vy)), "value_yes_std": float(np.std(vy, ddof=1)) if len(vy) > 1 else None,
        "value_no_pp": float(np.mean(vn)), "value_no_std": float(np.std(vn, ddof=1)) if len(vn) > 1 else None,
        "all_yes_minus_all_no_pp": {"mean": diff[0], "sd": diff[1], "lo": diff[2], "hi": diff[3]},
        "per_seed": seeds,
        "arms": json.loads(first.to_json(orient="records")),
        "final": finals,
    }


def _r(v, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown(docs: list[dict]) -> str:
    lines = ["# What a yes and a no are worth", "",
             "Written by `python -m pipeline.tools.answer_values` (pipeline/tools/answer_values.py) from the "
             "per-seed metrics of the counterfactual arms `all_yes` and `all_no` (every answer yes / every "
             "answer no; they read the ground truth as only the simulated oracle can) and `obcp`. Value = "
             "(final top-1 − stage-1 top-1) / answers of that kind, in top-1 percentage points per answer, "
             "paired by seed; mean ± std over seeds (ddof=1).", ""]
    rows = []
    for d in docs:
        diff = d["all_yes_minus_all_no_pp"]
        rows.append({"dataset": d["dataset"], "seeds": len(d["seeds"]),
                     "value per yes (pp)": f"{_r(d['value_yes_pp'])} ± {_r(d['value_yes_std'])}",
                     "value per no (pp)": f"{_r(d['value_no_pp'])} ± {_r(d['value_no_std'])}",
                     "all_yes − all_no final (pp)": f"{_r(diff['mean'], 2)} [{_r(diff['lo'], 2)}, {_r(diff['hi'], 2)}]"})
    lines += [markdown_table(pd.DataFrame(rows)), "Interval: 95 % t-interval of the paired difference.", ""]
    for d in docs:
        lines += [f"## {d['dataset']}", "", f"Project {d['project']}; budget {d['budget']}.", ""]
        per = []
        for s in d["per_seed"]:
            row = {"seed": s["seed"], "stage 1 top-1": _r(s["stage1_top1"])}
            for arm in ARMS:
                if arm in s:
                    row[f"{arm} final"] = _r(s[arm]["final_top1"])
                    row[f"{arm} yes/asked"] = f"{s[arm]['yes']}/{s[arm]['asked']}"
            row["per yes (pp)"] = _r(s["value_yes_pp"])
            row["per no (pp)"] = _r(s["value_no_pp"])
            per.append(row)
        lines += [markdown_table(pd.DataFrame(per)), ""]
        lines += ["Every arm of the project: final top-1 (mean ± std over seeds) and minus obcp (paired by seed, "
                  "pp, 95 % t-interval):", ""]
        lines += [markdown_table(pd.DataFrame([{
            "arm": f["arm"], "strategy": f["strategy"], "rounds": f["rounds"],
            "final top-1 %": f"{100 * f['final_top1_mean']:.2f} ± "
                             f"{_r(None if f['final_top1_std'] is None else 100 * f['final_top1_std'], 2)}",
            "minus obcp (pp)": "—" if f["arm"] == "obcp" else
            f"{_r(f['minus_obcp_pp']['mean'], 2)} [{_r(f['minus_obcp_pp']['lo'], 2)}, {_r(f['minus_obcp_pp']['hi'], 2)}]",
        } for f in d["final"]])), ""]
        lines += ["Cycle 1 against stage 1 (pipeline/reporting/coldstart.py):", "",
                  coldstart.first_cycle_markdown(pd.DataFrame(d["arms"])), ""]
    return "\n".join(lines)


def main(projects: list[Path] = typer.Argument(..., help="project folders that ran the all_yes and all_no arms"),
         out: Path = typer.Option(Path("reports/onebit_aware/values"), help="writes <out>.json and <out>.md")) -> None:
    with reported():
        docs = [project_values(Path(p)) for p in projects]
        write_text(out.with_suffix(".json"), json.dumps(docs, indent=2, allow_nan=True) + "\n")
        write_text(out.with_suffix(".md"), markdown(docs))
        for d in docs:
            print(f"{d['dataset']}: {d['value_yes_pp']:.4f} pp per yes, {d['value_no_pp']:.4f} pp per no "
                  f"({len(d['seeds'])} seeds)")


if __name__ == "__main__":
    typer.run(main)
