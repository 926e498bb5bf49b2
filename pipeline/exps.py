"""DVC experiments → a comparison table and paper Fig. 6 (final accuracy vs query_times).

Input is the document ``dvc exp show --json`` prints (DVC 3.x): a list of commits, each

    {"rev": "<sha>" | "workspace", "name": "<branch>" | null, "error": null | {...},
     "data": {"timestamp": "...", "params": {"params.yaml": {"data": {...}}},
              "metrics": {"reports/metrics/seed<S>/<arm>.json": {"data": {...}}}, ...},
     "experiments": null | [{"name": "...", "executor": null | {"state": "queued" | "running" |
                              "failed" | "success", ...},
                             "revs": [{"rev": "...", "name": "...", "data": {...}, "error": ...}]}]}

Only finished results are used: a queued, running or failed experiment is listed with
no accuracy, because DVC shows the *baseline's* metrics files for it (they are not its
own). ``dvc exp show`` drops list values from metrics files, so the final accuracy
comes from each metrics file's ``final`` mapping.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from pipeline.errors import ObcpError
from pipeline.io import write_csv, write_text

METRICS_PATTERN = re.compile(r"(?:^|/)reports/metrics/seed(?P<seed>\d+)/(?P<arm>[^/]+)\.json$")
FINISHED: tuple[str, ...] = ("success", "baseline", "workspace")
COLUMNS: tuple[str, ...] = (
    "experiment", "rev", "baseline", "status", "timestamp", "query_times", "initial",
    "arm", "seed", "top1", "bits",
)


class ExpsError(ObcpError):
    """`dvc exp show --json` could not be run or its output is not the DVC 3.x document."""


# --------------------------------------------------------------------------- reading


def run_exp_show(cwd: str | os.PathLike = ".", *, all_commits: bool = False, dvc: str = "dvc") -> list:
    """Run ``dvc exp show --json`` in `cwd` and return the parsed document."""
    cmd = [dvc, "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise ExpsError(
            f"`{dvc}` is not on PATH. Activate the project's virtualenv (`source .venv/bin/activate`) "
            "or pass a saved document with --json-file."
        ) from None
    if proc.returncode != 0:
        raise ExpsError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}) in {Path(cwd).resolve()}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}. Run it from the project root (a git + DVC repo)."
        )
    return parse_exp_show(proc.stdout, source=" ".join(cmd))


def parse_exp_show(text: str, *, source: str = "dvc exp show --json") -> list:
    """Parse the JSON text of ``dvc exp show --json``; raise `ExpsError` for anything else."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExpsError(f"output of {source} is not JSON ({exc}). Rerun it and save stdout only.") from exc
    if not isinstance(doc, list):
        raise ExpsError(
            f"output of {source} is a {type(doc).__name__}, not the list of commits DVC 3.x prints. "
            "Upgrade DVC to 3.x (the version in requirements.lock) and rerun it."
        )
    return doc


def load_exp_show(path: str | os.PathLike) -> list:
    """Read a saved ``dvc exp show --json > file`` document."""
    path = Path(path)
    if not path.is_file():
        raise ExpsError(f"{path} does not exist; save one with `dvc exp show --json > {path}`.")
    return parse_exp_show(path.read_text(), source=str(path))


# --------------------------------------------------------------------------- flattening


