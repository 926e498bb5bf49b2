"""DVC stage `active@seed` (via pipeline.core.launch; torchrun when ddp.nproc > 1): every cycle of every arm of one seed."""
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from pipeline.core import distributed as dist, io
from pipeline.loop import progress
from pipeline.loop.arms import default_workers, prune_arms, run_arms
from pipeline.core.context import open_run
from pipeline.core.errors import reported


def main(
    seed: int = typer.Option(...),
    arm: Optional[List[str]] = typer.Option(None, help="Only this arm (repeatable); default: every arm in params."),
    workers: Optional[int] = typer.Option(None, min=1, help="Arms at once on CPU; default: CPUs / train.cpu_threads."),
    params: Path = Path("params.yaml"),
    verbose: Annotated[bool, typer.Option("--verbose", help="Per-epoch losses and every step's message, not only "
                                                            "one line per arm and cycle (or OBCP_VERBOSE=1).")] = False,
) -> None:
    with reported():
        progress.set_verbose(verbose)
        ctx = open_run(params, seed)
        arms = list(arm) if arm else list(ctx.params.arms)
        if dist.is_main():  # the only rank that writes
            io.remove_stale_temps(ctx.layout.arms_dir(seed), ctx.layout.ledger_dir(seed))
        if not arm and dist.is_main():
            for name in prune_arms(ctx):
                print(f"removed arm {name!r} (no longer in params.yaml)")
        run_arms(ctx, arms, workers=workers or default_workers(ctx, len(arms)))
        dist.cleanup()


if __name__ == "__main__":
    typer.run(main)
