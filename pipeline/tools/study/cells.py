"""Run the study: every cell is an isolated DVC project under ``data/study/<dataset>/<block>/<variant>/``.

A cell folder holds its own ``params.yaml`` (the spec's params for that cell), copies of
``dvc.yaml``, ``stages/`` and ``pipeline/`` (kept in sync with the project on every run),
and a ``.dvc/`` whose cache is the project's DVC cache. So ``convert``, ``init_pool`` and
``pretrain`` come from DVC's run-cache whenever their params match another cell's (or the
project's own ``dvc repro``), and each cell runs a real ``dvc repro``. What the pipeline
reads but no stage writes (the answer store ``reports/answers``, a relative ``dataset.root``)
is a link to the project's own. The user's ``params.yaml`` and workspace outputs are never
touched.

A cell is *finished* when its ``study-cell.json`` records a successful ``dvc repro`` of
the same params and code; a finished cell is skipped. An interrupted or failed cell runs
``dvc repro`` again, which continues where it stopped (DVC skips finished stages and the
``active`` stage skips finished cycles). A cell whose settings equal a finished cell's
(all params but ``arms``, with a subset of its arms) reuses that cell's results. After
every cell the run table (``reports/study/runs.csv``) is rebuilt from every finished cell,
and ``reports/study/cells.csv`` lists each cell's status, wall time and run-cache reuse.
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
import yaml

from pipeline.core.errors import ERROR_DIR, ObcpError
from pipeline.core.io import write_bytes, write_csv, write_json, write_text
from pipeline.core.project import CODE, shared_inputs
from pipeline.tools.study import table
from pipeline.tools.study.rule import pick
from pipeline.tools.study.spec import Cell, Spec, StudyError, block_cells

SKIP_DIRS: tuple[str, ...] = ("__pycache__", "study", "bench", "docs")  # not copied: caches, and tools no stage runs
MARKER = "study-cell.json"
LOG = "study.log"
STAGE_LINES = {
    "ran": re.compile(r"^Running stage '([^']+)'"),
    "run_cache": re.compile(r"^Stage '([^']+)' is cached - skipping run"),
    "unchanged": re.compile(r"^Stage '([^']+)' didn't change, skipping"),
}
Echo = Callable[[str], None]


@dataclass(frozen=True)
class StudyLayout:
    """Where the study's artifacts live, under the project `root`; a named study (the spec's
    `name`) in its own folders, data/studies/<name>/ and reports/<name>/."""

    root: Path
    name: str | None = None

    @property
    def cells_dir(self) -> Path:
        return self.root / "data" / "study" if self.name is None else self.root / "data" / "studies" / self.name

    def cell_dir(self, cell: Cell) -> Path:
        return self.cells_dir / cell.dataset / cell.block / cell.variant

    @property
    def tables_dir(self) -> Path:
        return self.report.parent / "study"

    @property
    def runs(self) -> Path:
        return self.tables_dir / "runs.csv"

    @property
    def cells(self) -> Path:
        return self.tables_dir / "cells.csv"

    @property
    def report(self) -> Path:
        return self.root / "reports" / ("study.md" if self.name is None else f"{self.name}/study.md")


@dataclass
class Outcome:
    """What happened to one cell in this run."""

    cell: Cell
    status: str  # done | skipped | reused | failed | interrupted | waiting | not selected
    wall_s: float = 0.0
    exit_code: int | None = None
    stages: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per ran or restored stage
    note: str = ""


# --------------------------------------------------------------------------- cell folders


def _code_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, source path) of every code file a cell gets, sorted."""
    for name in CODE:
        src = root / name
        if src.is_file():
            yield name, src
        elif src.is_dir():
            for path in sorted(src.rglob("*")):
                rel = path.relative_to(root)
                if path.is_file() and not any(part in SKIP_DIRS for part in rel.parts[1:-1]):
                    yield rel.as_posix(), path


def code_hash(root: Path) -> str:
    """sha256 of the code every cell runs (paths and bytes)."""
    h = hashlib.sha256()
    for rel, path in _code_files(root):
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _sync_code(root: Path, cell_dir: Path) -> None:
    """Make the cell's copies of `CODE` equal the project's (only changed files are written)."""
    wanted = dict(_code_files(root))
    for rel, src in wanted.items():
        dst = cell_dir / rel
        data = src.read_bytes()
        if not dst.is_file() or dst.read_bytes() != data:
            write_bytes(dst, data)
    for name in CODE:
        top = cell_dir / name
        if top.is_dir():
            for path in top.rglob("*"):
                rel = path.relative_to(cell_dir)
                if path.is_file() and rel.as_posix() not in wanted and "__pycache__" not in rel.parts:
                    path.unlink()


