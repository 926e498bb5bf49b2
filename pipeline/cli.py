"""`obcp`: the command-line tool (typer). `obcp -h` lists the commands, `obcp COMMAND -h` explains one.

    obcp validate                       check params.yaml (against the converted pool), list every problem
    obcp repro [DVC REPRO ARGS]         `dvc repro` with exit codes: 0 done, 2 bad input, 3 waiting for answers
    obcp answers list | fix SAMPLE      the answer store: every answer given; correct any of them
    obcp audit sample ID | cycle | summary   [--arm A --seed S --cycle K --csv/--json]
    obcp score | oracle | update | retrain --cycle K --arm A --seed S
    obcp annotate --arm A --seed S      answer the human oracle's questions on a local page
                  [--export label-studio | --import EXPORT.json]
    obcp preset label --images DIR --classes classes.txt   params for labeling your own images
    obcp export --out DIR               labels.csv + TorchScript model of a run, after any cycle
    obcp predict DIR --model EXPORT     label new images with an exported model (CSV)
    obcp cost                           measured annotation cost: seconds per answer, bits per second
    obcp demo-images --out DIR          an unlabeled folder of embedded digits to try labeling on
    obcp table1                         the paper's Table 1 bit accounting
    obcp exps                           every arm's final top-1 in every DVC experiment, one table
    obcp sweep PARAM V… ; obcp report   compare DVC experiments (Fig. 6)
    obcp gpu-check [--cpu]              what only a GPU can check, in one command
    obcp study plan | run | report      the study grid (pipeline/tools/study/study.yaml) → reports/study.md

Conventions for every command (tests/test_cli.py checks them over the whole command tree):

- Help. `-h` and `--help` everywhere; `obcp --version`. A command's docstring is one summary
  line (not wrapped: it is the command list's entry), optional detail, and a last paragraph
  `Example: `obcp …`` whose options exist. Every option and argument has `help=`.
- Names. A run is chosen with the options `--arm`, `--seed` and `--cycle`, never positional:
  reuse ARM, SEED, CYCLE, PARAMS below (and CSV, JSON for machine-readable output).
- Checks before work. Check values against params.yaml and the artifacts first (`_check_seed`,
  `_check_cycle`, `Params.arm`). Bad input raises an `ObcpError` inside `with reported():`, which
  prints `error: …` (no traceback) and exits 2. A value out of range names the valid range
  (`--cycle 5 is outside 1..4 …`); an unknown arm says `unknown arm`.
- Output. Tables go through `_emit`: plain numbers (no 3.3e+04), class names beside class
  indices (`_with_class_names`). `--csv`/`--json` keep full precision.
- Speed. Import heavy modules (torch, FFCV, DVC) inside the command, so `obcp -h` stays fast.
- Groups. A sub-app (`obcp audit …`) only for two or more commands; one command is a command.
"""
from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import typer

from pipeline import __version__
from pipeline.core.errors import ObcpError, reported

if TYPE_CHECKING:
    from pipeline.core.config import Params

CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(add_completion=False, no_args_is_help=True, context_settings=CONTEXT)  # help: `main`'s docstring
audit_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Who was asked what, when, and the answer (from the query ledger).\n\n"
                        "Example: `obcp audit summary --arm obcp --seed 0`")
app.add_typer(audit_app, name="audit")

PARAMS = typer.Option(Path("params.yaml"), "--params", help="the params file, e.g. params.yaml")
ARM = typer.Option("obcp", "--arm", help="the arm: a key of `arms` in params.yaml, e.g. obcp")
SEED = typer.Option(0, "--seed", help="the seed: one of `seeds` in params.yaml, e.g. 0")
CYCLE = typer.Option(..., "--cycle", help="the query cycle: 1..query_times of params.yaml, e.g. 1")
CSV = typer.Option(False, "--csv", help="print CSV (full precision) instead of a table")
JSON = typer.Option(False, "--json", help="print JSON records (full precision) instead of a table")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"obcp {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print obcp's version and exit"),
) -> None:
    """One-bit Active Query with Contrastive Pairs: the pipeline's command-line tool.

    Example: `obcp audit summary --arm obcp --seed 0`
    """


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _plain_column(values: pd.Series) -> pd.Series:
    """A column as text for a table: integers as integers, other numbers with fixed decimals
    (never an exponent), missing values as `-`, booleans as yes/no."""
    if pd.api.types.is_bool_dtype(values) or str(values.dtype) == "boolean":
        return values.map(lambda v: "-" if pd.isna(v) else ("yes" if v else "no"))
    if not pd.api.types.is_numeric_dtype(values):
        return values.map(lambda v: "-" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v))
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    finite = numbers[numbers.notna() & numbers.map(math.isfinite)]
    if finite.empty or (finite == finite.round()).all():
        return numbers.map(lambda v: "-" if pd.isna(v) else f"{v:.0f}" if math.isfinite(v) else str(v))
    nonzero = finite[finite != 0].abs()
    decimals = 1 if finite.abs().max() >= 1000 else 4
    if len(nonzero) and nonzero.min() < 1e-3:
        decimals = 6
    return numbers.map(lambda v: "-" if pd.isna(v) else f"{v:.{decimals}f}")


