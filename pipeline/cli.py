"""`obcp`: the command-line tool (typer).

    obcp validate                       check params.yaml, list every problem
    obcp audit sample ID | cycle K | summary   [--arm A --seed S --csv/--json]
    obcp score | oracle | update | retrain --cycle K --arm A --seed S
    obcp annotate --arm A --seed S      answer the human oracle's questions on a local page
                  [--export label-studio | --import EXPORT.json]
    obcp table1                         the paper's Table 1 bit accounting
    obcp report exps | sweep PARAM V…   compare DVC experiments (Fig. 6); run a sweep first
    obcp gpu-check [--cpu]              what only a GPU can check, in one command
    obcp study plan | run | report      the study grid (pipeline/tools/study/study.yaml) → reports/study.md
"""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import pandas as pd
import typer

from pipeline.core.errors import ObcpError, reported

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
    from pipeline.pool import ledger
    from pipeline.core.config import load_params
    from pipeline.data.index import read_classes
    from pipeline.core.layout import Layout

    p = load_params(params)
    p.arm(arm)
    layout = Layout(p.dataset.name)
    return ledger.read(layout.ledger(arm, seed)), read_classes(layout.data_dir)["num_classes"]


@app.command()
def validate(params: Path = PARAMS) -> None:
    """Check params.yaml; print every problem with its key path (exit 2) or 'ok'."""
    from pipeline.core.config import load_params

    with reported():
        load_params(params)
        typer.echo(f"{params}: ok")


@audit_app.command("sample")
def audit_sample(
    sample_id: int,
    arm: list[str] = typer.Option([], help="only this arm (repeatable); default: every arm in params.yaml"),
    seed: list[int] = typer.Option([], help="only this seed (repeatable); default: every seed in params.yaml"),
    params: Path = PARAMS,
    csv: bool = typer.Option(False, "--csv"), json: bool = typer.Option(False, "--json"),
) -> None:
    """Every question ever asked about one sample, in every arm and seed: cycle, asked class, answer."""
    from pipeline.pool import ledger
    from pipeline.core.config import load_params
    from pipeline.core.layout import Layout

    with reported():
        p = load_params(params)
        arms, seeds = arm or list(p.arms), seed or list(p.seeds)
        for name in arms:
            p.arm(name)
        layout = Layout(p.dataset.name)
        found, absent = [], []
        for s in seeds:
            for name in arms:
                path = layout.ledger(name, s)
                if path.is_file():
                    found.append(ledger.for_sample(ledger.read(path), sample_id))
                else:
                    absent.append(f"{name}/seed {s}")
        if len(found) == 0:
            raise ObcpError(
                f"no query ledger for arm(s) {', '.join(arms)} and seed(s) {', '.join(map(str, seeds))} yet "
                f"({layout.ledger_dir(seeds[0]).parent}/seed<S>/<arm>.parquet): run `dvc repro` first."
            )
        rows = pd.concat(found, ignore_index=True)
        if rows.empty:
            note = f"; no ledger yet for {', '.join(absent)}" if absent else ""
            typer.echo(f"sample {sample_id} was never asked about in arm(s) {', '.join(arms)}, seed(s) "
                       f"{', '.join(map(str, seeds))} ({len(found)} ledger(s) searched{note}).", err=True)
            if not (csv or json):
                return
        _emit(rows, _fmt(csv, json))


@audit_app.command("cycle")
def audit_cycle(
    cycle: int, arm: str = ARM, seed: int = SEED, params: Path = PARAMS,
    csv: bool = typer.Option(False, "--csv"), json: bool = typer.Option(False, "--json"),
) -> None:
    """Every question of one query cycle."""
    from pipeline.pool import ledger

    with reported():
        frame, _ = _ledger(params, arm, seed)
        _emit(ledger.for_cycle(frame, cycle), _fmt(csv, json))


