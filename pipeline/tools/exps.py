"""DVC experiments → a comparison table and paper Fig. 6 (final accuracy vs query_times);
`run_sweep` runs the experiments of a one-parameter sweep first (`obcp sweep`).

Input is the document ``dvc exp show --json`` prints (DVC 3.x): a list of commits, each

    {"rev": "<sha>" | "workspace", "name": "<branch>" | null, "error": null | {...},
     "data": {"timestamp": "...", "params": {"params.yaml": {"data": {...}}},
              "metrics": {"reports/metrics.json": {"data": {...}}}, ...},
     "experiments": null | [{"name": "...", "executor": null | {"state": "queued" | "running" |
                              "failed" | "success", ...},
                             "revs": [{"rev": "...", "name": "...", "data": {...}, "error": ...}]}]}

The accuracies come from the summary metrics ``reports/metrics.json`` (the figures stage's,
`pipeline.reporting.results.summary_metrics`): per arm the final top-1 mean over seeds, its std and
the bits spent (in the table below as fractions, like every results table). Only finished results are used: a queued, running or failed experiment is
listed with no accuracy, because DVC shows the *baseline's* metrics for it (they are not
its own); so is a workspace whose outputs are not up to date with its params
(``dvc status`` not clean).
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from pipeline.core.errors import ObcpError
from pipeline.core.io import write_csv, write_text

SUMMARY_PATTERN = re.compile(r"(?:^|/)reports/metrics\.json$")
FINISHED: tuple[str, ...] = ("success", "baseline", "workspace")
COLUMNS: tuple[str, ...] = (
    "experiment", "rev", "baseline", "status", "timestamp", "query_times", "initial",
    "arm", "top1", "top1_std", "n_seeds", "bits",
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


def _states(doc: list, include_workspace: bool, workspace_status: str) -> Iterator[dict]:
    """One record per commit and experiment: name, rev, baseline, status, timestamp, data."""
    for commit in doc:
        if not isinstance(commit, dict):
            continue
        rev = str(commit.get("rev") or "")
        name = commit.get("name") or (rev[:7] if rev != "workspace" else "workspace")
        if rev == "workspace":
            if include_workspace:
                yield {"experiment": "workspace", "rev": rev, "baseline": "workspace",
                       "status": workspace_status if not commit.get("error") else "failed",
                       "data": commit.get("data")}
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


def _summary_rows(values: dict) -> list[dict]:
    """Per arm of one summary metrics document: top1 and top1_std (fractions), n_seeds, bits.

    The document is `pipeline.reporting.results.summary_metrics`' (``top1``/``std`` groups in
    percent); commits made before it was nested have one fraction per arm at the top level
    and ``top1_std`` in fractions, and are read too (``dvc exp show -A`` lists them).
    """
    top1, stds, bits = values.get("top1"), values.get("std"), values.get("bits")
    scale = 0.01
    if not isinstance(top1, dict):  # the earlier, flat document
        top1 = {arm: v for arm, v in values.items() if arm not in ("top1_std", "bits", "n_seeds")
                and not isinstance(v, dict)}
        stds, scale = values.get("top1_std"), 1.0
    stds = stds if isinstance(stds, dict) else {}
    bits = bits if isinstance(bits, dict) else {}
    def frac(value: Any) -> float:
        return round(scale * _number(value), 6)  # 96.9 % → 0.969, not 0.9690000000000001

    return [{"arm": arm, "top1": frac(v), "top1_std": frac(stds.get(arm)),
             "n_seeds": values.get("n_seeds"), "bits": _number(bits.get(arm))}
            for arm, v in top1.items()]


def param_value(params: dict, key: str) -> Any:
    """The value of a dotted params key (``budget.initial``) in a params mapping, or None."""
    return _get(params, *key.split("."))


def exps_table(doc: list, *, include_workspace: bool = False, workspace_status: str = "workspace",
               x: str = "query_times") -> pd.DataFrame:
    """Flatten an ``exp show`` document: one row per experiment × arm.

    Columns `COLUMNS` (+ a column `x` when it is another params key): ``experiment`` (name),
    ``rev``, ``baseline`` (the commit it branches from), ``status`` (``baseline`` |
    ``workspace`` | ``modified`` (a workspace not reproduced) | ``success`` | ``queued`` |
    ``running`` | ``failed``), ``timestamp``, ``query_times`` and ``initial``
    (``budget.initial``) from params.yaml, ``arm`` and its final ``top1`` (mean over seeds),
    ``top1_std``, ``n_seeds`` and ``bits`` from the summary metrics. An experiment without
    usable metrics (queued, running, failed, modified, or figures not run) is one row with
    ``arm``/``top1`` missing. Rows are ordered newest first (the workspace, when included,
    counts as newest); `workspace_status` is the workspace's status (`workspace_status`).
    """
    rows: list[dict] = []
    extra = x not in ("query_times", "initial")
    for order, state in enumerate(_states(doc, include_workspace, workspace_status)):
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
            **({x: param_value(params, x)} if extra else {}),
        }
        found = []
        metrics = _get(data, "metrics") if state["status"] in FINISHED else None
        for path, entry in sorted((metrics or {}).items()):
            values = _get(entry, "data")
            if SUMMARY_PATTERN.search(str(path).replace(os.sep, "/")) and isinstance(values, dict):
                found += [{**base, **row} for row in _summary_rows(values)]
        empty = {"arm": None, "top1": math.nan, "top1_std": math.nan, "n_seeds": None, "bits": math.nan}
        rows += found or [{**base, **empty}]
    columns = list(COLUMNS) + ([x] if extra else [])
    frame = pd.DataFrame(rows, columns=["_order", *columns])
    frame["_stamp"] = pd.to_datetime(frame["timestamp"], errors="coerce")
    frame["_unstamped"] = frame["_stamp"].isna()  # the workspace: newer than any commit
    frame = frame.sort_values(["_unstamped", "_stamp", "_order"], ascending=[False, False, True], kind="stable")
    frame = frame.drop(columns=["_order", "_stamp", "_unstamped"]).reset_index(drop=True)
    for col in ("query_times", "n_seeds"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    for col in ("initial", *([x] if extra else [])):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


# --------------------------------------------------------------------------- report


def comparison_table(frame: pd.DataFrame, x: str = "query_times") -> pd.DataFrame:
    """One row per experiment (sorted by `x`, then name): status, `x`, query_times, initial,
    and per arm the final top-1 in percent as ``mean ± std (n=seeds)`` (``—`` without results)."""
    from pipeline.reporting.results import pct

    keys = list(dict.fromkeys([x, "query_times", "initial"]))
    arms = [a for a in dict.fromkeys(frame["arm"].dropna().tolist())]
    experiments = frame.drop_duplicates("experiment")[["experiment", "status", *keys]]
    experiments = experiments.sort_values([x, "experiment"], kind="stable", na_position="last")
    rows = []
    for exp in experiments.to_dict("records"):
        row = {"experiment": exp["experiment"], "status": exp["status"]}
        row.update({k: "—" if pd.isna(exp[k]) else f"{exp[k]:g}" for k in keys})
        mine = frame[(frame["experiment"] == exp["experiment"]) & frame["top1"].notna()].set_index("arm")
        for arm in arms:
            if arm in mine.index:
                r = mine.loc[arm]
                n = "" if pd.isna(r["n_seeds"]) else f" (n={int(r['n_seeds'])})"
                row[arm] = pct(float(r["top1"]), float(r["top1_std"])) + n
            else:
                row[arm] = "—"
        rows.append(row)
    return pd.DataFrame(rows, columns=["experiment", "status", *keys, *arms])


def build_exps_report(doc: list, out_dir: str | os.PathLike, *, include_workspace: bool = False,
                      workspace_status: str = "workspace", x: str = "query_times") -> list[Path]:
    """Write ``exps.csv`` (the `exps_table`), ``exps.md`` (the `comparison_table`) and Fig. 6
    (``<x>.png`` + ``<x>.csv``: final top-1 vs `x`) under `out_dir`; return the paths written."""
    from pipeline.reporting import plots
    from pipeline.reporting.results import markdown_table

    out = Path(out_dir)
    frame = exps_table(doc, include_workspace=include_workspace, workspace_status=workspace_status, x=x)
    write_csv(out / "exps.csv", frame)
    png_name = f"{x}.png"
    text = ["# Experiments", "",
            "Final test top-1 (%) per arm, mean ± std over seeds (`reports/metrics.json` of each experiment); "
            "only finished experiments have results (`modified`: the workspace is not reproduced).", "",
            markdown_table(comparison_table(frame, x)), f"![final accuracy vs {x}]({png_name})", ""]
    write_text(out / "exps.md", "\n".join(text))
    png = plots.query_times(frame, out / png_name, x=x)
    return [out / "exps.csv", out / "exps.md", png, png.with_suffix(".csv")]


# --------------------------------------------------------------------------- the terminal table

TABLE_WIDTH = 160  # what `obcp exps` fits in when it cannot tell the terminal's width


def _flat(params: Any, prefix: str = "") -> dict[str, Any]:
    """Nested params as ``{"budget.initial": 50, ...}`` (lists kept as values)."""
    if not isinstance(params, dict):
        return {prefix: params} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in params.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_params(doc: list, *, include_workspace: bool = False,
                   workspace_status: str = "workspace") -> dict[str, dict[str, Any]]:
    """experiment → the params.yaml keys (dotted) whose values differ between the listed
    experiments, with this experiment's values; empty when every experiment has the same params."""
    flat = {str(s["experiment"]): _flat(_params(s["data"]))
            for s in _states(doc, include_workspace, workspace_status)}
    keys = sorted({k for values in flat.values() for k in values})
    differ = [k for k in keys if len({json.dumps(v.get(k), sort_keys=True, default=str) for v in flat.values()}) > 1]
    return {name: {k: values.get(k) for k in differ} for name, values in flat.items()}