def _table_text(frame: pd.DataFrame) -> str:
    """`frame` as an aligned plain-text table (see `_plain_column`)."""
    return frame.apply(_plain_column).to_string(index=False)


def _emit(frame: pd.DataFrame, fmt: Format) -> None:
    if fmt is Format.csv:
        frame.to_csv(sys.stdout, index=False)
    elif fmt is Format.json:
        sys.stdout.write(frame.to_json(orient="records", indent=2) + "\n")
    elif frame.empty:
        typer.echo("(no rows)")
    else:
        typer.echo(_table_text(frame))


def _fmt(csv: bool, json: bool) -> Format:
    if csv and json:
        raise ObcpError("--csv and --json: choose one output format (or neither, for a table).")
    return Format.csv if csv else Format.json if json else Format.table


def _check_seed(p: Params, seeds: Sequence[int]) -> None:
    """Every seed is one of params.yaml's `seeds`."""
    bad = [s for s in seeds if s not in p.seeds]
    if bad:
        raise ObcpError(f"--seed {bad[0]} is not one of the seeds in params.yaml ({', '.join(map(str, p.seeds))}); "
                        f"choose one of them, e.g. `--seed {p.seeds[0]}`.")


def _check_cycle(p: Params, cycle: int) -> None:
    """`cycle` is a query cycle of params.yaml: 1..query_times."""
    if not 1 <= cycle <= p.query_times:
        raise ObcpError(f"--cycle {cycle} is outside 1..query_times ({p.query_times}); choose a cycle in "
                        f"1..{p.query_times}, e.g. `--cycle 1`.")


def _class_names(p: Params) -> list[str] | None:
    """The dataset's class names (classes.json beside the converted data), or None before `convert`."""
    from pipeline.core.layout import Layout
    from pipeline.data.index import read_classes

    path = Layout(p.dataset.name).data_dir
    return read_classes(path)["classes"] if (path / "classes.json").is_file() else None


NAMED = {"true_label": "true_label_name", "asked_class": "asked_class_name", "label_given": "label_given_name",
         "class": "class_name"}


def _with_class_names(frame: pd.DataFrame, names: Sequence[str] | None) -> pd.DataFrame:
    """A `<column>_name` column right after each class-index column of NAMED (-1, no class: missing)."""
    if names is None:
        return frame
    out = frame.copy()
    for column, named in NAMED.items():
        if column in out.columns:
            index = out[column].astype("int64")
            text = [names[i] if 0 <= i < len(names) else None for i in index]
            out.insert(out.columns.get_loc(column) + 1, named, pd.Series(text, index=out.index, dtype="object"))
    return out


def _ledger(params: Path, arm: str, seed: int) -> tuple[Params, pd.DataFrame, list[str]]:
    from pipeline.core.config import load_params
    from pipeline.core.layout import Layout
    from pipeline.data.index import read_classes
    from pipeline.pool import ledger

    p = load_params(params)
    p.arm(arm)
    _check_seed(p, [seed])
    layout = Layout(p.dataset.name)
    frame = ledger.read(layout.ledger(arm, seed))
    return p, frame, read_classes(layout.data_dir)["classes"]


@app.command()
def validate(params: Path = PARAMS) -> None:
    """Check params.yaml (against the train pool once the dataset is converted) and the answer files.

    Prints every problem with its key path (exit 2), or what it checked.

    Example: `obcp validate --params params.yaml`
    """
    from pipeline.tools.validate import check_project, describe

    with reported():
        _, pool, why = check_project(params)
        typer.echo(describe(params, pool, why))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro(ctx: typer.Context) -> None:
    """Run the pipeline (DVC's own `dvc repro`, same arguments) with exit codes a script can use.

    0 done, 2 bad input, 3 waiting for answers, 1 anything else (DVC's own error, a crash),
    130 interrupted. Plain `dvc repro` exits 255 for all failures.

    Example: `obcp repro -f active@0`
    """
    from pipeline.tools.repro import repro as run_repro

    raise typer.Exit(run_repro(ctx.args, echo=typer.echo))


