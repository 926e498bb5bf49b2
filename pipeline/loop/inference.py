"""Inference: eval-mode passes of a trained model over samples of a beton, streamed.

`predict_batches` yields (ids, softmax) per batch; `pass_batches` also yields the
penultimate-layer embeddings when asked (what embedding-based strategies read);
`test_accuracy` scores a model on the test split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from pipeline.data.loaders import make_loader
from pipeline.method.moco import ObCP


@dataclass(frozen=True)
class PassBatch:
    """One batch of an inference pass: ids [b] int64, probs [b, C] float32 softmax, and the
    penultimate features [b, F] float32 when asked for (else None); where asked for, too:
    mc_probs [T, b, C] (MC dropout), ensemble_probs [E, b, C] (the model, then its ensemble
    members) and predicted_loss [b] (LL4AL's head)."""

    ids: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray | None = None
    mc_probs: np.ndarray | None = None
    ensemble_probs: np.ndarray | None = None
    predicted_loss: np.ndarray | None = None


@dataclass(frozen=True)
class McDropout:
    """T dropout samples of rate p on the penultimate features before the classifier (eval-mode
    features, so BatchNorm uses its running statistics). The masks are a hash of (seed, t,
    sample_id, feature): a sample's T predictions do not depend on its batch or rank."""

    samples: int
    rate: float
    seed: int = 0


_M32 = 0xFFFFFFFF


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """(h · c) mod 2^32 for int64 h in [0, 2^32), without overflowing int64."""
    lo, hi = c & 0xFFFF, c >> 16
    return (h * lo + (((h * hi) & 0xFFFF) << 16)) & _M32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finalizer, elementwise on int64 values in [0, 2^32)."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def dropout_keep(ids: torch.Tensor, width: int, rate: float, seed: int, t: int) -> torch.Tensor:
    """[b, width] float scale of MC-dropout sample t: 0 (dropped) or 1 / (1 − rate), a pure
    function of (seed, t, sample id, feature index)."""
    x = ids.to(torch.int64)[:, None] * width + torch.arange(width, device=ids.device, dtype=torch.int64)[None, :]
    key = _fmix32(torch.tensor((seed * 1_000_003 + t * 7919 + 12345) & _M32, dtype=torch.int64, device=ids.device))
    h = _fmix32((x & _M32) ^ key)
    h = _fmix32(h ^ ((x >> 32) & _M32) ^ _fmix32(key ^ 0x5BD1E995))
    u = h.to(torch.float64) / float(1 << 32)
    return (u >= rate).to(torch.float32) / (1.0 - rate)


@torch.no_grad()
def pass_batches(
    model: ObCP, beton: Path, ids: np.ndarray | None, *, device: torch.device, batch_size: int = 512,
    num_workers: int = 1, view: str = "clean", seed: int = 0, epoch: int = 0, hflip: bool = False,
    distributed: bool = False, teacher: bool = False, embeddings: bool = False,
    mc: McDropout | None = None, members: Sequence[ObCP] = (), loss_head: torch.nn.Module | None = None,
) -> Iterator[PassBatch]:
    """Eval-mode pass of the query encoder (the key encoder with `teacher`) over `ids`
    (None: every sample), in id order, one :class:`PassBatch` per batch. Memory
    O(batch·(C + F)) whatever the number of samples.

    `view`: "clean", or "weak" (a shift, + flip with `hflip`, drawn from (seed, epoch,
    sample)). `distributed`: this rank's shard of `ids` only (every rank gets the same
    number of batches). `mc`: also T MC-dropout samples (`PassBatch.mc_probs`); `members`:
    also the softmax of these models (`ensemble_probs`, after the model's own); `loss_head`:
    also its predicted loss of the features (`predicted_loss`)."""
    loader = make_loader(
        beton, batch_size=batch_size, views=[view], indices=ids, order="sequential", seed=seed,
        num_workers=num_workers, hflip=hflip, distributed=distributed,
    )
    loader.set_epoch(epoch)
    encoder = model.encoder_k if teacher else model.encoder_q
    others = [m for m in (*members, loss_head) if m is not None]
    was_training = [model.training, *(m.training for m in others)]
    model.eval()
    for m in others:
        m.eval()
    features = embeddings or mc is not None or loss_head is not None
    try:
        for batch in loader:
            x = batch.views[0].to(device)
            if features:
                h = encoder.features(x)
                logits = encoder.classifier(h)
            else:
                h, (logits, _) = None, encoder(x)
            probs = torch.softmax(logits.float(), dim=1)
            extra: dict[str, np.ndarray] = {}
            if mc is not None:
                ids_t = batch.ids.to(h.device)
                extra["mc_probs"] = torch.stack([
                    torch.softmax(encoder.classifier(h * dropout_keep(ids_t, h.shape[1], mc.rate, mc.seed, t)
                                                     .to(h.dtype)).float(), dim=1)
                    for t in range(mc.samples)]).cpu().numpy()
            if members:
                extra["ensemble_probs"] = torch.stack(
                    [probs] + [torch.softmax((m.encoder_k if teacher else m.encoder_q)(x)[0].float(), dim=1)
                               for m in members]).cpu().numpy()
            if loss_head is not None:
                extra["predicted_loss"] = loss_head(h).float().reshape(-1).cpu().numpy()
            yield PassBatch(
                ids=batch.ids.numpy().copy(),
                probs=probs.cpu().numpy(),
                embeddings=h.float().cpu().numpy() if embeddings else None,
                **extra,
            )
    finally:
        model.train(was_training[0])
        for m, mode in zip(others, was_training[1:]):
            m.train(mode)


def predict_batches(
    model: ObCP, beton: Path, ids: np.ndarray | None, *, device: torch.device, batch_size: int = 512,
    num_workers: int = 1, view: str = "clean", seed: int = 0, epoch: int = 0, hflip: bool = False,
    distributed: bool = False, teacher: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids [b], probs [b, C] float32) per batch of :func:`pass_batches`."""
    for b in pass_batches(model, beton, ids, device=device, batch_size=batch_size, num_workers=num_workers,
                          view=view, seed=seed, epoch=epoch, hflip=hflip, distributed=distributed,
                          teacher=teacher):
        yield b.ids, b.probs


def predict(
    model: ObCP, beton: Path, ids: np.ndarray | None, *, device: torch.device, batch_size: int = 512,
    num_workers: int = 1, teacher: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """All of `predict_batches` (clean view) at once: (ids [n], probs [n, C]) in id order."""
    parts = list(predict_batches(model, beton, ids, device=device, batch_size=batch_size, num_workers=num_workers,
                                 teacher=teacher))
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    all_ids = np.concatenate([i for i, _ in parts])
    probs = np.concatenate([p for _, p in parts])
    order = np.argsort(all_ids, kind="stable")
    return all_ids[order], probs[order]


def test_accuracy(model: ObCP, beton: Path, labels: np.ndarray, *, device: torch.device,
                  num_workers: int = 1) -> dict[str, float]:
    """{"top1": …[, "top5": …]} in [0, 1] of `model` on every sample of `beton` (labels [n] by id)."""
    _, probs = predict(model, beton, None, device=device, num_workers=num_workers)
    out = {"top1": accuracy(probs, labels, 1)}
    if probs.shape[1] > 10:
        out["top5"] = accuracy(probs, labels, 5)
    return out


def accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Top-k accuracy in [0, 1] of probs [n, C] against labels [n]."""
    if len(labels) == 0:
        return float("nan")
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())

