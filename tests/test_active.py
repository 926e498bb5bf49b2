"""Query cycles end to end: simulated and human oracles, resume after SIGKILL, budgets."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ACTIVE, copy_project, env, project_from, run, tree_checksums
from pipeline.pool import ledger


def checksums(root: Path) -> dict[str, str]:
    return tree_checksums(root, follow_links=False)


def final_state(project: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    led = ledger.read(project / "reports/ledger/seed0/obcp.parquet")
    pool = pd.read_parquet(project / "data/runs/seed0/arms/obcp/cycle_002/pool.parquet")
    return led[ledger.deterministic_columns()], pool


def test_simulated_cycles_fill_the_ledger_and_pool(active_data, tmp_path, monkeypatch):
    source, first = active_data  # the shared run of ACTIVE; this test reruns it in a copy
    project = copy_project(source, tmp_path / "p")
    assert "cycle 2" in first
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
    check_selection_quality(project, led)
    # a rerun with nothing changed skips every cycle
    again = run(ACTIVE, project)
    assert again.stdout.count(" up to date  ETA ") == 2  # one line per cycle: kept
    # a sample denied class c is never asked about c again
    pairs = led[~led["answer"].astype(bool)][["sample_id", "asked_class"]]
    assert not pairs.duplicated().any()
    check_audit(project, led, monkeypatch)


def check_selection_quality(project: Path, led: pd.DataFrame) -> None:
    """Each manifest's `selection` block (pipeline/selection/diagnostics.py) agrees with the ledger and
    reaches the metrics points."""
    import json

    from pipeline.core.config import load_params
    from pipeline.reporting.metrics import run_metrics
    from pipeline.core.layout import Layout

    params = load_params(project / "params.yaml")
    doc = run_metrics(params, Layout("digits", project), "obcp", 0, num_classes=10, num_train=1437)
    assert "selection" not in doc["points"][0]  # stage 1 asks nothing
    for k in (1, 2):
        sel = json.loads((project / f"data/runs/seed0/arms/obcp/cycle_{k:03d}/manifest.json").read_text())["selection"]
        asked = led[led["cycle"] == k]["answer"].astype(bool)
        assert sel["yes_rate"] == pytest.approx(asked.mean(), abs=1e-6)
        assert 0 <= sel["answer_bits"] <= 1 and 0 <= sel["auroc_wrong"] <= 1 and 0 < sel["selected_confidence"] <= 1
        assert doc["points"][k]["selection"] == sel


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
    cycle2 = pd.read_csv(io.StringIO(cli.invoke(app, ["audit", "cycle", "--cycle", "2", "--csv"]).output))
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


def test_fewer_query_times_discards_later_cycles(active_data, tmp_path):
    project = copy_project(active_data[0], tmp_path / "p")  # after a run of ACTIVE with query_times 2
    params = (project / "params.yaml").read_text().replace("query_times: 2", "query_times: 1")
    (project / "params.yaml").write_text(params)
    run(ACTIVE, project)
    assert not (project / "data/runs/seed0/arms/obcp/cycle_002").exists()
    led = ledger.read(project / "reports/ledger/seed0/obcp.parquet")
    assert sorted(led["cycle"].unique()) == [1] and len(led) == 60


def answer_truthfully(project: Path, cycle: int, arm: str = "obcp") -> Path:
    cdir = project / f"data/runs/seed0/arms/{arm}/cycle_{cycle:03d}"
    questions = pd.read_csv(cdir / "questions.csv")
    index = pd.read_parquet(project / "data/digits/index.parquet").query("split == 'train'")
    truth = index.set_index("sample_id")["label"]
    answers = np.where(truth.loc[questions["sample_id"]].to_numpy() == questions["asked_class"], "yes", "no")
    pd.DataFrame({"sample_id": questions["sample_id"], "answer": answers}).to_csv(cdir / "answers.csv", index=False)
    return cdir


def active(project: Path, monkeypatch, capsys, arms=("obcp",), workers=None) -> tuple[int, str, str]:
    """The `active` stage in this process (no 8 s of imports per run): (exit code, stdout, stderr)."""
    from stages.active import main

    monkeypatch.chdir(project)
    capsys.readouterr()
    code = 0
    try:
        main(seed=0, arm=list(arms), workers=workers, params=Path("params.yaml"))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def store_of(project: Path) -> pd.DataFrame:
    from pipeline.oracle import answers

    return answers.read(project / "reports/answers/digits.parquet")


def test_human_answers_outlive_cycles(stage1_data, tmp_path, monkeypatch, capsys):
    """The human oracle end to end: waiting (exit 3, no second scoring pass), malformed
    answers (exit 2, nothing changes), answers arrive, an edited answer is replayed, and a
    params change that rebuilds every cycle keeps every answer and asks only new questions."""
    from pipeline.oracle import answers

    project = project_from(stage1_data, tmp_path / "p", {"oracle": {"kind": "human"}})
    cdir = project / "data/runs/seed0/arms/obcp/cycle_001"
    first = run(ACTIVE, project, check=False)  # the real command line
    assert first.returncode == 3, first.stderr
    assert f"waiting for answers (30 questions at {cdir.relative_to(project)}/questions.csv)" in first.stderr
    assert "obcp annotate --arm obcp --seed 0" in first.stderr and "Traceback" not in first.stderr
    questions = pd.read_csv(cdir / "questions.csv")
    assert len(questions) == 30 and (cdir / "questions").is_dir()
    assert all((cdir / p).exists() for p in questions["image"])

    scored = (cdir / "scores.parquet").stat().st_mtime_ns
    code, out, err = active(project, monkeypatch, capsys)  # rerun while waiting: no new scoring pass
    assert code == 3 and "scores.parquet of the same inputs reused" in out
    assert (cdir / "scores.parquet").stat().st_mtime_ns == scored

    # malformed answers are rejected and nothing changes
    pd.DataFrame({"sample_id": [questions["sample_id"][0], 10**6], "answer": ["maybe", "yes"]}).to_csv(
        cdir / "answers.csv", index=False)
    before = checksums(project)
    code, out, err = active(project, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert "maybe" in err and str(10**6) in err
    assert checksums(project) == before

    answer_truthfully(project, 1)
    code, out, err = active(project, monkeypatch, capsys)
    assert code == 3 and "cycle_002" in err  # cycle 1 done, cycle 2 asks
    assert (cdir / "manifest.json").exists()
    answer_truthfully(project, 2)
    assert active(project, monkeypatch, capsys)[0] == 0
    led = ledger.read(project / "reports/ledger/seed0/obcp.parquet")
    assert len(led) == 60 and (led["oracle"] == "human").all()
    assert len(store_of(project)) == 60

    # edited answers are replayed: flip 3 answers of the finished cycle 1
    edited = pd.read_csv(cdir / "answers.csv")
    edited.loc[:2, "answer"] = edited.loc[:2, "answer"].map({"yes": "no", "no": "yes"})
    edited.to_csv(cdir / "answers.csv", index=False)
    code, out, err = active(project, monkeypatch, capsys)
    assert "cycle 1: 3 answer(s) differ from the ones it was trained with" in out and "replaying" in out
    cycle1 = ledger.read(project / "reports/ledger/seed0/obcp.parquet").query("cycle == 1")
    used = dict(zip(cycle1["sample_id"], cycle1["answer"]))
    assert used == dict(zip(edited["sample_id"], edited["answer"] == "yes"))
    if code == 3:  # cycle 2 now asks some questions never asked before
        answer_truthfully(project, 2)
        code = active(project, monkeypatch, capsys)[0]
    assert code == 0
    assert len(store_of(project)) >= 63  # the 3 corrections are new rows; the old ones stay

    # a params change discards every cycle: the answers are kept and nothing is asked twice
    kept = store_of(project)
    params = (project / "params.yaml").read_text().replace("lambda_neg: 0.1", "lambda_neg: 0.2")
    (project / "params.yaml").write_text(params)
    code, out, err = active(project, monkeypatch, capsys)
    assert "cycle(s) 1, 2 of arm obcp are discarded" in out and "Their human answers are kept" in out
    asked_again = 0
    if code == 3:
        sheet = pd.read_csv(project / "data/runs/seed0/arms/obcp/cycle_002/questions.csv")
        known = answers.current(kept)
        assert sheet.merge(known, on=["sample_id", "asked_class"]).empty, "a question was asked twice"
        asked_again = len(sheet)
        answer_truthfully(project, 2)
        code = active(project, monkeypatch, capsys)[0]
    assert code == 0
    after = store_of(project)
    pd.testing.assert_frame_equal(after.iloc[:len(kept)], kept)  # no answer lost
    assert len(after) == len(kept) + asked_again
    led = ledger.read(project / "reports/ledger/seed0/obcp.parquet")
    assert len(led) == 60 and (led["oracle"] == "human").all()
    now = answers.lookup(after, led)
    assert now["answered"].all() and (now["answer"].to_numpy(bool) == led["answer"].to_numpy(bool)).all()


def test_fullbit_asks_a_person_and_waiting_is_not_failing(stage1_data, tmp_path, monkeypatch, capsys):
    """`fullbit` with a human oracle asks for labels (and the ledger says so); two arms in
    parallel workers: waiting is exit 3 and not a failure; invalid answers are exit 2."""
    arms = {"obcp": {"method": "obcp", "strategy": "obcp"}, "fullbit": {"method": "fullbit", "strategy": "entropy"}}
    project = project_from(stage1_data, tmp_path / "p", {"oracle": {"kind": "human"}, "query_times": 1,
                                                          "arms": arms})
    code, out, err = active(project, monkeypatch, capsys, arms=("obcp", "fullbit"), workers=2)
    assert code == 3, err
    assert "2 of 2 arm(s) of seed 0 are waiting for answers" in err and "failed" not in err
    full = project / "data/runs/seed0/arms/fullbit/cycle_001"
    sheet = pd.read_csv(full / "questions.csv", keep_default_na=False)
    assert len(sheet) == 18 and (sheet["asked_class"] == -1).all()  # 60 bits = 18 labels of log2(10) bits

    (project / "data/runs/seed0/arms/obcp/cycle_001/answers.csv").write_text("sample_id,answer\n1,maybe\n")
    code, out, err = active(project, monkeypatch, capsys, arms=("obcp", "fullbit"), workers=2)
    assert code == 2, err
    assert "1 of 2 arm(s) of seed 0 failed" in err and "  obcp: " in err and "'maybe'" in err
    assert "1 of 2 arm(s) of seed 0 are waiting for answers" in err and "  fullbit: waiting for answers (18" in err

    answer_truthfully(project, 1)
    truth = pd.read_parquet(project / "data/digits/index.parquet").query("split == 'train'")["label"].to_numpy()
    given = truth[sheet["sample_id"]].copy()
    given[:3] = (given[:3] + 1) % 10  # a person's labels, three of them unlike the ground truth
    names = json.loads((project / "data/digits/classes.json").read_text())["classes"]
    pd.DataFrame({"sample_id": sheet["sample_id"], "answer": [names[c] for c in given]}).to_csv(
        full / "answers.csv", index=False)
    code, out, err = active(project, monkeypatch, capsys, arms=("obcp", "fullbit"), workers=2)
    assert code == 0, err
    led = ledger.read(project / "reports/ledger/seed0/fullbit.parquet")
    assert (led["oracle"] == "human").all() and (led["kind"] == "full").all() and (led["true_label"] == -1).all()
    assert dict(zip(led["sample_id"], led["label_given"])) == dict(zip(sheet["sample_id"], given))
    pool = pd.read_parquet(full / "pool.parquet").set_index("sample_id")
    assert (pool.loc[sheet["sample_id"], "label"].to_numpy() == given).all()
    assert (ledger.read(project / "reports/ledger/seed0/obcp.parquet")["oracle"] == "human").all()


@pytest.mark.slow
def test_sigkill_during_retrain_then_rerun_matches_uninterrupted(stage1_data, active_data, tmp_path):
    straight = active_data[0]  # the uninterrupted run (read only)

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
