"""The one training loop used by every training stage (stage 1 and each cycle's retrain).

Per step: a labeled batch from a cycling loader and an unlabeled batch (one pass over
the unlabeled pool is an epoch), both with two augmented views (a `StepBatch`). The query
encoder sees view 1, the key encoder view 2. Which loss terms are on is a `LossPlan`, and
`step_loss` is the one place that turns a plan into terms; `train_epochs` is the plain
loop around it (learning rate, loss, backward, step, queue and bank, history, logging).
The learning rate is a cosine over the whole run (stage 1 + stage 2 epochs), a pure
function of the (fractional) epoch, so a checkpoint needs no scheduler object.

Under DDP every rank runs the same number of steps: the step count is the maximum over
ranks, and a rank whose unlabeled shard is exhausted contributes an empty unlabeled
batch (every loss term is defined on empty input), so collectives never mismatch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline.loop.progress import verbose as verbose_log
from pipeline.core import distributed as dist
from pipeline.method import losses
from pipeline.core.config import ArmParams, ContrastiveParams, TrainParams
from pipeline.method.plan import LossPlan, sigmoid_rampup, stage1_plan  # noqa: F401  (the loop's plan)
from pipeline.data.loaders import Batch, ViewLoader, make_loader
from pipeline.core.errors import ObcpError
from pipeline.method.history import Recorder
from pipeline.loop.inference import predict_batches
from pipeline.method.moco import LabelBank, ObCP
from pipeline.method.models import build_encoder


_RECORD_ROWS = 4096  # softmax rows kept on the device between history records (memory O(rows·C))


class CheckpointError(ObcpError):
    """A checkpoint is missing, truncated, or was written for another run."""


# --------------------------------------------------------------------------- what to train on


@dataclass(frozen=True)
class PoolView:
    """A pool state as the loop needs it (N train samples, C classes).

    labeled_ids: ids the labeled loader draws (in L_sup and/or the label bank).
    unlabeled_ids: ids of the unlabeled pool (one pass = one epoch).
    labels [N] int64 (−1 unknown); in_sup [N] bool (counted in L_sup); in_bank [N] bool
    (in L_c.l and the label bank); denied [N, C] bool (classes answered *no*).
    """

    labeled_ids: np.ndarray
    unlabeled_ids: np.ndarray
    labels: torch.Tensor
    in_sup: torch.Tensor
    in_bank: torch.Tensor
    denied: torch.Tensor

    def to(self, device: torch.device) -> PoolView:
        """The same view with its tensors on `device` (the id arrays stay numpy)."""
        return dataclasses.replace(self, labels=self.labels.to(device), in_sup=self.in_sup.to(device),
                                   in_bank=self.in_bank.to(device), denied=self.denied.to(device))


def pool_view(pool: pd.DataFrame, num_classes: int, arm: ArmParams | None = None) -> PoolView:
    """Derive the loop's view of a pool; `arm` switches decide where *yes* samples go."""
    pool = pool.sort_values("sample_id")
    n = len(pool)
    status = pool["status"].to_numpy()
    labels = torch.tensor(pool["label"].to_numpy(dtype=np.int64))
    known = status != "unlabeled"
    yes = status == "yes"
    yes_sup = arm.yes_in_sup if arm else True
    yes_ctr = arm.yes_in_ctr if arm else True
    in_sup = known & (~yes | yes_sup)
    in_bank = known & (~yes | yes_ctr)
    denied = torch.zeros(n, num_classes, dtype=torch.bool)
    for sid, negs in zip(pool["sample_id"].to_numpy(), pool["negatives"]):
        if len(negs):
            denied[int(sid), list(negs)] = True
    ids = pool["sample_id"].to_numpy(dtype=np.int64)
    return PoolView(
        labeled_ids=ids[in_sup | in_bank],
        unlabeled_ids=ids[~known],
        labels=labels,
        in_sup=torch.as_tensor(in_sup),
        in_bank=torch.as_tensor(in_bank),
        denied=denied,
    )


# --------------------------------------------------------------------------- state


