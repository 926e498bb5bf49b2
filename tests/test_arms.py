"""`active@seed`: every arm of a seed in one stage (pipeline/arms.py, stages/active.py).

- Arms run in parallel forked workers on CPU; each arm's ledger is the same whatever the
  worker count (`--workers 2` vs `--workers 1`, where the arms share one process in turn).
- Without `--arm`, arms no longer in params.yaml lose their cycles and ledger; with
  `--arm`, nothing else is touched.
- One failing arm stops the stage with exit 2 and a message naming it; the other arms
  finish and keep their cycles.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import project_from, run
from pipeline import ledger

TWO_ARMS = {"arms": {"obcp": {"method": "obcp", "strategy": "obcp"},
                     "random": {"method": "obcp", "strategy": "random"}}}
ACTIVE = [sys.executable, "-m", "stages.active", "--seed", "0"]
BOTH = ["--arm", "obcp", "--arm", "random"]
ARMS = Path("data/runs/seed0/arms")
LEDGERS = Path("reports/ledger/seed0")


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
    for arm in ("obcp", "random"):
        assert arm_cycles_done(project, arm) == ["cycle_001", "cycle_002"], arm
        for k in (1, 2):
            assert f"[{arm} seed 0] cycle {k}: asking 30 one-bit questions" in stdout
        led = ledger.read(project / LEDGERS / f"{arm}.parquet")
        assert len(led) == 60 and sorted(led["cycle"].unique()) == [1, 2]
        assert (led["arm"] == arm).all() and (led["seed"] == 0).all()
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
    assert out.stdout.count("up to date, skipped") == 4
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


def test_under_ddp_the_arms_run_in_turn_on_every_rank(stage1_data, tmp_path):
    """`pipeline.launch 2` = torchrun with 2 gloo ranks: the arms run one after another
    (even when --workers asks for more), each on both ranks; rank 0 writes."""
    project = project_from(stage1_data, tmp_path / "ddp", TWO_ARMS)
    out = run([sys.executable, "-m", "pipeline.launch", "2", "stages.active", "--seed", "0", *BOTH,
               "--workers", "2"], project)
    assert "at a time" not in out.stdout  # no forked workers under DDP
    for arm in ("obcp", "random"):
        assert arm_cycles_done(project, arm) == ["cycle_001", "cycle_002"], arm
        assert out.stdout.count(f"[{arm} seed 0] cycle 1: asking") == 1  # logged by rank 0 only
        led = ledger.read(project / LEDGERS / f"{arm}.parquet")
        assert len(led) == 60 and (led["arm"] == arm).all()


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
    assert out.stdout.count("[obcp seed 0] cycle") == 2 and "[obcp seed 0] cycle 1: up to date" in out.stdout
    assert "[random seed 0] cycle 1: asking 30 one-bit questions" in out.stdout
    assert {k: (project / ARMS / "obcp" / f"cycle_00{k}" / "manifest.json").read_text() for k in (1, 2)} == before
    led = ledger.read(project / LEDGERS / "random.parquet")
    assert len(led) == 60 and (led["strategy"] == "max").all()
