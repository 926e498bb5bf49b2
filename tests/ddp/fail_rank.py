"""A rank that fails: `python -m pipeline.core.launch 2 ddp.fail_rank RANK KIND CODE` (tests/ on PYTHONPATH).

Rank RANK stops inside `errors.reported()`: KIND `obcp` raises an ObcpError whose exit code is
CODE (bad input), KIND `bug` a RuntimeError (a crash). Every other rank prints a line and exits 0.
"""
import os
import sys

from pipeline.core.errors import ObcpError, reported


class TestError(ObcpError):
    """Bad input with its own exit code."""


def main(rank: int, kind: str, code: int) -> None:
    with reported():
        if int(os.environ["RANK"]) != rank:
            print(f"rank {os.environ['RANK']} done", flush=True)
            return
        if kind == "bug":
            raise RuntimeError("a bug in rank code")
        TestError.exit_code = code
        raise TestError(f"rank {rank} found bad input. Fix it and rerun.")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
