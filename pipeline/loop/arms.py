"""Every arm of one seed in one stage: `active@seed`.

On one CPU process (no `torchrun` ranks, no GPU), arms are independent jobs: they run in
forked worker processes, `train.cpu_threads` torch threads each, as many at once as the
CPUs allow. The parent has already imported torch and FFCV, so a worker starts in
milliseconds instead of the ~8 s a fresh Python process needs. Under DDP or on a GPU the
arms run one after another, each using every rank. Either way each arm's results are the
same: an arm's randomness depends on (seed, arm), never on which worker runs it.

The parent (rank 0) is the only process that prints: one line per arm and cycle with an
ETA (`pipeline.loop.progress`); workers send it their lines through a queue.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

import torch

from pipeline.core import distributed as dist
from pipeline.loop import progress
from pipeline.loop.cycle import Cycle, discard_from, keep_answers, run_cycle
from pipeline.core.context import RunContext
from pipeline.core.errors import ObcpError
from pipeline.oracle.sheets import AnswersMissing

Log = Callable[[str], None]


class ArmsFailedError(ObcpError):
    """One or more arms stopped with an error; the others finished and are kept."""


def _can_fork(ctx: RunContext) -> bool:
    """Arms may run in forked workers: one CPU process (forked workers cannot share a
    process group or a CUDA context)."""
    return not ctx.distributed and ctx.device.type == "cpu"


def default_workers(ctx: RunContext, n_arms: int) -> int:
    """How many arms to train at once: CPUs ÷ threads per arm on one CPU process, else 1.

    ``OBCP_ARM_WORKERS`` overrides it (it never changes results, only wall time)."""
    if not _can_fork(ctx):
        return 1
    env = os.environ.get("OBCP_ARM_WORKERS")
    if env:
        try:
            return max(1, min(n_arms, int(env)))
        except ValueError:
            raise ObcpError(f"OBCP_ARM_WORKERS must be a whole number, got {env!r}.") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(n_arms, cpus // ctx.params.train.cpu_threads))


def prune_arms(ctx: RunContext) -> list[str]:
    """Delete the cycles and ledger of arms that params.yaml no longer has (rank 0); their
    human answers go into the answer store first."""
    layout, removed = ctx.layout, []
    arms_dir = layout.arms_dir(ctx.seed)
    if arms_dir.is_dir():
        for d in sorted(p for p in arms_dir.iterdir() if p.is_dir() and p.name not in ctx.params.arms):
            for cycle in sorted(d.glob("cycle_*")):
                keep_answers(ctx, cycle, f"arm {d.name} is no longer in params.yaml")
            shutil.rmtree(d)
            removed.append(d.name)
    ledger_dir = layout.ledger_dir(ctx.seed)
    if ledger_dir.is_dir():
        for f in sorted(ledger_dir.glob("*.parquet")):
            if f.stem not in ctx.params.arms:
                f.unlink()
                removed.append(f.stem)
    return sorted(set(removed))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BrokenProcessPool):
        return "its worker process died (killed, or out of memory); rerun, or set OBCP_ARM_WORKERS=1"
    return str(exc)


def _tagged(arm: str, seed: int, log: Log) -> Log:
    return lambda line: log(f"[{arm} seed {seed}] {line}")


def _run_arm(ctx: RunContext, arm: str, *, log: Log, on_cycle: Callable[[progress.CycleDone], None] | None) -> int:
    """Every cycle of one arm and seed, then drop cycles beyond `query_times`; after each
    cycle rank 0 calls `on_cycle` with its summary. Returns the number of cycles.

    The loop of `pipeline.loop.cycle.run_active`, with the report after each cycle: keep the
    two in step (or give run_active an ``on_cycle`` hook and call it here)."""
    ctx.params.arm(arm)  # clear error for an unknown arm
    cycles = ctx.params.query_times
    for k in range(1, cycles + 1):
        c, t0 = Cycle(ctx, arm, k), time.perf_counter()
        manifest = run_cycle(c, log=log, progress=progress.verbose())
        if on_cycle is not None and dist.is_main():
            on_cycle(progress.CycleDone.from_manifest(arm, ctx.seed, k, cycles, manifest,
                                                      seconds=time.perf_counter() - t0,
                                                      full_labels=c.method.question == "full"))
    dist.on_main(lambda: discard_from(ctx, arm, cycles + 1, why=f"beyond query_times = {cycles}", log=log))
    return cycles


_EVENTS: Any = None  # in a forked worker: the queue to the parent (`_worker_init`)


def _worker_init(events: Any) -> None:
    global _EVENTS
    _EVENTS = events


def _run_one(ctx: RunContext, arm: str) -> int:
    """Worker body: one arm's every cycle; its lines and cycle summaries go to the parent."""
    torch.set_num_threads(ctx.params.train.cpu_threads)  # the fork resets torch's thread pool
    log = progress.quiet(_tagged(arm, ctx.seed, lambda line: _EVENTS.put(("log", line))))
    return _run_arm(ctx, arm, log=log, on_cycle=lambda done: _EVENTS.put(("cycle", done)))


