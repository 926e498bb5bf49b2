"""The training log: one line per arm and cycle with an ETA (pipeline/loop/progress.py)."""
from __future__ import annotations

import re

import pytest

from pipeline.loop import progress as P


def done(arm: str, cycle: int, *, seconds: float = 12.5, skipped: bool = False, full: bool = False) -> P.CycleDone:
    return P.CycleDone(arm=arm, seed=0, cycle=cycle, cycles=2, top1=0.9583, asked=83, yes=36, full_labels=full,
                       seconds=seconds, skipped=skipped)


def test_from_manifest_reads_what_run_cycle_returns():
    computed = {"test": {"top1": 0.75}, "asked": 30, "yes": 12, "seconds": {"score": 1.0, "retrain": 5.0}}
    d = P.CycleDone.from_manifest("obcp", 0, 1, 4, computed, seconds=6.5, full_labels=False)
    assert (d.top1, d.asked, d.yes, d.seconds, d.skipped) == (0.75, 30, 12, 6.5, False)
    kept = {k: v for k, v in computed.items() if k != "seconds"}  # as read back from manifest.json
    assert P.CycleDone.from_manifest("obcp", 0, 1, 4, kept, seconds=0.01, full_labels=False).skipped
    assert P.CycleDone.from_manifest("obcp", 0, 1, 4, {}, seconds=0.0, full_labels=False).top1 is None  # rank > 0


def test_the_line_says_arm_cycle_accuracy_yes_rate_seconds_and_eta():
    line = P.format_line(done("max", 2), 3, 11, 372.0, name_width=8)
    assert line == ("arm  3/11 max       seed 0  cycle 2/2  top-1  95.8 %  yes 36/83 (43 %)          12.5 s  "
                    "ETA 6 min 12 s")
    assert "full labels 83" in P.format_line(done("fullbit", 1, full=True), 7, 11, None)
    assert P.format_line(done("obcp", 1, skipped=True), 1, 2, None).endswith("up to date  ETA ?")
    assert [P.duration(s) for s in (0.04, 59.94, 61, 3600 * 2 + 300)] == ["0.0 s", "59.9 s", "1 min 01 s", "2 h 05 min"]


def test_tracker_eta_counts_computed_cycles_in_wall_time():
    now = [100.0]
    lines: list[str] = []
    tracker = P.Tracker(0, ["obcp", "random"], 2, log=lines.append, tty=False, clock=lambda: now[0])
    with tracker:
        assert tracker.eta() is None
        tracker.cycle_done(done("obcp", 1, skipped=True))  # kept from an earlier run: no time, no estimate
        assert lines[-1].endswith("ETA ?") and lines[-1].startswith("arm 1/2 obcp ")
        now[0] = 130.0
        tracker.cycle_done(done("random", 1))  # the first computed cycle carries the start-up: no estimate
        assert tracker.eta() is None and lines[-1].endswith("ETA ?")
        now[0] = 140.0
        tracker.cycle_done(done("obcp", 2))  # then 10 s per cycle, 1 left
        assert tracker.eta() == pytest.approx(10.0) and lines[-1].endswith("ETA 10.0 s")
        tracker.cycle_done(done("random", 2))
    assert lines[-1].endswith("ETA done") and len(lines) == 4
    assert all(re.match(r"arm [12]/2 (obcp|random) +seed 0  cycle [12]/2  top-1  95\.8 %", line) for line in lines)


def test_tracker_eta_with_arms_in_parallel():
    """Two workers: both first cycles carry the start-up; the estimate starts after them, in wall
    time per finished cycle (two at once)."""
    now = [0.0]
    tracker = P.Tracker(0, ["a", "b", "c", "d"], 3, parallel=2, log=lambda _: None, tty=False, clock=lambda: now[0])
    with tracker:
        for t, arm, cycle in ((40.0, "a", 1), (40.5, "b", 1)):
            now[0] = t
            tracker.cycle_done(done(arm, cycle))
            assert tracker.eta() is None  # not 12 × 40 s, nor 0.5 s per cycle
        for t, arm, cycle in ((45.5, "a", 2), (50.5, "b", 2)):  # 10 s per cycle per worker: 5 s of wall each
            now[0] = t
            tracker.cycle_done(done(arm, cycle))
        assert tracker.eta() == pytest.approx(5.0 * 8)  # 8 cycles left


def test_routine_messages_only_when_verbose(monkeypatch):
    monkeypatch.delenv(P.VERBOSE_ENV, raising=False)
    seen: list[str] = []
    log = P.quiet(seen.append)
    for line in ("[obcp seed 0] cycle 1: asking 30 one-bit questions", "[obcp seed 0] cycle 2: up to date, skipped",
                 "[obcp seed 0] cycle 1: 3 answer(s) differ from the ones it was trained with; replaying",
                 "[obcp seed 0] cycle(s) 2 of arm obcp are discarded (…). Their human answers are kept"):
        log(line)
    assert seen == ["[obcp seed 0] cycle 1: 3 answer(s) differ from the ones it was trained with; replaying",
                    "[obcp seed 0] cycle(s) 2 of arm obcp are discarded (…). Their human answers are kept"]
    monkeypatch.setenv(P.VERBOSE_ENV, "1")
    assert P.verbose()
    log("[obcp seed 0] cycle 1: asking 30 one-bit questions")
    assert seen[-1].endswith("asking 30 one-bit questions")


def test_tracker_on_a_terminal_prints_the_lines_above_its_bar(capsys):
    tracker = P.Tracker(0, ["obcp"], 1, tty=True)
    with tracker:
        assert tracker._bar is not None  # the rich bar is live
        tracker.cycle_done(done("obcp", 1))
    assert tracker._bar is None
    assert "arm 1/1 obcp  seed 0  cycle 1/2" in capsys.readouterr().out
