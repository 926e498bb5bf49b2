"""Every arm of a test project under torchrun, as `stages.active` runs them, and what each rank ends with.

usage: torchrun ... tests/ddp/arms_run.py PROJECT OUT
Runs `stages.active.main` in PROJECT (every arm of its params.yaml in turn, seed 0, `--workers 2`
asked for) and writes OUT/rank<r>.json = {"states": [{"model": sha256, "bank": sha256} after each
retrain, in run order], "writes": [every file in PROJECT this rank renamed into place (the atomic writes)]}.
The real loop runs; the two spies only look.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from pipeline.loop import steps
from pipeline.core import distributed as dist


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(project: Path, out: Path) -> None:
    states: list[dict[str, str]] = []
    writes: list[str] = []
    train_epochs, replace = steps.train_epochs, os.replace

    def spy_train(state, *args, **kwargs):
        rows = train_epochs(state, *args, **kwargs)
        states.append({"model": digest(state.model.state_dict()), "bank": digest(state.bank.state_dict())})
        return rows

    def spy_replace(src, dst, *args, **kwargs):
        target = Path(dst).resolve()
        if target.is_relative_to(project.resolve()):  # not numba's cache
            writes.append(str(target.relative_to(project.resolve())))
        return replace(src, dst, *args, **kwargs)

    steps.train_epochs, os.replace = spy_train, spy_replace
    os.chdir(project)
    from stages.active import main as stage

    rank = int(os.environ["RANK"])
    try:
        stage(seed=0, arm=None, workers=2, params=Path("params.yaml"))
    finally:
        os.replace = replace
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{rank}.json").write_text(json.dumps({"states": states, "writes": writes}))
    assert not dist.is_dist()  # the stage cleaned up its process group


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
