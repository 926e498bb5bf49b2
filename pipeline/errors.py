"""The one base class of every error obcp raises on bad input.

Each subclass carries a one-paragraph message naming the problem and the fix; the
CLI prints it (no traceback) and exits with code 2.
"""
import contextlib
import sys
from typing import Iterator


class ObcpError(Exception):
    """Bad input: params, data, oracle answers or artifacts. Message says what and how to fix."""

    exit_code = 2


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Turn an ObcpError into its message on stderr and exit code 2 (no traceback)."""
    try:
        yield
    except ObcpError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
