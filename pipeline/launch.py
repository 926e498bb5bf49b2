"""`python -m pipeline.launch NPROC MODULE [ARGS…]`: start a training stage.

NPROC > 1: ``torchrun --standalone --nproc_per_node NPROC -m MODULE ARGS…`` (DDP on one
machine). NPROC = 1: ``python -m MODULE ARGS…`` directly — the same single process that
torchrun would start, without torchrun's own ~2 s of start-up (it imports torch too).
The process is replaced (exec), so exit codes and signals pass straight through.
Multi-node runs call torchrun themselves (README, "Clusters").
"""
from __future__ import annotations

import os
import sys


def command(nproc: int, module: str, args: list[str]) -> list[str]:
    """The argv that runs `module` with `nproc` local processes."""
    if nproc == 1:
        return [sys.executable, "-m", module, *args]
    # torchrun's own module, with this interpreter: no dependence on PATH
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: python -m pipeline.launch NPROC MODULE [ARGS...]  (NPROC >= 1)", file=sys.stderr)
        raise SystemExit(2)
    cmd = command(int(argv[0]), argv[1], argv[2:])
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
