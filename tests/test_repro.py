"""The pipeline as a person runs it, through real DVC: bad input stops at the `validate` stage
before DVC touches an output; `obcp repro` exits 0 done, 2 bad input, 3 waiting for answers;
a stored answer is corrected after a params change (its cycle has no sheet any more) and the
next run replays from the cycle that used it.

One git + DVC project (module scope) with the session's converted digits, initial pool and
stage 1 copied in and recorded with `dvc commit` (no second conversion or pretraining), and
a human oracle, so `active` stops at its first question sheet.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import make_project, run, with_stage1
from test_reliability import _set
from pipeline.oracle import answers
from pipeline.pool import ledger

OBCP = [sys.executable, "-m", "pipeline.cli"]
CYCLE = "data/runs/seed0/arms/obcp/cycle_{:03d}"
STORE = "reports/answers/digits.parquet"
LEDGER = "reports/ledger/seed0/obcp.parquet"


def checksums(project: Path) -> dict[str, str]:
    """sha256 of every file under data/ and reports/ (a link or FIFO by what it is, not read)."""
    out = {}
    for top in ("data", "reports"):
        for folder, _, files in os.walk(project / top):
            for name in files:
                path = Path(folder) / name
                regular = path.is_file() and not path.is_symlink()
                out[str(path.relative_to(project))] = hashlib.sha256(path.read_bytes()).hexdigest() if regular \
                    else f"not a regular file: {os.readlink(path) if path.is_symlink() else 'other'}"
    return out


@pytest.fixture(scope="module")
def committed(stage1_data, tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("repro") / "p", {"oracle": {"kind": "human"}})
    with_stage1(project, stage1_data)
    status = run(["dvc", "status", "--with-deps", "pretrain@0"], project).stdout
    assert status.split() == ["validate:", "always", "changed"], status  # the rest is recorded as done
    return project


# the cases: each deleted a stage's outputs before obcp saw it, or was ignored
PARAM_CASES: dict[str, tuple[Callable[[dict], None] | str, str]] = {
    "train.lr: fast": (_set("train.lr", "fast"), "train.lr: expected a number, got 'fast'"),
    "train.batch_size: 3.5": (_set("train.batch_size", 3.5), "train.batch_size: expected an integer, got 3.5"),
    "selection.t: 50": (_set("selection.t", 50), "selection.t: t (50) must be ≤ m (3)"),
    "budget.initial: 5000": (_set("budget.initial", 5000),
                             "budget.initial: 5000 is larger than the train pool (1437 samples)"),
    "budget.one_bit: 100000": (_set("budget.one_bit", 100000), "budget.one_bit: 50000 questions in one cycle exceed"),
    "dataset.jpeg_quality: 500": (_set("dataset.jpeg_quality", 500), "dataset.jpeg_quality: must lie in [1, 100]"),
    "budjet: (top-level typo)": (_set("budjet", {"initial": 10}), "budjet: unknown key"),
    "query_time: 2 (top-level typo)": (_set("query_time", 2), "query_time: unknown key"),
    "train.lrr (nested typo)": (_set("train.lrr", 0.1), "train.lrr: unknown key"),
    "arms.obcp.stratgy (arm typo)": (_set("arms.obcp.stratgy", "max"), "arms.obcp.stratgy: unknown key"),
    "seeds: [zero]": (_set("seeds", ["zero"]), "seeds[0]: expected an integer, got 'zero'"),
    "YAML syntax error": ("query_times: 2\ntrain: {lr: 0.1\n", "not valid YAML: line 3, column 1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PARAM_CASES))
def test_bad_params_change_nothing(case, committed):
    """Plain `dvc repro` stops at `validate` with obcp's message (DVC's 255); `obcp repro` exits 2;
    nothing under data/ or reports/ changes. A YAML syntax error never reaches a stage: DVC
    parses params.yaml itself, so plain `dvc repro` shows DVC's parser message, `obcp repro` obcp's."""
    edit, words = PARAM_CASES[case]
    params = committed / "params.yaml"
    original = params.read_text()
    before = checksums(committed)
    try:
        if isinstance(edit, str):
            params.write_text(edit)
        else:
            raw = yaml.safe_load(original)
            edit(raw)
            params.write_text(yaml.safe_dump(raw, sort_keys=False))
        plain = run(["dvc", "repro"], committed, check=False)
        assert checksums(committed) == before
        assert plain.returncode == 255, plain.stdout + plain.stderr
        if case != "YAML syntax error":
            assert words in plain.stderr and "Running stage 'validate'" in plain.stdout
            assert "failed to reproduce 'validate'" in plain.stderr and "exited with 2" in plain.stderr
            assert "Running stage 'convert'" not in plain.stdout and "Usage:" not in plain.stderr
        ours = run([*OBCP, "repro"], committed, check=False)
        assert checksums(committed) == before
        assert ours.returncode == 2 and words in ours.stderr and "Traceback" not in ours.stderr, ours.stderr
        assert "Usage:" not in ours.stderr  # obcp's message, not typer's usage box (seeds: [zero])
        print(f"| {case} | dvc repro {plain.returncode} | obcp repro {ours.returncode} | nothing changed |")
    finally:
        params.write_text(original)


def truthful(project: Path, cycle: int) -> pd.DataFrame:
    """The truthful answers to a cycle's question sheet (sample_id, asked_class, answer)."""
    sheet = pd.read_csv(project / CYCLE.format(cycle) / "questions.csv")
    index = pd.read_parquet(project / "data/digits/index.parquet").query("split == 'train'")
    truth = index.set_index("sample_id")["label"]
    yes = truth.loc[sheet["sample_id"]].to_numpy() == sheet["asked_class"].to_numpy()
    return pd.DataFrame({"sample_id": sheet["sample_id"], "asked_class": sheet["asked_class"],
                         "answer": np.where(yes, "yes", "no")})


