"""`python -m pipeline.core.launch NPROC MODULE [ARGS…]`: start a training stage.

NPROC = 1: ``python -m MODULE ARGS…`` directly — the same single process that torchrun
would start, without torchrun's own ~2 s of start-up. The process is replaced (exec), so
exit codes and signals pass straight through.

NPROC > 1: torchrun (``--standalone --nproc_per_node NPROC -m MODULE ARGS…``) in this
process, DDP on one machine. A rank that stops on bad input (an `ObcpError`) leaves its
message and exit code in a folder (`errors.reported`); the user then sees one
``error: …`` paragraph, the lowest failing rank's (rank 0's is the one a single process
prints), and this process exits with that error's code — not torchrun's log lines, its
ChildFailedError box and a message per rank. A crash without such a message (a bug, a
killed rank) shows everything torchrun reports. Ranks' own output is not touched.
Multi-node runs call torchrun themselves (README, "Clusters").
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.core.errors import ERROR_DIR


def command(nproc: int, module: str, args: list[str]) -> list[str]:
    """The argv that runs `module` with `nproc` local processes (what `main` runs)."""
    if nproc == 1:
        return [sys.executable, "-m", module, *args]
    # torchrun's own module, with this interpreter: no dependence on PATH
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]


def first_error(folder: Path) -> dict | None:
    """{"message", "exit_code"} left by the lowest rank that stopped on bad input, or None."""
    files = sorted(folder.glob("rank*.json"), key=lambda f: int(f.stem[4:]))
    return json.loads(files[0].read_text()) if files else None


class _Held(logging.Handler):
    """Keeps torchrun's own log records (agent warnings, failures) until we know whether to show them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def replay(self) -> None:
        for record in self.records:
            print(self.format(record), file=sys.stderr)
        self.records.clear()
        sys.stderr.flush()


@contextlib.contextmanager
def _holding(held: _Held) -> Iterator[None]:
    """Route every `torch.distributed*` logger with handlers (torch installs its own) to `held`."""
    loggers = [logging.getLogger("torch.distributed")] + [
        lg for name, lg in logging.Logger.manager.loggerDict.items()
        if name.startswith("torch.distributed.") and isinstance(lg, logging.Logger) and lg.handlers]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    for lg, handlers, _ in saved:
        if handlers and held.formatter is None:
            held.setFormatter(handlers[0].formatter)  # torch's own line format
        lg.handlers, lg.propagate = [held], False
    try:
        yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate


def run_ranks(nproc: int, module: str, args: list[str]) -> int:
    """Run `module` on `nproc` local ranks under torchrun; return the exit code to use."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    held = _Held()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets, without its banner about it
    with _holding(held), tempfile.TemporaryDirectory(prefix="obcp-errors-") as folder:
        os.environ[ERROR_DIR] = folder  # the ranks inherit it
        try:
            torchrun.run(torchrun.parse_args(command(nproc, module, args)[3:]))
        except ChildFailedError as failed:
            error = first_error(Path(folder))
            if error is not None:
                print(f"error: {error['message']}", file=sys.stderr, flush=True)
                return int(error["exit_code"])
            held.replay()
            print(failed.format_msg(), file=sys.stderr, flush=True)
            code = failed.get_first_failure()[1].exitcode
            return code if code > 0 else 128 - code if code < 0 else 1  # a signal: 128 + its number
        finally:
            del os.environ[ERROR_DIR]
    held.replay()
    return 0


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: python -m pipeline.core.launch NPROC MODULE [ARGS...]  (NPROC >= 1)", file=sys.stderr)
        raise SystemExit(2)
    nproc, module, args = int(argv[0]), argv[1], argv[2:]
    if nproc == 1:
        cmd = command(nproc, module, args)
        os.execvp(cmd[0], cmd)
    raise SystemExit(run_ranks(nproc, module, args))


if __name__ == "__main__":
    main(sys.argv[1:])