def _drain(events: Any, tracker: progress.Tracker) -> None:
    """Print what the workers sent so far."""
    while not events.empty():
        kind, item = events.get()
        if kind == "cycle":
            tracker.cycle_done(item)
        else:
            tracker.echo(item)


def _waiting(seed: int, arms: Sequence[str], waiting: dict[str, BaseException]) -> str:
    lines = "\n".join(f"  {arm}: {exc}" for arm, exc in waiting.items())
    return f"{len(waiting)} of {len(arms)} arm(s) of seed {seed} are waiting for answers:\n{lines}"


def run_arms(ctx: RunContext, arms: Sequence[str], *, workers: int, log: Log = print) -> None:
    """Run every cycle of each arm in `arms` for ctx.seed; at the end raise ArmsFailedError
    (exit 2) naming each arm that failed, else AnswersMissing (exit 3) naming each arm that
    waits for a person's answers (the other arms still finish; waiting is not failing).

    Rank 0 prints one line per arm and cycle through `log` (`pipeline.loop.progress`)."""
    for arm in arms:
        ctx.params.arm(arm)  # unknown arm: clear error before any work
    if not _can_fork(ctx):
        workers = 1
    main = dist.is_main()
    parallel = 1 if workers <= 1 or len(arms) <= 1 else workers
    tracker = progress.Tracker(ctx.seed, arms, ctx.params.query_times, parallel=parallel, log=log,
                               tty=None if main else False)
    if parallel == 1:
        waiting: dict[str, BaseException] = {}
        with tracker if main else contextlib.nullcontext():
            for arm in arms:
                arm_log = progress.quiet(_tagged(arm, ctx.seed, tracker.echo)) if main else (lambda _: None)
                try:
                    _run_arm(ctx, arm, log=arm_log, on_cycle=tracker.cycle_done if main else None)
                except AnswersMissing as exc:
                    if len(arms) == 1:
                        raise
                    waiting[arm] = exc
        if waiting:
            raise AnswersMissing(_waiting(ctx.seed, arms, waiting)
                                 + "\nThe other arms are done; answer, then rerun `obcp repro` (or `dvc repro`).")
        return
    log(f"seed {ctx.seed}: {len(arms)} arms, {workers} at a time ({ctx.params.train.cpu_threads} thread(s) each), "
        f"{ctx.params.query_times} cycles each")
    failed: dict[str, BaseException] = {}
    sys.stdout.flush()
    fork = multiprocessing.get_context("fork")
    events = fork.SimpleQueue()
    with ProcessPoolExecutor(max_workers=workers, mp_context=fork, initializer=_worker_init,
                             initargs=(events,)) as pool:
        futures = {pool.submit(_run_one, ctx, arm): arm for arm in arms}  # forks every worker now
        with tracker:  # the bar's thread starts after the fork
            try:
                pending = set(futures)
                while pending:
                    _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    _drain(events, tracker)
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)  # the workers have sent everything
            _drain(events, tracker)
        for future, arm in futures.items():
            exc = future.exception()
            if exc is not None:
                failed[arm] = exc
    waiting = {a: e for a, e in failed.items() if isinstance(e, AnswersMissing)}
    failed = {a: e for a, e in failed.items() if a not in waiting}
    bugs = {a: e for a, e in failed.items() if not isinstance(e, (ObcpError, BrokenProcessPool))}
    if bugs:  # a programming error: name every failed arm, then show the first bug's traceback
        for arm, exc in failed.items():
            print(f"arm {arm} failed: {type(exc).__name__}: {_describe(exc)}", file=sys.stderr, flush=True)
        raise next(iter(bugs.values()))
    if failed:
        lines = "\n".join(f"  {arm}: {_describe(exc)}" for arm, exc in failed.items())
        ok = [a for a in arms if a not in failed and a not in waiting]
        raise ArmsFailedError(
            f"{len(failed)} of {len(arms)} arm(s) of seed {ctx.seed} failed:\n{lines}\n"
            + (_waiting(ctx.seed, arms, waiting) + "\n" if waiting else "")
            + f"Finished arms ({', '.join(ok) or 'none'}) are kept; fix the cause and rerun — done cycles are "
            "skipped."
        )
    if waiting:
        ok = [a for a in arms if a not in waiting]
        raise AnswersMissing(_waiting(ctx.seed, arms, waiting) + f"\nFinished arms ({', '.join(ok) or 'none'}) "
                             "are kept; answer, then rerun `obcp repro` (or `dvc repro`).")
