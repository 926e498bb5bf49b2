"""`python -m pipeline.launch NPROC MODULE ARGS…`: torchrun for several processes, a plain
process for one; exit codes pass through."""
from __future__ import annotations

import subprocess
import sys

from pipeline.launch import command


def test_command_uses_torchrun_only_for_several_processes() -> None:
    assert command(1, "stages.pretrain", ["--seed", "3"]) == [sys.executable, "-m", "stages.pretrain", "--seed", "3"]
    assert command(4, "stages.active", ["--seed", "0"]) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
        "-m", "stages.active", "--seed", "0"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.launch", *args], capture_output=True, text=True,
                          timeout=120)


def test_one_process_runs_the_module_and_passes_its_exit_code(tmp_path) -> None:
    doc = tmp_path / "doc.json"
    doc.write_text('{"b": 1, "a": [2]}')
    ok = run("1", "json.tool", "--sort-keys", str(doc))
    assert ok.returncode == 0 and ok.stdout.index('"a"') < ok.stdout.index('"b"')
    doc.write_text("{not json")
    failed = run("1", "json.tool", str(doc))
    assert failed.returncode == 1 and "Expecting property name" in failed.stderr


def test_bad_usage_exits_2() -> None:
    for args in ((), ("1",), ("0", "json.tool"), ("two", "json.tool")):
        res = run(*args)
        assert res.returncode == 2 and "usage: python -m pipeline.launch" in res.stderr
