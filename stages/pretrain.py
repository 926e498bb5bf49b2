"""DVC stage `pretrain@seed` (via pipeline.core.launch; torchrun when ddp.nproc > 1): stage 1 → data/runs/seed<S>/stage1/."""
from pathlib import Path

import typer

from pipeline.core import distributed as dist, io
from pipeline.core.context import open_run
from pipeline.core.errors import reported
from pipeline.loop.pretrain import run_stage1


def main(seed: int = typer.Option(...), params: Path = Path("params.yaml")) -> None:
    with reported():
        ctx = open_run(params, seed, names=False)
        if dist.is_main():  # the only rank that writes
            io.remove_stale_temps(ctx.layout.stage1_dir(seed))
        run_stage1(ctx, ctx.layout.stage1_dir(seed))
        dist.cleanup()


if __name__ == "__main__":
    typer.run(main)
