"""Run stage 1 of a test project under torchrun and dump what each rank ends with.

usage: torchrun ... tests/ddp/stage1_run.py PROJECT OUT
Writes OUT/rank<r>.pt = {"weights": {name: tensor}, "count_p": [N] (rank 0 only),
"unlabeled": ids, "final_loss": float}.
"""
import sys
from pathlib import Path

import torch

from pipeline.core import distributed as dist
from pipeline.core.context import open_run
from pipeline.pool.pools import read_pool
from pipeline.loop.pretrain import run_stage1


def main(project: Path, out: Path) -> None:
    ctx = open_run(project / "params.yaml", 0, root=project)
    state = run_stage1(ctx, out / "stage1")
    pool = read_pool(ctx.layout.initial_pool(0))
    result = {
        "weights": {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()},
        "unlabeled": pool.loc[pool["status"] == "unlabeled", "sample_id"].to_numpy(),
    }
    if dist.is_main():
        import pandas as pd
        from pipeline.method.history import PredictionHistory

        history = PredictionHistory.load(out / "stage1" / "history.npz")
        result["count_p"] = history.count_p
        result["final_loss"] = float(pd.read_csv(out / "stage1" / "log.csv")["loss_total"].iloc[-1])
    torch.save(result, out / f"rank{dist.rank()}.pt")
    dist.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