@audit_app.command("summary")
def audit_summary(
    arm: str = ARM, seed: int = SEED, params: Path = PARAMS,
    csv: bool = typer.Option(False, "--csv"), json: bool = typer.Option(False, "--json"),
) -> None:
    """Per cycle: asked, yes, no, yes-rate, and per-class counts."""
    from pipeline.pool import ledger

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
    from pipeline.core.context import open_run
    from pipeline.loop import steps
    from pipeline.loop.cycle import Cycle, cycle_key

    with reported():
        ctx = open_run(params, seed)
        c = Cycle(ctx, arm, cycle)
        ctx.params.arm(arm)
        if not 1 <= cycle <= ctx.params.query_times:
            raise ObcpError(f"--cycle {cycle} is outside 1..query_times ({ctx.params.query_times}).")
        if name == "score":
            frame = steps.score_step(c)
            typer.echo(f"scored {len(frame)} candidates, {int(frame['selected'].sum())} selected → {c.dir}")
        elif name == "oracle":
            frame = steps.oracle_step(c)
            typer.echo(f"answered {len(frame)} questions ({int(frame['answer'].sum())} yes) → {c.dir}")
        elif name == "update":
            pool = steps.update_step(c)
            typer.echo(f"pool updated: {(pool['status'] != 'unlabeled').sum()} labeled → {c.dir}")
        else:
            manifest = steps.retrain_step(c, cycle_key(c))
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
def annotate(
    arm: str = ARM, seed: int = SEED, params: Path = PARAMS,
    host: str = typer.Option("127.0.0.1", help="address the page binds to (loopback by default)"),
    port: int = typer.Option(8765, help="port of the page (0: any free port)"),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="open the page in the default browser"),
    export: str | None = typer.Option(None, "--export", help="label-studio: write Label Studio import tasks "
                                      "for the open questions instead of serving the page"),
    out: Path = typer.Option(Path("label-studio"), help="folder for --export (tasks.json, labeling-config.xml)"),
    import_file: Path | None = typer.Option(None, "--import", help="a Label Studio JSON export: put its answers "
                                            "into the answer store"),
) -> None:
    """Answer the human oracle's open questions: a local page (default), or a Label Studio round trip."""
    from pipeline.oracle.annotate import AnswerPage, make_server, open_sheet
    from pipeline.core.config import load_params
    from pipeline.data.index import read_classes, read_index
    from pipeline.core.layout import Layout

    with reported():
        p = load_params(params)
        layout = Layout(p.dataset.name)
        classes = read_classes(layout.data_dir)["classes"]
        if import_file is not None:  # answers are keyed by question: no arm or seed needed
            from pipeline.oracle.labelstudio import import_export

            train = read_index(layout.data_dir).query("split == 'train'")
            read, added, skipped = import_export(import_file, layout.answer_store, dataset=p.dataset.name,
                                                 num_samples=len(train), class_names=classes)
            typer.echo(f"{import_file}: {read} answers read, {added} new or changed added to {layout.answer_store}"
                       f"{f', {skipped} unanswered task(s) skipped' if skipped else ''}. Rerun `dvc repro`.")
            return
        p.arm(arm)
        sheet = open_sheet(layout, arm, seed, classes)
        if export is not None:
            if export != "label-studio":
                raise ObcpError(f"--export {export!r}: the one export format is `label-studio`.")
            from pipeline.oracle.labelstudio import write_export

            tasks, config, n = write_export(sheet, layout.answer_store, p.dataset.name, out)
            typer.echo(f"wrote {n} task(s) to {tasks} and the labeling interface to {config}. In Label Studio: "
                       f"create a project, paste {config.name} under Settings → Labeling Interface → Code, import "
                       f"{tasks.name}, annotate, export as JSON, then run `obcp annotate --import EXPORT.json`.")
            return
        page = AnswerPage(sheet, layout.answer_store, on_complete=typer.echo)
        server = make_server(page, host, port)
        url = f"http://{host if ':' not in host else f'[{host}]'}:{server.server_address[1]}/"
        typer.echo(f"answer page for arm {arm}, seed {seed}, cycle {sheet.cycle} "
                   f"({len(sheet.questions)} questions): {url}  (Ctrl+C to stop; every answer is saved as given)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(f"warning: bound to {host}: anyone who can reach it can answer", err=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            typer.echo("stopped; answers given so far are saved")
        finally:
            server.server_close()


@app.command()
def preset(
    name: str = typer.Argument(..., help="glyphs | cifar10 | cifar100 | imagenet | fig4 (conventional learners vs "
                                         "ObCP, docs/baselines.md) | fig6left (git checkout params.yaml restores digits)"),
    out: Path = typer.Option(Path("params.yaml"), help="where to write it"),
) -> None:
    """Write the paper's settings for a dataset as params.yaml (validated first)."""
    import shutil

    from pipeline.core.config import load_params

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
    from pipeline.pool.budget import table1 as rows

    _emit(pd.DataFrame([r.__dict__ for r in rows()]), Format.table)


@app.command()
def bench(
    params: Path = PARAMS,
    out: Path = typer.Option(Path("reports/bench.json"), help="where the results go"),
    only: list[str] = typer.Option([], "--only", help="sections: convert loader train cycle ddp memory "
                                   "train_cifar (ResNet-18; by default only on a GPU) retest (Eq. 7 test-retest) "
                                   "selection (each strategy's seconds and peak memory at N = 50 k, 1.2 M); "
                                   "updates those sections of --out"),
    quick: bool = typer.Option(False, "--quick", help="smaller sizes (a smoke run)"),
) -> None:
    """Benchmarks (not tests): ratios measured in one run → reports/bench.json + a table."""
    from pipeline.tools.bench.suite import SECTIONS, run_suite

    with reported():
        unknown = sorted(set(only) - set(SECTIONS))
        if unknown:
            raise ObcpError(f"--only {unknown}: unknown section(s); choose from {', '.join(SECTIONS)}.")
        run_suite(params, out, tuple(only) or None, quick=quick, echo=typer.echo)


@app.command("gpu-check")
def gpu_check(
    out: Path = typer.Option(Path("reports/gpu_check.json"), help="where the results go"),
    cpu: bool = typer.Option(False, "--cpu", help="the same script on CPU: gloo, bfloat16 autocast, torch views, "
                             "tiny sizes (what CI runs)"),
) -> None:
    """What only a GPU can check (nccl, AMP, device views, a CIFAR-shaped dvc repro, train_cifar bench) → JSON + table."""
    from pipeline.tools.gpu_check import run_gpu_check

    with reported():
        report = run_gpu_check(out, cpu=cpu, echo=typer.echo)
    if not report["ok"]:
        failed = [name for name, c in report["checks"].items() if not c["ok"]]
        typer.echo(f"gpu-check: {len(failed)} check(s) failed: {', '.join(failed)} (details in {out})", err=True)
        raise typer.Exit(1)


report_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tables and figures from finished runs.")
app.add_typer(report_app, name="report")


@report_app.command("exps")
def report_exps(
    out: Path = typer.Option(Path("reports/exps"), help="output folder"),
    json_file: Path | None = typer.Option(None, "--json-file", help="a saved `dvc exp show --json` (default: run it)"),
    all_commits: bool = typer.Option(False, "--all-commits", "-A", help="experiments of every commit, not only HEAD"),
    workspace: bool = typer.Option(True, "--workspace/--no-workspace",
                                   help="also the workspace's own results (when `dvc status` is clean)"),
    x: str = typer.Option("query_times", "--x", help="the params key on the figure's x axis"),
) -> None:
    """Compare DVC experiments, the baseline and the workspace: exps.md table + Fig. 6 (query_times.png)."""
    from pipeline.tools import exps

    with reported():
        doc = exps.load_exp_show(json_file) if json_file else exps.run_exp_show(".", all_commits=all_commits)
        status = exps.workspace_status(".") if workspace and not json_file else "workspace"
        for path in exps.build_exps_report(doc, out, include_workspace=workspace, workspace_status=status, x=x):
            typer.echo(f"wrote {path}")


@app.command()
def sweep(
    param: str = typer.Argument(..., help="a params.yaml key, e.g. query_times or budget.one_bit"),
    values: list[str] = typer.Argument(..., help="its values, one experiment each"),
    out: Path = typer.Option(Path("reports/exps"), help="where the report goes"),
) -> None:
    """Paper Fig. 6 in one command: one `dvc exp run --temp -S PARAM=V` per value, then the
    report of `obcp report exps` (the baseline, the workspace and every experiment)."""
    from pipeline.tools import exps

    with reported():
        exps.check_sweep(Path("params.yaml"), param, values)  # the file `dvc exp run -S` sets
        failed = exps.run_sweep(param, values, echo=typer.echo)
        doc = exps.run_exp_show(".")
        paths = exps.build_exps_report(doc, out, include_workspace=True, workspace_status=exps.workspace_status("."),
                                       x=param)
        for path in paths:
            typer.echo(f"wrote {path}")
        if failed:
            raise ObcpError(f"experiment(s) {', '.join(failed)} failed (their output is above); the report lists "
                            f"them without results. Fix the cause and run the same `obcp sweep` again: finished "
                            f"experiments are kept, failed ones rerun.")


study_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="The study: a grid of variants × datasets × seeds (pipeline/tools/study/study.yaml).")
app.add_typer(study_app, name="study")
SPEC = typer.Option(None, "--spec", help="study spec (default: pipeline/tools/study/study.yaml)")


