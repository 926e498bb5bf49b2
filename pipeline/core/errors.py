"""The one base class of every error obcp raises on bad input.

Each subclass carries a one-paragraph message naming the problem and the fix; the
CLI prints it (no traceback) and exits with the error's code (2 unless a subclass says).
Under `pipeline.core.launch` with several processes the ranks hand their error to the
launcher instead, which prints one (see `reported`).
"""
import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

ERROR_DIR = "OBCP_ERROR_DIR"  # set by `pipeline.core.launch` for the ranks it starts: where they leave their error


class ObcpError(Exception):
    """Bad input: params, data, oracle answers or artifacts. Message says what and how to fix."""

    exit_code = 2


class Waiting(ObcpError):
    """Not an error: the stage waits for a person (answers to questions); exit code 3, so a
    script can tell waiting from failing."""

    exit_code = 3


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Turn an ObcpError into its message on stderr and its exit code (no traceback).

    With `OBCP_ERROR_DIR` set (ranks started by `pipeline.core.launch`), the message and code go
    to `rank<RANK>.json` there instead, and the launcher prints one of them once."""
    try:
        yield
    except ObcpError as exc:
        folder = os.environ.get(ERROR_DIR)
        if folder:
            from pipeline.core import io

            io.write_json(Path(folder) / f"rank{os.environ.get('RANK', '0')}.json",
                          {"message": str(exc), "exit_code": exc.exit_code})
        else:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
