"""What a training stage tells the person watching it: one line per arm and cycle, with an ETA.

By default the `active` stage prints, for each arm and query cycle, one line::

    arm  3/11 max       seed 0  cycle 2/4  top-1  95.8 %  yes 36/83 (43 %)   41.2 s  ETA 6 min 12 s

(a full-label arm says ``full labels 25`` instead of the yes-rate; a cycle whose results
were kept says ``up to date`` instead of its seconds). On a terminal a rich progress bar
counts the cycles below those lines; in a pipe (under DVC) the lines come alone. The
per-epoch loss lines, the per-step bar and the cycles' routine messages (``cycle 2: asking
83 one-bit questions``) appear only when verbose: ``OBCP_VERBOSE=1`` in the environment
(``OBCP_VERBOSE=1 dvc repro``) or ``--verbose`` on a stage script. Messages that need a
person (answers replayed, cycles with human answers discarded) are always shown.
"""
from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

VERBOSE_ENV = "OBCP_VERBOSE"
Log = Callable[[str], None]

# active.py's per-cycle messages that the one summary line of the cycle replaces
ROUTINE = re.compile(r"^(\[[^\]]*\] )?cycle \d+: (asking |up to date, skipped)")


def verbose() -> bool:
    """Whether per-epoch lines and routine messages are wanted (``OBCP_VERBOSE`` set to 1/true/yes/on)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def set_verbose(on: bool) -> None:
    """Turn verbosity on for this process and every process it starts (workers, torchrun ranks)."""
    if on:
        os.environ[VERBOSE_ENV] = "1"


def quiet(log: Log) -> Log:
    """`log` without the routine per-cycle messages, unless verbose."""
    def filtered(line: str) -> None:
        if verbose() or not ROUTINE.match(line):
            log(line)

    return filtered


@dataclass(frozen=True)
class CycleDone:
    """One finished query cycle of one arm (what its summary line says)."""

    arm: str
    seed: int
    cycle: int
    cycles: int
    top1: float | None  # test top-1 after the cycle's retrain, a fraction
    asked: int  # one-bit questions asked (or full labels taken) in the cycle
    yes: int
    full_labels: bool
    seconds: float  # wall time of the cycle in this run
    skipped: bool  # up to date: kept from an earlier run

    @classmethod
    def from_manifest(cls, arm: str, seed: int, cycle: int, cycles: int, manifest: dict[str, Any], *,
                      seconds: float, full_labels: bool) -> CycleDone:
        """From the manifest `run_cycle` returns (a redone cycle's carries ``seconds``; a kept one's does not)."""
        test = manifest.get("test") or {}
        top1 = test.get("top1") if isinstance(test, dict) else None
        return cls(arm=arm, seed=seed, cycle=cycle, cycles=cycles,
                   top1=float(top1) if isinstance(top1, (int, float)) else None,
                   asked=int(manifest.get("asked") or 0), yes=int(manifest.get("yes") or 0),
                   full_labels=full_labels, seconds=float(seconds), skipped="seconds" not in manifest)


def duration(seconds: float | None) -> str:
    """``41.2 s``, ``6 min 12 s``, ``2 h 05 min``; ``?`` when unknown."""
    if seconds is None or math.isnan(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_line(done: CycleDone, index: int, n_arms: int, eta: float | None, *, name_width: int = 0) -> str:
    """The summary line of one cycle: arm k/N, seed, cycle, accuracy, yes-rate, seconds, ETA."""
    k = f"{index}/{n_arms}".rjust(2 * len(str(n_arms)) + 1)
    top1 = "  —  " if done.top1 is None else f"{100 * done.top1:5.1f}"
    if done.full_labels:
        answers = f"full labels {done.asked}"
    elif done.asked:
        answers = f"yes {done.yes}/{done.asked} ({100 * done.yes / done.asked:.0f} %)"
    else:
        answers = "no questions"
    took = "up to date" if done.skipped else duration(done.seconds)
    return (f"arm {k} {done.arm.ljust(name_width)}  seed {done.seed}  cycle {done.cycle}/{done.cycles}  "
            f"top-1 {top1} %  {answers.ljust(20)}  {took.rjust(10)}  ETA {'done' if eta == 0 else duration(eta)}")


class Tracker:
    """Counts the finished cycles of one seed's arms and prints each one's line with an ETA.

    The ETA is the cycles left times the wall time per computed (not kept) cycle, measured
    from the end of the `parallel`-th computed cycle to the latest one's: the first cycle of
    each of the `parallel` arms that run at once carries the start-up (imports, JIT
    compilation), so it is left out, and the ETA is unknown (``?``) until then. It is wall
    time, so arms in parallel count. Use the tracker as a context manager: on a terminal
    (`tty`) it shows a rich progress bar while open.
    """

    def __init__(self, seed: int, arms: Sequence[str], cycles: int, *, parallel: int = 1, log: Log = print,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seed, self.arms, self.cycles = seed, list(arms), cycles
        self.parallel = max(1, min(parallel, len(self.arms) or 1))
        self.index = {arm: i + 1 for i, arm in enumerate(self.arms)}
        self.total = len(self.arms) * cycles
        self.done = self.computed = 0
        self.settled: float | None = None  # when the `parallel`-th computed cycle ended
        self.log, self.clock, self.start = log, clock, clock()
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.name_width = max(map(len, self.arms), default=0)
        self._bar: Any = None
        self._task: Any = None

    def eta(self) -> float | None:
        """Seconds left (0 when every cycle is done; None before the first computed cycle)."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        if self.settled is None or self.computed <= self.parallel:
            return None
        return (self.clock() - self.settled) / (self.computed - self.parallel) * left

    def cycle_done(self, done: CycleDone) -> str:
        """Count one finished cycle and print its line; returns the line."""
        self.done += 1
        if not done.skipped:
            self.computed += 1
            if self.computed == self.parallel:
                self.settled = self.clock()
        line = format_line(done, self.index.get(done.arm, 0), len(self.arms), self.eta(), name_width=self.name_width)
        self.echo(line)
        if self._bar is not None:
            self._bar.update(self._task, advance=1)
        return line

    def echo(self, line: str) -> None:
        """Print a line (above the bar when there is one)."""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.log(line)

    def __enter__(self) -> Tracker:
        self.start = self.clock()
        if self.tty and self.total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._bar = Progress(TextColumn(f"seed {self.seed} cycles"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)
            self._task = self._bar.add_task("cycles", total=self.total)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
