"""Shared fixtures: a throw-away copy of the project (git + DVC) with tiny params."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import yaml

from pipeline.core.project import copy_code

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small enough to run every stage in seconds on 2 CPU cores.
TINY_PARAMS = {
    "query_times": 2,
    "budget": {"initial": 50, "one_bit": 60},
    "model": {"width": 8},
    "train": {"stage1_epochs": 2, "stage2_epochs": 2, "batch_size": 32, "unlabeled_ratio": 2},
    "contrastive": {"queue_size": 64, "hard_negatives": 16},
    "selection": {"m": 3, "t": 1},
    "seeds": [0],
    "arms": {"obcp": {"method": "obcp", "strategy": "obcp"}},
}
REPLACED = {"arms"}  # keys whose override replaces the base value instead of merging into it


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        mergeable = isinstance(v, dict) and isinstance(out.get(k), dict) and k not in REPLACED
        out[k] = merge(out[k], v) if mergeable else v
    return out


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = str(ROOT)
    e["DVC_NO_ANALYTICS"] = "1"
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, module_args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m torch.distributed.run` with `nproc` CPU processes (gloo) on a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *module_args]
    return run(cmd, cwd, timeout=timeout)


def make_project(dest: Path, overrides: dict | None = None, *, git: bool = True) -> Path:
    """Copy the project's code and pipeline definition into `dest` with tiny params."""
    copy_code(ROOT, dest)
    shutil.copy(ROOT / ".gitignore", dest / ".gitignore")
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), merge(TINY_PARAMS, overrides or {}))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if git:
        run(["git", "init", "-q"], dest)
        run(["git", "config", "user.email", "t@t"], dest)
        run(["git", "config", "user.name", "t"], dest)
        run(["dvc", "init", "-q"], dest)
        run(["dvc", "config", "core.analytics", "false"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "init"], dest)
    return dest


def tree_checksums(root: Path, *, follow_links: bool) -> dict[str, str]:
    """sha256 of every file under `root`, by path, without Python's bytecode caches (`__pycache__/`,
    which a command's imports may write; git and DVC ignore them). `follow_links`: read through
    symbolic links (a project's linked shared data); else links are left out."""
    import hashlib

    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=follow_links):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = Path(folder) / name
            if follow_links or not path.is_symlink():
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def dataset_facts(data_dir: Path, classes: list[str], num_train: int) -> None:
    """What `convert` leaves beside the betons (classes.json, index.parquet), without
    converting: for commands that read only these facts (`obcp annotate`)."""
    import json

    import pandas as pd

    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "classes.json").write_text(json.dumps({
        "classes": classes, "num_classes": len(classes), "image_shape": [8, 8, 3], "dataset": data_dir.name,
        "storage": "raw", "mean": [0.0] * 3, "std": [1.0] * 3}))
    pd.DataFrame({"sample_id": range(num_train), "label": [i % len(classes) for i in range(num_train)],
                  "split": "train"}).to_parquet(data_dir / "index.parquet", index=False)


# The longest files (`make test TEST_ARGS=--durations=30`), started first: `make test` runs one
# worker per core and gives each worker whole files (--dist loadfile), in collection order, so a
# long file collected last would end the run alone on one core while the others sit idle.
LONG_FILES = ("test_repro.py", "test_resume.py", "test_study.py", "test_labeling.py", "test_dvc.py",
              "test_cluster.py", "test_gpu_check.py", "test_fig4.py")


