"""Training-loop throughput ÷ pure forward+backward throughput of the same model and batches.

The loop (`pipeline.loop.train.train_epochs`, stage-1 loss) reads FFCV batches, augments,
runs the query and key encoders, the losses, backward, SGD, the EMA update, the queue
and the prediction history. The reference does the same arithmetic on tensors already
in memory: forward of both encoders, the same two loss terms, backward, SGD, EMA,
enqueue, with the batch sizes the loop had in that epoch (the labeled set's last batch
of each pass and the unlabeled pool's last batch are smaller than the batch size). The
ratio is what the data path and bookkeeping cost.

The two are measured in turns, one loop epoch then one pure pass over the same batch
sizes (from the loop's `on_epoch_end`), so that slow drifts of a shared machine's speed
hit both alike; the headline is the median of the per-epoch ratios.
"""
from __future__ import annotations

import statistics
import time

import torch

from pipeline.method import losses
from pipeline.core.context import RunContext
from pipeline.data import make_loader
from pipeline.data.loaders import ViewLoader
from pipeline.method.history import PredictionHistory
from pipeline.pool.pools import read_pool
from pipeline.loop.runs import fresh_state, loop_config
from pipeline.loop.train import (LossPlan, labeled_start_epoch, loop_loaders, loop_precision, pool_view, stage1_plan,
                            train_epochs)


class PureStep:
    """The loop's stage-1 step on preloaded random tensors of the loop's image shape."""

    def __init__(self, ctx: RunContext, plan: LossPlan):
        p = ctx.params
        self.device = ctx.device
        self.precision = loop_precision(p.train, self.device)  # as the loop does
        self.state = fresh_state(ctx)
        self.scaler = self.precision.scaler()
        self.lambda_ctr, self.temperature = plan.lambda_ctr, p.contrastive.temperature
        b_l, b_u = p.train.batch_size, p.train.batch_size * p.train.unlabeled_ratio
        shape = read_shape(ctx)
        gen = torch.Generator().manual_seed(0)
        self.xl, self.xu1, self.xu2 = (torch.randn(n, *shape, generator=gen).to(self.device) for n in (b_l, b_u, b_u))
        self.yl = torch.randint(0, ctx.num_classes, (b_l,), generator=gen).to(self.device)

    def step(self, n_l: int, n_u: int) -> None:
        model, opt = self.state.model, self.state.optimizer
        with self.precision.autocast():
            logits, q = model(torch.cat([self.xl[:n_l], self.xu1[:n_u]]))
        with torch.no_grad():
            model.momentum_update()
            with self.precision.autocast():
                _, k = model.keys(self.xu2[:n_u])
        logits, q, k = logits.float(), q.float(), k.float()
        loss = losses.sup_loss(logits[:n_l], self.yl[:n_l]) + self.lambda_ctr * losses.contrastive_unlabeled(
            q[n_l:], k, model.queue.detach(), self.temperature)
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()
        with torch.no_grad():
            model.enqueue(k)

    def images_per_s(self, sizes: list[tuple[int, int]]) -> float:
        """Run one step per (labeled, unlabeled) batch size; images per second."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for n_l, n_u in sizes:
            self.step(n_l, n_u)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return sum(n_l + n_u for n_l, n_u in sizes) / (time.perf_counter() - t0)


def read_shape(ctx: RunContext) -> tuple[int, int, int]:
    loader = make_loader(ctx.layout.beton("train"), batch_size=2, views=["clean"], order="sequential", seed=0)
    return tuple(next(iter(loader)).views[0].shape[1:])  # type: ignore[return-value]


def epoch_batch_sizes(loaders: tuple[ViewLoader, ViewLoader], epoch: int) -> list[tuple[int, int]]:
    """(labeled, unlabeled) batch size of each step of `epoch` in the loop (`loaders`:
    its `loop_loaders`)."""
    unlabeled, labeled = loaders
    unl = [len(ids) for ids in unlabeled.plan(epoch)]
    lab = [len(ids) for _, ids in labeled.cycle_plan(labeled_start_epoch(epoch), len(unl))]
    return list(zip(lab, unl))


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


def bench_train_loop(ctx: RunContext, *, epochs: int = 16) -> dict:
    """{"ratio" (median per epoch), "ratio_best" (best loop ÷ best pure), images/s, ...}."""
    pool = pool_view(read_pool(ctx.layout.initial_pool(ctx.seed)), ctx.num_classes)
    plan = stage1_plan(ctx.params.loss)
    state = fresh_state(ctx)
    history = PredictionHistory(ctx.num_samples, ctx.num_classes, m=ctx.params.selection.m,
                                t=ctx.params.selection.t, start_epoch=0, query_epoch=epochs)
    pure = PureStep(ctx, plan)
    loaders = loop_loaders(pool, plan, loop_config(ctx))
    pure.images_per_s(epoch_batch_sizes(loaders, 0))  # warm-up
    rounds: list[tuple[float, float]] = []

    def pure_turn(_state, row: dict) -> None:
        if row["epoch"] > 0:  # epoch 0 compiles FFCV's pipelines
            rounds.append((row["images_per_s"], pure.images_per_s(epoch_batch_sizes(loaders, row["epoch"]))))

    train_epochs(state, pool, plan, loop_config(ctx), until_epoch=epochs, history=history,
                 on_epoch_end=pure_turn, log=None, progress=False)
    loop, ref = max(r[0] for r in rounds), max(r[1] for r in rounds)
    p = ctx.params
    return {
        "model": p.model.arch,
        "batch": f"{p.train.batch_size}+{p.train.batch_size * p.train.unlabeled_ratio}",
        "ratio": round(statistics.median(a / b for a, b in rounds), 3),
        "ratio_best": round(loop / ref, 3),
        "ratios": [round(a / b, 3) for a, b in rounds],
        "loop_images_per_s": round(loop, 1),
        "pure_images_per_s": round(ref, 1),
        "loader_images_per_s": round(_loader_images_per_s(ctx, pool.unlabeled_ids), 1),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
    }
