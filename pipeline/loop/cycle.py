"""Stage 2's bookkeeping: `query_times` query cycles per arm, each skipped, resumed, replayed or redone.

A cycle (`Cycle`: arm, seed, k) runs the steps of `pipeline.loop.steps`. It writes
`inputs.json` (its key: the hash of its inputs and of the params that shape it) when it
starts and `manifest.json` when it is done. A rerun skips a cycle whose manifest matches,
continues a started cycle whose inputs match (reusing its `scores.parquet`: a rerun while
waiting for a person does not score the pool again), and discards a mismatching cycle
together with every later one.

Human answers live in the answer store (`pipeline.oracle.answers`), not in the cycles:
before a cycle folder is discarded the oracle keeps what a person wrote there, and a rebuilt
cycle takes every answer it can from the store, so a person is only asked questions never
answered. A finished cycle whose answers changed in the store since it was trained (an
edited `answers.csv`, a correction on the page or from Label Studio) is replayed: it keeps
its scores and questions, takes the corrected answers, and retrains; later cycles are redone.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from pipeline.core import distributed as dist
from pipeline.core import io
from pipeline.core.config import ArmParams, as_dict
from pipeline.core.context import RunContext
from pipeline.core.registry import ORACLES, STRATEGIES
from pipeline.loop.runs import fresh_state, stage1_meta
from pipeline.loop.steps import oracle_step, retrain_step, score_step, update_step
from pipeline.loop.train import echo, load_checkpoint
from pipeline.method.history import load_query_history
from pipeline.method.schedule import QueryWindow, epoch_shares, query_epochs, query_windows
from pipeline.method.methods import Method, method_of
from pipeline.oracle import answers, sheets
from pipeline.oracle.oracles import Asking, Oracle
from pipeline.pool import ledger, pools
from pipeline.selection.base import Strategy


@dataclass(frozen=True)
class Cycle:
    """Cycle k (1-based) of one arm and seed, with the paths, numbers and objects it uses."""

    ctx: RunContext
    arm_name: str
    k: int

    @property
    def arm(self) -> ArmParams:
        return self.ctx.params.arm(self.arm_name)

    @property
    def method(self) -> Method:
        return method_of(self.arm)

    @property
    def strategy(self) -> Strategy:
        return STRATEGIES.get(self.method.strategy(self.arm)).configured(self.ctx.params)

    @property
    def oracle(self) -> Oracle:
        return ORACLES.get(self.ctx.params.oracle.kind)

    @property
    def asking(self) -> Asking:
        return Asking(self.ctx, self.dir, self.arm_name)

    @property
    def dir(self) -> Path:
        return self.ctx.layout.cycle_dir(self.ctx.seed, self.arm_name, self.k)

    @property
    def prev_dir(self) -> Path:
        """Where the previous model and history live: stage 1, or cycle k−1."""
        if self.k == 1:
            return self.ctx.layout.stage1_dir(self.ctx.seed)
        return self.ctx.layout.cycle_dir(self.ctx.seed, self.arm_name, self.k - 1)

    @property
    def timings(self) -> Path:
        """The cycle's wall-clock times (seconds per step, per epoch): outside DVC's outputs."""
        return self.ctx.layout.timings_dir(self.ctx.seed) / self.arm_name / f"cycle_{self.k:03d}.json"

    @property
    def prev_pool(self) -> Path:
        if self.k == 1:
            return self.ctx.layout.initial_pool(self.ctx.seed)
        return self.prev_dir / "pool.parquet"

    @property
    def is_last(self) -> bool:
        return self.k == self.ctx.params.query_times

    @property
    def query_epoch(self) -> int:
        t = self.ctx.params.train
        return query_epochs(t.stage1_epochs, t.stage2_epochs, self.ctx.params.query_times)[self.k - 1]

    @property
    def retrain_until(self) -> int:
        t = self.ctx.params.train
        return self.query_epoch + epoch_shares(t.stage2_epochs, self.ctx.params.query_times)[self.k - 1]

    @property
    def window(self) -> QueryWindow:
        """This cycle's query's Eq. 7 windows (`selection.window`)."""
        return self.windows[self.k - 1]

    @property
    def windows(self) -> list[QueryWindow]:
        """Every query's Eq. 7 windows (`selection.window`)."""
        p = self.ctx.params
        return query_windows(p.train.stage1_epochs, p.train.stage2_epochs, p.query_times, m=p.selection.m,
                             t=p.selection.t, rule=p.selection.window)

    def budgets(self) -> list[int]:
        """Questions per cycle: the method's share of the one-bit budget's bits."""
        return self.method.budgets(self.ctx.one_bit_budget, self.ctx.num_classes, self.ctx.params.query_times)

    @property
    def budget(self) -> int:
        return self.budgets()[self.k - 1]

    def expect_meta(self) -> dict:
        return stage1_meta(self.ctx)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cycle_key(c: Cycle) -> dict:
    """What a cycle's result depends on: its input files and the params that shape it."""
    p = c.ctx.params
    files = [c.prev_pool, c.prev_dir / "checkpoint.pt", c.prev_dir / "history.npz"]
    return {
        "cycle": c.k,
        "inputs": {str(f): _sha256(f) for f in files if f.exists()},
        "params": as_dict(
            {
                "arm": c.arm,
                "budget": p.budget,
                "query_times": p.query_times,
                "selection": p.selection,
                "oracle": p.oracle,
                "train": p.train,
                "loss": p.loss,
                "contrastive": p.contrastive,
                "model": p.model,
                "dataset": p.dataset,
                "seed": c.ctx.seed,
                "nproc": dist.world_size(),
                **c.method.own_params(p),  # e.g. `onebit`: shapes only that method's arms
                **({"audit": p.audit} if p.audit.size else {}),
                # e.g. `baselines.mc_samples`: shapes only that strategy's arms (absent for the others)
                **({"strategy_params": c.strategy.own_params(p)} if c.strategy.own_params(p) else {}),
            }
        ),
    }


