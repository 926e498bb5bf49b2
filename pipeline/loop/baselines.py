"""What an arm of a conventional learner's strategy needs from the loop (docs/baselines.md).

A strategy says what its arm trains besides its method's model (`Strategy.dropout`,
`Strategy.ensemble`, `Strategy.loss_head`) and which inputs its scores read
(`Strategy.needs`); this module turns that into the loop's inputs, so `pipeline.loop.steps`
calls one function per hook and an arm whose strategy declares none of them trains and
scores exactly as before:

- `stage2_plan`: the method's loss plan, plus dropout before the classifier (MC dropout,
  BALD) or LL4AL's loss-prediction term;
- `pass_options`: what the scoring pass computes besides probs and embeddings (T dropout
  samples, the ensemble members' softmax, the predicted loss);
- `images`: the train images, for a strategy that trains on pixels (VAAL);
- `loss_head` / `save_loss_head`: LL4AL's head, carried from cycle to cycle in
  `cycle_KKK/loss_head.pt`;
- `train_members`: the E − 1 further models of an ensemble, in `cycle_KKK/members/`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from torch import nn

from pipeline.core import distributed as dist
from pipeline.core import io
from pipeline.data.loaders import make_loader
from pipeline.loop.inference import McDropout
from pipeline.loop.runs import fresh_state, loop_config
from pipeline.loop.train import (AuxHead, CheckpointError, PoolView, load_checkpoint, loss_prediction_loss,
                                 train_epochs)
from pipeline.method.moco import ObCP
from pipeline.method.plan import LossPlan

if TYPE_CHECKING:
    from pipeline.loop.cycle import Cycle

LOSS_HEAD = "loss_head.pt"
MEMBERS = "members"
_MEMBER_SEED = 1_000_003  # member e of seed s trains with seed s + e·this (no other run uses it)


def stage2_plan(c: Cycle, plan: LossPlan) -> LossPlan:
    """The arm's stage-2 plan: the method's, with what its strategy trains on top."""
    s, b = c.strategy, c.ctx.params.baselines
    if s.dropout:
        plan = dataclasses.replace(plan, dropout=b.dropout)
    if s.loss_head:
        joint = math.ceil(b.ll4al_joint * (c.retrain_until - c.query_epoch))
        plan = dataclasses.replace(plan, loss_prediction=True, lambda_lpl=b.ll4al_weight, lpl_margin=b.ll4al_margin,
                                   lpl_detach_from=c.query_epoch + joint)
    return plan


# --------------------------------------------------------------------------- LL4AL's head


class LossNet(nn.Module):
    """LL4AL's loss-prediction head (`pipeline.selection.ll4al`): penultimate features [B, F] →
    predicted loss [B]."""

    def __init__(self, feature_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).reshape(-1)


WARMUP_STEPS = 200  # cycle 1: steps fitting a new head to the stage-1 model (backbone frozen)
WARMUP_BATCH = 64


def loss_head(c: Cycle, model: ObCP) -> AuxHead | None:
    """The loss-prediction head the arm's cycle starts from, with its SGD optimizer (None
    unless its strategy has one): the previous cycle's, or at cycle 1 `warm_head`'s (stage 1
    is shared by every arm and trains no head). `model`: the cycle's starting model."""
    if not c.strategy.loss_head:
        return None
    p = c.ctx.params
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.ctx.seed * 7_919 + 17)
        module = LossNet(model.encoder_q.feature_dim).to(c.ctx.device)
    optimizer = torch.optim.SGD(module.parameters(), lr=p.train.lr, momentum=p.train.momentum,
                                weight_decay=p.train.weight_decay)
    if c.k == 1:
        warm_head(c, model, module)
        return AuxHead(module=module, optimizer=optimizer)
    path = c.prev_dir / LOSS_HEAD
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the LL4AL arm's loss-prediction head of the previous cycle. "
                              "Delete the arm's cycles from that one on and rerun the active stage.")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    module.load_state_dict(saved["module"])
    optimizer.load_state_dict(saved["optimizer"])
    return AuxHead(module=module, optimizer=optimizer)


