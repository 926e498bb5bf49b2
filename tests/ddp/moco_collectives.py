"""Run under torchrun (CPU, gloo): collectives of ``pipeline.core.distributed`` and the ObCP state.

Usage: ``torchrun --nproc_per_node 2 tests/ddp/moco_collectives.py OUT_DIR``.
Each rank feeds rank-dependent, uneven batches (some empty) to ``all_gather_varlen``,
``all_reduce_max``, ``ObCP.enqueue`` and ``LabelBank.update``, and saves its inputs and the
resulting state to ``OUT_DIR/rank<r>.pt``; ``tests/test_moco.py`` checks that every rank
ends identical and equal to a single-process reference fed the rank-ordered concatenation.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.core import distributed as dist
from pipeline.core.io import save_torch
from pipeline.method.models import build_encoder
from pipeline.method.moco import LabelBank, ObCP

# Per rank: rows given to all_gather_varlen, keys given to enqueue, ids given to bank.update.
GATHER_SIZES = {0: [3, 0, 2], 1: [0, 0, 5]}
ENQUEUE_SIZES = {0: [3, 0, 7, 1], 1: [2, 4, 6, 0]}
BANK_IDS = {0: [[0, 1, 2], []], 1: [[2, 8, 9], [4, 4]]}
QUEUE_SIZE, DIM, NUM_SAMPLES, NUM_CLASSES = 5, 4, 10, 3
MEMBERS = ([0, 2, 4, 6, 8], [0, 1, 0, 2, 1])


def main(out_dir: Path) -> None:
    dist.setup("gloo")
    r, w = dist.rank(), dist.world_size()
    assert w == 2, f"run with --nproc_per_node 2, got world size {w}"
    result: dict[str, object] = {"rank": r, "world_size": w, "is_main": dist.is_main()}

    gather_in, gather_out = [], []
    for step, n in enumerate(GATHER_SIZES[r]):
        x = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2) + 100 * r + 10 * step
        gather_in.append(x)
        gather_out.append(dist.all_gather_varlen(x))
    flags = torch.tensor([True, False, True][: r + 1])
    result.update(gather_in=gather_in, gather_out=gather_out, flags_in=flags, flags_out=dist.all_gather_varlen(flags))
    result["max"] = dist.all_reduce_max(torch.tensor([r, 10 - r]))
    result["broadcast"] = dist.broadcast_object({"from": r})

    torch.manual_seed(0)
    model = ObCP(
        build_encoder("smallcnn", NUM_CLASSES, width=2, proj_dim=DIM),
        queue_size=QUEUE_SIZE,
        generator=torch.Generator().manual_seed(0),
    )
    result["queue_init"] = model.queue.clone()
    enqueue_in, queues, ptrs = [], [], []
    for step, n in enumerate(ENQUEUE_SIZES[r]):
        g = torch.Generator().manual_seed(1000 * r + step)
        k = F.normalize(torch.randn(n, DIM, generator=g), dim=1)
        enqueue_in.append(k)
        model.enqueue(k)
        queues.append(model.queue.clone())
        ptrs.append(int(model.queue_ptr))
    result.update(enqueue_in=enqueue_in, queues=queues, ptrs=ptrs)

    bank = LabelBank(NUM_SAMPLES, DIM, NUM_CLASSES)
    bank.set_members(torch.tensor(MEMBERS[0]), torch.tensor(MEMBERS[1]))
    bank_in = []
    for step, ids in enumerate(BANK_IDS[r]):
        g = torch.Generator().manual_seed(5000 + 100 * r + step)
        keys = F.normalize(torch.randn(len(ids), DIM, generator=g), dim=1)
        bank_in.append((torch.tensor(ids, dtype=torch.long), keys))
        bank.update(torch.tensor(ids, dtype=torch.long), keys)
    result.update(bank_in=bank_in, bank_keys=bank.keys.clone(), bank_has_key=bank.has_key.clone())

    dist.barrier()
    save_torch(out_dir / f"rank{r}.pt", result)
    dist.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