# --------------------------------------------------------------------------- bookkeeping (rank 0)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cycle_no(d: Path) -> int:
    return int(d.name.split("_")[1])


def discard_from(ctx: RunContext, arm_name: str, k: int, *, why: str = "",
                 log: Callable[[str], None] | None = None) -> None:
    """Delete cycle k and every later cycle folder, and their ledger rows (rank 0).

    A person's answers are kept: the oracle keeps each doomed cycle's `answers.csv` first
    (an invalid one stops everything here, before anything is deleted). With `log`,
    cycles that held human answers are named, with `why`, and where the answers are.
    """
    arm_dir = ctx.layout.arm_dir(ctx.seed, arm_name)
    doomed = [d for d in sorted(arm_dir.glob("cycle_*")) if _cycle_no(d) >= k]
    human = [d for d in doomed if (d / sheets.QUESTIONS_CSV).exists() or sheets.answers_path(d).exists()]
    for d in human:
        keep_answers(ctx, d, why)
    if human and log is not None:
        store = ctx.layout.answer_store
        held = len(answers.current(answers.read(store)))
        cycles = ", ".join(str(_cycle_no(d)) for d in doomed)
        log(f"cycle(s) {cycles} of arm {arm_name} are discarded ({why}). Their human answers are kept: all "
            f"{held} answers are in the answer store {store}, and rebuilt cycles take every answer they can "
            "from it, so only questions never answered are asked.")
    for d in doomed:
        shutil.rmtree(d)
    path = ctx.layout.ledger(arm_name, ctx.seed)
    if path.exists():
        ledger.truncate_after(path, k - 1)


def keep_answers(ctx: RunContext, cycle_dir: Path, why: str = "") -> None:
    """Put a cycle's `answers.csv` into the answer store before the cycle is deleted; an
    invalid file stops the deletion with its validation message and what to do. Whatever
    the params' oracle, a file a person wrote is kept by the human oracle."""
    ORACLES.get("human").keep(Asking(ctx, cycle_dir, cycle_dir.parent.name), why)


def changed_answers(c: Cycle) -> int:
    """How many answers a finished cycle used differ from the oracle's now (0 for an oracle
    whose answers never change); an edited `answers.csv` of the cycle is taken first."""
    if not (c.dir / "queries.parquet").is_file():
        return c.budget if c.oracle.current(pd.DataFrame(columns=["sample_id", "asked_class"]), c.asking) is not None \
            else 0  # the record of what it used is gone: replay it from the store
    used = io.read_parquet(c.dir / "queries.parquet", what="queries", error=sheets.OracleError,
                           fix="rerun the active stage after deleting the cycle's manifest.json (it replays).")
    now = c.oracle.current(used[["sample_id", "asked_class"]], c.asking)
    if now is None:
        return 0
    return int((~c.method.same_answers(now, used)).sum())


