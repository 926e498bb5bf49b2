"""`obcp repro`: DVC's own `dvc repro` (its Python API, its DAG, the same arguments) with exit
codes a script can use.

========  =====================================================================
exit      meaning
========  =====================================================================
0         every stage is done (or was up to date)
2         bad input: params.yaml (YAML syntax included), an answers file, data,
          a checkpoint, or `dvc repro` arguments; the message says what to fix
3         waiting for a person's answers (a human-oracle cycle wrote its question
          sheet); answer them, then run it again
1         anything else: DVC's own error (a lock held by another `dvc`, a broken
          dvc.yaml), a crash (a bug: its traceback is above), a killed stage
130       interrupted (Ctrl+C)
========  =====================================================================

Plain `dvc repro` exits 0 when done and 255 for every failed stage, whatever the stage's own
exit code (the stage's code appears only in DVC's "failed to run: …, exited with N").
Here each failed stage's own code is read from the exception DVC raises
(`ReproductionError`, caused by `StageCmdFailedError(cmd, status)`, whose message ends with
"exited with N"), and the codes combine as: any code other than 2 and 3 → 1, else any 2 → 2,
else 3. With `--keep-going`, every failed stage counts (a waiting arm and a failing one: 2).

Before DVC reads anything, params.yaml is validated here (the `validate` stage does it again
inside DVC): so a YAML syntax error gets obcp's message and exit 2, not DVC's parser error.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from pipeline.core.errors import ObcpError

DONE, FAILED, BAD_INPUT, WAITING, INTERRUPTED = 0, 1, 2, 3, 130
_EXITED = re.compile(r"exited with (-?\d+)\s*$")


def stage_exit_code(exc: BaseException | None) -> int | None:
    """The exit code of the stage command behind a DVC exception (walking its causes), or None
    when the failure was not a stage command's exit (DVC's own error)."""
    from dvc.stage.exceptions import StageCmdFailedError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StageCmdFailedError):
            found = _EXITED.search(str(exc))
            return int(found.group(1)) if found else None
        exc = exc.__cause__ or exc.__context__
    return None


def combine(codes: Sequence[int | None]) -> int:
    """One exit code for the failed stages' own codes (None: not a stage command's exit)."""
    if not codes:
        return DONE
    if any(c not in (BAD_INPUT, WAITING) for c in codes):
        return FAILED
    return BAD_INPUT if BAD_INPUT in codes else WAITING


def _parse(argv: Sequence[str]):
    """DVC's own parser for `dvc repro ARGS` (same options, same help)."""
    from dvc.cli import DvcParserError, parse_args

    try:
        return parse_args(["repro", *argv])
    except DvcParserError:
        return None  # argparse printed the usage and the problem


def repro(argv: Sequence[str] = (), *, echo: Callable[[str], None] = print) -> int:
    """Run `dvc repro ARGV` through DVC's Python API; return the exit code of the table above."""
    args = _parse(argv)
    if args is None:
        return BAD_INPUT
    if getattr(args, "cd", None):
        os.chdir(args.cd)
    from pipeline.tools.validate import check_project

    try:
        check_project(Path("params.yaml"))
    except ObcpError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return _reproduce(args, echo)


def _reproduce(args, echo: Callable[[str], None]) -> int:
    from dvc.log import logger
    from dvc.repo import reproduce as dvc_reproduce

    failures: list[tuple[str, int | None]] = []

    def repro_fn(stage, **kwargs):  # DVC's own per-stage step; records why a stage failed
        try:
            return dvc_reproduce._reproduce_stage(stage, **kwargs)
        except Exception as exc:
            failures.append((stage.addressing, stage_exit_code(exc)))
            raise

    import logging

    from dvc.logger import set_loggers_level
    from dvc.ui import ui

    log = logger.getChild("obcp")
    level = logging.CRITICAL if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    if not args.quiet:
        ui.enable()
    try:
        with set_loggers_level(level):
            return _run(args, failures, repro_fn, log, echo)
    except KeyboardInterrupt:
        echo("interrupted; rerun `obcp repro` to continue (finished stages and cycles are kept)")
        return INTERRUPTED


def _run(args, failures, repro_fn, log, echo) -> int:
    from dvc.exceptions import DvcException, ReproductionError

    try:
        cmd = args.func(args)  # DVC's CmdRepro: opens the repo as `dvc repro` does
        with cmd.repo:
            stages = cmd.repo.reproduce(**cmd._common_kwargs, **cmd._repro_kwargs, repro_fn=repro_fn)
    except ReproductionError as exc:
        log.error(_causes(exc))
        if not failures:  # the per-stage hook was bypassed: read the code from the exception
            failures.append(("?", stage_exit_code(exc)))
        code = combine([c for _, c in failures])
        echo(_summary(code, failures))
        return code
    except DvcException as exc:
        log.error(_causes(exc))
        return FAILED
    ran = [s.addressing for s in stages if s.addressing != "validate"]
    echo(f"done: {len(ran)} stage(s) ran ({', '.join(ran)})" if ran else "done: every stage was up to date")
    return DONE


def _causes(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__
    return ": ".join(p for p in parts if p)


def _summary(code: int, failures: list[tuple[str, int | None]]) -> str:
    listed = ", ".join(f"{name} (exit {c if c is not None else 'from DVC'})" for name, c in failures)
    if code == WAITING:
        return f"waiting for answers: {listed}. Answer the questions (the message above says where), then rerun."
    if code == BAD_INPUT:
        return f"stopped on bad input: {listed}. Fix what the message above names, then rerun."
    return f"failed: {listed}."