def shared_cache(layout: StudyLayout, dvc: str) -> Path:
    """The project's DVC cache (`dvc cache dir`), or ``data/study/.dvc-cache`` outside a DVC project."""
    if (layout.root / ".dvc").is_dir():
        out = subprocess.run([dvc, "cache", "dir"], cwd=layout.root, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, env=_env(layout.root), check=False)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip()).resolve()
    return (layout.cells_dir / ".dvc-cache").resolve()


def _params_text(cell: Cell) -> str:
    return "# written by `obcp study run` for cell " + cell.id + "; edit the study spec, not this file\n" + \
        yaml.safe_dump(cell.params, sort_keys=False, allow_unicode=True)


def prepare(cell: Cell, layout: StudyLayout, cache: Path, dvc: str) -> Path:
    """Create or update the cell's DVC project (params, code, cache) and return its folder."""
    cell_dir = layout.cell_dir(cell)
    cell_dir.mkdir(parents=True, exist_ok=True)
    if not (cell_dir / ".dvc").is_dir():
        out = subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=cell_dir, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, env=_env(cell_dir), check=False)
        if out.returncode != 0:
            raise StudyError(f"`dvc init --no-scm` failed in {cell_dir}: {out.stderr.strip() or out.stdout.strip()}. "
                             "Delete the folder and run again.")
    config = f"[core]\n    no_scm = True\n    analytics = false\n[cache]\n    dir = {cache}\n"
    if not (cell_dir / ".dvc" / "config").is_file() or (cell_dir / ".dvc" / "config").read_text() != config:
        write_text(cell_dir / ".dvc" / "config", config)
    _sync_code(layout.root, cell_dir)
    text = _params_text(cell)
    if not (cell_dir / "params.yaml").is_file() or (cell_dir / "params.yaml").read_text() != text:
        write_text(cell_dir / "params.yaml", text)
    _link_shared(cell, layout.root, cell_dir)
    return cell_dir


def _link(target: Path, link: Path) -> None:
    if target.exists() and not link.exists() and not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=target.is_dir())


def _link_shared(cell: Cell, root: Path, cell_dir: Path) -> None:
    """Point the cell at the project's own copies of what is not derived: the shared inputs of
    dvc.yaml (a person's answers stay in one store) and a relative ``dataset.root`` (raw downloads,
    image folders). An existing file or folder in the cell is left alone."""
    for rel in shared_inputs(root):
        _link((root / rel).resolve(), cell_dir / rel)
    ds = cell.params.get("dataset") or {}
    raw = Path(str(ds.get("root") or ""))
    if str(raw) and not raw.is_absolute():
        if ds.get("download"):
            (root / raw).mkdir(parents=True, exist_ok=True)
        _link((root / raw).resolve(), cell_dir / raw)


def fingerprint(cell: Cell, code: str) -> str:
    return hashlib.sha256((_params_text(cell) + "\0" + code).encode()).hexdigest()