@dataclass
class TrainState:
    """Everything that must survive a stop: model (+ key encoder, queue), label bank,
    optimizer, the next epoch to run, and metadata checked on load."""

    model: ObCP
    bank: LabelBank
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "bank": self.bank.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "meta": self.meta,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.bank.load_state_dict(ckpt["bank"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch = int(ckpt["epoch"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])


def build_state(
    *,
    arch: str,
    width: int,
    proj_dim: int,
    num_classes: int,
    num_samples: int,
    contrastive: ContrastiveParams,
    train: TrainParams,
    seed: int,
    meta: dict[str, Any],
    device: torch.device,
) -> TrainState:
    """Fresh model, key encoder, queue, empty label bank and SGD optimizer, seeded."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # its state is saved in checkpoints: it must not depend on the process
    encoder = build_encoder(arch, num_classes, width=width, proj_dim=proj_dim)
    model = ObCP(encoder, queue_size=contrastive.queue_size, momentum=contrastive.momentum).to(device)
    bank = LabelBank(num_samples, proj_dim).to(device)
    optimizer = torch.optim.SGD(
        model.encoder_q.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
        foreach=True,  # one fused update for all tensors (the default on GPUs only); same numbers
    )
    return TrainState(model=model, bank=bank, optimizer=optimizer, epoch=0, meta=meta)


def load_checkpoint(path: Path, state: TrainState, *, expect: dict[str, Any]) -> None:
    """Load `path` into `state`, refusing a checkpoint whose metadata differs from `expect`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist. Run the stage that writes it (`dvc repro`).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, pickle garbage, ...
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it is truncated or corrupt. "
            "Delete it and rerun the stage that writes it (`dvc repro --force <stage>`)."
        ) from None
    if not isinstance(ckpt, dict) or "meta" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path} is not an obcp checkpoint (no model/meta). Rerun the stage that writes it.")
    mismatch = {k: (ckpt["meta"].get(k), v) for k, v in expect.items() if ckpt["meta"].get(k) != v}
    if mismatch:
        detail = ", ".join(f"{k}: checkpoint has {a!r}, expected {b!r}" for k, (a, b) in mismatch.items())
        raise CheckpointError(
            f"checkpoint {path} belongs to another run ({detail}). Point the stage at the right "
            "checkpoint, or rerun the stages upstream (`dvc repro`)."
        )
    try:
        state.load_state_dict(ckpt)
    except (RuntimeError, KeyError, ValueError) as exc:  # shape or key mismatch with the model built from params
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__).rstrip(".")
        raise CheckpointError(
            f"checkpoint {path} does not fit the model built from params.yaml ({first}). It was written with "
            "other model settings (model.arch, model.width, model.proj_dim or contrastive.queue_size). Restore "
            "the params it was trained with, or rerun the stages upstream (`dvc repro`)."
        ) from None
    state.meta = {**ckpt["meta"], **state.meta}


# --------------------------------------------------------------------------- loop inputs


@dataclass(frozen=True)
class LoopConfig:
    """Explicit inputs of `train_epochs` besides the state."""

    beton: Path
    train: TrainParams
    contrastive: ContrastiveParams
    total_epochs: int  # stage 1 + stage 2, for the cosine schedule
    seed: int
    hflip: bool
    device: torch.device
    distributed: bool = False
    history_view: str = "strong"  # selection.history_view: which forward pass feeds the history


def echo(line: str) -> None:
    """Print one log line now (stage output goes to a pipe under DVC)."""
    print(line, flush=True)