def _get(obj: Any, *keys: str) -> Any:
    """Nested lookup that returns None at the first missing key or non-mapping."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _params(data: Any) -> dict:
    files = _get(data, "params") or {}
    if not isinstance(files, dict):
        return {}
    for name in sorted(files, key=lambda k: (k != "params.yaml", k)):
        if name == "params.yaml" or name.endswith("/params.yaml"):
            found = _get(files[name], "data")
            return found if isinstance(found, dict) else {}
    return {}


def _states(doc: list, include_workspace: bool) -> Iterator[dict]:
    """One record per commit and experiment: name, rev, baseline, status, timestamp, data."""
    for commit in doc:
        if not isinstance(commit, dict):
            continue
        rev = str(commit.get("rev") or "")
        name = commit.get("name") or (rev[:7] if rev != "workspace" else "workspace")
        if rev == "workspace":
            if include_workspace:
                yield {"experiment": "workspace", "rev": rev, "baseline": "workspace",
                       "status": "workspace" if not commit.get("error") else "failed", "data": commit.get("data")}
        else:
            yield {"experiment": name, "rev": rev, "baseline": name,
                   "status": "baseline" if not commit.get("error") else "failed", "data": commit.get("data")}
        for exp in commit.get("experiments") or []:
            revs = exp.get("revs") if isinstance(exp, dict) else None
            if not revs or not isinstance(revs[0], dict):
                continue
            head = revs[0]
            state = _get(exp, "executor", "state")
            status = "failed" if head.get("error") else (state or "success")
            exp_rev = str(head.get("rev") or "")
            yield {"experiment": exp.get("name") or head.get("name") or exp_rev[:7], "rev": exp_rev,
                   "baseline": name, "status": status, "data": head.get("data")}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def exps_table(doc: list, *, include_workspace: bool = False) -> pd.DataFrame:
    """Flatten an ``exp show`` document: one row per experiment × metrics file.

    Columns `COLUMNS` (+ ``top5`` when some file has it): ``experiment`` (name), ``rev``,
    ``baseline`` (the commit it branches from), ``status`` (``baseline`` | ``workspace`` |
    ``success`` | ``queued`` | ``running`` | ``failed``), ``timestamp``, ``query_times`` and
    ``initial`` (``budget.initial``) from params.yaml, ``arm``, ``seed``, ``top1``/``bits``
    (the metrics file's ``final``). An experiment without usable metrics (queued, running,
    failed, or evaluate not run) is one row with ``arm``/``seed``/``top1`` missing. Rows are
    ordered newest first (the workspace, when included, counts as newest).
    """
    rows: list[dict] = []
    for order, state in enumerate(_states(doc, include_workspace)):
        data = state["data"]
        params = _params(data)
        base = {
            "_order": order,
            "experiment": str(state["experiment"]),
            "rev": state["rev"],
            "baseline": str(state["baseline"]),
            "status": state["status"],
            "timestamp": _get(data, "timestamp"),
            "query_times": params.get("query_times"),
            "initial": _get(params, "budget", "initial"),
        }
        found = []
        metrics = _get(data, "metrics") if state["status"] in FINISHED else None
        for path, entry in sorted((metrics or {}).items()):
            match = METRICS_PATTERN.search(str(path).replace(os.sep, "/"))
            values = _get(entry, "data")
            if match is None or not isinstance(values, dict):
                continue
            arm = values.get("arm") if isinstance(values.get("arm"), str) else match["arm"]
            seed = values.get("seed") if isinstance(values.get("seed"), int) else int(match["seed"])
            row = {**base, "arm": arm, "seed": seed, "top1": _number(_get(values, "final", "top1")),
                   "bits": _number(_get(values, "final", "bits"))}
            top5 = _get(values, "final", "top5")
            if top5 is not None:
                row["top5"] = _number(top5)
            found.append(row)
        rows += found or [{**base, "arm": None, "seed": None, "top1": math.nan, "bits": math.nan}]
    has_top5 = any("top5" in r for r in rows)
    columns = list(COLUMNS) + (["top5"] if has_top5 else [])
    frame = pd.DataFrame(rows, columns=["_order", *columns])
    frame["_stamp"] = pd.to_datetime(frame["timestamp"], errors="coerce")
    frame["_unstamped"] = frame["_stamp"].isna()  # the workspace: newer than any commit
    frame = frame.sort_values(["_unstamped", "_stamp", "_order"], ascending=[False, False, True], kind="stable")
    frame = frame.drop(columns=["_order", "_stamp", "_unstamped"]).reset_index(drop=True)
    for col in ("query_times", "seed"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    frame["initial"] = pd.to_numeric(frame["initial"], errors="coerce")
    return frame


# --------------------------------------------------------------------------- report


def comparison_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment (sorted by query_times, then name): status, query_times, initial,
    and per arm the final top-1 in percent as ``mean ± std (n=seeds)`` (``—`` without results)."""
    from pipeline.results import pct, seed_std

    arms = [a for a in dict.fromkeys(frame["arm"].dropna().tolist())]
    experiments = frame.drop_duplicates("experiment")[["experiment", "status", "query_times", "initial"]]
    experiments = experiments.sort_values(["query_times", "experiment"], kind="stable", na_position="last")
    rows = []
    for exp in experiments.itertuples(index=False):
        row = {"experiment": exp.experiment, "status": exp.status,
               "query_times": "—" if pd.isna(exp.query_times) else int(exp.query_times),
               "initial": "—" if pd.isna(exp.initial) else f"{exp.initial:g}"}
        mine = frame[(frame["experiment"] == exp.experiment) & frame["top1"].notna()]
        for arm in arms:
            g = mine[mine["arm"] == arm]
            row[arm] = f"{pct(g['top1'].mean(), seed_std(g['top1']))} (n={len(g)})" if len(g) else "—"
        rows.append(row)
    return pd.DataFrame(rows, columns=["experiment", "status", "query_times", "initial", *arms])


def build_exps_report(doc: list, out_dir: str | os.PathLike, *, include_workspace: bool = False) -> list[Path]:
    """Write ``exps.csv`` (the `exps_table`), ``exps.md`` (the `comparison_table`) and Fig. 6
    (``query_times.png`` + ``query_times.csv``) under `out_dir`; return the paths written."""
    from pipeline import plots
    from pipeline.results import markdown_table

    out = Path(out_dir)
    frame = exps_table(doc, include_workspace=include_workspace)
    write_csv(out / "exps.csv", frame)
    text = ["# Experiments", "",
            "Final test top-1 (%) per arm, mean ± std over seeds; only finished experiments have results.", "",
            markdown_table(comparison_table(frame)), "![final accuracy vs query times](query_times.png)", ""]
    write_text(out / "exps.md", "\n".join(text))
    png = plots.query_times(frame, out / "query_times.png")
    return [out / "exps.csv", out / "exps.md", png, png.with_suffix(".csv")]

