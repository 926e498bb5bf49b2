"""Epoch order and the split of an epoch into per-rank batches.

Contract of :func:`shard_batches` (``W`` ranks, batch size ``B``, ``n`` samples):

- ``drop_last=False``: every sample appears in exactly one batch of exactly one
  rank (no padding, no duplicates, unlike ``DistributedSampler``, which FFCV uses
  and which repeats samples to even out ranks);
- every rank gets the same number of batches (so a DDP loop never deadlocks), each
  batch holds between 1 and ``B`` samples;
- ``drop_last=True``: only full global steps of ``W * B`` samples are used; every
  batch holds exactly ``B`` samples and the ``n mod (W * B)`` last samples of the
  order are skipped.

Steps are consecutive chunks of ``W * B`` samples of the epoch order; rank ``r`` takes
the ``r``-th block of ``B`` in each. The last, partial chunk is split as evenly as
possible over the ranks; when it holds fewer than ``W`` samples, the last two chunks
are split together over ``2 W`` batches (each still ``<= B``). With ``W = 1`` this is
ordinary batching: full batches and one smaller last batch.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np

from pipeline.data.errors import LoaderConfigError
from pipeline.data.seeding import epoch_permutation

Order = Literal["random", "sequential"]
ORDERS: tuple[str, ...] = ("random", "sequential")


def epoch_order(indices: np.ndarray, *, order: str, seed: int, epoch: int) -> np.ndarray:
    """The sample ids of one epoch in visiting order: ``[n]`` int64.

    ``random``: a permutation of ``indices`` that depends only on (seed, epoch);
    ``sequential``: ``indices`` as given.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if order == "sequential":
        return indices.copy()
    if order == "random":
        return indices[epoch_permutation(len(indices), seed=seed, epoch=epoch)]
    raise LoaderConfigError(
        f"Unknown order {order!r}. The loader order must be one of {list(ORDERS)}; "
        "use 'random' for training and 'sequential' for evaluation."
    )


def num_batches(n: int, *, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Batches per rank per epoch (identical on every rank)."""
    _check_sizes(n, batch_size, world_size, drop_last)
    step = batch_size * world_size
    return n // step if drop_last else math.ceil(n / step)


def shard_batches(
    order: np.ndarray, *, batch_size: int, world_size: int, rank: int, drop_last: bool
) -> list[np.ndarray]:
    """Split one epoch's ``order`` ``[n]`` into the batches of ``rank``: list of ``[b]`` int64."""
    order = np.asarray(order, dtype=np.int64)
    n = len(order)
    if not 0 <= rank < world_size:
        raise LoaderConfigError(
            f"rank {rank} is outside [0, {world_size}). Pass the rank of this process "
            "(torch.distributed.get_rank()) and the world size it belongs to."
        )
    steps = num_batches(n, batch_size=batch_size, world_size=world_size, drop_last=drop_last)
    step = batch_size * world_size
    if drop_last:
        return [order[s * step + rank * batch_size: s * step + (rank + 1) * batch_size] for s in range(steps)]
    tail = n - (steps - 1) * step  # 1 <= tail <= step
    full_steps = steps - 1 if tail >= world_size else steps - 2
    batches = [
        order[s * step + rank * batch_size: s * step + (rank + 1) * batch_size] for s in range(full_steps)
    ]
    rest = order[full_steps * step:]
    parts = np.array_split(rest, world_size * (steps - full_steps))
    batches.extend(parts[k * world_size + rank] for k in range(steps - full_steps))
    return batches


def _check_sizes(n: int, batch_size: int, world_size: int, drop_last: bool) -> None:
    if batch_size < 1:
        raise LoaderConfigError(f"batch_size must be >= 1, got {batch_size}.")
    if world_size < 1:
        raise LoaderConfigError(f"world_size must be >= 1, got {world_size}.")
    if n < 0:
        raise LoaderConfigError(f"the number of samples must be >= 0, got {n}.")
    if drop_last:
        return
    if n < world_size:
        raise LoaderConfigError(
            f"Cannot give each of {world_size} ranks at least one of {n} samples. "
            "Use fewer processes, more samples, or drop_last=True."
        )
    tail = n - (math.ceil(n / (batch_size * world_size)) - 1) * batch_size * world_size
    if tail < world_size and batch_size == 1:
        raise LoaderConfigError(
            f"With batch_size=1, {n} samples cannot be split into the same number of "
            f"batches on each of {world_size} ranks without repeating a sample. "
            "Use batch_size >= 2 or drop_last=True."
        )