def _cell(top1: float, std: float, with_std: bool) -> str:
    if pd.isna(top1):
        return "—"
    return f"{100 * top1:.1f}" + (f" ±{100 * std:.1f}" if with_std and not pd.isna(std) else "")


def terminal_rows(frame: pd.DataFrame, changed: dict[str, dict[str, Any]] | None = None
                  ) -> tuple[list[str], list[dict[str, Any]]]:
    """(arms, rows) of the `obcp exps` table, from an `exps_table` frame.

    One row per experiment: the workspace, then each baseline followed by its experiments
    (newest first). Each row has ``name`` (an experiment indented under its baseline; a
    status other than finished in brackets), ``params`` (``key=value …`` of its
    `changed_params`) and ``values``: arm → ``(top1, top1_std)`` fractions (NaN: no result).
    """
    arms = list(dict.fromkeys(frame["arm"].dropna().tolist()))
    first = frame.drop_duplicates("experiment")
    order = [e for e in first["experiment"] if e == "workspace"]
    for base in dict.fromkeys(first["baseline"]):
        if base == "workspace":
            continue
        order += [e for e, b in zip(first["experiment"], first["baseline"]) if e == base]
        order += [e for e, b in zip(first["experiment"], first["baseline"]) if b == base and e != base]
    info = first.set_index("experiment")
    rows = []
    for name in order:
        status, base = info.loc[name, "status"], info.loc[name, "baseline"]
        label = name if name in ("workspace", base) else f"  {name}"
        if status not in ("success", "baseline", "workspace"):
            label += f" ({status})"
        mine = frame[(frame["experiment"] == name) & frame["top1"].notna()].set_index("arm")
        values = {arm: (float(mine.loc[arm, "top1"]), float(mine.loc[arm, "top1_std"])) if arm in mine.index
                  else (math.nan, math.nan) for arm in arms}
        params = (changed or {}).get(name, {})
        rows.append({"name": label, "params": " ".join(f"{k}={v}" for k, v in params.items()), "values": values})
    return arms, rows