def answer(project: Path, cycle: int) -> None:
    truthful(project, cycle)[["sample_id", "answer"]].to_csv(project / CYCLE.format(cycle) / "answers.csv",
                                                             index=False)


def repro_until_done(project: Path) -> str:
    """`obcp repro`, answering each question sheet it stops at; the output of every run."""
    said = ""
    for _ in range(4):
        out = run([*OBCP, "repro"], project, check=False)
        said += out.stdout + out.stderr
        if out.returncode == 0:
            return said
        assert out.returncode == 3, said
        waiting = [d for d in sorted((project / "data/runs/seed0/arms/obcp").glob("cycle_*"))
                   if (d / "questions.csv").is_file() and not (d / "manifest.json").exists()]
        answer(project, int(waiting[-1].name.split("_")[1]))
    raise AssertionError(said)


@pytest.mark.slow
def test_exit_codes_and_a_correction_after_a_params_change(committed, tmp_path, monkeypatch):
    monkeypatch.setenv("OBCP_VERBOSE", "1")  # the cycle lines asserted below are the verbose log's
    project = committed
    # ---- 3: waiting for answers (plain `dvc repro`: 255, the same as an error)
    first = run([*OBCP, "repro"], project, check=False)
    assert first.returncode == 3, first.stdout + first.stderr
    assert "waiting for answers: active@0 (exit 3)" in first.stdout
    assert "Running stage 'active@0'" in first.stdout and "Traceback" not in first.stderr
    plain = run(["dvc", "repro"], project, check=False)
    assert plain.returncode == 255 and "exited with 3" in plain.stderr
    cycle1 = project / CYCLE.format(1)

    # ---- 2: an answers file that is not a regular file stops at `validate`, naming what it is;
    # the content of what a link points to is never quoted
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:SECRET:/root:/bin/bash\n")
    hostile = {"a symbolic link": lambda p: p.symlink_to(secret),
               "a broken symbolic link": lambda p: p.symlink_to(tmp_path / "gone.csv"),
               "a FIFO (named pipe)": lambda p: os.mkfifo(p)}
    for kind, make in hostile.items():
        make(cycle1 / "answers.csv")
        before = checksums(project)
        for cmd, code in ((["dvc", "repro"], 255), ([*OBCP, "repro"], 2)):
            out = run(cmd, project, check=False, timeout=120)
            said = out.stdout + out.stderr
            assert out.returncode == code and f"cycle_001/answers.csv is {kind}" in said, (kind, said)
            assert "SECRET" not in said and "root:x" not in said and "Errno" not in said
            assert "Running stage 'active@0'" not in out.stdout
            assert checksums(project) == before
        (cycle1 / "answers.csv").unlink()

    # ---- 2 from the stage itself (through DVC): two contradicting `answer` columns
    sheet = truthful(project, 1)
    flipped = sheet["answer"].map({"yes": "no", "no": "yes"})
    pd.DataFrame({"sample_id": sheet["sample_id"], "answer": sheet["answer"], "answer ": flipped}).to_csv(
        cycle1 / "answers.csv", index=False)
    store_before = (project / STORE).exists()
    bad = run([*OBCP, "repro"], project, check=False)
    assert bad.returncode == 2 and "['answer'] more than once" in bad.stderr, bad.stdout + bad.stderr
    assert "stopped on bad input: active@0 (exit 2)" in bad.stdout and not store_before
    assert not (project / STORE).exists()

    # ---- 0: every question answered, every stage done
    answer(project, 1)
    done = repro_until_done(project)
    assert "Running stage 'evaluate@0'" in done and "Running stage 'figures'" in done
    assert (project / "reports/metrics.json").is_file()
    again = run([*OBCP, "repro"], project)
    # init_pool depends on the answer store (a person may label I^S of an unlabeled folder), which the
    # active stage wrote during the last run: it reruns once, to the same pool, and nothing after it
    assert again.returncode == 0 and ("done: every stage was up to date" in again.stdout
                                      or "done: 1 stage(s) ran (init_pool@0)" in again.stdout), again.stdout
    assert "Stage 'active@0' didn't change" in again.stdout or "every stage was up to date" in again.stdout
    third = run([*OBCP, "repro"], project)
    assert third.returncode == 0 and "done: every stage was up to date" in third.stdout, third.stdout
    assert "always changed" in run(["dvc", "status"], project).stdout  # `validate`, and nothing else
    assert json.loads(run(["dvc", "status", "--json"], project).stdout) == {"validate": ["always changed"]}

    # ---- other failures: DVC's own error (1), `dvc repro` arguments (2)
    assert run([*OBCP, "repro", "no-such-stage"], project, check=False).returncode == 1
    assert run([*OBCP, "repro", "--no-such-flag"], project, check=False).returncode == 2

    # ---- a params change rebuilds the cycles: cycle 1's questions all come from the store, no sheet
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("lambda_neg: 0.1", "lambda_neg: 0.2"))
    rebuilt = repro_until_done(project)
    assert "cycle(s) 1, 2 of arm obcp are discarded" in rebuilt
    assert not (cycle1 / "questions.csv").exists()
    led = ledger.read(project / LEDGER)
    c1, c2 = led[led["cycle"] == 1], led[led["cycle"] == 2]

    # ---- two corrections of questions only cycle 2 used, one with the command and one from a Label
    # Studio re-import; the next run skips cycle 1 and replays cycle 2 (a correction of a cycle-1
    # question replays from cycle 1: tests/test_active.py::test_human_answers_outlive_cycles)
    fixed, relabeled = (c2[~c2["sample_id"].isin(c1["sample_id"])].iloc[i] for i in (0, 1))
    sid, asked, was = int(fixed["sample_id"]), int(fixed["asked_class"]), bool(fixed["answer"])
    fix = run([*OBCP, "answers", "fix", str(sid), "--asked", str(asked), "--answer", "no" if was else "yes"], project)
    print(f"$ obcp answers fix {sid} --asked {asked} --answer {'no' if was else 'yes'}\n{fix.stdout}")
    assert f"{'yes' if was else 'no'} -> {'no' if was else 'yes'}" in fix.stdout
    assert "used by arm obcp seed 0 cycle 2" in fix.stdout
    sid2, asked2, was2 = int(relabeled["sample_id"]), int(relabeled["asked_class"]), bool(relabeled["answer"])
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{"id": 1, "data": {"sample_id": sid2, "asked_class": asked2, "dataset": "digits"},
                                   "annotations": [{"id": 7, "was_cancelled": False,
                                                    "updated_at": "2026-05-02T10:00:00Z",
                                                    "result": [{"from_name": "answer", "type": "choices",
                                                                "value": {"choices": ["no" if was2 else "yes"]}}]}]}]))
    imported = run([*OBCP, "annotate", "--import", str(export)], project)
    assert "1 answers read, 1 new or changed added" in imported.stdout
    replay = run([*OBCP, "repro"], project)
    print(f"$ obcp annotate --import export.json\n{imported.stdout}$ obcp repro\n{replay.stdout}")
    assert "cycle 1: up to date, skipped" in replay.stdout
    assert "cycle 2: 2 answer(s) differ from the ones it was trained with" in replay.stdout
    led = ledger.read(project / LEDGER)
    for s_id, a_cls, before in ((sid, asked, was), (sid2, asked2, was2)):
        row = led[(led["sample_id"] == s_id) & (led["asked_class"] == a_cls)]
        assert row["cycle"].tolist() == [2] and row["answer"].tolist() == [not before]

    # the store kept every answer ever given: both corrections are new rows, the old ones stay
    store = answers.read(project / STORE)
    history = store[(store["sample_id"] == sid) & (store["asked_class"] == asked)]
    assert history["answer"].tolist() == [was, not was] and history["source"].tolist()[-1] == "obcp answers fix"
    listed = run([*OBCP, "answers", "list", "--sample", str(sid2), "--history"], project).stdout
    assert "label-studio export.json" in listed and "answers.csv" in listed


