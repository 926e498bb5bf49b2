"""Process start-up: what a stage pays before its first line of work, in fresh interpreters.

Every `dvc repro` runs the `validate` stage, and `obcp repro` validates params.yaml once more
in its own process; every stage that trains imports torch, FFCV and numba. Seconds (wall
clock, median of `repeats` fresh interpreters, one torch thread) of

- ``python -c pass``: the interpreter alone;
- ``import torch``;
- ``python -m stages.validate`` in a project with the converted digits: the whole stage (every
  built-in strategy, method and oracle loaded, the budgets checked against the train pool,
  its two files written);
- ``import stages.<name>``, for each stage.

``validate_imports_torch`` says whether the validate stage's process imported torch; the
ratio is the validate stage over ``import torch`` (below 1: validating costs less than torch's
import alone).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
_VALIDATE = ("import atexit, runpy, sys; "
             "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules)); "
             "sys.argv = ['validate']; runpy.run_module('stages.validate', run_name='__main__')")


def _seconds(cmd: list[str], cwd: Path, env: dict[str, str], repeats: int) -> tuple[float, str]:
    """Median wall seconds of `repeats` runs of `cmd`, and the last run's stdout."""
    times, out = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        out = done.stdout
    return round(statistics.median(times), 3), out


def bench_startup(project: Path, repeats: int = 5) -> dict:
    """`project`: a folder with params.yaml and its dataset converted (`scratch_project`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    py = sys.executable
    python, _ = _seconds([py, "-c", "pass"], project, env, repeats)
    torch_import, _ = _seconds([py, "-c", "import torch"], project, env, repeats)
    validate, said = _seconds([py, "-c", _VALIDATE], project, env, repeats)
    stages = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")
    imports = {name: _seconds([py, "-c", f"import stages.{name}"], project, env, repeats)[0] for name in stages}
    return {"repeats": repeats, "python_seconds": python, "import_torch_seconds": torch_import,
            "validate_stage_seconds": validate, "validate_imports_torch": "torch imported: True" in said,
            "ratio": round(validate / torch_import, 2), "import_seconds": imports}
