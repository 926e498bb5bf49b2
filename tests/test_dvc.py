"""The real DVC pipeline in a throw-away git repository."""
from __future__ import annotations

import json
import re
import sys

import pandas as pd
import pytest
import yaml

from conftest import copy_project, run
from pipeline.reporting.plots import FIGURES


@pytest.mark.slow
def test_convert_and_init_pool_then_nothing_to_do(reproduced, tmp_path):
    source, first = reproduced  # the shared fresh project's one `dvc repro` ran every stage
    assert "Running stage 'convert'" in first and "Running stage 'init_pool@0'" in first
    project = copy_project(source, tmp_path / "p")
    assert (project / "data/digits/train.beton").exists()
    assert (project / "data/runs/seed0/cycle_000/pool.parquet").exists()
    again = run(["dvc", "repro", "init_pool"], project)
    # only `validate` runs again (always_changed: params are checked on every repro); it reruns nothing
    assert [line for line in again.stdout.splitlines() if "Running stage" in line] == ["Running stage 'validate':"]
    status = run(["dvc", "status", "init_pool"], project)
    assert "changed" not in status.stdout


# what `dvc repro` adds to a fresh clone and a baseline commits: dvc.lock, the figures stage's
# small reports (`cache: false`), and the .gitignore files DVC writes beside its cached outs
BASELINE_FILES = {
    "dvc.lock", "reports/metrics.json", "reports/results.csv", "reports/index.md",
    "reports/ledger/.gitignore", "reports/metrics/.gitignore",
}


def without_nulls(doc: dict) -> dict:
    """A metrics document as `dvc exp show --json` gives it: DVC leaves out null values (one seed's
    std) and the mappings left empty."""
    kept = {k: without_nulls(v) if isinstance(v, dict) else v for k, v in doc.items()}
    return {k: v for k, v in kept.items() if v is not None and v != {}}


def git_status(project) -> list[str]:
    return run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout.splitlines()


@pytest.mark.slow
def test_exp_run_query_times_reuses_cached_stages(reproduced, tmp_path):
    """The DVC user's path: repro, commit the baseline, `dvc exp run -S`, `dvc exp show`,
    `dvc metrics diff`, then Fig. 6 with `obcp sweep` (the baseline and the workspace included).
    The repro (query_times 3, one_bit 45) is the shared `reproduced` project's."""
    project = copy_project(reproduced[0], tmp_path / "p")
    # nothing but the baseline's files is new; the cached outputs are git-ignored
    new = {line[3:] for line in git_status(project)}
    assert all(line.startswith("?? ") for line in git_status(project))
    figures = {f for f in new if f.startswith("reports/figures/")}
    assert new - figures == BASELINE_FILES, new
    assert {"reports/figures/accuracy_vs_labels.png", "reports/figures/accuracy_vs_labels.csv"} <= figures
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)
    assert git_status(project) == []
    assert json.loads(run(["dvc", "status", "--json"], project).stdout) == {"validate": ["always changed"]}
    baseline = json.loads((project / "reports/metrics.json").read_text())
    assert list(baseline) == ["top1", "std", "bits", "n_seeds"] and 0 <= baseline["top1"]["obcp"] <= 100
    # --only-changed drops every column equal in all rows; --keep top1 keeps each arm's accuracy
    shown = run(["dvc", "exp", "show", "--only-changed", "--keep", "top1", "--csv"], project).stdout
    assert "top1.obcp" in shown.splitlines()[0] and "bits.obcp" not in shown.splitlines()[0], shown
    # every figure is an image plot: the page DVC writes loads no script, so it renders offline
    run(["dvc", "plots", "show"], project)
    html = (project / "dvc_plots/index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == len(FIGURES) and "<script" not in html, html
    assert all((project / "dvc_plots" / src).is_file() or src.startswith("data:") for src in images), images

    out = run(["dvc", "exp", "run", "-S", "query_times=2"], project)
    for stage in ("convert", "init_pool@0", "pretrain@0"):
        assert f"Running stage '{stage}'" not in out.stdout, stage
    assert "Running stage 'validate'" in out.stdout  # checks the experiment's params first
    assert "Running stage 'active@0'" in out.stdout
    arm = project / "data/runs/seed0/arms/obcp"
    assert sorted(p.name for p in arm.glob("cycle_*")) == ["cycle_001", "cycle_002"]
    assert yaml.safe_load((project / "params.yaml").read_text())["query_times"] == 2
    assert all(line.startswith(" M ") for line in git_status(project))  # changed results, nothing new
    doc = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    exps = [rev for commit in doc for exp in (commit.get("experiments") or []) for rev in exp["revs"]]
    values = [rev["data"]["params"]["params.yaml"]["data"]["query_times"] for rev in exps]
    assert values == [2]
    # one metrics file, the summary: per arm its final top-1 (the per-seed detail is not a metric)
    assert list(exps[0]["data"]["metrics"]) == ["reports/metrics.json"]
    summary = exps[0]["data"]["metrics"]["reports/metrics.json"]["data"]
    assert summary == without_nulls(json.loads((project / "reports/metrics.json").read_text()))
    head = [c for c in doc if c["rev"] != "workspace"][0]["data"]["metrics"]["reports/metrics.json"]["data"]
    assert head == without_nulls(baseline)  # the committed baseline row
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], project).stdout)["reports/metrics.json"]
    assert diff["top1.obcp"]["old"] == baseline["top1"]["obcp"] and diff["top1.obcp"]["new"] == summary["top1"]["obcp"]

    # Fig. 6: one new value, one the workspace and an experiment already have
    sweep = run([sys.executable, "-m", "pipeline.cli", "sweep", "query_times", "1", "2"], project)
    assert "dvc exp run --temp -S query_times=1 -n query_times-1" in sweep.stdout
    fig6 = pd.read_csv(project / "reports/exps/query_times.csv")
    assert fig6["query_times"].tolist() == [1, 2, 3]  # 3: the baseline
    table = pd.read_csv(project / "reports/exps/exps.csv").drop_duplicates("experiment")
    branch = run(["git", "branch", "--show-current"], project).stdout.strip()
    assert dict(zip(table["experiment"], table["status"])).items() >= {
        "workspace": "workspace", branch: "baseline", "query_times-1": "success", "query_times-2": "success"}.items()
    assert f"| {branch} | baseline | 3 | 50 |" in (project / "reports/exps/exps.md").read_text()
    assert yaml.safe_load((project / "params.yaml").read_text())["query_times"] == 2  # workspace untouched
    again = run([sys.executable, "-m", "pipeline.cli", "sweep", "query_times", "1"], project)
    assert "query_times-1 is done already" in again.stdout
    assert all(line.startswith(" M ") for line in git_status(project))  # reports/exps/ is git-ignored
    # the human answer store is an input of `active`, never an output: new answers rerun it
    from pipeline.oracle import answers

    answers.append(project / "reports/answers/digits.parquet", answers.rows([3], [1], answer=[True], source="t"))
    status = run(["dvc", "status", "active@0"], project).stdout
    assert "changed deps" in status and "reports/answers" in status, status