@audit_app.command("sample")
def audit_sample(
    sample_id: int = typer.Argument(..., help="the sample's id in the train split: 0..N-1, e.g. 123"),
    arm: list[str] = typer.Option([], "--arm", help="only this arm (repeatable), e.g. obcp; default: every arm "
                                  "in params.yaml"),
    seed: list[int] = typer.Option([], "--seed", help="only this seed (repeatable), e.g. 0; default: every seed "
                                   "in params.yaml"),
    params: Path = PARAMS, csv: bool = CSV, json: bool = JSON,
) -> None:
    """Every question ever asked about one sample, in every arm and seed: cycle, asked class, answer.

    Example: `obcp audit sample 123 --arm obcp --seed 0 --json`
    """
    from pipeline.core.config import load_params
    from pipeline.core.layout import Layout
    from pipeline.data.index import read_index
    from pipeline.pool import ledger

    with reported():
        fmt = _fmt(csv, json)
        p = load_params(params)
        arms, seeds = arm or list(p.arms), seed or list(p.seeds)
        for name in arms:
            p.arm(name)
        _check_seed(p, seeds)
        layout = Layout(p.dataset.name)
        if (layout.data_dir / "index.parquet").is_file():
            n = int((read_index(layout.data_dir)["split"] == "train").sum())
            if not 0 <= sample_id < n:
                raise ObcpError(f"sample {sample_id} is outside 0..{n - 1} (the ids of the {n} train samples of "
                                f"{p.dataset.name}).")
        elif sample_id < 0:
            raise ObcpError(f"sample {sample_id}: sample ids start at 0.")
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
            if fmt is Format.table:
                return
        _emit(_with_class_names(rows, _class_names(p)), fmt)


@audit_app.command("cycle")
def audit_cycle(
    cycle: int = CYCLE, arm: str = ARM, seed: int = SEED, params: Path = PARAMS, csv: bool = CSV, json: bool = JSON,
) -> None:
    """Every question of one query cycle, by rank: sample, asked class, answer, score.

    Example: `obcp audit cycle --cycle 2 --arm obcp --seed 0 --csv`
    """
    from pipeline.pool import ledger

    with reported():
        fmt = _fmt(csv, json)
        p, frame, names = _ledger(params, arm, seed)
        done = sorted(int(k) for k in frame["cycle"].unique())
        if cycle not in done:
            _check_cycle(p, cycle)
            have = f"cycles {done[0]}..{done[-1]}" if done else "no cycle yet"
            raise ObcpError(f"--cycle {cycle} is outside the finished cycles of arm {arm}, seed {seed}: its ledger "
                            f"has {have} (query_times: {p.query_times}). Choose one of them, or run `dvc repro` "
                            "to finish the others.")
        _emit(_with_class_names(ledger.for_cycle(frame, cycle), names), fmt)


@audit_app.command("summary")
def audit_summary(arm: str = ARM, seed: int = SEED, params: Path = PARAMS, csv: bool = CSV, json: bool = JSON) -> None:
    """Per cycle: asked, yes, no, yes-rate; per cycle and class: asked, yes, full labels.

    Example: `obcp audit summary --arm obcp --seed 0`
    """
    from pipeline.pool import ledger

    with reported():
        fmt = _fmt(csv, json)
        _, frame, names = _ledger(params, arm, seed)
        result = ledger.summary(frame, len(names))
        per_class = _with_class_names(result.per_class, names)
        if fmt is Format.json:  # one document with both tables
            import json as _json

            doc = {name: _json.loads(table.to_json(orient="records"))
                   for name, table in (("per_cycle", result.per_cycle), ("per_class", per_class))}
            typer.echo(_json.dumps(doc, indent=2))
            return
        if fmt is Format.table:
            typer.echo(f"{arm}, seed {seed}: per cycle")
        _emit(result.per_cycle, fmt)
        if fmt is Format.table:
            typer.echo("\nper class (asked / yes)")
        _emit(per_class, fmt)


def _step(name: str, cycle: int, arm: str, seed: int, params: Path) -> None:
    from pipeline.core.config import load_params
    from pipeline.core.context import open_run
    from pipeline.loop import steps
    from pipeline.loop.cycle import Cycle, cycle_key

    with reported():
        p = load_params(params)  # the cheap checks first, before torch and the data are opened
        p.arm(arm)
        _check_seed(p, [seed])
        _check_cycle(p, cycle)
        ctx = open_run(params, seed)
        c = Cycle(ctx, arm, cycle)
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
def score(cycle: int = CYCLE, arm: str = ARM, seed: int = SEED, params: Path = PARAMS) -> None:
    """Step 1 of a cycle: rank candidates, choose the questions (scores.parquet).

    Example: `obcp score --cycle 1 --arm obcp --seed 0`
    """
    _step("score", cycle, arm, seed, params)


