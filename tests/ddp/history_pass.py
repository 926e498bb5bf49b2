"""Run under torchrun (CPU, gloo): one end-of-epoch history pass of a fresh model, sharded over ranks.

usage: torchrun ... tests/ddp/history_pass.py PROJECT OUT
Rank 0 writes OUT/clean.npz and OUT/weak.npz: the histories (epoch 0 only) of a clean and of
a weak pass over the unlabeled pool of seed 0.
"""
import dataclasses
import sys
from pathlib import Path

from pipeline.core import distributed as dist
from pipeline.core.context import open_run
from pipeline.method.history import PredictionHistory
from pipeline.pool.pools import read_pool
from pipeline.loop.runs import fresh_state, loop_config
from pipeline.loop.train import pool_view, record_pass


def main(project: Path, out: Path) -> None:
    ctx = open_run(project / "params.yaml", 0, root=project)
    state = fresh_state(ctx)
    pool = pool_view(read_pool(ctx.layout.initial_pool(0)), ctx.num_classes)
    for view in ("clean", "weak"):
        history = PredictionHistory(ctx.num_samples, ctx.num_classes, m=1, t=1, start_epoch=0, query_epoch=1)
        record_pass(history, state.model, pool.unlabeled_ids, 0, dataclasses.replace(loop_config(ctx),
                                                                                   history_view=view))
        if dist.is_main():
            history.save(out / f"{view}.npz")
    dist.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
