"""`python -m pipeline.core.launch NPROC MODULE ARGS…`: torchrun for several processes, a plain
process for one; exit codes pass through. Under torchrun a rank's bad-input error reaches the
user as the one `error:` paragraph a single process prints, with its exit code; a crash shows
everything."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, env, project_from
from pipeline.core.launch import command


def test_command_uses_torchrun_only_for_several_processes() -> None:
    assert command(1, "stages.pretrain", ["--seed", "3"]) == [sys.executable, "-m", "stages.pretrain", "--seed", "3"]
    assert command(4, "stages.active", ["--seed", "0"]) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
        "-m", "stages.active", "--seed", "0"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.core.launch", *args], capture_output=True, text=True,
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
        assert res.returncode == 2 and "usage: python -m pipeline.core.launch" in res.stderr


def launch(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    e = {**env(), "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    return subprocess.run([sys.executable, "-m", "pipeline.core.launch", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def one_error(res: subprocess.CompletedProcess) -> str:
    """The stderr of a run that stopped on bad input: exactly one `error:` paragraph, nothing else."""
    err = res.stderr.strip()
    assert err.startswith("error: ") and err.count("error:") == 1 and "\n" not in err, res.stderr
    return err


@pytest.mark.slow
def test_two_ranks_report_one_error_with_its_exit_code_and_a_crash_in_full() -> None:
    bad = launch("2", "ddp.fail_rank", "1", "obcp", "3")  # rank 1 only, an error with its own exit code
    assert bad.returncode == 3, bad.stderr
    assert one_error(bad) == "error: rank 1 found bad input. Fix it and rerun."
    assert "rank 0 done" in bad.stdout  # the other rank's output is untouched
    crash = launch("2", "ddp.fail_rank", "0", "bug", "0")  # no error to report: show everything
    assert crash.returncode == 1
    assert "RuntimeError: a bug in rank code" in crash.stderr and "Root Cause" in crash.stderr


@pytest.mark.slow
def test_malformed_answers_under_two_ranks_give_the_one_process_error(stage1_data, tmp_path) -> None:
    project = project_from(stage1_data, tmp_path / "p", {"oracle": {"kind": "human"}, "ddp": {"backend": "gloo"}})
    waiting = launch("2", "stages.active", "--seed", "0", cwd=project)  # cycle 1 asks, then waits
    assert waiting.returncode != 0 and "Traceback" not in waiting.stderr, waiting.stderr
    cdir = project / "data/runs/seed0/arms/obcp/cycle_001"
    first = int(pd.read_csv(cdir / "questions.csv")["sample_id"][0])
    (cdir / "answers.csv").write_text(f"sample_id,answer\n{first},maybe\n{10**6},yes\n")
    bad = launch("2", "stages.active", "--seed", "0", cwd=project)
    assert bad.returncode == 2
    err = one_error(bad)  # rank 0's message, as one process prints it (not "rank 0 stopped: …")
    assert err.startswith(f"error: {cdir.relative_to(project)}/answers.csv has 3 problem(s)"), err
    assert f"answer 'maybe' for sample_id {first}" in err and f"sample_id {10**6} is not a sample" in err
    assert (cdir / "answers.csv").read_text() == f"sample_id,answer\n{first},maybe\n{10**6},yes\n"