def reopen(c: Cycle) -> None:
    """Undo what a finished cycle's answers shaped (its pool, model, ledger rows and every
    later cycle), keeping its inputs, scores and question sheet (rank 0)."""
    (c.dir / "manifest.json").unlink(missing_ok=True)
    discard_from(c.ctx, c.arm_name, c.k + 1, why=f"cycle {c.k} is replayed with changed answers")
    for name in ("queries.parquet", "pool.parquet", "checkpoint.pt", "history.npz", "log.csv"):
        (c.dir / name).unlink(missing_ok=True)
    path = c.ctx.layout.ledger(c.arm_name, c.ctx.seed)
    if path.exists():
        ledger.truncate_after(path, c.k - 1)


def check_inputs(c: Cycle) -> None:
    """Read the cycle's inputs (previous pool, checkpoint and, for a strategy that reads
    Eq. 7's history, the history) before anything is written or discarded (rank 0): a
    missing, corrupt or foreign input stops the run with its own error and leaves every
    finished cycle as it was."""
    pools.read_pool(c.prev_pool)
    load_checkpoint(c.prev_dir / "checkpoint.pt", fresh_state(c.ctx), expect=c.expect_meta())
    if "history" in c.strategy.needs:
        load_query_history(c.prev_dir / "history.npz", c.window)


# --------------------------------------------------------------------------- the loop


def run_cycle(c: Cycle, *, log: Callable[[str], None] = echo, progress: bool = True) -> dict:
    """Bring cycle k to done (skip, resume, replay or redo) and return its manifest."""
    key = cycle_key(c)
    manifest = _read_json(c.dir / "manifest.json")
    if manifest is not None and {k: manifest.get(k) for k in key} == key:
        changed = dist.main_value(lambda: changed_answers(c))
        if not changed:
            log(f"cycle {c.k}: up to date, skipped")
            return manifest
        log(f"cycle {c.k}: {changed} answer(s) differ from the ones it was trained with (answer store "
            f"{c.ctx.layout.answer_store}); replaying from cycle {c.k} with the answers in the store")
        dist.on_main(lambda: reopen(c))
    resume = _read_json(c.dir / "inputs.json") == key

    def begin() -> None:
        if not resume:
            discard_from(c.ctx, c.arm_name, c.k, why="their inputs or params changed; they are redone", log=log)
        c.dir.mkdir(parents=True, exist_ok=True)
        (c.dir / "manifest.json").unlink(missing_ok=True)
        io.write_json(c.dir / "inputs.json", key)

    dist.on_main(lambda: check_inputs(c))
    dist.on_main(begin)
    dist.barrier()
    log(f"cycle {c.k}: asking {c.budget} {'full labels' if c.method.question == 'full' else 'one-bit questions'}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if dist.main_value(lambda: resume and (c.dir / "scores.parquet").is_file()):
        log(f"cycle {c.k}: scores.parquet of the same inputs reused (no new scoring pass)")
        seconds["score"] = 0.0
    else:
        score_step(c)  # every rank scores its shard of the candidates
        seconds["score"] = round(time.perf_counter() - t0, 4)

    def ask() -> None:
        for name, step in (("oracle", oracle_step), ("update", update_step)):
            t1 = time.perf_counter()
            step(c)
            seconds[name] = round(time.perf_counter() - t1, 4)

    dist.on_main(ask)
    return retrain_step(c, key, seconds=seconds, log=log, progress=progress)


def run_active(ctx: RunContext, arm_name: str, *, log: Callable[[str], None] = echo,
               progress: bool = True) -> list[dict]:
    """Run every cycle of one arm and seed; drop cycles beyond `query_times`."""
    ctx.params.arm(arm_name)  # clear error for an unknown arm
    manifests = [run_cycle(Cycle(ctx, arm_name, k), log=log, progress=progress)
                 for k in range(1, ctx.params.query_times + 1)]
    dist.on_main(lambda: discard_from(ctx, arm_name, ctx.params.query_times + 1,
                                      why=f"beyond query_times = {ctx.params.query_times}", log=log))
    return manifests
