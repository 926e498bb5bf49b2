"""Inference: eval-mode passes of a trained model over samples of a beton, streamed.

`predict_batches` yields (ids, softmax) per batch; `pass_batches` also yields the
penultimate-layer embeddings when asked (what embedding-based strategies read);
`test_accuracy` scores a model on the test split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline.data.loaders import make_loader
from pipeline.method.moco import ObCP


@dataclass(frozen=True)
class PassBatch:
    """One batch of an inference pass: ids [b] int64, probs [b, C] float32 softmax, and the
    penultimate features [b, F] float32 when asked for (else None)."""

    ids: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray | None = None


@torch.no_grad()
def pass_batches(
    model: ObCP, beton: Path, ids: np.ndarray | None, *, device: torch.device, batch_size: int = 512,
    num_workers: int = 1, view: str = "clean", seed: int = 0, epoch: int = 0, hflip: bool = False,
    distributed: bool = False, teacher: bool = False, embeddings: bool = False,
) -> Iterator[PassBatch]:
    """Eval-mode pass of the query encoder (the key encoder with `teacher`) over `ids`
    (None: every sample), in id order, one :class:`PassBatch` per batch. Memory
    O(batch·(C + F)) whatever the number of samples.

    `view`: "clean", or "weak" (a shift, + flip with `hflip`, drawn from (seed, epoch,
    sample)). `distributed`: this rank's shard of `ids` only (every rank gets the same
    number of batches)."""
    loader = make_loader(
        beton, batch_size=batch_size, views=[view], indices=ids, order="sequential", seed=seed,
        num_workers=num_workers, hflip=hflip, distributed=distributed,
    )
    loader.set_epoch(epoch)
    encoder = model.encoder_k if teacher else model.encoder_q
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            x = batch.views[0].to(device)
            if embeddings:
                h = encoder.features(x)
                logits = encoder.classifier(h)
            else:
                h, (logits, _) = None, encoder(x)
            yield PassBatch(
                ids=batch.ids.numpy().copy(),
                probs=torch.softmax(logits.float(), dim=1).cpu().numpy(),
                embeddings=None if h is None else h.float().cpu().numpy(),
            )
    finally:
        model.train(was_training)


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