@app.command()
def oracle(cycle: int = CYCLE, arm: str = ARM, seed: int = SEED, params: Path = PARAMS) -> None:
    """Step 2 of a cycle: answer the questions (simulated), or read a human's answers (queries.parquet).

    Example: `obcp oracle --cycle 1 --arm obcp --seed 0`
    """
    _step("oracle", cycle, arm, seed, params)


@app.command()
def update(cycle: int = CYCLE, arm: str = ARM, seed: int = SEED, params: Path = PARAMS) -> None:
    """Step 3 of a cycle: apply the answers to the pool and the ledger (pool.parquet).

    Example: `obcp update --cycle 1 --arm obcp --seed 0`
    """
    _step("update", cycle, arm, seed, params)


@app.command()
def retrain(cycle: int = CYCLE, arm: str = ARM, seed: int = SEED, params: Path = PARAMS) -> None:
    """Step 4 of a cycle: continue training with the cycle's pool (checkpoint.pt, history.npz, manifest.json).

    Example: `obcp retrain --cycle 1 --arm obcp --seed 0`
    """
    _step("retrain", cycle, arm, seed, params)


@app.command()
def annotate(
    arm: str | None = typer.Option(None, help="arm name, e.g. obcp; default: the only arm in params.yaml, else obcp"),
    seed: int = SEED, params: Path = PARAMS,
    host: str = typer.Option("127.0.0.1", help="address the page binds to, e.g. 127.0.0.1 (loopback, the default)"),
    port: int = typer.Option(8765, help="port of the page: 0..65535, e.g. 8765 (0: any free port)"),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="open the page in the default browser"),
    export: str | None = typer.Option(None, "--export", help="label-studio: write Label Studio import tasks "
                                      "for the open questions instead of serving the page"),
    out: Path = typer.Option(Path("label-studio"), help="folder for --export (tasks.json, labeling-config.xml), "
                             "e.g. label-studio"),
    import_file: Path | None = typer.Option(None, "--import", help="a Label Studio JSON export: put its answers "
                                            "into the answer store"),
    idle: float = typer.Option(30.0, "--idle", help="seconds without a key or mouse move after which the page's "
                               "timing of an answer stops counting (annotation cost, `obcp cost`)"),
) -> None:
    """Answer the human oracle's open questions and correct any stored answer: a local page, or Label Studio.

    Example: `obcp annotate --arm obcp --seed 0 --port 8765`
    """
    from pipeline.oracle.annotate import AnswerPage, StoreImages, find_sheet, make_server, open_sheet
    from pipeline.core.config import load_params
    from pipeline.data.index import read_classes, read_index
    from pipeline.core.layout import Layout

    with reported():
        if not 0 <= port <= 65535:
            raise ObcpError(f"--port {port} is outside 0..65535 (0: any free port).")
        p = load_params(params)
        layout = Layout(p.dataset.name)
        classes = read_classes(layout.data_dir)["classes"]
        if import_file is not None:  # answers are keyed by question: no arm or seed needed
            from pipeline.oracle.labelstudio import import_export

            train = read_index(layout.data_dir).query("split == 'train'")
            read, added, skipped = import_export(import_file, layout.answer_store, dataset=p.dataset.name,
                                                 num_samples=len(train), class_names=classes)
            typer.echo(f"{import_file}: {read} answers read, {added} new or changed added to {layout.answer_store}"
                       f"{f', {skipped} unanswered task(s) skipped' if skipped else ''}. Rerun `obcp repro` (a changed "
                       "answer replays from the first cycle that used it).")
            return
        arm = arm or (next(iter(p.arms)) if len(p.arms) == 1 else "obcp")
        p.arm(arm)
        _check_seed(p, [seed])
        if export is not None:
            sheet = open_sheet(layout, arm, seed, classes)
            if export != "label-studio":
                raise ObcpError(f"--export {export!r}: the one export format is `label-studio`.")
            from pipeline.oracle.labelstudio import write_export

            tasks, config, n = write_export(sheet, layout.answer_store, p.dataset.name, out)
            typer.echo(f"wrote {n} task(s) to {tasks} and the labeling interface to {config}. In Label Studio: "
                       f"create a project, paste {config.name} under Settings → Labeling Interface → Code, import "
                       f"{tasks.name}, annotate, export as JSON, then run `obcp annotate --import EXPORT.json`.")
            return
        sheet = find_sheet(layout, arm, seed, classes)
        page = AnswerPage(sheet, layout.answer_store, class_names=classes, images=StoreImages(layout),
                          on_complete=typer.echo, idle_seconds=idle)
        server = make_server(page, host, port)
        url = f"http://{host if ':' not in host else f'[{host}]'}:{server.server_address[1]}/"
        if sheet is None:
            what = f"arm {arm}, seed {seed}, no open question sheet: the answers in the store, to correct"
        else:
            who = f"the {sheet.arm}" if sheet.cycle == 0 else f"arm {arm}"
            what = f"{who}, seed {seed}, cycle {sheet.cycle} ({len(sheet.questions)} questions)"
        typer.echo(f"answer page for {what}: {url}  (Ctrl+C to stop; every answer is saved as given)")
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


