"""Resume after SIGKILL: killed at 7 points, a rerun ends identical to an uninterrupted run.

Kill points:
1. `convert`, between writing train.beton and renaming test.beton into place;
2. `pretrain` (stage 1), after its first epoch line (killed from outside, as an operator would);
3.–6. each step of cycle 1 run alone (`obcp score|oracle|update|retrain --cycle 1`): score
   and oracle with their output's temp file written but not renamed, update with the pool
   written and the ledger not, retrain in the middle of its epoch (after 5 SGD steps);
7. the whole `active` stage inside cycle 2's update (cycle 1 done, its ledger rows in place).

The in-process kills use `os.kill(os.getpid(), SIGKILL)` from a hook (`DRIVER`): the same
uncatchable signal (no `finally`, no atexit, no flush) at a point that is exactly
reproducible, instead of a sleep that may land before or after the interesting moment.
After each kill the test checks that the run really stopped short (exit -9, no manifest),
then reruns the whole stage and compares with the uninterrupted baseline:
the ledger (byte for byte), every cycle's pool, and the final weights, and that no
temporary file of the killed write is left (each stage removes them when it starts).

Plus determinism: two independent uninterrupted runs with the same seed and process count
give bitwise-identical ledgers (deterministic columns), pools, checkpoints and histories.

The nine scenarios are independent chains of processes; a module fixture runs them two at
a time (the machine's 2 cores), and each test checks one chain.
"""
from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import ACTIVE, env, make_project, project_from, run
from pipeline.pool import ledger
ARM = Path("data/runs/seed0/arms/obcp")
LEDGER = Path("reports/ledger/seed0/obcp.parquet")
STEP = ["--cycle", "1", "--arm", "obcp", "--seed", "0"]

