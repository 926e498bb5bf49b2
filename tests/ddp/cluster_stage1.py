"""Stage 1 of a test project on one node of a multi-node torchrun job; dump what each rank ends with.

usage: torchrun --nnodes N --rdzv_backend c10d --rdzv_endpoint HOST:PORT ... cluster_stage1.py PROJECT OUT
Rank 0 writes the stage-1 artifacts to OUT/stage1/ (as `stages.pretrain` does); every rank
writes OUT/rank<r>.pt = {"weights": {name: tensor}, "rank": r, "world_size": W,
"node": GROUP_RANK (torchrun's node index), "master": MASTER_ADDR:MASTER_PORT}.
"""
import os
import sys
from pathlib import Path

import torch

from pipeline.core import distributed as dist
from pipeline.core.context import open_run
from pipeline.loop.pretrain import run_stage1


def main(project: Path, out: Path) -> None:
    ctx = open_run(project / "params.yaml", 0, root=project)
    state = run_stage1(ctx, out / "stage1")
    torch.save(
        {
            "weights": {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()},
            "rank": dist.rank(),
            "world_size": dist.world_size(),
            "node": int(os.environ["GROUP_RANK"]),
            "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        },
        out / f"rank{dist.rank()}.pt",
    )
    dist.barrier()
    dist.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