def terminal_tables(frame: pd.DataFrame, changed: dict[str, dict[str, Any]] | None = None, *,
                    width: int = TABLE_WIDTH) -> tuple[list, bool]:
    """The `obcp exps` table as rich Tables, each at most `width` columns wide when printed,
    and whether they show the std.

    Final test top-1 in percent per arm (``mean ±std`` when that fits, else the mean), one
    row per experiment; arms that do not fit beside each other go to a further table."""
    from rich import box
    from rich.table import Table

    arms, rows = terminal_rows(frame, changed)
    show_params = any(r["params"] for r in rows)

    def build(chunk: list[str], with_std: bool) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
        table.add_column("experiment", no_wrap=True)
        if show_params:
            table.add_column("changed params", max_width=28, overflow="fold")
        for arm in chunk:
            table.add_column(arm, justify="right", no_wrap=True)
        for r in rows:
            cells = [r["name"], *([r["params"]] if show_params else [])]
            table.add_row(*cells, *(_cell(*r["values"][a], with_std) for a in chunk))
        return table

    if not arms:
        return [build([], False)], False
    any_std = any(not pd.isna(std) for r in rows for _, std in r["values"].values())
    for with_std in ((True, False) if any_std else (False,)):
        if _width(build(arms, with_std)) <= width:
            return [build(arms, with_std)], with_std
    tables, chunk = [], []
    for arm in arms:  # one arm at a time, a new table when the next would not fit
        if chunk and _width(build([*chunk, arm], False)) > width:
            tables.append(build(chunk, False))
            chunk = []
        chunk.append(arm)
    return tables + [build(chunk, False)], False