def warm_head(c: Cycle, model: ObCP, module: torch.nn.Module) -> None:
    """Fit a new head to the stage-1 model with the backbone frozen (LL4AL's detached phase):
    `WARMUP_STEPS` SGD steps of the ranking loss on random pairs of the initial labeled set's
    clean-view (features, cross-entropy). Deterministic, so every rank and both the scoring
    and the retrain of cycle 1 get the same head."""
    from pipeline.loop.inference import pass_batches
    from pipeline.pool import pools

    pool = pools.read_pool(c.prev_pool)
    ids = pool.loc[pool["status"] != "unlabeled", "sample_id"].to_numpy(np.int64)
    parts = list(pass_batches(model, c.ctx.layout.beton("train"), ids, device=c.ctx.device, embeddings=True,
                              num_workers=c.ctx.params.train.num_workers))
    if not parts:
        return
    got = np.concatenate([b.ids for b in parts])
    h = torch.from_numpy(np.concatenate([b.embeddings for b in parts])).to(c.ctx.device)
    probs = np.concatenate([b.probs for b in parts])
    y = c.ctx.train_labels[got]
    target = torch.from_numpy(-np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))).float().to(c.ctx.device)
    p = c.ctx.params.train
    opt = torch.optim.SGD(module.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    gen = torch.Generator().manual_seed(c.ctx.seed * 7_919 + 18)
    was = module.training
    module.train()
    for _ in range(WARMUP_STEPS):
        idx = torch.randperm(len(got), generator=gen)[: 2 * (min(WARMUP_BATCH, len(got)) // 2)].to(c.ctx.device)
        loss = loss_prediction_loss(module(h[idx]).reshape(-1), target[idx], c.ctx.params.baselines.ll4al_margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    module.train(was)


def save_loss_head(c: Cycle, aux: AuxHead | None) -> None:
    """Write the head after the cycle's retrain (rank 0)."""
    if aux is not None:
        io.save_torch(c.dir / LOSS_HEAD, {"module": aux.module.state_dict(), "optimizer": aux.optimizer.state_dict()})


# --------------------------------------------------------------------------- ensembles


def member_path(d: Path, e: int) -> Path:
    return d / MEMBERS / f"member_{e}.pt"


def members(c: Cycle) -> list[ObCP]:
    """The previous cycle's ensemble members 1 … E − 1 (the arm's own model is member 0)."""
    out = []
    for e in range(1, c.ctx.params.baselines.ensemble):
        state = fresh_state(c.ctx)
        load_checkpoint(member_path(c.prev_dir, e) if c.k > 1 else c.prev_dir / "checkpoint.pt", state,
                        expect=c.expect_meta())
        out.append(state.model)
    return out


def train_members(c: Cycle, pool: PoolView, plan: LossPlan, until_epoch: int) -> None:
    """Train members 1 … E − 1 through this cycle (every rank), each from its own previous
    checkpoint (cycle 1: the shared stage-1 checkpoint) with the arm's plan and seed
    s + e·1 000 003: its own data order and augmentations. Rank 0 writes them. The caller's
    RNG state is restored afterwards, so the arm's own checkpoint does not depend on them."""
    if not c.strategy.ensemble:
        return
    rng, np_rng = torch.get_rng_state(), np.random.get_state()
    try:
        for e in range(1, c.ctx.params.baselines.ensemble):
            state = fresh_state(c.ctx)
            load_checkpoint(member_path(c.prev_dir, e) if c.k > 1 else c.prev_dir / "checkpoint.pt", state,
                            expect=c.expect_meta())
            seed = c.ctx.seed + e * _MEMBER_SEED
            torch.manual_seed(seed)
            cfg = dataclasses.replace(loop_config(c.ctx), seed=seed)
            train_epochs(state, pool, plan, cfg, until_epoch=until_epoch, history=None, log=None, progress=False)
            if dist.is_main():
                io.save_torch(member_path(c.dir, e), state.state_dict())
    finally:
        torch.set_rng_state(rng)
        np.random.set_state(np_rng)


# --------------------------------------------------------------------------- the scoring pass


def pass_options(c: Cycle, model: ObCP) -> dict[str, Any]:
    """Keyword arguments of `pass_batches` for what the arm's strategy reads besides probs
    and embeddings: T MC-dropout samples (seeded by the query), the ensemble members, the
    loss-prediction head."""
    s, b = c.strategy, c.ctx.params.baselines
    opts: dict[str, Any] = {}
    if "mc_probs" in s.needs:
        opts["mc"] = McDropout(b.mc_samples, b.dropout, seed=c.ctx.seed * 1000 + c.k)
    if "ensemble_probs" in s.needs:
        opts["members"] = members(c)
    if "predicted_loss" in s.needs:
        opts["loss_head"] = loss_head(c, model).module
    return opts


@dataclasses.dataclass(frozen=True)
class BetonImages:
    """The train split's clean views, batch by batch on `device` (an `ImageSource`)."""

    beton: Path
    device: torch.device
    num_workers: int = 1

    def batches(self, ids: np.ndarray, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                epoch: int = 0) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        loader = make_loader(self.beton, batch_size=batch_size, views=["clean"], indices=np.asarray(ids, np.int64),
                             order="random" if shuffle else "sequential", seed=seed, num_workers=self.num_workers)
        loader.set_epoch(epoch)
        for batch in loader:
            yield batch.ids.numpy().copy(), batch.views[0].to(self.device)


def images(c: Cycle) -> BetonImages | None:
    """The train images for a strategy that reads them (VAAL), else None."""
    if "images" not in c.strategy.needs:
        return None
    return BetonImages(c.ctx.layout.beton("train"), c.ctx.device, c.ctx.params.train.num_workers)
