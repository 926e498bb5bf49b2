"""``python -m pipeline.tools.docs [--check]`` and ``python -m pipeline.tools.docs setup-report …``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.tools import docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.docs", description=docs.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: .)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 listing stale pages and unsourced numbers")
    sub = parser.add_subparsers(dest="command")
    rep = sub.add_parser("setup-report", help="write reports/setup.json (set-up, repro and test times; .venv size)")
    rep.add_argument("--setup-seconds", type=float, help="default: .venv/.setup-seconds, written by .ci/setup")
    rep.add_argument("--repro-seconds", type=float, help="`dvc repro` of `make repro` on the same machine")
    rep.add_argument("--test-seconds", type=float, help="`make test` on the same machine")
    rep.add_argument("--machine", help="default: this machine's CPU model and core count")
    rep.add_argument("--source", help="how the times were taken, in a few words")
    args = parser.parse_args(argv)
    root = args.root.resolve()

    if args.command == "setup-report":
        from pipeline.tools.docs import setup_report

        doc = setup_report.write(root, setup_seconds=args.setup_seconds, repro_seconds=args.repro_seconds,
                                 test_seconds=args.test_seconds, machine=args.machine, source=args.source)
        print(f"reports/setup.json: {doc}")
        return 0
    if args.check:
        bad = docs.stale(root)
        problems = docs.number_problems(root)
        for path in bad:
            print(f"stale: {path.relative_to(root)} (run `python -m pipeline.tools.docs`)")
        for problem in problems:
            print(problem)
        return 1 if bad or problems else 0
    for path in docs.regenerate(root):
        print(f"wrote {path.relative_to(root)}")
    problems = docs.number_problems(root)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
