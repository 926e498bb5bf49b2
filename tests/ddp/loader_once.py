"""Run under torchrun (CPU, gloo): one rank's view of a distributed FFCV loader.

Usage: ``torchrun --nproc_per_node 2 tests/ddp/loader_once.py BETON OUT_DIR BATCH_SIZE EPOCHS``.
Each rank iterates ``EPOCHS`` epochs of ``make_loader(distributed=True)`` over the odd
sample ids (a pool subset) and saves, per epoch, the ids of every batch it saw and a
per-sample checksum of its strong view to ``OUT_DIR/rank<r>.npz``;
``tests/test_loaders.py`` checks that every sample appears exactly once per epoch across
ranks, that ranks see the same number of batches, and that the augmentation of a sample
equals the single-process one.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pipeline.data import make_loader


def main(beton: Path, out_dir: Path, batch_size: int, epochs: int) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader = make_loader(beton, batch_size=batch_size, views=["strong"], indices=subset(beton), seed=7,
                         distributed=True, mean=(0.5,) * 3, std=(0.5,) * 3)
    saved: dict[str, np.ndarray] = {"len": np.array([len(loader)])}
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        ids, sums, sizes = [], [], []
        for batch in loader:
            ids.append(batch.ids.numpy())
            sums.append(batch.views[0].sum(dim=(1, 2, 3)).numpy())
            sizes.append(len(batch))
            # A collective per step: would deadlock if ranks had different batch counts.
            dist.all_reduce(torch.ones(1))
        saved[f"ids{epoch}"] = np.concatenate(ids)
        saved[f"sums{epoch}"] = np.concatenate(sums)
        saved[f"sizes{epoch}"] = np.array(sizes)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / f"rank{rank}.npz", **saved)
    dist.barrier()
    dist.destroy_process_group()


def subset(beton: Path) -> np.ndarray:
    from pipeline.data import check_beton

    return np.arange(1, check_beton(beton).num_samples, 2)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
