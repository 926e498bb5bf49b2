"""Stage 1: L_sup + λ_ctr·L_c.u on the initial labeled set I^S, recording the
prediction history that the first query (right after stage 1) needs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core import distributed as dist
from pipeline.core import io
from pipeline.core.context import RunContext
from pipeline.method.history import PredictionHistory
from pipeline.pool.pools import read_pool
from pipeline.loop.runs import evaluate_model, fresh_state, loop_config
from pipeline.loop.train import TrainState, pool_view, split_log, stage1_plan, train_epochs


def run_stage1(ctx: RunContext, out_dir: Path, *, until_epoch: int | None = None,
               state: TrainState | None = None, history: PredictionHistory | None = None) -> TrainState:
    """Train stage 1 and (rank 0) write checkpoint.pt, history.npz, log.csv and test.json
    (test accuracy of the checkpoint) to `out_dir`, and the epochs' wall-clock times to
    the seed's timings folder (outside DVC's outputs).

    `until_epoch` < stage1_epochs stops early (tests of stop + resume); `state`/`history`
    continue a stopped run.
    """
    p = ctx.params
    epochs = p.train.stage1_epochs
    pool = read_pool(ctx.layout.initial_pool(ctx.seed))
    state = state or fresh_state(ctx)
    if history is None:
        history = PredictionHistory(
            ctx.num_samples, ctx.num_classes, m=p.selection.m, t=p.selection.t, start_epoch=0, query_epoch=epochs
        )
    rows = train_epochs(
        state,
        pool_view(pool, ctx.num_classes),
        stage1_plan(p.loss),
        loop_config(ctx),
        until_epoch=epochs if until_epoch is None else until_epoch,
        history=history,
    )
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        io.save_torch(out_dir / "checkpoint.pt", state.state_dict())
        history.save(out_dir / "history.npz")
        log, timings = split_log(rows)
        for path, frame in ((out_dir / "log.csv", log), (ctx.layout.timings_dir(ctx.seed) / "stage1.csv", timings)):
            resumed = state.epoch > len(rows) and path.exists()  # a continued run: keep the earlier epochs
            io.write_csv(path, pd.concat([pd.read_csv(path), frame], ignore_index=True) if resumed else frame)
        io.write_json(out_dir / "test.json", evaluate_model(ctx, state.model))
    dist.barrier()
    return state