def read_marker(cell_dir: Path) -> dict:
    try:
        doc = json.loads((cell_dir / MARKER).read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def is_finished(cell: Cell, cell_dir: Path, code: str) -> bool:
    doc = read_marker(cell_dir)
    return doc.get("status") == "done" and doc.get("fingerprint") == fingerprint(cell, code)


def settings_key(cell: Cell) -> str:
    """The cell's params without ``arms``: cells with equal keys give the same results for shared arms."""
    return json.dumps({"dataset": cell.dataset, **{k: v for k, v in cell.params.items() if k != "arms"}},
                      sort_keys=True, default=str)


# --------------------------------------------------------------------------- running one cell


def _env(cwd: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(cwd)  # the cell's own copy of pipeline/ and stages/
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop(ERROR_DIR, None)  # errors of the cell's stages go to its log, not to a launcher's folder
    return env


def dvc_command() -> str:
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else "dvc"


def repro(cell_dir: Path, dvc: str, echo: Echo) -> tuple[int, dict[str, list[str]], dict[str, float]]:
    """Run ``dvc repro`` in the cell; append its output to ``study.log``.

    Returns the exit code, the stages by kind (`STAGE_LINES`: ran, run_cache, unchanged) and the
    seconds each ran or restored stage took (until the next stage line or the end).
    """
    stages: dict[str, list[str]] = {k: [] for k in STAGE_LINES}
    seconds: dict[str, float] = {}
    current: tuple[str, float] | None = None
    with open(cell_dir / LOG, "a", encoding="utf-8") as log:
        log.write(f"\n=== dvc repro, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log.flush()
        proc = subprocess.Popen([dvc, "repro"], cwd=cell_dir, env=_env(cell_dir), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, bufsize=1)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                for kind, pattern in STAGE_LINES.items():
                    match = pattern.match(line.strip())
                    if match:
                        if current is not None:
                            seconds[current[0]] = round(time.monotonic() - current[1], 1)
                        current = (match[1], time.monotonic()) if kind != "unchanged" else None
                        stages[kind].append(match[1])
                        if kind != "unchanged":
                            echo(f"      {match[1]}: {'running' if kind == 'ran' else 'from DVC run-cache'}")
            code = proc.wait()
            if current is not None:
                seconds[current[0]] = round(time.monotonic() - current[1], 1)
            return code, stages, seconds
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------- the study


@contextlib.contextmanager
def _locked(layout: StudyLayout) -> Iterator[None]:
    layout.cells_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.cells_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyError(f"another `obcp study run` holds {layout.cells_dir / '.lock'}; wait for it to finish "
                             "(or stop it) and run again.") from None
        yield


class Study:
    """The cells of a spec as they stand now: which are planned, finished, reused; the run table."""

    def __init__(self, spec: Spec, layout: StudyLayout, code: str):
        self.spec, self.layout, self.code = spec, layout, code
        # The run table as the last run left it: the record of cells whose folders are not on this machine.
        self.recorded = table.read_table(layout.runs) if layout.runs.is_file() else table.from_rows([])
        self.cells: list[Cell] = []
        self.waiting: dict[str, str] = {}  # block → why its cells are not planned yet
        self.source: dict[str, Cell] = {}  # cell id → the finished-or-earlier cell whose results it reuses
        self.outcomes: dict[str, Outcome] = {}

    def plan_block(self, block: str) -> list[Cell]:
        """Plan a block's cells (a ``base: rule`` block only once the rule has picked)."""
        picked = None
        if self.spec.blocks[block].base == "rule":
            result = self.pick()
            if result.variant is None:
                self.waiting[block] = f"waits for the rule ({result.reason})"
                return []
            picked = result.variant
        cells = block_cells(self.spec, block, self.layout.root, picked)
        keys = {settings_key(c): c for c in self.cells}
        for cell in cells:
            earlier = keys.get(settings_key(cell))
            if earlier is not None and set(cell.arms) <= set(earlier.arms):
                self.source[cell.id] = self.source.get(earlier.id, earlier)
        self.cells += cells
        self.waiting.pop(block, None)
        return cells

    def finished(self, cell: Cell) -> bool:
        src = self.source.get(cell.id, cell)
        return is_finished(src, self.layout.cell_dir(src), self.code) or self.recorded_rows(src) is not None

    def recorded_rows(self, cell: Cell) -> pd.DataFrame | None:
        """The cell's rows in the run table as last written, when its folder is gone (None otherwise).

        A cell whose folder was deleted, or that ran on another machine, counts as finished when
        the run table holds every arm × seed of it: the table is the record. Delete its rows to
        run it again. A cell folder that exists always decides for itself.
        """
        if (self.layout.cell_dir(cell) / MARKER).is_file() or self.recorded.empty:
            return None
        r = self.recorded
        rows = r[(r["dataset"] == cell.dataset) & (r["block"] == cell.block) & (r["variant"] == cell.variant)
                 & (r["query_times"] == int(cell.params.get("query_times", 0)))]
        have = set(zip(rows["arm"], rows["seed"]))
        want = {(a, int(s)) for a in cell.arms for s in cell.params["seeds"]}
        return rows[rows["arm"].isin(cell.arms)] if want <= have else None

    def runs(self) -> pd.DataFrame:
        """The run table of every finished cell planned so far."""
        rows = []
        for cell in self.cells:
            if not self.finished(cell):
                continue
            src = self.source.get(cell.id, cell)
            kept = self.recorded_rows(src)
            if kept is None:
                rows += table.cell_rows(cell, self.layout.cell_dir(src))
            else:
                rows += kept.assign(block=cell.block, variant=cell.variant).to_dict("records")
        return table.from_rows(rows)

    def pick(self):
        s = self.spec
        return pick(self.runs(), block=s.rule.block, arm=s.rule.arm, variants=list(s.blocks[s.rule.block].variants),
                    datasets=s.rule_datasets, seeds=s.seeds)

    def cells_table(self) -> pd.DataFrame:
        rows = []
        for cell in self.cells:
            src = self.source.get(cell.id, cell)
            marker = read_marker(self.layout.cell_dir(src))
            attempts = marker.get("attempts", []) if src is cell else []
            outcome = self.outcomes.get(cell.id)
            if self.finished(cell):
                status = "done" if src is cell else f"same as {src.id}"
                if self.recorded_rows(src) is not None:
                    status += " (recorded in the run table; folder not on this machine)"
            elif outcome is not None:
                status = outcome.status
            elif src is not cell:
                status = f"waits for {src.id}"
            elif marker.get("status") == "done":
                status = "changed since it finished (params or code): runs again"
            else:
                status = marker.get("status", "pending")
            rows.append({
                "cell": cell.id, "dataset": cell.dataset, "block": cell.block, "variant": cell.variant,
                "status": status, "attempts": len(attempts), "wall_s": round(sum(a["wall_s"] for a in attempts), 1),
                "stages_ran": sum(len(a["stages"].get("ran", [])) for a in attempts),
                "from_run_cache": sum(len(a["stages"].get("run_cache", [])) for a in attempts),
                "run_cache_stages": " ".join(s for a in attempts for s in a["stages"].get("run_cache", [])),
                "overrides": json.dumps(cell.overrides, sort_keys=True),
            })
        for block, why in self.waiting.items():
            for dataset in self.spec.datasets:
                for variant in self.spec.blocks[block].variants:
                    rows.append({"cell": f"{dataset}/{block}/{variant}", "dataset": dataset, "block": block,
                                 "variant": variant, "status": why, "attempts": 0, "wall_s": 0.0, "stages_ran": 0,
                                 "from_run_cache": 0, "run_cache_stages": "",
                                 "overrides": json.dumps(self.spec.blocks[block].variants[variant], sort_keys=True)})
        return pd.DataFrame(rows, columns=["cell", "dataset", "block", "variant", "status", "attempts", "wall_s",
                                           "stages_ran", "from_run_cache", "run_cache_stages", "overrides"])

    def write_tables(self) -> None:
        table.write_table(self.layout.runs, self.runs())
        write_csv(self.layout.cells, self.cells_table())


def total_cells(spec: Spec) -> int:
    return sum(len(b.variants) * len(spec.datasets) for b in spec.blocks.values())


def run_study(spec: Spec, root: Path, *, only: Sequence[str] = (), echo: Echo = print) -> Study:
    """Run every cell of `spec` not yet finished (those matching an `only` glob, when given)."""
    layout = StudyLayout(Path(root).resolve(), spec.name)
    dvc = dvc_command()
    with _locked(layout):
        study = Study(spec, layout, code_hash(layout.root))
        cache = shared_cache(layout, dvc)
        total, index, started = total_cells(spec), 0, time.monotonic()
        echo(f"study {spec.title!r}: {total} cells ({len(spec.datasets)} datasets, {len(spec.seeds)} seeds each); "
             f"cells in {layout.cells_dir}, DVC cache {cache}")
        walls: list[float] = []
        current = "(planning)"
        try:
            for block in spec.blocks:
                cells = study.plan_block(block)
                if block in study.waiting:
                    index += len(spec.blocks[block].variants) * len(spec.datasets)
                    echo(f"block {block}: {study.waiting[block]}")
                    continue
                for cell in cells:
                    index, current = index + 1, cell.id
                    head = f"[{index}/{total}] {cell.id}"
                    if only and not any(fnmatch.fnmatchcase(cell.id, g) for g in only):
                        study.outcomes[cell.id] = Outcome(cell, "not selected")
                        continue
                    if cell.id in study.source:
                        src = study.source[cell.id]
                        status = "reused" if study.finished(cell) else "waiting"
                        study.outcomes[cell.id] = Outcome(cell, status, note=f"same settings as {src.id}")
                        echo(f"{head}: same settings as {src.id}, "
                             f"{'its results reused' if status == 'reused' else 'which has not finished'}")
                        continue
                    if study.recorded_rows(cell) is not None:
                        study.outcomes[cell.id] = Outcome(cell, "skipped")
                        echo(f"{head}: finished earlier (recorded in {layout.runs}), skipped")
                        continue
                    cell_dir = prepare(cell, layout, cache, dvc)
                    if is_finished(cell, cell_dir, study.code):
                        study.outcomes[cell.id] = Outcome(cell, "skipped")
                        echo(f"{head}: finished earlier, skipped")
                        continue
                    todo = _todo(study, cells[cells.index(cell):], block)
                    eta = "—" if not walls else _clock(sum(walls) / len(walls) * todo)
                    echo(f"{head}: dvc repro (elapsed {_clock(time.monotonic() - started)}, est. remaining {eta} "
                         f"for {todo} cell(s) to run)")
                    outcome = _run_cell(cell, cell_dir, study, dvc, echo)
                    walls.append(outcome.wall_s)
                    study.write_tables()
                    if outcome.status == "done":
                        n_cached = len(outcome.stages["run_cache"])
                        echo(f"{head}: done in {_clock(outcome.wall_s)} ({len(outcome.stages['ran'])} stages ran, "
                             f"{n_cached} from DVC run-cache)")
                    else:
                        why = f"exit {outcome.exit_code}" if outcome.exit_code else outcome.note
                        echo(f"{head}: FAILED ({why}) after {_clock(outcome.wall_s)}; the other cells continue. "
                             f"Last lines of {cell_dir / LOG}:")
                        echo("\n".join("      " + line for line in _tail(cell_dir / LOG).splitlines()))
        except KeyboardInterrupt:
            study.write_tables()
            raise StudyInterrupted(current) from None
        study.write_tables()
        failed = [o.cell.id for o in study.outcomes.values() if o.status == "failed"]
        counts = pd.Series([o.status for o in study.outcomes.values()], dtype=str).value_counts().to_dict()
        echo(f"study: {', '.join(f'{n} {s}' for s, n in counts.items()) or 'nothing to do'} in "
             f"{_clock(time.monotonic() - started)}; run table {layout.runs}")
        if failed:
            raise CellsFailedError(failed, layout)
        return study


def _todo(study: Study, rest: Sequence[Cell], block: str) -> int:
    """Cells still to run from `rest` (this block, not finished, not reused) and every cell of later blocks."""
    here = sum(1 for c in rest if c.id not in study.source and not study.finished(c))
    later = list(study.spec.blocks)[list(study.spec.blocks).index(block) + 1:]
    return here + sum(len(study.spec.blocks[b].variants) * len(study.spec.datasets) for b in later)


class StudyInterrupted(ObcpError):
    """The study was interrupted (Ctrl-C); finished cells are kept, the interrupted one continues next time."""

    exit_code = 130

    def __init__(self, cell: str):
        super().__init__(f"interrupted during cell {cell}. Finished cells are kept and the run table is up to date; "
                         "rerun `obcp study run` to continue (the interrupted cell resumes where it stopped).")


class CellsFailedError(ObcpError):
    """One or more cells failed; the others ran. Each failed cell's study.log says why."""

    def __init__(self, cells: list[str], layout: StudyLayout):
        self.cells = cells
        super().__init__(f"{len(cells)} cell(s) failed: {', '.join(cells)}. Read each cell's "
                         f"{layout.cells_dir}/<cell>/{LOG}, fix the cause and rerun `obcp study run` "
                         "(finished cells are skipped, failed ones continue where they stopped).")


def _run_cell(cell: Cell, cell_dir: Path, study: Study, dvc: str, echo: Echo) -> Outcome:
    marker = read_marker(cell_dir)
    attempts = marker.get("attempts", []) if marker.get("fingerprint") == fingerprint(cell, study.code) else []
    t0 = time.monotonic()
    outcome = Outcome(cell, "interrupted")
    try:
        code, stages, seconds = repro(cell_dir, dvc, echo)
        outcome = Outcome(cell, "done" if code == 0 else "failed", exit_code=code, stages=stages, seconds=seconds)
    finally:
        outcome.wall_s = time.monotonic() - t0
        attempts.append({"wall_s": round(outcome.wall_s, 1), "exit": outcome.exit_code, "stages": outcome.stages,
                         "seconds": outcome.seconds, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_json(cell_dir / MARKER, {"cell": cell.id, "status": outcome.status,
                                       "fingerprint": fingerprint(cell, study.code), "attempts": attempts})
        study.outcomes[cell.id] = outcome
        if outcome.status == "done":  # a metrics file that cannot be read makes the cell failed, not the study
            try:
                table.cell_rows(cell, cell_dir)
            except ObcpError as exc:
                outcome.status, outcome.note = "failed", str(exc)
                write_json(cell_dir / MARKER, {"cell": cell.id, "status": "failed",
                                               "fingerprint": fingerprint(cell, study.code), "attempts": attempts})
                echo(f"      {exc}")
    return outcome
