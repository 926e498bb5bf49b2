"""The real DVC pipeline in a throw-away git repository."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import make_project, run


@pytest.mark.slow
def test_convert_and_init_pool_then_nothing_to_do(project):
    out = run(["dvc", "repro", "init_pool"], project)
    assert "Running stage 'convert'" in out.stdout
    assert (project / "data/digits/train.beton").exists()
    assert (project / "data/runs/seed0/cycle_000/pool.parquet").exists()
    again = run(["dvc", "repro", "init_pool"], project)
    assert "Running stage" not in again.stdout
    status = run(["dvc", "status", "init_pool"], project)
    assert "changed" not in status.stdout


@pytest.mark.slow
def test_exp_run_query_times_reuses_cached_stages(tmp_path):
    project = make_project(tmp_path / "p", {"query_times": 3, "train": {"stage2_epochs": 3},
                                            "budget": {"one_bit": 45}})
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)

    out = run(["dvc", "exp", "run", "-S", "query_times=2"], project)
    for stage in ("convert", "init_pool@0", "pretrain@0"):
        assert f"Running stage '{stage}'" not in out.stdout, stage
    assert "Running stage 'active@0'" in out.stdout
    arm = project / "data/runs/seed0/arms/obcp"
    assert sorted(p.name for p in arm.glob("cycle_*")) == ["cycle_001", "cycle_002"]
    assert yaml.safe_load((project / "params.yaml").read_text())["query_times"] == 2
    doc = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    exps = [rev for commit in doc for exp in (commit.get("experiments") or []) for rev in exp["revs"]]
    values = [rev["data"]["params"]["params.yaml"]["data"]["query_times"] for rev in exps]
    assert values == [2]
    # the human answer store is an input of `active`, never an output: new answers rerun it
    from pipeline import answers

    answers.append(project / "reports/answers/digits.parquet", answers.rows([3], [1], answer=[True], source="t"))
    status = run(["dvc", "status", "active@0"], project).stdout
    assert "changed deps" in status and "reports/answers" in status, status