# usage: python -c DRIVER KILL_AT MODULE [ARGS ...] [-- MODULE ARGS ...]
# KILL_AT: `replace:<file name>:<n>` kills at the n-th rename onto a file of that name
# (pipeline.core.io's atomic writes end with os.replace), `sgd:<n>` before the n-th SGD step.
# Each `--`-separated command runs in turn in this one process (`pipeline.cli` commands via
# the typer app, anything else as `python -m MODULE`).
DRIVER = r"""
import os, runpy, signal, sys
from pathlib import Path

def die():
    os.kill(os.getpid(), signal.SIGKILL)

kind, *arg = sys.argv[1].split(":")
if kind == "replace":
    name, nth, seen, real = arg[0], int(arg[1]), [0], os.replace
    def replace(src, dst, *a, **k):
        if Path(dst).name == name:
            seen[0] += 1
            if seen[0] == nth:
                die()
        return real(src, dst, *a, **k)
    os.replace = replace
elif kind == "sgd":
    import torch
    nth, seen, real_step = int(arg[0]), [0], torch.optim.SGD.step
    def step(self, *a, **k):
        seen[0] += 1
        if seen[0] == nth:
            die()
        return real_step(self, *a, **k)
    torch.optim.SGD.step = step

commands, current = [], []
for word in sys.argv[2:]:
    if word == "--":
        commands.append(current)
        current = []
    else:
        current.append(word)
commands.append(current)
for module, *args in commands:
    if module == "pipeline.cli":
        from pipeline.cli import app
        app(args, standalone_mode=False)
    else:
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def driven(kill_at: str, commands: list[list[str]], cwd: Path) -> subprocess.CompletedProcess:
    """Run `commands` in one process that SIGKILLs itself at `kill_at`; it must die there."""
    argv = [w for i, c in enumerate(commands) for w in ([] if i == 0 else ["--"]) + c]
    out = run([sys.executable, "-c", DRIVER, kill_at, *argv], cwd, check=False, timeout=300)
    assert out.returncode == -signal.SIGKILL, f"not killed at {kill_at} ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()}, **{f"bank.{k}": v for k, v in ckpt["bank"].items()}}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ between {a} and {b}: {different[:5]}"


def final_state(project: Path) -> dict:
    """What an uninterrupted run and a resumed one must agree on."""
    led = ledger.read(project / LEDGER)
    return {
        "ledger": led[ledger.deterministic_columns()],
        "pools": {k: pd.read_parquet(project / ARM / f"cycle_{k:03d}/pool.parquet") for k in (1, 2)},
        "queries": {k: pd.read_parquet(project / ARM / f"cycle_{k:03d}/queries.parquet") for k in (1, 2)},
    }


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = final_state(a), final_state(b)
    pd.testing.assert_frame_equal(sa["ledger"], sb["ledger"])
    assert len(sa["ledger"]) == 60
    for k in (1, 2):
        pd.testing.assert_frame_equal(sa["pools"][k], sb["pools"][k])
        pd.testing.assert_frame_equal(sa["queries"][k], sb["queries"][k])
    assert_same_weights(a / ARM / "cycle_002/checkpoint.pt", b / ARM / "cycle_002/checkpoint.pt")
    # the simulated oracle's ledger has no wall-clock field: the very same bytes
    assert sha256(a / LEDGER) == sha256(b / LEDGER), "the ledgers differ"
    for folder in (ARM, LEDGER.parent):  # the active stage removed the killed write's temporary file
        assert not list((b / folder).rglob(".*.tmp")), f"a temp file of the killed run survived in {folder}"


# --------------------------------------------------------------------------- the scenarios
# Each scenario is a chain of processes in its own project; the chains are independent, so
# they run two at a time (2 cores) in one module fixture and each test checks its chain.

SCORE = ["pipeline.cli", "score", *STEP]
ORACLE = ["pipeline.cli", "oracle", *STEP]
UPDATE = ["pipeline.cli", "update", *STEP]
RETRAIN = ["pipeline.cli", "retrain", *STEP]

STEP_KILLS = {
    # step killed: (kill point, the commands run in that one process, what must not exist yet)
    "score": ("replace:scores.parquet:1", [SCORE], "scores.parquet"),
    "oracle": ("replace:queries.parquet:1", [SCORE, ORACLE], "queries.parquet"),
    "update": ("replace:obcp.parquet:1", [SCORE, ORACLE, UPDATE], "manifest.json"),
    "retrain": ("sgd:5", [SCORE, ORACLE, UPDATE, RETRAIN], "checkpoint.pt"),
}


def uninterrupted(stage1_data: Path, dest: Path) -> Path:
    project = project_from(stage1_data, dest)
    run(ACTIVE, project)
    return project


def killed_convert(dest: Path) -> Path:
    project = make_project(dest, git=False)
    driven("replace:test.beton:1", [["stages.convert"]], project)
    data = project / "data/digits"
    # atomic writes: test.beton is absent, not half-written; only its temp sibling exists
    assert (data / "train.beton").exists() and not (data / "test.beton").exists()
    assert len(list(data.glob(".test.beton.*.tmp"))) == 1
    out = run([sys.executable, "-m", "stages.convert"], project)
    assert "the temporary file of an interrupted write" in out.stdout
    assert not list(data.glob(".*.tmp")), "the killed write's temporary file survived the rerun"
    return project


def killed_pretrain(stage1_data: Path, dest: Path) -> Path:
    project = project_from(stage1_data, dest)
    stage1 = project / "data/runs/seed0/stage1"
    stage1.unlink()  # this project trains its own stage 1
    e = {**env(), "PYTHONUNBUFFERED": "1", "OBCP_VERBOSE": "1"}  # the epoch lines
    proc = subprocess.Popen([sys.executable, "-m", "stages.pretrain", "--seed", "0"], cwd=project, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    try:
        deadline, line = time.time() + 240, ""
        while time.time() < deadline and not line.startswith("epoch 1/"):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert line.startswith("epoch 1/"), "stage 1 never printed its first epoch"
    finally:
        proc.send_signal(signal.SIGKILL)  # during epoch 2 of 2
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (stage1 / "checkpoint.pt").exists(), "stage 1 finished before the kill"
    run([sys.executable, "-m", "stages.pretrain", "--seed", "0"], project)
    return project


def killed_step(stage1_data: Path, dest: Path, step: str) -> Path:
    kill_at, commands, absent = STEP_KILLS[step]
    project = project_from(stage1_data, dest)
    driven(kill_at, commands, project)
    cycle = project / ARM / "cycle_001"
    assert cycle.is_dir() and not (cycle / absent).exists()
    if step == "update":
        assert (cycle / "pool.parquet").exists() and not (project / LEDGER).exists()
        assert len(list((project / LEDGER.parent).glob(".obcp.parquet.*.tmp"))) == 1
    out = run(ACTIVE, project)
    assert "cycle 2" in out.stdout
    return project


def killed_in_cycle_2(stage1_data: Path, dest: Path) -> Path:
    project = project_from(stage1_data, dest)
    driven("replace:obcp.parquet:2", [["stages.active", "--arm", "obcp", "--seed", "0"]], project)
    assert (project / ARM / "cycle_001/manifest.json").exists()
    assert not (project / ARM / "cycle_002/manifest.json").exists()
    assert set(ledger.read(project / LEDGER)["cycle"]) == {1}
    out = run(ACTIVE, project)
    assert re.search(r"^arm 1/1 obcp +seed 0  cycle 1/2 .* up to date  ETA ", out.stdout, re.M), out.stdout
    return project


@pytest.fixture(scope="module")
def runs(digits_data, stage1_data, active_data, tmp_path_factory) -> dict[str, Future]:
    """Every scenario's project, run two chains at a time; `.result()` re-raises a chain's failure.
    The uninterrupted baseline ("straight") is the session's shared run of ACTIVE (`active_data`);
    "again" is a second, independent one."""
    base = tmp_path_factory.mktemp("resume")
    chains = {
        "straight": lambda: active_data[0],
        "again": lambda: uninterrupted(stage1_data, base / "again"),
        "pretrain": lambda: killed_pretrain(stage1_data, base / "pretrain"),
        **{step: (lambda step=step: killed_step(stage1_data, base / step, step)) for step in STEP_KILLS},
        "cycle2": lambda: killed_in_cycle_2(stage1_data, base / "cycle2"),
        "convert": lambda: killed_convert(base / "convert"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(chain) for name, chain in chains.items()}
    return futures


# --------------------------------------------------------------------------- convert and stage 1


@pytest.mark.slow
def test_sigkill_during_convert_then_rerun_is_byte_identical(runs, digits_data):
    data = runs["convert"].result() / "data/digits"
    for name in ("train.beton", "test.beton", "index.parquet", "classes.json"):
        assert sha256(data / name) == sha256(digits_data / "data/digits" / name), name


@pytest.mark.slow
def test_sigkill_during_pretrain_then_rerun_matches_uninterrupted(runs, stage1_data):
    stage1 = runs["pretrain"].result() / "data/runs/seed0/stage1"
    reference = stage1_data / "data/runs/seed0/stage1"
    assert_same_weights(reference / "checkpoint.pt", stage1 / "checkpoint.pt")
    for name in ("checkpoint.pt", "history.npz", "test.json"):
        assert sha256(reference / name) == sha256(stage1 / name), name


# --------------------------------------------------------------------------- the steps of a cycle


@pytest.mark.slow
@pytest.mark.parametrize("step", list(STEP_KILLS))
def test_sigkill_during_a_cycle_step_then_stage_matches_uninterrupted(step, runs):
    assert_same_run(runs["straight"].result(), runs[step].result())


@pytest.mark.slow
def test_sigkill_in_second_cycle_of_the_stage_then_rerun_matches(runs):
    assert_same_run(runs["straight"].result(), runs["cycle2"].result())


# --------------------------------------------------------------------------- determinism


@pytest.mark.slow
def test_two_independent_runs_are_bitwise_identical(runs):
    straight, again = runs["straight"].result(), runs["again"].result()
    assert_same_run(straight, again)
    for k in (1, 2):
        for name in ("pool.parquet", "queries.parquet", "scores.parquet", "history.npz", "checkpoint.pt"):
            a, b = straight / ARM / f"cycle_{k:03d}" / name, again / ARM / f"cycle_{k:03d}" / name
            if a.exists() or b.exists():
                assert sha256(a) == sha256(b), f"cycle {k} {name}"
        ma = json.loads((straight / ARM / f"cycle_{k:03d}/manifest.json").read_text())
        mb = json.loads((again / ARM / f"cycle_{k:03d}/manifest.json").read_text())
        assert ma["test"] == mb["test"] and ma["inputs"] == mb["inputs"] and ma["counts"] == mb["counts"]
