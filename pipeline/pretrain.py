"""Stage 1: L_sup + λ_ctr·L_c.u on the initial labeled set I^S, recording the
prediction history that the first query (right after stage 1) needs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline import distributed as dist
from pipeline import io
from pipeline.context import RunContext
from pipeline.history import PredictionHistory
from pipeline.pools import read_pool
from pipeline.moco import ObCP
from pipeline.train import LoopConfig, TrainState, build_state, pool_view, stage1_plan, test_accuracy, train_epochs


def stage1_meta(ctx: RunContext) -> dict:
    """Identity of a stage-1 run, stored in and checked against its checkpoint."""
    p = ctx.params
    return {
        "dataset": p.dataset.name,
        "arch": p.model.arch,
        "num_classes": ctx.num_classes,
        "num_samples": ctx.num_samples,
        "seed": ctx.seed,
    }


def loop_config(ctx: RunContext) -> LoopConfig:
    p = ctx.params
    return LoopConfig(
        beton=ctx.layout.beton("train"),
        train=p.train,
        contrastive=p.contrastive,
        total_epochs=p.train.stage1_epochs + p.train.stage2_epochs,
        seed=ctx.seed,
        hflip=p.dataset.hflip,
        device=ctx.device,
        distributed=ctx.distributed,
    )


def fresh_state(ctx: RunContext) -> TrainState:
    p = ctx.params
    return build_state(
        arch=p.model.arch,
        width=p.model.width,
        proj_dim=p.model.proj_dim,
        num_classes=ctx.num_classes,
        num_samples=ctx.num_samples,
        contrastive=p.contrastive,
        train=p.train,
        seed=ctx.seed,
        meta=stage1_meta(ctx),
        device=ctx.device,
    )


def evaluate_model(ctx: RunContext, model: ObCP) -> dict[str, float]:
    """Test-split accuracy of `model` (recorded next to every checkpoint when it is written)."""
    return test_accuracy(model, ctx.layout.beton("test"), ctx.test_labels, device=ctx.device,
                         num_workers=ctx.params.train.num_workers)


def run_stage1(ctx: RunContext, out_dir: Path, *, until_epoch: int | None = None,
               state: TrainState | None = None, history: PredictionHistory | None = None) -> TrainState:
    """Train stage 1 and (rank 0) write checkpoint.pt, history.npz, log.csv and test.json
    (test accuracy of the checkpoint) to `out_dir`.

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
        log_path = out_dir / "log.csv"
        old = pd.read_csv(log_path) if state.epoch > len(rows) and log_path.exists() else None
        log = pd.DataFrame(rows) if old is None else pd.concat([old, pd.DataFrame(rows)], ignore_index=True)
        io.write_csv(log_path, log)
        io.write_json(out_dir / "test.json", evaluate_model(ctx, state.model))
    dist.barrier()
    return state