@study_app.command("plan")
def study_plan(spec: Path | None = SPEC) -> None:
    """Validate the spec and every cell's params; list the cells and whether each has finished."""
    from pipeline.tools.study import cells, spec as study_spec

    with reported():
        s = study_spec.load_spec(spec or study_spec.SPEC)
        layout = cells.StudyLayout(Path(".").resolve(), s.name)
        study = cells.Study(s, layout, cells.code_hash(layout.root))
        for block in s.blocks:
            study.plan_block(block)
        _emit(study.cells_table()[["cell", "status", "attempts", "wall_s", "overrides"]], Format.table)


@study_app.command("run")
def study_run(
    spec: Path | None = SPEC,
    only: list[str] = typer.Option([], "--only", help="run only cells matching this glob on DATASET/BLOCK/VARIANT "
                                   "(repeatable), e.g. 'digits/main/*'"),
) -> None:
    """Run every unfinished cell (`dvc repro` in data/study/<dataset>/<block>/<variant>/) → reports/study/runs.csv"""
    from pipeline.tools.study import cells, spec as study_spec

    with reported():
        s = study_spec.load_spec(spec or study_spec.SPEC)
        cells.run_study(s, Path("."), only=only, echo=lambda line: typer.echo(line))
        typer.echo(f"next: `obcp study report{'' if spec is None else f' --spec {spec}'}` writes reports/{s.name}.md")


@study_app.command("report")
def study_report(
    spec: Path | None = SPEC,
    runs: Path | None = typer.Option(None, help="the run table (default: reports/<spec name>/runs.csv)"),
    out: Path | None = typer.Option(None, help="the report (default: reports/<spec name>.md; its CSVs and figures "
                                    "go to the folder of the same name)"),
) -> None:
    """Write reports/study.md: the rule, the grid, mean ± std, paired differences, figures, the rule's pick."""
    from pipeline.tools.study import report, spec as study_spec, table

    with reported():
        s = study_spec.load_spec(spec or study_spec.SPEC)
        runs = runs or Path("reports") / s.name / "runs.csv"
        out = out or Path("reports") / f"{s.name}.md"
        cells_csv = runs.with_name("cells.csv")
        if runs.is_file():
            frame = table.read_table(runs)
        else:  # before the first run (the rule is written down before anything runs)
            typer.echo(f"{runs} does not exist yet: the report has the rule and the grid, no results")
            frame = table.from_rows([])
        path = report.build_report(s, frame, out, root=Path("."),
                                   cells=pd.read_csv(cells_csv) if cells_csv.is_file() else None)
        typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
