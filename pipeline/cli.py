"""`obcp`: the command-line tool (typer).

    obcp validate                       check params.yaml, list every problem
    obcp audit sample ID | cycle K | summary   [--arm A --seed S --csv/--json]
    obcp score | oracle | update | retrain --cycle K --arm A --seed S
    obcp table1                         the paper's Table 1 bit accounting
"""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import pandas as pd
import typer

from pipeline.errors import ObcpError, reported

app = typer.Typer(add_completion=False, no_args_is_help=True, help="One-bit Active Query with Contrastive Pairs.")
audit_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Who was asked what, when, and the answer.")
app.add_typer(audit_app, name="audit")

PARAMS = typer.Option(Path("params.yaml"), help="params file")
ARM = typer.Option("obcp", help="arm name (a key of `arms` in params.yaml)")
SEED = typer.Option(0, help="seed")


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _emit(frame: pd.DataFrame, fmt: Format) -> None:
    if fmt is Format.csv:
        frame.to_csv(sys.stdout, index=False)
    elif fmt is Format.json:
        sys.stdout.write(frame.to_json(orient="records", indent=2) + "\n")
    elif frame.empty:
        typer.echo("(no rows)")
    else:
        typer.echo(frame.to_string(index=False))


def _fmt(csv: bool, json: bool) -> Format:
    return Format.csv if csv else Format.json if json else Format.table


def _ledger(params: Path, arm: str, seed: int) -> tuple[pd.DataFrame, int]:
    from pipeline import ledger
    from pipeline.config import load_params
    from pipeline.datasets.index import read_classes
    from pipeline.layout import Layout

    p = load_params(params)
    p.arm(arm)
    layout = Layout(p.dataset.name)
    return ledger.read(layout.ledger(arm, seed)), read_classes(layout.data_dir)["num_classes"]


@app.command()
def validate(params: Path = PARAMS) -> None:
    """Check params.yaml; print every problem with its key path (exit 2) or 'ok'."""
    from pipeline.config import load_params

    with reported():
        load_params(params)
        typer.echo(f"{params}: ok")


@audit_app.command("sample")
def audit_sample(
    sample_id: int, arm: str = ARM, seed: int = SEED, params: Path = PARAMS,
    csv: bool = typer.Option(False, "--csv"), json: bool = typer.Option(False, "--json"),
) -> None:
    """Every question ever asked about one sample: cycle, asked class, answer."""
    from pipeline import ledger

    with reported():
        frame, _ = _ledger(params, arm, seed)
        _emit(ledger.for_sample(frame, sample_id), _fmt(csv, json))


@audit_app.command("cycle")
def audit_cycle(
    cycle: int, arm: str = ARM, seed: int = SEED, params: Path = PARAMS,
    csv: bool = typer.Option(False, "--csv"), json: bool = typer.Option(False, "--json"),
) -> None:
    """Every question of one query cycle."""
    from pipeline import ledger

    with reported():
        frame, _ = _ledger(params, arm, seed)
        _emit(ledger.for_cycle(frame, cycle), _fmt(csv, json))


@audit_app.command("summary")
def audit_summary(
    arm: str = ARM, seed: int = SEED, params: Path = PARAMS,
    csv: bool = typer.Option(False, "--csv"), json: bool = typer.Option(False, "--json"),
) -> None:
    """Per cycle: asked, yes, no, yes-rate, and per-class counts."""
    from pipeline import ledger

    with reported():
        frame, num_classes = _ledger(params, arm, seed)
        result = ledger.summary(frame, num_classes)
        fmt = _fmt(csv, json)
        if fmt is Format.json:  # one document with both tables
            import json as _json

            doc = {name: _json.loads(getattr(result, name).to_json(orient="records"))
                   for name in ("per_cycle", "per_class")}
            typer.echo(_json.dumps(doc, indent=2))
            return
        if fmt is Format.table:
            typer.echo(f"{arm}, seed {seed}: per cycle")
        _emit(result.per_cycle, fmt)
        if fmt is Format.table:
            typer.echo("\nper class (asked / yes)")
        _emit(result.per_class, fmt)


def _step(name: str, cycle: int, arm: str, seed: int, params: Path) -> None:
    from pipeline import active
    from pipeline.context import open_run

    with reported():
        ctx = open_run(params, seed)
        c = active.Cycle(ctx, arm, cycle)
        ctx.params.arm(arm)
        if not 1 <= cycle <= ctx.params.query_times:
            raise ObcpError(f"--cycle {cycle} is outside 1..query_times ({ctx.params.query_times}).")
        if name == "score":
            frame = active.score_step(c)
            typer.echo(f"scored {len(frame)} candidates, {int(frame['selected'].sum())} selected → {c.dir}")
        elif name == "oracle":
            frame = active.oracle_step(c)
            typer.echo(f"answered {len(frame)} questions ({int(frame['answer'].sum())} yes) → {c.dir}")
        elif name == "update":
            pool = active.update_step(c)
            typer.echo(f"pool updated: {(pool['status'] != 'unlabeled').sum()} labeled → {c.dir}")
        else:
            manifest = active.retrain_step(c, active.cycle_key(c))
            typer.echo(f"retrained cycle {cycle}: test {manifest.get('test')}")


