"""DVC stage `active@arm-seed` (under torchrun): every query cycle of one arm and seed."""
from pathlib import Path

import typer

from pipeline import distributed as dist
from pipeline.active import run_active
from pipeline.context import open_run
from pipeline.errors import reported


def main(arm: str = typer.Option(...), seed: int = typer.Option(...), params: Path = Path("params.yaml")) -> None:
    with reported():
        ctx = open_run(params, seed)
        run_active(ctx, arm, log=print if dist.is_main() else (lambda _: None))
        dist.cleanup()


if __name__ == "__main__":
    typer.run(main)
