"""DVC stage `pretrain@seed` (via pipeline.core.launch; torchrun when ddp.nproc > 1): stage 1 → data/runs/seed<S>/stage1/."""
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core import distributed as dist, io
from pipeline.core.context import open_run
from pipeline.core.errors import reported
from pipeline.loop import progress
from pipeline.loop.pretrain import run_stage1


def main(
    seed: int = typer.Option(...),
    params: Path = Path("params.yaml"),
    verbose: Annotated[bool, typer.Option("--verbose", help="One line per epoch (losses, images/s), "
                                                            "or OBCP_VERBOSE=1.")] = False,
) -> None:
    with reported():
        progress.set_verbose(verbose)
        ctx = open_run(params, seed, names=False)
        out = ctx.layout.stage1_dir(seed)
        if dist.is_main():  # the only rank that writes
            io.remove_stale_temps(out)
        t0 = time.perf_counter()
        run_stage1(ctx, out)
        if dist.is_main():
            top1 = json.loads((out / "test.json").read_text()).get("top1")
            measured = "not measured (no labeled test set)" if top1 is None else f"{100 * top1:.1f} %"
            print(f"pretrain seed {seed}: {ctx.params.train.stage1_epochs} epochs on I^S in "
                  f"{progress.duration(time.perf_counter() - t0)}, test top-1 {measured} → {out}", flush=True)
        dist.cleanup()


if __name__ == "__main__":
    typer.run(main)
