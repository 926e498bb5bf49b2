"""The four steps of a query cycle: score → ask the oracle → update the pool → retrain.

Each step reads and writes files in `data/runs/seed<S>/arms/<arm>/cycle_KKK/`, so it can
run alone (`obcp score --cycle K …`) or inside `pipeline.loop.cycle.run_cycle`. Scoring is
a pass over the candidates on every rank; asking and updating run on rank 0; every rank
retrains. The arm's method, strategy and oracle are objects (`Cycle.method`, …): no step
tests a name.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from pipeline.core import distributed as dist
from pipeline.core import io
from pipeline.loop import baselines
from pipeline.loop.inference import pass_batches
from pipeline.loop import rounds
from pipeline.loop.poolpass import COLUMNS, QUESTION_COLUMNS, score_pool
from pipeline.loop.runs import evaluate_model, fresh_state, loop_config
from pipeline.loop.train import echo, load_checkpoint, pool_view, split_log, train_epochs
from pipeline.method.history import cycle_history, load_query_history
from pipeline.pool import ledger, pools
from pipeline.selection import audit
from pipeline.selection.ranking import select_top

if TYPE_CHECKING:
    from pipeline.loop.cycle import Cycle


def score_step(c: Cycle) -> pd.DataFrame | None:
    """Rank every candidate by the arm's strategy; write scores.parquet (rank 0). Every rank calls it.

    Candidates: unlabeled samples with at least one class not yet denied. The asked class
    is the asking network's clean-view argmax over the classes not yet denied (the query
    encoder's, or the EMA teacher's where the method asks with it, as Hu et al. do); the
    probability-based strategies score that same prediction. Returns the ranked frame on
    rank 0 (None elsewhere).
    """
    ctx = c.ctx
    pool = pools.read_pool(c.prev_pool)
    unl = pool[pool["status"] == "unlabeled"]
    unl = unl[unl["negatives"].map(len) < ctx.num_classes]
    ids = unl["sample_id"].to_numpy(dtype=np.int64)
    state = fresh_state(ctx)
    load_checkpoint(c.prev_dir / "checkpoint.pt", state, expect=c.expect_meta())
    strategy = c.strategy
    history = None
    if "history" in strategy.needs and dist.is_main():
        history = load_query_history(c.prev_dir / "history.npz", c.window)
    labeled = pool.loc[pool["status"] != "unlabeled", "sample_id"].to_numpy(dtype=np.int64)
    run_pass = partial(pass_batches, state.model, ctx.layout.beton("train"), device=ctx.device,
                       num_workers=ctx.params.train.num_workers, teacher=c.method.asks_with_teacher,
                       **baselines.pass_options(c, state.model))  # the conventional learners' inputs
    scored = score_pool(
        state.model, strategy, ids, c.budget,
        denied=lambda b: pools.denied_matrix(pool, b, ctx.num_classes),
        run_pass=run_pass, history=history, seed=ctx.seed * 1000 + c.k,
        labeled_ids=labeled, distributed=ctx.distributed,
        # a counterfactual arm reads the labels from an oracle that knows them (others refuse)
        truth=(lambda b: c.oracle.truth(b, c.asking)) if "truth" in strategy.needs else None,
        keep_probs=c.budget if c.arm.rounds > 1 else 0,  # follow-up rounds rescore the asked samples
        settings=strategy.own_params(ctx.params), images=baselines.images(c),
    )
    if not dist.is_main():
        return None
    ranked = select_top(
        scored["sample_id"].to_numpy(dtype=np.int64), scored["score"].to_numpy(dtype=np.float64), len(scored),
        extra={k: scored[k].to_numpy() for k in scored.columns if k not in COLUMNS[:2]},
    )  # every candidate, ranked
    ranked["selected"] = ranked["rank"] <= c.budget
    if ctx.params.audit.size:  # a random audit set inside the budget estimates top-1 without a val/ folder
        ranked = audit.choose(ranked, budget=c.budget, size=ctx.params.audit.size, seed=ctx.seed * 1000 + c.k)
    ranked["strategy"] = strategy.name
    io.write_parquet(c.dir / "scores.parquet", ranked)
    return ranked


def oracle_step(c: Cycle) -> pd.DataFrame:
    """Ask the oracle the selected questions; write queries.parquet (rank 0).

    The method turns the selected rows into questions (a yes/no question about the asked
    class, or a full-label question); the oracle answers them or stops the stage waiting
    for a person (`AnswersMissing`, exit code 3).
    """
    scores = pd.read_parquet(c.dir / "scores.parquet")
    if c.arm.rounds > 1:  # follow-up questions: ask in rounds (pipeline/loop/rounds.py)
        q = rounds.ask_in_rounds(c, scores)
        io.write_parquet(c.dir / "queries.parquet", q)
        return q
    asked = scores[scores["selected"]].sort_values("rank").reset_index(drop=True)
    why = [col for col in QUESTION_COLUMNS if col in asked.columns]  # a strategy that chose the class
    q = c.method.questions(asked[["sample_id", "asked_class", "score", "rank", "strategy", *why]].copy())
    got = c.oracle.answer(q[["sample_id", "asked_class"]], c.asking)
    for column in got.columns:
        q[column] = got[column].to_numpy()
    if "audit" in asked:
        q["audit"] = asked["audit"].to_numpy()
    io.write_parquet(c.dir / "queries.parquet", q)
    return q


def update_step(c: Cycle) -> pd.DataFrame:
    """Apply the answers to the pool and append the cycle to the ledger (rank 0)."""
    ctx = c.ctx
    pool = pools.read_pool(c.prev_pool)
    q = pd.read_parquet(c.dir / "queries.parquet")
    new = rounds.apply_in_rounds(c.method.apply, pool, q, c.k, ctx.num_classes)
    pools.write_pool(c.dir / "pool.parquet", new, ctx.num_classes, num_samples=ctx.num_samples,
                     budget=c.method.spent_through(c.budgets(), c.k))
    rows = ledger.ledger_rows(
        q,
        cycle=c.k,
        epoch=c.query_epoch,
        strategy=str(q["strategy"].iloc[0]) if len(q) else c.arm.strategy,
        oracle=c.oracle.name,
        arm=c.arm_name,
        seed=ctx.seed,
        kind=c.method.question,
    )
    ledger.append(ctx.layout.ledger(c.arm_name, ctx.seed), rows)
    return new


def retrain_step(c: Cycle, key: dict, *, until_epoch: int | None = None,
                 seconds: dict[str, float] | None = None, log: Callable[[str], None] | None = echo,
                 progress: bool = True) -> dict:
    """Continue from the previous checkpoint for this cycle's share of stage-2 epochs
    with the arm's loss; write checkpoint, history, log, then the manifest, and the
    cycle's wall-clock times (`seconds`: the query steps', plus retrain and evaluate) to
    `Cycle.timings`. The manifest returned also carries `seconds`."""
    ctx, t0 = c.ctx, time.perf_counter()
    pool = pools.read_pool(c.dir / "pool.parquet")
    state = fresh_state(ctx)
    load_checkpoint(c.prev_dir / "checkpoint.pt", state, expect=c.expect_meta())
    # every later query whose windows overlap this cycle's epochs (rank 0 continues the partial
    # accumulators the previous cycle carried; the other ranks only ask in_window); None for the last cycle
    history = cycle_history(c.windows, c.query_epoch, c.retrain_until, ctx.num_samples, ctx.num_classes,
                            carried=c.prev_dir / "history.npz" if c.k > 1 and dist.is_main() else None)
    p = ctx.params
    view = pool_view(pool, ctx.num_classes, c.arm)
    plan = baselines.stage2_plan(c, c.method.loss_plan(c.arm, p.loss, p.onebit, p.train.stage1_epochs))
    aux = baselines.loss_head(c, state.model)  # LL4AL's head (None for every other strategy)
    rows = train_epochs(
        state,
        view,
        plan,
        loop_config(ctx),
        until_epoch=c.retrain_until if until_epoch is None else until_epoch,
        history=history,
        log=log if dist.is_main() else None,
        progress=progress,
        aux=aux,
    )
    baselines.train_members(c, view, plan, c.retrain_until if until_epoch is None else until_epoch)
    manifest: dict = {}
    if dist.is_main():
        seconds = dict(seconds or {})
        io.save_torch(c.dir / "checkpoint.pt", state.state_dict())
        if history is not None:
            history.save(c.dir / "history.npz")
        baselines.save_loss_head(c, aux)
        epochs, timings = split_log(rows)
        io.write_csv(c.dir / "log.csv", epochs)
        seconds["retrain"] = round(time.perf_counter() - t0, 4)
        t1 = time.perf_counter()
        test = evaluate_model(ctx, state.model)
        seconds["evaluate"] = round(time.perf_counter() - t1, 4)
        queries = pd.read_parquet(c.dir / "queries.parquet")
        scores = pd.read_parquet(c.dir / "scores.parquet")
        manifest = {
            **key,
            "counts": pools.summary(pool).as_dict(),
            "asked": int(len(queries)),
            "bits_used": pools.bits_used(pool, ctx.num_classes),
            "yes": int(queries["answer"].fillna(False).astype(bool).sum()),
            # selection quality at query time (pipeline/selection/diagnostics.py; AUROC reads ground truth,
            # and is None with a note where it is unknown; audit questions left out)
            "selection": audit.selection_quality(scores, queries, ctx.train_labels),
            "test": test,
            **({"audit": estimate} if (estimate := audit.estimate(scores, queries)) else {}),
        }
        io.write_json(c.dir / "manifest.json", manifest)
        # wall-clock times live outside DVC's outputs, so a rerun gives the same manifest
        io.write_json(c.timings, {"seconds": seconds, "epochs": timings.to_dict("records"),
                                  "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        manifest = {**manifest, "seconds": seconds}
    dist.barrier()
    return manifest
