"""Stage-1 training throughput with 2 DDP processes ÷ 1 process (gloo on CPU).

Each run is a real `torchrun` of the `pretrain` stage on the scratch project; images/s
is the mean of the epochs after the first (which compiles FFCV's pipelines), summed
over ranks by the loop's own log.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _throughput(project: Path, nproc: int) -> float:
    timings = project / "data/runs/seed0/timings/stage1.csv"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "stages.pretrain", "--seed", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    subprocess.run(cmd, cwd=project, env=env, check=True, capture_output=True, text=True)
    return float(pd.read_csv(timings)["images_per_s"].iloc[1:].mean())


def bench_ddp(project: Path) -> dict:
    one = _throughput(project, 1)
    two = _throughput(project, 2)
    return {"one_process_images_per_s": round(one, 1), "two_process_images_per_s": round(two, 1),
            "ratio": round(two / one, 3), "cores": os.cpu_count()}