def test_stage_exit_codes_are_read_from_dvcs_exceptions():
    """How DVC surfaces a failed stage: `ReproductionError` raised from `StageCmdFailedError(cmd,
    status)`, whose message ends "exited with N"; the codes of every failed stage combine."""
    from dvc.exceptions import DvcException, ReproductionError
    from dvc.stage.exceptions import StageCmdFailedError

    from pipeline.tools.repro import combine, stage_exit_code

    for status in (2, 3, 1, 137, -9):
        try:
            try:
                raise StageCmdFailedError("python -m stages.active --seed 0", status)
            except StageCmdFailedError as exc:
                raise ReproductionError("failed to reproduce 'active@0'") from exc
        except ReproductionError as exc:
            assert stage_exit_code(exc) == status
    assert stage_exit_code(ReproductionError("failed to reproduce 'x'")) is None
    assert stage_exit_code(DvcException("lock held")) is None
    assert combine([]) == 0 and combine([3]) == 3 and combine([2]) == 2 and combine([3, 2, 3]) == 2
    assert combine([3, 1]) == 1 and combine([None]) == 1 and combine([2, -9]) == 1


def test_validate_stage_comes_first_and_orders_the_rest():
    """dvc.yaml: `validate` is the first stage, always runs, never has its files deleted by DVC;
    `convert` and `init_pool` depend on its stamp, the stages that run plugin code on the plugins'
    fingerprint; every stage keeps its own params list."""
    from conftest import ROOT

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages)[0] == "validate" and stages["validate"]["always_changed"] is True
    outs = {next(iter(o)): o[next(iter(o))] for o in stages["validate"]["outs"]}
    assert set(outs) == {"data/validated/stamp.json", "data/validated/plugins.json"}
    assert all(o["persist"] and o.get("cache", True) for o in outs.values())  # pulled with the rest
    body = {name: s.get("do", s) for name, s in stages.items()}
    for name in ("convert", "init_pool"):
        assert "data/validated/stamp.json" in body[name]["deps"], name
    for name in ("init_pool", "active"):  # the stages whose imports reach plugin-loading code (tests/test_deps.py)
        assert "data/validated/plugins.json" in body[name]["deps"], name
    for name in ("convert", "pretrain", "evaluate", "figures"):  # they never load plugins (names=False)
        assert "data/validated/plugins.json" not in body[name]["deps"], name
    assert all(body[name].get("params") for name in body if name != "validate")


