"""Training-loop throughput ÷ pure forward+backward throughput of the same model and batch.

The loop (`pipeline.train.train_epochs`, stage-1 loss) reads FFCV batches, augments,
runs the query and key encoders, the losses, backward, SGD, the EMA update, the queue
and the prediction history. The reference does the same arithmetic on tensors already
in memory: forward of both encoders, the same two loss terms, backward, SGD, EMA,
enqueue. The ratio is what the data path and bookkeeping cost.
"""
from __future__ import annotations

import contextlib
import time

import torch

from pipeline import losses
from pipeline.context import RunContext
from pipeline.history import PredictionHistory
from pipeline.pools import read_pool
from pipeline.pretrain import fresh_state, loop_config
from pipeline.train import pool_view, stage1_plan, train_epochs
from pipeline.datasets import make_loader


def _pure_images_per_s(ctx: RunContext, steps: int, repeats: int) -> float:
    p = ctx.params
    device = ctx.device
    use_amp = p.train.amp and device.type == "cuda"  # as the loop does
    state = fresh_state(ctx)
    model, opt = state.model, state.optimizer
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    b_l, b_u = p.train.batch_size, p.train.batch_size * p.train.unlabeled_ratio
    shape = read_shape(ctx)
    gen = torch.Generator().manual_seed(0)
    xl1, xu1, xu2 = (torch.randn(n, *shape, generator=gen).to(device) for n in (b_l, b_u, b_u))
    yl = torch.randint(0, ctx.num_classes, (b_l,), generator=gen).to(device)

    def amp() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type) if use_amp else contextlib.nullcontext()

    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            with amp():
                logits, q = model(torch.cat([xl1, xu1]))
            with torch.no_grad():
                model.momentum_update()
                with amp():
                    _, k = model.keys(xu2)
            logits, q, k = logits.float(), q.float(), k.float()
            loss = losses.sup_loss(logits[:b_l], yl) + p.loss.lambda_ctr * losses.contrastive_unlabeled(
                q[b_l:], k, model.queue.detach(), p.contrastive.temperature)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                model.enqueue(k)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, steps * (b_l + b_u) / (time.perf_counter() - t0))
    return best


def read_shape(ctx: RunContext) -> tuple[int, int, int]:
    loader = make_loader(ctx.layout.beton("train"), batch_size=2, views=["clean"], order="sequential", seed=0)
    return tuple(next(iter(loader)).views[0].shape[1:])  # type: ignore[return-value]


def _loader_images_per_s(ctx: RunContext, ids) -> float:
    """Unlabeled two-view batches only: the data path's own throughput."""
    p = ctx.params
    loader = make_loader(ctx.layout.beton("train"), batch_size=p.train.batch_size * p.train.unlabeled_ratio,
                         views=["strong", "strong"], indices=ids, order="random", seed=0,
                         num_workers=p.train.num_workers, hflip=p.dataset.hflip)
    for _ in loader:  # warm-up (JIT)
        pass
    loader.set_epoch(1)
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += batch.ids.shape[0]
    return n / (time.perf_counter() - t0)


def bench_train_loop(ctx: RunContext, *, epochs: int = 8) -> dict:
    """{"loop_images_per_s", "pure_images_per_s", "ratio", "loader_images_per_s", ...} on this CPU."""
    pool = pool_view(read_pool(ctx.layout.initial_pool(ctx.seed)), ctx.num_classes)
    state = fresh_state(ctx)
    history = PredictionHistory(ctx.num_samples, ctx.num_classes, m=ctx.params.selection.m,
                                t=ctx.params.selection.t, start_epoch=0, query_epoch=epochs)
    rows = train_epochs(state, pool, stage1_plan(ctx.params.loss), loop_config(ctx), until_epoch=epochs,
                        history=history, log=None, progress=False)
    warm = rows[1:]  # epoch 0 compiles FFCV's pipelines
    loop = max(r["images_per_s"] for r in warm)
    steps = rows[-1]["steps"]
    pure = _pure_images_per_s(ctx, steps, repeats=len(warm))
    return {
        "model": ctx.params.model.arch,
        "batch": f"{ctx.params.train.batch_size}+{ctx.params.train.batch_size * ctx.params.train.unlabeled_ratio}",
        "loop_images_per_s": round(loop, 1),
        "pure_images_per_s": round(pure, 1),
        "ratio": round(loop / pure, 3),
        "loader_images_per_s": round(_loader_images_per_s(ctx, pool.unlabeled_ids), 1),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
    }