def learning_rate(base: float, epoch: float, total_epochs: int) -> float:
    """Cosine decay from `base` to 0 over `total_epochs` (epoch may be fractional)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(epoch, total_epochs) / total_epochs))


def loop_views(plan: LossPlan, sup_view: str) -> tuple[list[str], list[str]]:
    """The view kinds of each (labeled, unlabeled) sample: view 1 feeds the query encoder,
    view 2 the key encoder; a third view, where there is one, is the classification view.

    The classification terms (L_sup, L_neg) see `sup_view` (`train.sup_view`). Where the
    contrastive terms need view 1 to be the strong MoCo view (L_c.l for labeled samples,
    L_c.u / L_c.n for unlabeled ones) and `sup_view` is weak, a third view is added. The
    one-bit baseline (Mean Teacher) has no contrastive term: its student and its teacher (the
    key encoder) see weak views (two draws), as Hu et al.'s code trains them.
    """
    if plan.denied_consistency:  # Hu et al.'s views whatever sup_view says: their method, not a knob
        return ["weak", "weak"], ["weak", "weak"]
    if plan.labeled_only:  # cross-entropy alone: view 1 is the classification view, nothing else is read
        return [sup_view, "clean"], ["clean", "clean"]
    if sup_view == "strong":
        return ["strong", "strong"], ["strong", "strong"]
    labeled = ["strong", "strong", sup_view] if plan.contrastive_labeled else [sup_view, "strong"]
    return labeled, ["strong", "strong"] + ([sup_view] if plan.negative_loss else [])


def loop_loaders(pool: PoolView, plan: LossPlan, cfg: LoopConfig) -> tuple[ViewLoader | None, ViewLoader]:
    """The loop's (unlabeled, labeled) loaders, yielding the views of `loop_views`, made by
    `train.view_backend`: torch ops on the training device, or numba kernels on CPU (then
    copied to the device); `auto` is numba on CPU, torch on a GPU.

    One pass over the unlabeled pool is an epoch; each rank cycles its own seeded copy of
    the (small) labeled set. When no sample is left unlabeled (a one-bit budget that labeled
    the whole pool) there is no unlabeled loader (None): an epoch is then one pass over the
    labeled set (`train_epochs`).
    """
    tp = cfg.train
    labeled_views, unlabeled_views = loop_views(plan, tp.sup_view)
    device = None if tp.view_backend == "numba" else cfg.device  # numba: views made from the CPU buffer
    common = dict(num_workers=tp.num_workers, hflip=cfg.hflip, device=device, order="random",
                  view_backend=tp.view_backend)
    unlabeled = None if len(pool.unlabeled_ids) == 0 else make_loader(
        cfg.beton,
        batch_size=tp.batch_size * tp.unlabeled_ratio,
        views=unlabeled_views,
        indices=pool.unlabeled_ids,
        seed=cfg.seed,
        distributed=cfg.distributed,
        **common,
    )
    labeled = make_loader(
        cfg.beton,
        batch_size=tp.batch_size,
        views=labeled_views,
        indices=pool.labeled_ids,
        seed=cfg.seed + 7919 * (1 + dist.rank()),
        distributed=False,
        drop_last=False,
        **common,
    )
    return unlabeled, labeled


def labeled_start_epoch(epoch: int) -> int:
    """The labeled loader's first sub-epoch in `epoch` (each epoch cycles fresh sub-epochs)."""
    return epoch * 10_000


# --------------------------------------------------------------------------- one step