def pytest_collection_modifyitems(config, items):
    first = {name: rank for rank, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _registries_restored():
    """Plugins a test loads register into the process-wide registries: take them out again, so a
    later test (e.g. the generated parameters page) sees only the built-ins."""
    from pipeline.core.registry import METHODS, ORACLES, STRATEGIES

    saved = [(reg, {name: reg.get(name) for name in reg.names()}) for reg in (STRATEGIES, METHODS, ORACLES)]
    yield
    for reg, entries in saved:
        reg._entries.clear()
        reg._entries.update(entries)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """`build(folder)` once per test run, also across pytest-xdist workers: the first worker to
    ask builds it under a file lock in the run's shared temporary folder, the others wait for
    it and reuse it. A failed build leaves nothing behind, so the next one to ask tries again.
    The folder is read-only to the tests (they copy it to change anything)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/, shared by the run's workers (each has its own popen-gwK/)
    folder, done = root / name, root / f"{name}.built"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            try:
                build(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            done.touch()
    return folder


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory) -> Path:
    """A project folder with digits converted and the initial pool of seed 0 (no git)."""
    def build(dest: Path) -> None:
        make_project(dest, git=False)
        run([sys.executable, "-m", "stages.convert"], dest)
        run([sys.executable, "-m", "stages.init_pool", "--seed", "0"], dest)

    return built_once(tmp_path_factory, "digits", build)


@pytest.fixture(scope="session")
def stage1_data(digits_data: Path, tmp_path_factory) -> Path:
    """`digits_data`'s files (a copy) plus a finished stage 1 for seed 0 (one process)."""
    def build(dest: Path) -> None:
        shutil.copytree(digits_data, dest, symlinks=True)
        run([sys.executable, "-m", "stages.pretrain", "--seed", "0"], dest)

    return built_once(tmp_path_factory, "stage1", build)


ACTIVE = [sys.executable, "-m", "stages.active", "--arm", "obcp", "--seed", "0"]


@pytest.fixture(scope="session")
def active_data(stage1_data: Path, tmp_path_factory) -> tuple[Path, str]:
    """(project, stdout): `stage1_data`'s stage 1 and one uninterrupted `stages.active --arm obcp
    --seed 0` (TINY_PARAMS: 2 cycles, 60 questions) in a project of its own (`project_from`).
    Read-only: the reference run of the resume and reliability tests; tests that go on from it
    (rerun, change params, corrupt an input) work on a `copy_project` of it."""
    def build(dest: Path) -> None:
        project_from(stage1_data, dest / "p")
        (dest / "stdout.txt").write_text(run(ACTIVE, dest / "p").stdout)

    folder = built_once(tmp_path_factory, "active", build)
    return folder / "p", (folder / "stdout.txt").read_text()


# The one full `dvc repro` of a git project that the DVC tests share (tests/test_dvc.py,
# tests/test_cluster.py): three query cycles, so that experiments with query_times 1 and 2
# differ from the baseline.
REPRODUCED = {"query_times": 3, "train": {"stage2_epochs": 3}, "budget": {"one_bit": 45},
              "ddp": {"backend": "gloo"}}


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> tuple[Path, str]:
    """(project, stdout of its `dvc repro`): a git + DVC project with REPRODUCED params after one
    full `dvc repro`, nothing committed since `git init`. Read-only: tests that change it work
    on a `copy_project` of it."""
    def build(dest: Path) -> None:
        make_project(dest / "p", REPRODUCED)
        (dest / "stdout.txt").write_text(run(["dvc", "repro"], dest / "p").stdout)

    folder = built_once(tmp_path_factory, "reproduced", build)
    return folder / "p", (folder / "stdout.txt").read_text()


def with_stage1(project: Path, stage1_data: Path, stages: tuple[str, ...] = ("convert", "init_pool@0", "pretrain@0")
                ) -> Path:
    """A git + DVC `project` (`make_project`) with `stage1_data`'s converted digits, initial pool
    and stage 1 copied in and `stages` recorded as done with `dvc commit` (DVC checks the copied
    files against each stage's outputs), so that `dvc repro` goes on from there instead of
    converting and pretraining again; committed to git."""
    shutil.copytree(stage1_data / "data/digits", project / "data/digits")
    for name in ("cycle_000", "stage1"):
        shutil.copytree(stage1_data / "data/runs/seed0" / name, project / "data/runs/seed0" / name)
    run(["dvc", "repro", "validate"], project)
    run(["dvc", "commit", "-f", *stages], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", f"recorded as done: {', '.join(stages)}"], project)
    return project


def copy_project(source: Path, dest: Path) -> Path:
    """A copy of the project `source` (git history, DVC cache and workspace) at `dest`, without
    DVC's per-checkout state (.dvc/tmp: its index, locks and queue), which DVC rebuilds.
    Symbolic links stay links (a `project_from` project keeps sharing its source's data)."""
    root = Path(source).resolve()

    def ignore(folder: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(folder).resolve() == root / ".dvc" else []

    shutil.copytree(root, dest, symlinks=True, ignore=ignore)
    return Path(dest)


def project_from(source: Path, dest: Path, overrides: dict | None = None) -> Path:
    """A new project sharing `source`'s converted data, initial pool and stage 1 (read-only)."""
    make_project(dest, overrides, git=False)
    runs = dest / "data" / "runs" / "seed0"
    runs.mkdir(parents=True)
    (dest / "data" / "digits").symlink_to(source / "data" / "digits")
    for name in ("cycle_000", "stage1"):
        if (source / "data/runs/seed0" / name).exists():
            (runs / name).symlink_to(source / "data/runs/seed0" / name)
    return dest
