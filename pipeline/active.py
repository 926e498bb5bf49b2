"""Stage 2: `query_times` query cycles, each score → oracle → update → retrain.

Each step reads and writes files in `data/runs/seed<S>/arms/<arm>/cycle_KKK/`, so it can
run alone (`obcp score --cycle K …`) or inside `run_active`, which does every cycle of
one arm in one process (`pipeline.arms` runs every arm of a seed). Steps that only need one process (score,
oracle, update) run on rank 0; every rank retrains.

Resuming: a cycle writes `inputs.json` (hash of its inputs and of the params that
shape it) when it starts and `manifest.json` when it is done. A rerun skips a cycle
whose manifest matches, continues a started cycle whose inputs match (keeping a human's
`answers.csv`), and discards a mismatching cycle together with every later one.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import distributed as dist
from pipeline import io, ledger, oracle, pools, selection
from pipeline.config import ArmParams, as_dict
from pipeline.context import RunContext
from pipeline.errors import ObcpError
from pipeline.history import PredictionHistory, epoch_shares, query_epochs
from pipeline.runs import evaluate_model, fresh_state, loop_config, stage1_meta
from pipeline.train import echo, load_checkpoint, pool_view, predict_batches, stage2_plan, train_epochs


@dataclass(frozen=True)
class Cycle:
    """Cycle k (1-based) of one arm and seed, with the paths and numbers it uses."""

    ctx: RunContext
    arm_name: str
    k: int

    @property
    def arm(self) -> ArmParams:
        return self.ctx.params.arm(self.arm_name)

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
    def full_labels(self) -> bool:
        return self.arm.method == "fullbit"

    @property
    def strategy(self) -> str:
        """The selection strategy scored: `fullbit` ranks by entropy where the arm says `obcp`."""
        return "entropy" if self.full_labels and self.arm.strategy == "obcp" else self.arm.strategy

    def budgets(self) -> list[int]:
        """Questions per cycle (one-bit), or full labels per cycle for `fullbit` — equal bits."""
        total = self.ctx.one_bit_budget
        if self.full_labels:
            total = pools.full_label_budget(total, self.ctx.num_classes)
        return pools.cycle_budgets(total, self.ctx.params.query_times)

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
                **({"onebit": p.onebit} if c.arm.method == "onebit" else {}),  # shapes only that arm
            }
        ),
    }


# --------------------------------------------------------------------------- steps


def score_step(c: Cycle) -> pd.DataFrame:
    """Rank every candidate by the arm's strategy; write scores.parquet (rank 0).

    Candidates: unlabeled samples with at least one class not yet denied. The asked
    class is the current model's clean-view argmax over the classes not yet denied: the
    query encoder's, or for `onebit` the EMA teacher's (the key encoder), as Hu et al. ask;
    the probability-based strategies score that same prediction.
    One streamed evaluation pass: per batch only (ids, score, asked/predicted class)
    are kept, so memory is O(N) here (the Eq. 7 history itself is O(N·C)).
    """
    ctx = c.ctx
    pool = pools.read_pool(c.prev_pool)
    unl = pool[pool["status"] == "unlabeled"]
    unl = unl[unl["negatives"].map(len) < ctx.num_classes]
    ids = unl["sample_id"].to_numpy(dtype=np.int64)
    state = fresh_state(ctx)
    load_checkpoint(c.prev_dir / "checkpoint.pt", state, expect=c.expect_meta())
    strategy = c.strategy
    history = PredictionHistory.load(c.prev_dir / "history.npz") if strategy == "obcp" else None
    parts = []
    for batch_ids, probs in predict_batches(state.model, ctx.layout.beton("train"), ids, device=ctx.device,
                                            num_workers=ctx.params.train.num_workers,
                                            teacher=c.arm.method == "onebit"):
        parts.append(pd.DataFrame({
            "sample_id": batch_ids,
            "score": selection.score_candidates(strategy, batch_ids, probs=probs, history=history,
                                                seed=ctx.seed * 1000 + c.k),
            "asked_class": selection.asked_classes(probs, pools.denied_matrix(pool, batch_ids, ctx.num_classes)),
            "pred_class": probs.argmax(axis=1),
            "pred_prob": probs.max(axis=1),
        }))
    scored = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["sample_id", "score", "asked_class", "pred_class", "pred_prob"])
    ranked = selection.select_top(
        scored["sample_id"].to_numpy(dtype=np.int64), scored["score"].to_numpy(dtype=np.float64), len(scored),
        extra={k: scored[k].to_numpy() for k in ("asked_class", "pred_class", "pred_prob")},
    )  # every candidate, ranked
    ranked["selected"] = ranked["rank"] <= c.budget
    ranked["strategy"] = strategy
    io.write_parquet(c.dir / "scores.parquet", ranked)
    return ranked


def oracle_step(c: Cycle) -> pd.DataFrame:
    """Answer the selected questions; write queries.parquet (rank 0).

    `simulated` answers from the ground truth; `human` writes a question sheet and raises
    `oracle.AnswersMissing` until `answers.csv` is in the cycle folder, then validates it.
    `fullbit` asks for full labels instead (always simulated ground truth or human label).
    """
    ctx = c.ctx
    scores = pd.read_parquet(c.dir / "scores.parquet")
    asked = scores[scores["selected"]].sort_values("rank").reset_index(drop=True)
    q = asked[["sample_id", "asked_class", "score", "rank", "strategy"]].copy()
    truth = ctx.train_labels[q["sample_id"].to_numpy()]
    if c.full_labels:
        q["asked_class"] = -1
        q["answer"] = True
        q["label_given"] = truth
    elif ctx.params.oracle.kind == "simulated":
        q["answer"] = oracle.simulated_answers(q[["sample_id", "asked_class"]], ctx.train_labels)
        q["label_given"] = np.where(q["answer"], q["asked_class"], -1)
    else:
        answers_file = oracle.answers_path(c.dir)
        if not answers_file.exists():
            images = _raw_images(ctx, q["sample_id"].to_numpy())
            oracle.write_question_sheet(c.dir, q[["sample_id", "asked_class"]], list(ctx.class_names), images)
        answers = oracle.read_answers(answers_file, q["sample_id"].to_numpy(), num_samples=ctx.num_samples)
        q = q.merge(answers, on="sample_id", how="left", validate="one_to_one")
        q["label_given"] = np.where(q["answer"], q["asked_class"], -1)
    q["true_label"] = truth if ctx.params.oracle.kind == "simulated" else -1
    io.write_parquet(c.dir / "queries.parquet", q)
    return q


def update_step(c: Cycle) -> pd.DataFrame:
    """Apply the answers to the pool and append the cycle to the ledger (rank 0)."""
    ctx = c.ctx
    pool = pools.read_pool(c.prev_pool)
    q = pd.read_parquet(c.dir / "queries.parquet")
    if c.full_labels:
        new = pools.apply_full_labels(pool, q["sample_id"].to_numpy(), q["label_given"].to_numpy(), c.k,
                                      num_classes=ctx.num_classes)
    else:
        new = pools.apply_answers(pool, q[["sample_id", "asked_class", "answer"]], c.k, num_classes=ctx.num_classes)
    budget = None if c.full_labels else pools.budget_through(c.budgets(), c.k)
    pools.write_pool(c.dir / "pool.parquet", new, ctx.num_classes, num_samples=ctx.num_samples, budget=budget)
    rows = ledger.ledger_rows(
        q,
        cycle=c.k,
        epoch=c.query_epoch,
        strategy=str(q["strategy"].iloc[0]) if len(q) else c.arm.strategy,
        oracle=ctx.params.oracle.kind,
        arm=c.arm_name,
        seed=ctx.seed,
        kind="full" if c.full_labels else "one_bit",
        asked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    ledger.append(ctx.layout.ledger(c.arm_name, ctx.seed), rows)
    return new


def retrain_step(c: Cycle, key: dict, *, until_epoch: int | None = None,
                 seconds: dict[str, float] | None = None, log: Callable[[str], None] | None = echo,
                 progress: bool = True) -> dict:
    """Continue from the previous checkpoint for this cycle's share of stage-2 epochs
    with the full loss of the arm; write checkpoint, history, log, then the manifest
    (with `seconds`: the query steps' wall times, plus retrain and evaluate)."""
    ctx, t0 = c.ctx, time.perf_counter()
    pool = pools.read_pool(c.dir / "pool.parquet")
    state = fresh_state(ctx)
    load_checkpoint(c.prev_dir / "checkpoint.pt", state, expect=c.expect_meta())
    history = None
    if not c.is_last:
        nxt = Cycle(ctx, c.arm_name, c.k + 1)
        history = PredictionHistory(ctx.num_samples, ctx.num_classes, m=ctx.params.selection.m,
                                    t=ctx.params.selection.t, start_epoch=c.query_epoch, query_epoch=nxt.query_epoch)
    rows = train_epochs(
        state,
        pool_view(pool, ctx.num_classes, c.arm),
        stage2_plan(c.arm, ctx.params.loss, ctx.params.onebit, start_epoch=ctx.params.train.stage1_epochs),
        loop_config(ctx),
        until_epoch=c.retrain_until if until_epoch is None else until_epoch,
        history=history,
        log=log if dist.is_main() else None,
        progress=progress,
    )
    manifest: dict = {}
    if dist.is_main():
        seconds = dict(seconds or {})
        io.save_torch(c.dir / "checkpoint.pt", state.state_dict())
        if history is not None:
            history.save(c.dir / "history.npz")
        io.write_csv(c.dir / "log.csv", pd.DataFrame(rows))
        seconds["retrain"] = round(time.perf_counter() - t0, 4)
        t1 = time.perf_counter()
        test = evaluate_model(ctx, state.model)
        seconds["evaluate"] = round(time.perf_counter() - t1, 4)
        summary = pools.summary(pool).as_dict()
        queries = pd.read_parquet(c.dir / "queries.parquet")
        manifest = {
            **key,
            "counts": summary,
            "asked": int(len(queries)),
            "bits_used": pools.bits_used(pool, ctx.num_classes),
            "yes": int(queries["answer"].fillna(False).astype(bool).sum()),
            "test": test,
            "seconds": seconds,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        io.write_json(c.dir / "manifest.json", manifest)
    dist.barrier()
    return manifest


# --------------------------------------------------------------------------- the loop


def _raw_images(ctx: RunContext, ids: np.ndarray) -> np.ndarray:
    """[n, H, W, 3] uint8 source pixels of train samples `ids` (for the question sheet)."""
    from pipeline.datasets.loaders import make_loader

    loader = make_loader(ctx.layout.beton("train"), batch_size=256, views=["raw"], indices=np.sort(ids),
                         order="sequential", seed=0)
    got_ids, imgs = [], []
    for batch in loader:
        got_ids.append(batch.ids.numpy().copy())
        imgs.append(batch.views[0].permute(0, 2, 3, 1).numpy().copy())
    got = np.concatenate(got_ids)
    allimg = np.concatenate(imgs)
    return allimg[np.searchsorted(got, ids)]


def _on_main(fn: Callable[[], object]) -> None:
    """Run `fn` on rank 0 only; an ObcpError there stops every rank."""
    error: ObcpError | None = None
    if dist.is_main():
        try:
            fn()
        except ObcpError as exc:
            if not dist.is_dist():
                raise
            error = exc
    summary = dist.broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if summary is not None:
        raise ObcpError(f"rank 0 stopped: {summary}")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def discard_from(ctx: RunContext, arm_name: str, k: int) -> None:
    """Delete cycle k and every later cycle folder, and their ledger rows (rank 0)."""
    arm_dir = ctx.layout.arm_dir(ctx.seed, arm_name)
    for d in sorted(arm_dir.glob("cycle_*")):
        if int(d.name.split("_")[1]) >= k:
            shutil.rmtree(d)
    path = ctx.layout.ledger(arm_name, ctx.seed)
    if path.exists():
        ledger.truncate_after(path, k - 1)


def check_inputs(c: Cycle) -> None:
    """Read the cycle's inputs (previous pool, checkpoint and, for Eq. 7, history) before
    anything is written or discarded (rank 0): a missing, corrupt or foreign input stops
    the run with its own error and leaves every finished cycle as it was."""
    pools.read_pool(c.prev_pool)
    load_checkpoint(c.prev_dir / "checkpoint.pt", fresh_state(c.ctx), expect=c.expect_meta())
    if c.strategy == "obcp":
        PredictionHistory.load(c.prev_dir / "history.npz")


def run_cycle(c: Cycle, *, log: Callable[[str], None] = echo, progress: bool = True) -> dict:
    """Bring cycle k to done (skip, resume or redo) and return its manifest."""
    key = cycle_key(c)
    manifest = _read_json(c.dir / "manifest.json")
    if manifest is not None and {k: manifest.get(k) for k in key} == key:
        log(f"cycle {c.k}: up to date, skipped")
        return manifest
    started = _read_json(c.dir / "inputs.json")

    def begin() -> None:
        if started != key:
            discard_from(c.ctx, c.arm_name, c.k)
        c.dir.mkdir(parents=True, exist_ok=True)
        (c.dir / "manifest.json").unlink(missing_ok=True)
        io.write_json(c.dir / "inputs.json", key)

    _on_main(lambda: check_inputs(c))
    _on_main(begin)
    dist.barrier()
    log(f"cycle {c.k}: asking {c.budget} "
        f"{'full labels' if c.full_labels else 'one-bit questions'}")
    seconds: dict[str, float] = {}

    def query() -> None:
        for name, step in (("score", score_step), ("oracle", oracle_step), ("update", update_step)):
            t0 = time.perf_counter()
            step(c)
            seconds[name] = round(time.perf_counter() - t0, 4)

    _on_main(query)
    return retrain_step(c, key, seconds=seconds, log=log, progress=progress)


def run_active(ctx: RunContext, arm_name: str, *, log: Callable[[str], None] = echo,
               progress: bool = True) -> list[dict]:
    """Run every cycle of one arm and seed; drop cycles beyond `query_times`."""
    ctx.params.arm(arm_name)  # clear error for an unknown arm
    manifests = [run_cycle(Cycle(ctx, arm_name, k), log=log, progress=progress)
                 for k in range(1, ctx.params.query_times + 1)]
    _on_main(lambda: discard_from(ctx, arm_name, ctx.params.query_times + 1))
    return manifests