answers_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="The answer store: every answer a person gave; correct any of them.\n\n"
                               "Example: `obcp answers list --sample 17`")
app.add_typer(answers_app, name="answers")


def _store_facts(params: Path):
    from pipeline.core.config import load_params
    from pipeline.core.layout import Layout
    from pipeline.data.index import read_classes

    p = load_params(params)
    layout = Layout(p.dataset.name)
    return layout, read_classes(layout.data_dir)["classes"]


@answers_app.command("list")
def answers_list(
    sample: int | None = typer.Option(None, "--sample", help="only the answers about this sample id"),
    history: bool = typer.Option(False, "--history", help="every row ever stored (corrections and "
                                 "withdrawals included), not only the answers in force"),
    params: Path = PARAMS,
    csv: bool = CSV, json: bool = JSON,
) -> None:
    """The answers in the store, newest first: sample, question, answer, when, from where.

    Example: `obcp answers list --sample 17 --history`
    """
    from pipeline.oracle import answers, corrections

    with reported():
        layout, classes = _store_facts(params)
        frame = corrections.table(answers.read(layout.answer_store), classes, sample_id=sample, history=history)
        if frame.empty and not (csv or json):
            typer.echo(f"no answer{' about sample ' + str(sample) if sample is not None else ''} in "
                       f"{layout.answer_store}")
            return
        _emit(frame, _fmt(csv, json))


@answers_app.command("fix")
def answers_fix(
    sample_id: int = typer.Argument(..., help="the sample whose answer is corrected"),
    asked: str | None = typer.Option(None, "--asked", help="the class asked about (name or index) of a "
                                     "one-bit question \"is this a CLASS?\""),
    answer: str | None = typer.Option(None, "--answer", help="the corrected answer to it: yes or no"),
    label: str | None = typer.Option(None, "--label", help="the corrected label (name or index) of a "
                                     "full-label question (the fullbit arm)"),
    params: Path = PARAMS,
) -> None:
    """Correct a stored answer, whichever cycle asked it; the next `obcp repro` replays from the first cycle that used it.

    A full label: `obcp answers fix 12 --label 7`.

    Example: `obcp answers fix 12 --asked 3 --answer no`
    """
    from pipeline.oracle import answers, corrections
    from pipeline.pool import ledger

    with reported():
        one_bit = asked is not None or answer is not None
        if (label is not None and one_bit) or (label is None and (asked is None or answer is None)):
            raise ObcpError("give `--asked CLASS --answer yes|no` (a one-bit question) or `--label CLASS` "
                            "(a full-label question), not both.")
        layout, classes = _store_facts(params)
        if label is not None:
            asked_class, value = answers.LABEL_QUESTION, label
        else:
            asked_class, value = corrections.resolve_class(asked, classes, "--asked"), answer
        done = corrections.fix(layout.answer_store, sample_id, asked_class, value, class_names=classes,
                               source="obcp answers fix")
        typer.echo(done.describe(layout.answer_store))
        used = []
        for path in sorted(Path("reports/ledger").glob("seed*/*.parquet")):
            rows = ledger.read(path)
            rows = rows[(rows["sample_id"] == sample_id) & (rows["asked_class"] == asked_class)]
            used += [f"arm {a} seed {s} cycle {c}" for a, s, c in zip(rows["arm"], rows["seed"], rows["cycle"])]
        if done.added:
            where = f"used by {', '.join(used)}" if used else "used by no finished cycle (per reports/ledger)"
            typer.echo(f"{where}. Run `obcp repro`: each run that used it replays from the first cycle that did.")