@app.command()
def score(cycle: int = typer.Option(...), arm: str = ARM, seed: int = SEED, params: Path = PARAMS) -> None:
    """Step 1 of a cycle: rank candidates, choose the questions (scores.parquet)."""
    _step("score", cycle, arm, seed, params)


@app.command()
def oracle(cycle: int = typer.Option(...), arm: str = ARM, seed: int = SEED, params: Path = PARAMS) -> None:
    """Step 2: answer the questions (simulated), or read a human's answers.csv (queries.parquet)."""
    _step("oracle", cycle, arm, seed, params)


@app.command()
def update(cycle: int = typer.Option(...), arm: str = ARM, seed: int = SEED, params: Path = PARAMS) -> None:
    """Step 3: apply the answers to the pool and the ledger (pool.parquet)."""
    _step("update", cycle, arm, seed, params)


@app.command()
def retrain(cycle: int = typer.Option(...), arm: str = ARM, seed: int = SEED, params: Path = PARAMS) -> None:
    """Step 4: continue training with the cycle's pool (checkpoint.pt, history.npz, manifest.json)."""
    _step("retrain", cycle, arm, seed, params)


@app.command()
def preset(
    name: str = typer.Argument(..., help="cifar10 | cifar100 | imagenet (git checkout params.yaml restores digits)"),
    out: Path = typer.Option(Path("params.yaml"), help="where to write it"),
) -> None:
    """Write the paper's settings for a dataset as params.yaml (validated first)."""
    import shutil

    from pipeline.config import load_params

    with reported():
        presets = Path(__file__).parent / "presets"
        known = sorted(p.stem for p in presets.glob("*.yaml"))
        if name not in known:
            raise ObcpError(f"no preset named {name!r}; choose one of: {', '.join(known)}.")
        load_params(presets / f"{name}.yaml")
        shutil.copyfile(presets / f"{name}.yaml", out)
        typer.echo(f"wrote {out} ({name}); run `dvc repro` (or `dvc exp run`)")


@app.command()
def table1() -> None:
    """The paper's Table 1: bits of full labels vs one-bit questions."""
    from pipeline.pools import table1 as rows

    _emit(pd.DataFrame([r.__dict__ for r in rows()]), Format.table)


@app.command()
def bench(
    params: Path = PARAMS,
    out: Path = typer.Option(Path("reports/bench.json"), help="where the results go"),
    only: list[str] = typer.Option([], "--only", help="sections: convert loader train cycle ddp memory "
                                   "train_cifar (ResNet-18; by default only on a GPU) retest (Eq. 7 test-retest); "
                                   "updates those sections of --out"),
    quick: bool = typer.Option(False, "--quick", help="smaller sizes (a smoke run)"),
) -> None:
    """Benchmarks (not tests): ratios measured in one run → reports/bench.json + a table."""
    from pipeline.bench.suite import SECTIONS, run_suite

    with reported():
        unknown = sorted(set(only) - set(SECTIONS))
        if unknown:
            raise ObcpError(f"--only {unknown}: unknown section(s); choose from {', '.join(SECTIONS)}.")
        run_suite(params, out, tuple(only) or None, quick=quick, echo=typer.echo)


report_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tables and figures from finished runs.")
app.add_typer(report_app, name="report")


@report_app.command("exps")
def report_exps(
    out: Path = typer.Option(Path("reports/exps"), help="output folder"),
    json_file: Path | None = typer.Option(None, "--json-file", help="a saved `dvc exp show --json` (default: run it)"),
    all_commits: bool = typer.Option(False, "--all-commits", "-A", help="experiments of every commit, not only HEAD"),
    workspace: bool = typer.Option(False, "--workspace", help="also the workspace's uncommitted results"),
) -> None:
    """Compare DVC experiments (`dvc exp run -S query_times=N`): exps.md table + Fig. 6 (query_times.png)."""
    from pipeline import exps

    with reported():
        doc = exps.load_exp_show(json_file) if json_file else exps.run_exp_show(".", all_commits=all_commits)
        for path in exps.build_exps_report(doc, out, include_workspace=workspace):
            typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
