"""Query cycles end to end: simulated and human oracles, resume after SIGKILL, budgets."""
from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import env, project_from, run
from pipeline import ledger

ACTIVE = [sys.executable, "-m", "stages.active", "--arm", "obcp", "--seed", "0"]


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }


def final_state(project: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    led = ledger.read(project / "reports/ledger/seed0/obcp.parquet")
    pool = pd.read_parquet(project / "data/runs/seed0/arms/obcp/cycle_002/pool.parquet")
    return led[ledger.deterministic_columns()], pool


def test_simulated_cycles_fill_the_ledger_and_pool(stage1_data, tmp_path, monkeypatch):
    project = project_from(stage1_data, tmp_path / "p")
    out = run(ACTIVE, project)
    assert "cycle 2" in out.stdout
    led = ledger.read(project / "reports/ledger/seed0/obcp.parquet")
    assert len(led) == 60  # the one-bit budget: every question is one ledger row
    assert sorted(led["cycle"].unique()) == [1, 2]
    labels = pd.read_parquet(project / "data/digits/index.parquet").query("split == 'train'")
    truth = labels.set_index("sample_id")["label"]
    assert (led["answer"] == (truth.loc[led["sample_id"]].to_numpy() == led["asked_class"])).all()
    for k in (1, 2):
        cycle = project / f"data/runs/seed0/arms/obcp/cycle_{k:03d}"
        for name in ("scores.parquet", "queries.parquet", "pool.parquet", "checkpoint.pt", "manifest.json"):
            assert (cycle / name).exists(), name
    # a rerun with nothing changed skips every cycle
    again = run(ACTIVE, project)
    assert again.stdout.count("up to date, skipped") == 2
    # a sample denied class c is never asked about c again
    pairs = led[~led["answer"].astype(bool)][["sample_id", "asked_class"]]
    assert not pairs.duplicated().any()
    check_audit(project, led, monkeypatch)


def check_audit(project: Path, led: pd.DataFrame, monkeypatch) -> None:
    """`obcp audit` answers who was asked what, when, from the ledger."""
    import io
    import json

    from typer.testing import CliRunner

    from pipeline.cli import app

    monkeypatch.chdir(project)
    cli = CliRunner()
    summary = json.loads(cli.invoke(app, ["audit", "summary", "--json"]).output)
    per_cycle = pd.DataFrame(summary["per_cycle"])
    assert per_cycle["asked"].tolist() == [30, 30]
    assert per_cycle["yes"].sum() == int(led["answer"].astype(bool).sum())
    cycle2 = pd.read_csv(io.StringIO(cli.invoke(app, ["audit", "cycle", "2", "--csv"]).output))
    assert len(cycle2) == 30 and (cycle2["cycle"] == 2).all()
    sid = int(led["sample_id"].iloc[0])
    one = json.loads(cli.invoke(app, ["audit", "sample", str(sid), "--json"]).output)
    assert {row["sample_id"] for row in one} == {sid}
    assert len(one) == int((led["sample_id"] == sid).sum())
    never = min(set(range(int(led["sample_id"].max()) + 2)) - set(led["sample_id"]))
    nothing = cli.invoke(app, ["audit", "sample", str(never)])
    assert nothing.exit_code == 0, nothing.output
    assert f"sample {never} was never asked about in arm(s) obcp, seed(s) 0 (1 ledger(s) searched)" in nothing.output
    table = cli.invoke(app, ["audit", "summary"])
    assert table.exit_code == 0 and "yes_rate" in table.output
    missing = cli.invoke(app, ["audit", "summary", "--arm", "nope"])
    assert missing.exit_code == 2


def test_fewer_query_times_discards_later_cycles(stage1_data, tmp_path):
    project = project_from(stage1_data, tmp_path / "p")
    run(ACTIVE, project)
    params = (project / "params.yaml").read_text().replace("query_times: 2", "query_times: 1")
    (project / "params.yaml").write_text(params)
    run(ACTIVE, project)
    assert not (project / "data/runs/seed0/arms/obcp/cycle_002").exists()
    led = ledger.read(project / "reports/ledger/seed0/obcp.parquet")
    assert sorted(led["cycle"].unique()) == [1] and len(led) == 60


def answer_truthfully(project: Path, cycle: int) -> Path:
    cdir = project / f"data/runs/seed0/arms/obcp/cycle_{cycle:03d}"
    questions = pd.read_csv(cdir / "questions.csv")
    index = pd.read_parquet(project / "data/digits/index.parquet").query("split == 'train'")
    truth = index.set_index("sample_id")["label"]
    answers = np.where(truth.loc[questions["sample_id"]].to_numpy() == questions["asked_class"], "yes", "no")
    pd.DataFrame({"sample_id": questions["sample_id"], "answer": answers}).to_csv(cdir / "answers.csv", index=False)
    return cdir


def test_human_oracle_flow(stage1_data, tmp_path):
    project = project_from(stage1_data, tmp_path / "p", {"oracle": {"kind": "human"}})
    first = run(ACTIVE, project, check=False)
    assert first.returncode == 2
    assert "answers for this cycle are missing" in first.stderr and "Traceback" not in first.stderr
    cdir = project / "data/runs/seed0/arms/obcp/cycle_001"
    questions = pd.read_csv(cdir / "questions.csv")
    assert len(questions) == 30 and (cdir / "questions").is_dir()
    assert all((cdir / p).exists() for p in questions["image"])

    # malformed answers are rejected and nothing changes
    pd.DataFrame({"sample_id": [questions["sample_id"][0], 10**6], "answer": ["maybe", "yes"]}).to_csv(
        cdir / "answers.csv", index=False)
    before = checksums(project)
    bad = run(ACTIVE, project, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "maybe" in bad.stderr and str(10**6) in bad.stderr
    assert checksums(project) == before

    answer_truthfully(project, 1)
    second = run(ACTIVE, project, check=False)
    assert second.returncode == 2 and "cycle_002" in second.stderr  # cycle 1 done, cycle 2 asks
    assert (cdir / "manifest.json").exists()
    answer_truthfully(project, 2)
    run(ACTIVE, project)
    led = ledger.read(project / "reports/ledger/seed0/obcp.parquet")
    assert len(led) == 60 and (led["oracle"] == "human").all()


@pytest.mark.slow
def test_sigkill_during_retrain_then_rerun_matches_uninterrupted(stage1_data, tmp_path):
    straight = project_from(stage1_data, tmp_path / "straight")
    run(ACTIVE, straight)

    killed = project_from(stage1_data, tmp_path / "killed")
    proc = subprocess.Popen(ACTIVE, cwd=killed, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pool = killed / "data/runs/seed0/arms/obcp/cycle_001/pool.parquet"
    deadline = time.time() + 300
    while not pool.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert pool.exists(), "the run never reached retraining"
    proc.send_signal(signal.SIGKILL)  # during cycle 1's retrain
    proc.wait()
    assert not (killed / "data/runs/seed0/arms/obcp/cycle_001/manifest.json").exists()
    run(ACTIVE, killed)

    led_a, pool_a = final_state(straight)
    led_b, pool_b = final_state(killed)
    pd.testing.assert_frame_equal(led_a, led_b)
    pd.testing.assert_frame_equal(pool_a, pool_b)