@app.command()
def preset(
    name: str = typer.Argument(..., help="glyphs | cifar10 | cifar100 | imagenet | fig4 (conventional learners vs "
                               "ObCP, docs/baselines.md) | fig6left | label (your own images: needs --images and "
                               "--classes); `git checkout params.yaml` restores digits"),
    out: Path = typer.Option(Path("params.yaml"), help="where to write it, e.g. params.yaml"),
    images: Path | None = typer.Option(None, help="label: the folder of your images (flat or nested)"),
    classes: Path | None = typer.Option(None, help="label: classes.txt, one class name a line"),
    val: Path | None = typer.Option(None, help="label: optional labeled folder val/<class>/ to measure accuracy"),
    initial_labels: Path | None = typer.Option(None, help="label: optional CSV (path or file name, class) of I^S"),
    image_size: int = typer.Option(32, help="label: side every image is resized to"),
    skip_unreadable: bool = typer.Option(False, "--skip-unreadable", help="label: leave out undecodable images"),
    initial: int | None = typer.Option(None, help="label: |I^S| (default 5 per class)"),
    questions: int | None = typer.Option(None, help="label: yes/no questions in all (default 10·C·log2 C)"),
    query_times: int = typer.Option(4, help="label: query cycles"),
    audit: int | None = typer.Option(None, help="label: random audit questions per cycle (default: a fifth of a "
                                     "cycle, at most 20, without --val; 0 without)"),
) -> None:
    """Write the paper's settings for a dataset as params.yaml (validated first), or `label`: your own images.

    `label` writes one arm and one seed with a person answering (docs/labeling.md).

    Example: `obcp preset cifar10 --out params.yaml`
    """
    import shutil

    from pipeline.core.config import load_params

    if name == "label":
        return _label_preset(out, images, classes, val=val, initial_labels=initial_labels, image_size=image_size,
                             skip_unreadable=skip_unreadable, initial=initial, questions=questions,
                             query_times=query_times, audit=audit)
    with reported():
        presets = Path(__file__).parent / "presets"
        known = sorted(p.stem for p in presets.glob("*.yaml"))
        if name not in known:
            raise ObcpError(f"no preset named {name!r}; choose one of: {', '.join(known)}.")
        load_params(presets / f"{name}.yaml")
        shutil.copyfile(presets / f"{name}.yaml", out)
        typer.echo(f"wrote {out} ({name}); run `dvc repro` (or `dvc exp run`)")


@app.command()
def table1(csv: bool = CSV, json: bool = JSON) -> None:
    """The paper's Table 1: bits of full labels vs one-bit questions.

    Example: `obcp table1 --csv`
    """
    from pipeline.pool.budget import table1 as rows

    with reported():
        _emit(pd.DataFrame([r.__dict__ for r in rows()]), _fmt(csv, json))


@app.command()
def bench(
    params: Path = PARAMS,
    out: Path = typer.Option(Path("reports/bench.json"), help="where the results go, e.g. reports/bench.json"),
    only: list[str] = typer.Option([], "--only", help="sections: convert loader train cycle ddp memory "
                                   "train_cifar (ResNet-18; by default only on a GPU) retest (Eq. 7 test-retest) "
                                   "selection (each strategy's seconds and peak memory at N = 50 k, 1.2 M); "
                                   "updates those sections of --out (repeatable), e.g. loader"),
    quick: bool = typer.Option(False, "--quick", help="smaller sizes (a smoke run)"),
) -> None:
    """Benchmarks (not tests): ratios measured in one run → reports/bench.json + a table.

    Example: `obcp bench --only loader --quick`
    """
    from pipeline.tools.bench.suite import SECTIONS, run_suite

    with reported():
        unknown = sorted(set(only) - set(SECTIONS))
        if unknown:
            raise ObcpError(f"--only {unknown}: unknown section(s); choose from {', '.join(SECTIONS)}.")
        run_suite(params, out, tuple(only) or None, quick=quick, echo=typer.echo)


@app.command("gpu-check")
def gpu_check(
    out: Path = typer.Option(Path("reports/gpu_check.json"), help="where the results go, e.g. reports/gpu_check.json"),
    cpu: bool = typer.Option(False, "--cpu", help="the same script on CPU: gloo, bfloat16 autocast, torch views, "
                             "tiny sizes (what CI runs)"),
) -> None:
    """What only a GPU can check (nccl, AMP, device views, a CIFAR-shaped dvc repro, train_cifar bench) → JSON + table.

    Example: `obcp gpu-check --cpu`
    """
    from pipeline.tools.gpu_check import run_gpu_check

    with reported():
        report = run_gpu_check(out, cpu=cpu, echo=typer.echo)
    if not report["ok"]:
        failed = [name for name, c in report["checks"].items() if not c["ok"]]
        typer.echo(f"gpu-check: {len(failed)} check(s) failed: {', '.join(failed)} (details in {out})", err=True)
        raise typer.Exit(1)