@dataclass(frozen=True)
class Precision:
    """The loop's arithmetic: float32, or autocast to `dtype` with a loss-scaling GradScaler."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.enabled else contextlib.nullcontext()

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler for this precision (a pass-through when autocast is off)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.enabled)


def loop_precision(train: TrainParams, device: torch.device) -> Precision:
    """float16 autocast + GradScaler on a GPU when `train.amp`; bfloat16 autocast + GradScaler
    on CPU when `train.cpu_amp` (the GPU's path, for tests); float32 otherwise."""
    if train.amp and device.type == "cuda":
        return Precision("cuda", torch.float16)
    if train.cpu_amp and device.type == "cpu":
        return Precision("cpu", torch.bfloat16)
    return Precision(device.type)


@dataclass(frozen=True)
class StepBatch:
    """One step's samples on the training device: nl labeled, then nu unlabeled (nu may be 0).

    xl1, xl2 [nl, 3, H, W] and xu1, xu2 [nu, 3, H, W]: view 1 (query encoder) and view 2
    (key encoder) of the labeled and the unlabeled samples; idl [nl], idu [nu]: their ids.
    xlc [nl, 3, H, W], xuc [nu, 3, H, W]: the classification views where they are not view 1
    (`loop_views`), else None.
    """

    xl1: torch.Tensor
    xl2: torch.Tensor
    idl: torch.Tensor
    xu1: torch.Tensor
    xu2: torch.Tensor
    idu: torch.Tensor
    xlc: torch.Tensor | None = None
    xuc: torch.Tensor | None = None

    @property
    def nl(self) -> int:
        return self.xl1.shape[0]

    @property
    def size(self) -> int:
        return self.xl1.shape[0] + self.xu1.shape[0]


def step_batch(lab: Batch, unl: Batch | None, device: torch.device) -> StepBatch:
    """A labeled and an unlabeled loader batch on `device`. `unl` None (this rank's shard
    is exhausted) gives an empty unlabeled part, which keeps collectives in step."""
    xl1, xl2, *xlc = (v.to(device, non_blocking=True) for v in lab.views)
    idl = lab.ids.to(device)
    if unl is None:
        return StepBatch(xl1, xl2, idl, xl1[:0], xl2[:0], idl[:0], *xlc[:1])
    xu1, xu2, *xuc = (v.to(device, non_blocking=True) for v in unl.views)
    return StepBatch(xl1, xl2, idl, xu1, xu2, unl.ids.to(device), xlc[0] if xlc else None, xuc[0] if xuc else None)


@dataclass(frozen=True)
class GroupForward:
    """One forward pass over named view groups, concatenated in order (one batch, so
    train-mode BatchNorm sees them together): logits [N, C] and embeddings [N, D] of all
    N rows, read back by group name; `all_extra` [N]: a third output of the net where it
    has one (the loss-prediction head's predicted loss, `QueryNet`), else None."""

    all_logits: torch.Tensor
    all_emb: torch.Tensor
    spans: dict[str, slice]
    all_extra: torch.Tensor | None = None

    def logits(self, group: str) -> torch.Tensor:
        return self.all_logits[self.spans[group]]

    def emb(self, group: str) -> torch.Tensor:
        return self.all_emb[self.spans[group]]

    def extra(self, group: str) -> torch.Tensor:
        return self.all_extra[self.spans[group]]

    def float(self) -> GroupForward:
        return dataclasses.replace(self, all_logits=self.all_logits.float(), all_emb=self.all_emb.float(),
                                   all_extra=None if self.all_extra is None else self.all_extra.float())


def forward_groups(net: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
                   groups: dict[str, torch.Tensor]) -> GroupForward:
    """`net` on the groups' tensors [n_g, 3, H, W] concatenated in the dict's order."""
    spans, start = {}, 0
    for name, x in groups.items():
        spans[name] = slice(start, start + x.shape[0])
        start += x.shape[0]
    out = net(torch.cat(list(groups.values())))
    return GroupForward(out[0], out[1], spans, out[2] if len(out) > 2 else None)


class QueryNet(torch.nn.Module):
    """The query encoder as a plan with dropout or a loss-prediction head trains it.

    forward: x [B, 3, H, W] → (logits [B, C], z [B, D]) as `Encoder.forward`, with dropout of
    rate `dropout` on the penultimate features before the classifier in training mode (the
    projection reads the features without it), and, with a `loss_head`, a third output: the
    predicted loss [B] of the features (detached from the backbone when `detach`). It owns no
    parameter of its own besides the head's, so checkpoints keep the encoder's keys; a plan
    with neither trains `Encoder` itself (`query_net`).
    """

    def __init__(self, encoder: torch.nn.Module, dropout: float = 0.0,
                 loss_head: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = float(dropout)
        self.loss_head = loss_head
        self.detach = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.encoder.features(x)
        hc = torch.nn.functional.dropout(h, self.dropout, self.training) if self.dropout > 0 else h
        logits = self.encoder.classifier(hc)
        z = torch.nn.functional.normalize(self.encoder.projector(h), dim=1)
        if self.loss_head is None:
            return logits, z
        return logits, z, self.loss_head(h.detach() if self.detach else h)


@dataclass
class AuxHead:
    """A module trained beside the query encoder with its own optimizer (LL4AL's loss-prediction
    head); its learning rate follows the loop's schedule. Saved by its owner, not in the checkpoint."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer


def query_net(encoder: torch.nn.Module, plan: LossPlan, aux: AuxHead | None = None) -> torch.nn.Module:
    """What the step's query forward runs: the encoder itself, or a `QueryNet` around it
    when the plan trains with dropout or a loss-prediction head."""
    if plan.dropout <= 0 and not plan.loss_prediction:
        return encoder
    if plan.loss_prediction and aux is None:
        raise ObcpError("a plan with loss_prediction needs its head (train_epochs(aux=AuxHead(...))).")
    return QueryNet(encoder, plan.dropout, aux.module if plan.loss_prediction else None)


@dataclass(frozen=True)
class StepLoss:
    """A step's loss and the forward results that the loop uses after the update."""

    total: torch.Tensor  # [] Σ plan.weight(term) · term: what is backpropagated
    terms: dict[str, torch.Tensor]  # [] each term that is on, unweighted (sup, c_u, c_l, c_n, neg, cons)
    logits_u: torch.Tensor  # [nu, C] query logits of the unlabeled view 1 (prediction history)
    ku: torch.Tensor  # [nu, D] keys of the unlabeled view 2 (enqueued)
    kl: torch.Tensor | None  # [nl, D] keys of the labeled view 2, when the bank or the one-bit teacher uses them


def step_loss(model: ObCP, qnet: torch.nn.Module, bank: LabelBank, batch: StepBatch, pool: PoolView,
              plan: LossPlan, cp: ContrastiveParams, precision: Precision,
              gen: torch.Generator | None = None) -> StepLoss:
    """Forward both encoders on `batch` and assemble the loss terms that `plan` turns on.

    `qnet`: the query encoder (DDP-wrapped under torchrun); the key encoder takes its EMA
    step first. `pool`: the loop's pool view with its tensors on the batch's device.
    `gen`: draws the label bank's positives and hard negatives (plans that use the bank).
    """
    b = batch
    if plan.labeled_only:
        return _labeled_only_loss(model, qnet, batch, pool, plan, precision)
    views = {"l1": b.xl1, "u1": b.xu1}  # view 1, then the classification views where there are any
    views.update({name: x for name, x in (("lc", b.xlc), ("uc", b.xuc)) if x is not None})
    both = plan.needs_bank or plan.denied_consistency  # the key encoder sees the labeled view 2 too
    with precision.autocast():
        fq = forward_groups(qnet, views)
    with torch.no_grad():
        model.momentum_update(plan.teacher_decay)
        with precision.autocast():  # labeled keys only for the bank terms and the teacher
            fk = forward_groups(model.keys, {"l2": b.xl2, "u2": b.xu2} if both else {"u2": b.xu2})
    if precision.enabled:
        fq, fk = fq.float(), fk.float()
    ql, qu = fq.emb("l1"), fq.emb("u1")
    kl, ku = (fk.emb("l2") if both else None), fk.emb("u2")
    logits_u = fq.logits("u1")
    cls_l = fq.logits("lc" if b.xlc is not None else "l1")  # what L_sup, L_neg see
    cls_u = fq.logits("uc") if b.xuc is not None else logits_u
    logits_k = fk.all_logits
    yl = pool.labels[b.idl]
    sup_mask = pool.in_sup[b.idl]
    den_u = pool.denied[b.idu]
    has_neg = den_u.any(dim=1)
    queue = model.queue.detach()  # enqueue runs after backward and step: no copy needed

    terms = {"sup": losses.sup_loss(cls_l[sup_mask], yl[sup_mask])}
    if plan.contrastive_unlabeled:
        if plan.contrastive_negative:  # samples with a denied class are in L_c.n instead
            terms["c_u"] = losses.contrastive_unlabeled(qu[~has_neg], ku[~has_neg], queue, cp.temperature)
        else:
            terms["c_u"] = losses.contrastive_unlabeled(qu, ku, queue, cp.temperature)
    if plan.contrastive_labeled:
        bmask = pool.in_bank[b.idl]
        pos, valid = bank.sample_positives(b.idl[bmask], yl[bmask], gen)
        terms["c_l"] = losses.contrastive_labeled(ql[bmask], kl[bmask], pos, valid, queue, cp.temperature)
    if plan.contrastive_negative:
        hard, hvalid = bank.sample_negatives(den_u[has_neg], cp.hard_negatives, gen)
        terms["c_n"] = losses.contrastive_negative(qu[has_neg], ku[has_neg], queue, hard, hvalid, cp.temperature)
    if plan.negative_loss:
        terms["neg"] = losses.negative_loss(cls_u, den_u)
    if plan.denied_consistency:  # Mean Teacher: over the whole batch, labeled samples included
        den = pool.denied[torch.cat([b.idl, b.idu])]
        terms["cons"] = losses.denied_consistency(torch.cat([cls_l, cls_u]), logits_k, den)
    if plan.loss_prediction:
        terms["lpl"] = _lpl_term(fq, "lc" if b.xlc is not None else "l1", cls_l, yl, sup_mask, plan)

    total = terms["sup"]
    for name, term in terms.items():
        if name != "sup":
            total = total + plan.weight(name) * term
    return StepLoss(total=total, terms=terms, logits_u=logits_u, ku=ku, kl=kl)


def loss_prediction_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """LL4AL's ranking loss (Yoo & Kweon 2019; their code's `LossPredLoss`) of predicted losses
    pred [B] against true losses target [B] (detached), on the pairs (i, B − 1 − i): mean over
    pairs of max(0, ξ − sign(l_i − l_j)·(l̂_i − l̂_j)). An odd batch drops its last sample; 0 (on
    the graph) for fewer than 2 samples."""
    b = (pred.shape[0] // 2) * 2
    if b == 0:
        return pred.float().sum() * 0.0
    pred, target = pred[:b].float(), target[:b].detach().float()
    dp = (pred - pred.flip(0))[: b // 2]
    dt = (target - target.flip(0))[: b // 2]
    one = 2 * torch.sign(torch.clamp(dt, min=0)) - 1  # +1 where l_i > l_j, else −1 (as in their code)
    return torch.clamp(margin - one * dp, min=0).sum() / dp.shape[0]


def _lpl_term(fq: GroupForward, group: str, cls_l: torch.Tensor, yl: torch.Tensor, sup_mask: torch.Tensor,
              plan: LossPlan) -> torch.Tensor:
    """LL4AL's loss-prediction loss on the labeled samples in L_sup: the head's predicted loss
    of `group` against their cross-entropy (`loss_prediction_loss`)."""
    target = torch.nn.functional.cross_entropy(cls_l[sup_mask].float(), yl[sup_mask].long(), reduction="none")
    return loss_prediction_loss(fq.extra(group)[sup_mask], target, plan.lpl_margin)


def _labeled_only_loss(model: ObCP, qnet: torch.nn.Module, batch: StepBatch, pool: PoolView, plan: LossPlan,
                       precision: Precision) -> StepLoss:
    """A conventional learner's step (`LossPlan.labeled_only`): the query encoder sees the
    labeled view 1 alone; L_sup (+ LL4AL's term where the plan has it). The key encoder keeps
    its EMA (it is never read) and nothing is enqueued; logits_u is empty."""
    b = batch
    with precision.autocast():
        fq = forward_groups(qnet, {"l1": b.xl1})
    with torch.no_grad():
        model.momentum_update(plan.teacher_decay)
    if precision.enabled:
        fq = fq.float()
    cls_l = fq.logits("l1")
    yl = pool.labels[b.idl]
    sup_mask = pool.in_sup[b.idl]
    terms = {"sup": losses.sup_loss(cls_l[sup_mask], yl[sup_mask])}
    if plan.loss_prediction:
        terms["lpl"] = _lpl_term(fq, "l1", cls_l, yl, sup_mask, plan)
    total = terms["sup"]
    for name, term in terms.items():
        if name != "sup":
            total = total + plan.weight(name) * term
    empty = fq.all_emb[:0].detach()
    return StepLoss(total=total, terms=terms, logits_u=fq.all_logits[:0].detach(), ku=empty, kl=None)


def bank_generator(cfg: LoopConfig, epoch: int, step: int) -> torch.Generator:
    """The label bank's sampler for one step: a function of (seed, epoch, step, rank)."""
    return torch.Generator(device=cfg.device).manual_seed(cfg.seed * 1_000_003 + epoch * 10_007 + step * 101
                                                          + dist.rank())


# --------------------------------------------------------------------------- the loop


def train_epochs(
    state: TrainState,
    pool: PoolView,
    plan: LossPlan,
    cfg: LoopConfig,
    *,
    until_epoch: int,
    history: Recorder | None = None,
    on_epoch_end: Callable[[TrainState, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = echo,
    progress: bool = True,
    aux: AuxHead | None = None,
) -> list[dict[str, float]]:
    """Train from `state.epoch` up to (excluding) `until_epoch`; returns one log row per epoch.

    `log` gets one line per epoch (losses, images/s) when verbose (`pipeline.loop.progress`:
    ``OBCP_VERBOSE=1`` or a stage's ``--verbose``); `progress` shows a per-step bar on a
    terminal (rank 0).

    `history` (rank 0 only matters; every rank passes whether to record) receives, in each
    epoch inside its window, the softmax of every unlabeled sample, gathered across ranks:
    from the training step's view-1 forward pass (`cfg.history_view` strong), or from an
    eval-mode pass at the end of the epoch (`record_pass`: clean or weak).

    `aux`: the head a plan with `loss_prediction` trains beside the encoder (its own optimizer,
    the same learning rate at every step). A plan with dropout or that head trains a `QueryNet`
    around the encoder; any other plan trains the encoder itself, exactly as before.
    """
    model, bank, optimizer, device = state.model, state.bank, state.optimizer, cfg.device
    unl_loader, lab_loader = loop_loaders(pool, plan, cfg)
    on_device = pool.to(device)
    if plan.needs_bank:
        _fill_bank(state, pool, cfg)
    precision = loop_precision(cfg.train, device)
    scaler = precision.scaler()

    rows: list[dict[str, float]] = []
    if unl_loader is not None:
        own_steps = steps = len(unl_loader)  # per epoch; the pool does not change within a call
    else:  # every sample is labeled: an epoch is a pass over the labeled set (the same on every rank)
        own_steps, steps = 0, -(-len(pool.labeled_ids) // cfg.train.batch_size)
    if cfg.distributed:
        steps = int(dist.all_reduce_max(torch.tensor(steps)).item())
    record_every = max(1, _RECORD_ROWS // (unl_loader.batch_size if unl_loader is not None else 1))
    # one stream per loader for the whole call, so that no epoch waits for its first batch
    unl_stream = unl_loader.epochs(state.epoch, until_epoch) if unl_loader is not None else _no_batches()
    lab_stream = lab_loader.cycles((labeled_start_epoch(e) for e in range(state.epoch, until_epoch)), steps)
    # stop the threads on any exit; the projector of a plan without q stays out of DDP's buckets
    with contextlib.closing(unl_stream), contextlib.closing(lab_stream), \
            frozen([] if plan.uses_projection else model.encoder_q.projector.parameters()):
        net = query_net(model.encoder_q, plan, aux)
        qnet = DistributedDataParallel(net) if cfg.distributed else net
        optimizers = [optimizer] + ([aux.optimizer] if aux is not None and plan.loss_prediction else [])
        while state.epoch < until_epoch:
            epoch = state.epoch
            epoch_plan = plan.at_epoch(epoch)
            if isinstance(net, QueryNet):
                net.detach = epoch_plan.lpl_detach
            record = history is not None and history.in_window(epoch)
            record_steps = record and cfg.history_view == "strong" and not plan.labeled_only
            pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (ids, softmax) not yet recorded
            sums: dict[str, torch.Tensor] = {}
            seen, t0 = 0, time.perf_counter()
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{until_epoch}", leave=False,
                       disable=not (progress and dist.is_main() and sys.stderr.isatty()))
            for step in bar:
                lr = learning_rate(cfg.train.lr, epoch + step / max(steps, 1), cfg.total_epochs)
                for opt in optimizers:
                    for group in opt.param_groups:
                        group["lr"] = lr
                batch = step_batch(next(lab_stream), next(unl_stream) if step < own_steps else None, device)
                gen = bank_generator(cfg, epoch, step) if plan.needs_bank else None
                out = step_loss(model, qnet, bank, batch, on_device, epoch_plan, cfg.contrastive, precision, gen)

                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                scaler.scale(out.total).backward()
                for opt in optimizers:
                    scaler.step(opt)
                scaler.update()

                with torch.no_grad():
                    model.enqueue(out.ku)
                    if plan.needs_bank:
                        keep = on_device.in_bank[batch.idl]
                        bank.update(batch.idl[keep], out.kl[keep])
                    if record_steps:
                        pending.append((batch.idu, torch.softmax(out.logits_u.detach(), dim=1)))
                        if len(pending) == record_every or step == steps - 1:  # same steps on every rank
                            _record(history, epoch, pending)
                    for name, value in {**out.terms, "total": out.total}.items():  # summed on the device
                        sums[name] = sums[name] + value.double() if name in sums else value.double()
                seen += batch.size

            state.epoch += 1
            dist.sync_buffers(model)  # BN statistics follow each rank's batches; keep rank 0's
            if record and not record_steps:
                record_pass(history, model, pool.unlabeled_ids, epoch, cfg)
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch, "lr": lr if steps else cfg.train.lr, "steps": steps, "seconds": seconds}
            row.update({f"loss_{k}": float(v) / max(steps, 1) for k, v in sums.items()})
            row["images_per_s"] = seen * (dist.world_size()) / seconds if seconds > 0 else 0.0
            rows.append(row)
            if log is not None and dist.is_main() and verbose_log():  # OBCP_VERBOSE=1 / --verbose
                parts = " ".join(f"{k[5:]}={v:.3f}" for k, v in row.items() if k.startswith("loss_"))
                log(f"epoch {epoch + 1}/{until_epoch} {parts} {row['images_per_s']:.0f} img/s")
            if on_epoch_end is not None:
                on_epoch_end(state, row)
    return rows


def _no_batches() -> Iterator[Batch]:
    """The unlabeled stream of a pool without unlabeled samples (closable, yields nothing)."""
    yield from ()


@contextlib.contextmanager
def frozen(params: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """Parameters that no loss term reaches, marked as needing no gradient for the block.

    Their gradient is None either way, so SGD skips them and one process computes the same
    numbers; what changes is DDP, which ignores parameters that need no gradient instead of
    waiting for theirs forever (the one-bit baseline never reads the query projection). That
    is free, where `find_unused_parameters=True` walks the autograd graph on every step.
    """
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


WALL_CLOCK: tuple[str, ...] = ("seconds", "images_per_s")  # log-row fields that differ between equal runs


def split_log(rows: list[dict[str, float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`train_epochs`' rows → (the log: every deterministic field, for log.csv inside a DVC
    output; the timings: epoch + the wall-clock fields, written outside DVC's outputs)."""
    frame = pd.DataFrame(rows)
    wall = [c for c in WALL_CLOCK if c in frame.columns]
    keys = [c for c in ("epoch",) if c in frame.columns]
    return frame.drop(columns=wall), frame[keys + wall]


def _record(history: Recorder | None, epoch: int, pending: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Gather the pending (ids [b], softmax [b, C]) of every rank and record them on rank 0."""
    ids = dist.all_gather_varlen(torch.cat([i for i, _ in pending]))
    probs = dist.all_gather_varlen(torch.cat([p for _, p in pending]))
    pending.clear()
    if dist.is_main() and history is not None:
        history.record(epoch, ids.cpu().numpy(), probs.cpu().numpy())


def record_pass(history: Recorder | None, model: ObCP, ids: np.ndarray, epoch: int,
                cfg: LoopConfig) -> None:
    """Record `epoch` of Eq. 7's history from an eval-mode, no-grad pass of the query encoder
    over the samples `ids` [n] on `cfg.history_view` (clean, or a weak view seeded by
    (seed, epoch, sample)), at the end of the epoch. Under DDP each rank predicts its
    shard, and the shards are gathered and recorded on rank 0 (every rank calls this)."""
    if len(ids) == 0:  # nothing left unlabeled (the same on every rank)
        return
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    batch_size = 512
    for batch_ids, probs in predict_batches(model, cfg.beton, ids, device=cfg.device, batch_size=batch_size,
                                            num_workers=cfg.train.num_workers, view=cfg.history_view,
                                            seed=cfg.seed, epoch=epoch, hflip=cfg.hflip,
                                            distributed=cfg.distributed):
        pending.append((torch.from_numpy(batch_ids), torch.from_numpy(probs)))
        if len(pending) * batch_size >= _RECORD_ROWS:  # every rank has the same number of batches
            _record(history, epoch, pending)
    if pending:
        _record(history, epoch, pending)


@torch.no_grad()
def _fill_bank(state: TrainState, pool: PoolView, cfg: LoopConfig) -> None:
    """Make the bank's members the pool's bank samples and give each a fresh key."""
    bank_ids = np.flatnonzero(pool.in_bank.numpy()).astype(np.int64)
    state.bank.set_members(torch.as_tensor(bank_ids), pool.labels[bank_ids])
    loader = make_loader(
        cfg.beton,
        batch_size=256,
        views=["clean"],
        indices=bank_ids,
        order="sequential",
        seed=cfg.seed,
        num_workers=cfg.train.num_workers,
        hflip=cfg.hflip,
    )
    for batch in loader:
        _, k = state.model.keys(batch.views[0].to(cfg.device))
        # every rank computes the same keys (same weights, same data), so no gather is needed
        state.bank.update(batch.ids.to(cfg.device), k.float(), gather=False)