def _width(renderable: Any) -> int:
    """Columns `renderable` takes when printed with all the room it wants."""
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=10_000, color_system=None, highlight=False)
    console.print(renderable)
    return max((len(line.rstrip()) for line in console.file.getvalue().splitlines()), default=0)


def print_exps(doc: list, *, include_workspace: bool = True, workspace_status: str = "workspace",
               width: int | None = None, file: Any = None) -> None:
    """Print the `obcp exps` view of an ``exp show`` document: a caption and `terminal_tables`."""
    import shutil

    from rich.console import Console

    width = width or shutil.get_terminal_size((TABLE_WIDTH, 24)).columns
    frame = exps_table(doc, include_workspace=include_workspace, workspace_status=workspace_status)
    changed = changed_params(doc, include_workspace=include_workspace, workspace_status=workspace_status)
    console = Console(file=file, width=width, highlight=False, soft_wrap=False)
    tables, with_std = terminal_tables(frame, changed, width=width)
    seeds = sorted({int(n) for n in frame["n_seeds"].dropna()})
    what = "mean ±std" if with_std else "mean"
    over = f"{what} over {'/'.join(map(str, seeds))} seed(s)" if seeds else "no results yet"
    console.print(f"final test top-1 % per arm, {over} (reports/metrics.json of each experiment)")
    for table in tables:
        console.print(table)
    if (frame["status"] == "modified").any():
        console.print("workspace: not reproduced for its params (`dvc status`); run `dvc repro` for its results")


# --------------------------------------------------------------------------- running


def workspace_status(cwd: str | os.PathLike = ".", *, dvc: str = "dvc") -> str:
    """``workspace`` when ``dvc status`` finds every stage up to date, else ``modified``. A stage
    listed only as "always changed" (`validate`, which runs on every `dvc repro`) does not count."""
    proc = subprocess.run([dvc, "status", "--json"], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    try:
        changed = json.loads(proc.stdout or "{}")
        clean = proc.returncode == 0 and isinstance(changed, dict) and \
            all(why == ["always changed"] for why in changed.values())
    except json.JSONDecodeError:
        clean = False
    return "workspace" if clean else "modified"


def sweep_name(param: str, value: str) -> str:
    """The experiment name of one sweep point, e.g. ``query_times-2`` (a valid git ref name)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{param}-{value}").strip(".")


def check_sweep(params_path: str | os.PathLike, param: str, values: Sequence[str]) -> None:
    """Validate every sweep point as params.yaml with ``param`` set to the value, before running any;
    raise `pipeline.core.config.ParamsError` naming each bad value, `ExpsError` for an unknown key."""
    import yaml

    from pipeline.core.config import ParamsError, parse_params

    raw = yaml.safe_load(Path(params_path).read_text())
    *parents, leaf = param.split(".")
    node = raw
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        raise ExpsError(f"`{param}` is not a key of {params_path}; sweep a parameter that params.yaml has "
                        f"(e.g. `obcp sweep query_times 1 2 3 4`).")
    problems = []
    for value in values:
        node[leaf] = yaml.safe_load(value)
        try:
            parse_params(raw, source=f"{param}={value}")
        except ParamsError as exc:
            problems.append(str(exc))
    if problems:
        raise ExpsError("the sweep has invalid values; nothing was run.\n" + "\n".join(problems))


def run_sweep(param: str, values: Sequence[str], *, cwd: str | os.PathLike = ".", dvc: str = "dvc",
              echo: Callable[[str], None] = print) -> list[str]:
    """One DVC experiment per value (``dvc exp run --temp -S param=value -n <param>-<value>``),
    one after another, the workspace untouched; return the names of those that failed.

    A finished experiment of the same name on the current commit is kept, not rerun (the
    sweep resumes); a failed one is removed and run again.
    """
    existing = {}
    for state in _states(run_exp_show(cwd, dvc=dvc), include_workspace=False, workspace_status="workspace"):
        if state["status"] != "baseline" and state["rev"] != "workspace":
            existing.setdefault(state["experiment"], state["status"])
    failed = []
    for value in values:
        name = sweep_name(param, value)
        status = existing.get(name)
        if status == "success":
            echo(f"sweep: {name} is done already (`dvc exp remove {name}` to run it again)")
            continue
        if status is not None:
            subprocess.run([dvc, "exp", "remove", name], cwd=cwd, check=False, stdin=subprocess.DEVNULL)
        echo(f"sweep: dvc exp run --temp -S {param}={value} -n {name}")
        proc = subprocess.run([dvc, "exp", "run", "--temp", "-S", f"{param}={value}", "-n", name], cwd=cwd,
                              check=False, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            failed.append(name)
    return failed