@app.command("report")
def report(
    out: Path = typer.Option(Path("reports/exps"), help="output folder, e.g. reports/exps"),
    json_file: Path | None = typer.Option(None, "--json-file", help="a saved `dvc exp show --json`, e.g. "
                                          "exps.json (default: run it)"),
    all_commits: bool = typer.Option(False, "--all-commits", "-A", help="experiments of every commit, not only HEAD"),
    workspace: bool = typer.Option(True, "--workspace/--no-workspace",
                                   help="also the workspace's own results (when `dvc status` is clean)"),
    x: str = typer.Option("query_times", "--x", help="the params key on the figure's x axis, e.g. query_times"),
) -> None:
    """Compare DVC experiments, the baseline and the workspace: exps.md table + Fig. 6 (query_times.png).

    Run a sweep first (`obcp sweep`), or queue experiments with `dvc exp run --queue` and run them.

    Example: `obcp report --out reports/exps --x query_times`
    """
    from pipeline.tools import exps

    with reported():
        doc = exps.load_exp_show(json_file) if json_file else exps.run_exp_show(".", all_commits=all_commits)
        status = exps.workspace_status(".") if workspace and not json_file else "workspace"
        for path in exps.build_exps_report(doc, out, include_workspace=workspace, workspace_status=status, x=x):
            typer.echo(f"wrote {path}")


@app.command("exps")
def exps_table(
    json_file: Path | None = typer.Option(None, "--json-file", help="a saved `dvc exp show --json` (default: run it)"),
    all_commits: bool = typer.Option(False, "--all-commits", "-A", help="experiments of every commit, not only HEAD"),
    workspace: bool = typer.Option(True, "--workspace/--no-workspace",
                                   help="also the workspace's own results (when `dvc status` is clean)"),
    width: int | None = typer.Option(None, "--width", min=40,
                                     help="columns to fit in (default: the terminal's, or 160 in a pipe)"),
) -> None:
    """Final top-1 (%) of every arm in every DVC experiment, one compact table: the workspace,
    the baseline and its experiments, with the params that differ. Example: `obcp exps`."""
    from pipeline.tools import exps

    with reported():
        doc = exps.load_exp_show(json_file) if json_file else exps.run_exp_show(".", all_commits=all_commits)
        status = exps.workspace_status(".") if workspace and not json_file else "workspace"
        exps.print_exps(doc, include_workspace=workspace, workspace_status=status, width=width)


@app.command()
def sweep(
    param: str = typer.Argument(..., help="a params.yaml key, e.g. query_times or budget.one_bit"),
    values: list[str] = typer.Argument(..., help="its values, one experiment each, e.g. 1 2 3 4"),
    out: Path = typer.Option(Path("reports/exps"), help="where the report goes, e.g. reports/exps"),
) -> None:
    """Paper Fig. 6 in one command: one `dvc exp run --temp -S PARAM=V` per value, then `obcp report`.

    The report holds the baseline, the workspace and every experiment.

    Example: `obcp sweep query_times 1 2 3 4`
    """
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
                        help="The study: a grid of variants × datasets × seeds (pipeline/tools/study/study.yaml)."
                        "\n\nExample: `obcp study plan`")
app.add_typer(study_app, name="study")
SPEC = typer.Option(None, "--spec", help="the study spec, e.g. pipeline/tools/study/study.yaml (the default)")


@study_app.command("plan")
def study_plan(spec: Path | None = SPEC) -> None:
    """Validate the spec and every cell's params; list the cells and whether each has finished.

    Example: `obcp study plan`
    """
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
    """Run every unfinished cell (`dvc repro` in data/study/<dataset>/<block>/<variant>/) → reports/study/runs.csv.

    Example: `obcp study run --only 'digits/main/*'`
    """
    from pipeline.tools.study import cells, spec as study_spec

    with reported():
        s = study_spec.load_spec(spec or study_spec.SPEC)
        cells.run_study(s, Path("."), only=only, echo=lambda line: typer.echo(line))
        typer.echo(f"next: `obcp study report{'' if spec is None else f' --spec {spec}'}` writes reports/{s.name}.md")


@study_app.command("report")
def study_report(
    spec: Path | None = SPEC,
    runs: Path | None = typer.Option(None, help="the run table, e.g. reports/study/runs.csv (default; or "
                                                 "reports/<name>/study/runs.csv for a spec with a name)"),
    out: Path | None = typer.Option(None, help="the report, its CSVs and figures under <folder>/study/ (default: "
                                               "reports/study.md, or reports/<name>/study.md)"),
) -> None:
    """Write reports/study.md: the rule, the grid, mean ± std, paired differences, figures, the rule's pick.

    Example: `obcp study report`
    """
    from pipeline.tools.study import cells, report, spec as study_spec, table

    with reported():
        s = study_spec.load_spec(spec or study_spec.SPEC)
        layout = cells.StudyLayout(Path("."), s.name)
        runs = runs or layout.runs
        out = out or layout.report
        cells_csv = runs.with_name("cells.csv")
        if runs.is_file():
            frame = table.read_table(runs)
        else:  # before the first run (the rule is written down before anything runs)
            typer.echo(f"{runs} does not exist yet: the report has the rule and the grid, no results")
            frame = table.from_rows([])
        path = report.build_report(s, frame, out, root=Path("."),
                                   cells=pd.read_csv(cells_csv) if cells_csv.is_file() else None)
        typer.echo(f"wrote {path}")