def test_validate_writes_the_plugins_fingerprint_and_a_constant_stamp(tmp_path, monkeypatch):
    import hashlib as h

    from conftest import make_project
    from pipeline.tools.validate import PLUGINS, STAMP, check_project, write_validated

    project = make_project(tmp_path / "p", {"plugins": ["my_plugin.py"]}, git=False)
    (project / "my_plugin.py").write_text("VALUE = 1\n")
    monkeypatch.chdir(project)
    params, pool, why = check_project()
    assert pool is None and "does not exist yet" in why  # not converted: no pool-size check yet
    write_validated(params)
    assert json.loads(PLUGINS.read_text()) == {"my_plugin.py": h.sha256(b"VALUE = 1\n").hexdigest()}
    stamp = STAMP.read_bytes()
    stamp_time = STAMP.stat().st_mtime_ns
    (project / "my_plugin.py").write_text("VALUE = 2\n")  # an edited plugin: a new fingerprint
    write_validated(check_project()[0])
    assert json.loads(PLUGINS.read_text()) == {"my_plugin.py": h.sha256(b"VALUE = 2\n").hexdigest()}
    assert STAMP.read_bytes() == stamp and STAMP.stat().st_mtime_ns == stamp_time  # never rewritten


def test_pool_size_is_used_only_for_the_conversion_of_the_current_dataset_params(tmp_path, monkeypatch):
    from conftest import dataset_facts, make_project
    from pipeline.core.config import ParamsError
    from pipeline.tools.validate import check_project

    project = make_project(tmp_path / "p", {"budget": {"initial": 500}}, git=False)
    dataset_facts(project / "data/digits", [str(i) for i in range(10)], 400)
    monkeypatch.chdir(project)
    with pytest.raises(ParamsError, match="budget.initial: 500 is larger than the train pool \\(400 samples\\)"):
        check_project()
    dataset = yaml.safe_load((project / "params.yaml").read_text())["dataset"]
    lock = {"stages": {"convert": {"params": {"params.yaml": {"dataset": {**dataset, "root": "elsewhere"}}}}}}
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))  # converted from another root: convert reruns first
    _, pool, why = check_project()
    assert pool is None and "changed since the last conversion" in why
    lock["stages"]["convert"]["params"]["params.yaml"]["dataset"] = dataset
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))
    with pytest.raises(ParamsError, match="larger than the train pool"):
        check_project()
