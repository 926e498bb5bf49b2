"""`active@seed`: every arm of a seed in one stage (pipeline/loop/arms.py, stages/active.py).

- Arms run in parallel forked workers on CPU; each arm's ledger is the same whatever the
  worker count (`--workers 2` vs `--workers 1`, where the arms share one process in turn).
- Without `--arm`, arms no longer in params.yaml lose their cycles and ledger; with
  `--arm`, nothing else is touched.
- One failing arm stops the stage with exit 2 and a message naming it; the other arms
  finish and keep their cycles.
- Under DDP (torchrun, 2 gloo ranks) every method and Table-4 ablation trains, in turn,
  to identical weights on both ranks; rank 0 alone writes.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT, project_from, run, torchrun
from ddp.arms_run import digest
from pipeline.pool import ledger

TWO_ARMS = {"arms": {"obcp": {"method": "obcp", "strategy": "obcp"},
                     "random": {"method": "obcp", "strategy": "random"}}}
ACTIVE = [sys.executable, "-m", "stages.active", "--seed", "0"]
BOTH = ["--arm", "obcp", "--arm", "random"]
ARMS = Path("data/runs/seed0/arms")
# the loss terms each method and Table-4 ablation trains with in stage 2 (log.csv's loss_* columns)
TERMS = {
    "obcp": ["sup", "c_u", "c_l", "c_n", "neg"],
    "onebit": ["sup", "cons"],
    "fullbit": ["sup", "c_u", "c_l"],
    "no_ysup": ["sup", "c_u", "c_l", "c_n", "neg"],
    "no_yctr": ["sup", "c_u", "c_l", "c_n", "neg"],
    "no_nctr": ["sup", "c_u", "c_l", "neg"],
    "no_nloss": ["sup", "c_u", "c_l", "c_n"],
}
LEDGERS = Path("reports/ledger/seed0")


def cycle_lines(stdout: str, arm: str, k: int | None = None) -> list[str]:
    """The summary lines the stage printed for `arm` (cycle `k`, or every cycle): `pipeline.loop.progress`."""
    cycle = r"\d+" if k is None else str(k)
    return re.findall(rf"^arm +\d+/\d+ {re.escape(arm)} +seed 0  cycle {cycle}/\d+  top-1 .*ETA .*$", stdout, re.M)


def arm_cycles_done(project: Path, arm: str) -> list[str]:
    return sorted(p.parent.name for p in (project / ARMS / arm).glob("cycle_*/manifest.json"))


def plant_gone(project: Path) -> None:
    """Artifacts of an arm `gone` that params.yaml does not have (a removed arm)."""
    (project / ARMS / "gone" / "cycle_001").mkdir(parents=True)
    (project / ARMS / "gone" / "cycle_001" / "manifest.json").write_text("{}")
    (project / LEDGERS).mkdir(parents=True, exist_ok=True)
    (project / LEDGERS / "gone.parquet").write_bytes(b"not read")


@pytest.fixture(scope="module")
def parallel(stage1_data, tmp_path_factory) -> tuple[Path, str]:
    """Two arms, two workers, `--arm` given (so a planted removed arm `gone` is kept)."""
    project = project_from(stage1_data, tmp_path_factory.mktemp("arms") / "w2", TWO_ARMS)
    plant_gone(project)
    out = run([*ACTIVE, *BOTH, "--workers", "2"], project)
    return project, out.stdout


def test_two_workers_run_every_arm(parallel):
    project, stdout = parallel
    assert "2 arms, 2 at a time" in stdout
    for i, arm in enumerate(("obcp", "random"), start=1):
        assert arm_cycles_done(project, arm) == ["cycle_001", "cycle_002"], arm
        for k in (1, 2):  # one line per arm and cycle, printed by the parent for its workers
            [line] = cycle_lines(stdout, arm, k)
            assert re.match(rf"arm {i}/2 {arm} +seed 0  cycle {k}/2  top-1 +\d+\.\d %  yes \d+/30 \(\d+ %\) "
                            rf"+(\d+\.\d s|\d+ min \d\d s)  ETA ", line), line
        led = ledger.read(project / LEDGERS / f"{arm}.parquet")
        assert len(led) == 60 and sorted(led["cycle"].unique()) == [1, 2]
        assert (led["arm"] == arm).all() and (led["seed"] == 0).all()
    assert "asking 30 one-bit questions" not in stdout and "epoch " not in stdout  # the routine lines: verbose only
    assert stdout.rstrip().endswith("ETA done"), stdout
    # --arm given: the removed arm's artifacts are left alone
    assert (project / ARMS / "gone" / "cycle_001" / "manifest.json").exists()
    assert (project / LEDGERS / "gone.parquet").exists()


def test_results_do_not_depend_on_the_worker_count(parallel, stage1_data, tmp_path):
    project, _ = parallel
    serial = project_from(stage1_data, tmp_path / "w1", TWO_ARMS)
    out = run([*ACTIVE, *BOTH, "--workers", "1"], serial)
    assert "at a time" not in out.stdout  # one process, the arms in turn
    cols = ledger.deterministic_columns()
    for arm in ("obcp", "random"):
        a = ledger.read(project / LEDGERS / f"{arm}.parquet")[cols]
        b = ledger.read(serial / LEDGERS / f"{arm}.parquet")[cols]
        pd.testing.assert_frame_equal(a, b, obj=f"{arm} ledger")
        for k in (1, 2):
            pool = f"cycle_{k:03d}/pool.parquet"
            pd.testing.assert_frame_equal(pd.read_parquet(project / ARMS / arm / pool),
                                          pd.read_parquet(serial / ARMS / arm / pool), obj=f"{arm} {pool}")
    # the two strategies really asked different questions (the comparison is not vacuous)
    asked = [set(ledger.read(project / LEDGERS / f"{arm}.parquet")["sample_id"]) for arm in ("obcp", "random")]
    assert asked[0] != asked[1]


def test_arms_not_in_params_are_pruned(parallel, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(parallel[0], project, symlinks=True)
    assert (project / ARMS / "gone").is_dir() and (project / LEDGERS / "gone.parquet").exists()
    out = run(ACTIVE, project)  # no --arm: every arm in params, and prune the rest
    assert "removed arm 'gone'" in out.stdout
    assert not (project / ARMS / "gone").exists()
    assert not (project / LEDGERS / "gone.parquet").exists()
    assert sorted(p.name for p in (project / ARMS).iterdir()) == ["obcp", "random"]
    assert sorted(p.name for p in (project / LEDGERS).iterdir()) == ["obcp.parquet", "random.parquet"]
    # the arms in params are untouched: every cycle is up to date
    assert sum(" up to date  ETA " in line for arm in ("obcp", "random") for line in cycle_lines(out.stdout, arm)) == 4
    for arm in ("obcp", "random"):
        assert arm_cycles_done(project, arm) == ["cycle_001", "cycle_002"]
        assert len(ledger.read(project / LEDGERS / f"{arm}.parquet")) == 60


def test_a_failing_arm_exits_2_naming_it_and_the_others_finish(stage1_data, tmp_path):
    project = project_from(stage1_data, tmp_path / "p", TWO_ARMS)
    (project / LEDGERS).mkdir(parents=True)
    bad = project / LEDGERS / "random.parquet"
    bad.write_bytes(b"this is not parquet")  # a bad input of the `random` arm only
    out = run([*ACTIVE, "--workers", "2"], project, check=False)
    assert out.returncode == 2, f"{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    err = out.stderr.strip()
    assert err.startswith("error: ") and "\n\n" not in err, err
    assert "1 of 2 arm(s) of seed 0 failed" in err
    assert "  random: " in err and "random.parquet" in err
    assert "obcp:" not in err
    assert "Finished arms (obcp) are kept" in err
    # the other arm ran every cycle to the end; the failing one wrote nothing
    assert arm_cycles_done(project, "obcp") == ["cycle_001", "cycle_002"]
    assert len(ledger.read(project / LEDGERS / "obcp.parquet")) == 60
    assert not (project / ARMS / "random").exists()
    assert bad.read_bytes() == b"this is not parquet"


@pytest.mark.slow
def test_every_method_and_ablation_under_ddp(stage1_data, tmp_path):
    """One torchrun launch, 2 gloo ranks, `stages.active` with obcp, onebit, fullbit and the four
    Table-4 ablations: the arms run in turn on both ranks (no forked workers, even when --workers
    asks for them), each with its own loss terms; after every retrain both ranks hold identical
    weights and label bank; rank 0 alone writes (the checkpoint holds those weights) and logs."""
    arms = {name: arm for name, arm in yaml.safe_load((ROOT / "params.yaml").read_text())["arms"].items()
            if name in TERMS}
    project = project_from(stage1_data, tmp_path / "ddp", {
        "arms": arms, "query_times": 1, "train": {"stage2_epochs": 1}, "ddp": {"backend": "gloo"}})
    out = torchrun(2, [str(ROOT / "tests/ddp/arms_run.py"), str(project), str(tmp_path / "out")], ROOT)
    assert "at a time" not in out.stdout  # no forked workers under DDP
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["states"]) == len(TERMS)  # one retrain per arm, in params order
    assert ranks[0]["states"] == ranks[1]["states"], "the ranks ended a retrain with different weights"
    assert ranks[1]["writes"] == []
    assert len(ranks[0]["writes"]) == len(set(ranks[0]["writes"]))  # every artifact written once
    for (arm, terms), state in zip(TERMS.items(), ranks[0]["states"]):
        cycle = project / ARMS / arm / "cycle_001"
        ckpt = torch.load(cycle / "checkpoint.pt", weights_only=False)
        assert digest(ckpt["model"]) == state["model"], arm
        assert len(cycle_lines(out.stdout, arm, 1)) == 1  # logged by rank 0 only
        log = pd.read_csv(cycle / "log.csv")
        assert sorted(c[5:] for c in log.columns if c.startswith("loss_")) == sorted([*terms, "total"]), arm
        assert log.filter(like="loss_").notna().all().all(), arm
        led = ledger.read(project / LEDGERS / f"{arm}.parquet")
        manifest = json.loads((cycle / "manifest.json").read_text())
        assert len(led) == manifest["asked"] > 0 and (led["arm"] == arm).all(), arm
        assert not led.duplicated(["sample_id", "asked_class"]).any(), arm


def test_changing_one_arm_retrains_only_that_arm(parallel, tmp_path):
    """What `dvc exp run -S arms.random.strategy=max` does to active@0: the stage reruns,
    the unchanged arm skips every cycle (same manifests), the changed one is redone."""
    import yaml

    project = tmp_path / "p"
    shutil.copytree(parallel[0], project, symlinks=True)
    before = {k: (project / ARMS / "obcp" / f"cycle_00{k}" / "manifest.json").read_text() for k in (1, 2)}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["arms"]["random"]["strategy"] = "max"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([*ACTIVE, *BOTH, "--workers", "2"], project)
    kept, redone = cycle_lines(out.stdout, "obcp"), cycle_lines(out.stdout, "random")
    assert len(kept) == 2 and all(" up to date  ETA " in line for line in kept), kept
    assert len(redone) == 2 and all(re.search(r"yes \d+/30 .* (\d+\.\d s|\d+ min \d\d s)  ETA ", line)
                                    for line in redone), redone
    assert {k: (project / ARMS / "obcp" / f"cycle_00{k}" / "manifest.json").read_text() for k in (1, 2)} == before
    led = ledger.read(project / LEDGERS / "random.parquet")
    assert len(led) == 60 and (led["strategy"] == "max").all()