# --------------------------------------------------------------------------- labeling your own images


def _label_preset(out: Path, images: Path | None, classes: Path | None, **options) -> None:
    from pipeline.tools.labeling.preset import describe, label_preset, write_label_preset

    with reported():
        if images is None or classes is None:
            raise ObcpError("`obcp preset label` needs --images DIR (your images) and --classes FILE (classes.txt, "
                            "one class name a line).")
        made = label_preset(images, classes, **options)  # checks everything before writing
        write_label_preset(out, made)
        typer.echo(describe(made, out))


@app.command("export")
def export_cmd(
    out: Path = typer.Option(..., help="folder for labels.csv, model.pt (TorchScript) and model.json, e.g. export"),
    arm: str | None = typer.Option(None, help="arm; default: the only arm in params.yaml"),
    seed: int | None = typer.Option(None, help="seed; default: the first in params.yaml"),
    cycle: int | None = typer.Option(None, help="after this cycle (0: stage 1); default: the latest finished"),
    params: Path = PARAMS,
) -> None:
    """Export the labels a run gathered (labels.csv) and its model (TorchScript), after any cycle.

    Example: `obcp export --out export --cycle 2`
    """
    from pipeline.core.config import load_params
    from pipeline.core.context import open_run
    from pipeline.tools.labeling.export import describe, export

    with reported():
        ctx = open_run(params, seed if seed is not None else load_params(params).seeds[0])
        typer.echo(describe(export(ctx, out, arm=arm, cycle=cycle)))


@app.command("predict")
def predict_cmd(
    folder: Path = typer.Argument(..., help="a folder of new images (searched recursively)"),
    model: Path = typer.Option(..., help="a folder written by `obcp export`"),
    out: Path = typer.Option(Path("predictions.csv"), help="the CSV to write"),
    skip_unreadable: bool = typer.Option(False, "--skip-unreadable", help="leave out undecodable images"),
) -> None:
    """Label new images with an exported model: path, predicted class, confidence, per-class probabilities.

    Example: `obcp predict new_images --model export --out predictions.csv`
    """
    from pipeline.tools.labeling.predict import write_predictions

    with reported():
        n, bad = write_predictions(folder, model, out, skip_unreadable=skip_unreadable)
        for line in bad:
            typer.echo(f"left out {line}", err=True)
        typer.echo(f"predicted {n} image(s) under {folder} → {out}")


@app.command("cost")
def cost_cmd(
    params: Path = PARAMS,
    out: Path = typer.Option(Path("reports/cost.json"), help="the JSON report (a markdown twin goes beside it)"),
) -> None:
    """Measured annotation cost from the answer store: seconds per yes/no and per full label, bits per second.

    Example: `obcp cost --out reports/cost.json`
    """
    from pipeline.core.config import load_params
    from pipeline.core.io import write_json, write_text
    from pipeline.core.layout import Layout
    from pipeline.data.index import read_classes
    from pipeline.oracle import answers
    from pipeline.reporting.cost import annotation_cost, cost_markdown

    with reported():
        layout = Layout(load_params(params).dataset.name)
        store = answers.read(layout.answer_store)
        if store.empty:
            raise ObcpError(f"the answer store {layout.answer_store} holds no answers yet; answer questions on "
                            "`obcp annotate` first.")
        doc = annotation_cost(store, read_classes(layout.data_dir)["num_classes"])
        write_json(out, doc, sort_keys=False)
        text = cost_markdown(doc)
        write_text(out.with_suffix(".md"), f"# Annotation cost ({layout.answer_store})\n\n{text}")
        typer.echo(text + f"→ {out}, {out.with_suffix('.md')}")


@app.command("demo-images")
def demo_images(
    out: Path = typer.Option(..., help="folder to write images/, new/, classes.txt, answer_key.csv into"),
    count: int = typer.Option(300, help="unlabeled images (embedded digits)"),
    new: int = typer.Option(20, help="more images for `obcp predict`"),
) -> None:
    """An unlabeled folder of embedded digits (labels hidden) to try `obcp preset label` on.

    Example: `obcp demo-images --out demo --count 300`
    """
    from pipeline.tools.labeling.demo import write_demo

    with reported():
        counts = write_demo(out, count=count, new=new)
        typer.echo(f"wrote {counts['images']} unlabeled images to {out / 'images'}, {counts['new']} to {out / 'new'}, "
                   f"{out / 'classes.txt'} and {out / 'answer_key.csv'} (the hidden labels)")


if __name__ == "__main__":
    app(prog_name="obcp")
