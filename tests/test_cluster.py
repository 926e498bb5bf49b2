"""Past one machine, on loopback: multi-node torchrun, a DVC remote, a DVC experiment queue.

- Two `torchrun --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d` launchers (two "nodes"
  that only share 127.0.0.1 and a rendezvous id) train stage 1 to the same weights.
- A local folder stands in for an S3 DVC remote: `dvc push`, `git clone`, `dvc pull`, and the
  clone is clean (`dvc status`) with byte-identical artifacts.
- `dvc exp run --queue` twice, `dvc queue start -j 2`: both experiments finish (celery
  workers from dvc-task) and `dvc exp show --json` lists them with their metrics.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from conftest import ROOT, copy_project, env, free_port, project_from, run


# --------------------------------------------------------------------------- torchrun --nnodes 2


@pytest.mark.slow
def test_two_node_torchrun_on_loopback_trains_identical_weights(stage1_data, tmp_path):
    project = project_from(stage1_data, tmp_path / "p", {"ddp": {"backend": "gloo"}})
    out = tmp_path / "out"
    out.mkdir()
    port, job = free_port(), f"obcp-{uuid.uuid4().hex[:8]}"
    e = {**env(), "GLOO_SOCKET_IFNAME": "lo"}
    nodes = []
    for node_rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", job,
               "--rdzv_conf", "join_timeout=120", "--node_rank", str(node_rank), "--local_addr", "127.0.0.1",
               str(ROOT / "tests/ddp/cluster_stage1.py"), str(project), str(out)]
        log = open(tmp_path / f"node{node_rank}.log", "w")
        nodes.append((subprocess.Popen(cmd, cwd=project, env=e, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL), log))
    try:
        codes = [proc.wait(timeout=300) for proc, _ in nodes]
    finally:
        for proc, log in nodes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = "\n".join((tmp_path / f"node{r}.log").read_text() for r in (0, 1))
    assert codes == [0, 0], logs

    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert sorted(r["node"] for r in ranks) == [0, 1]  # one rank per node
    assert {r["master"].split(":")[0] for r in ranks} == {"127.0.0.1"}
    assert len({r["master"] for r in ranks}) == 1
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "the two nodes ended with different weights"
    # rank 0 alone wrote the stage-1 artifacts, and they hold the same weights
    ckpt = torch.load(out / "stage1/checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in w0)
    assert (out / "stage1/history.npz").exists() and (out / "stage1/test.json").exists()


# --------------------------------------------------------------------------- DVC remote and queue


@pytest.fixture(scope="module")
def committed(reproduced, tmp_path_factory) -> Path:
    """A copy of the shared tiny project after its full `dvc repro` (gloo, three cycles, one_bit
    45: conftest.REPRODUCED), its results committed."""
    project = copy_project(reproduced[0], tmp_path_factory.mktemp("cluster") / "p")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "results"], project)
    return project


ARTIFACTS = (
    "data/digits/train.beton",
    "data/digits/index.parquet",
    "data/runs/seed0/cycle_000/pool.parquet",
    "data/runs/seed0/stage1/checkpoint.pt",
    "data/runs/seed0/arms/obcp/cycle_003/pool.parquet",
    "data/runs/seed0/arms/obcp/cycle_003/checkpoint.pt",
    "reports/ledger/seed0/obcp.parquet",
    "reports/metrics/seed0/obcp.json",
)


@pytest.mark.slow
def test_dvc_remote_push_clone_pull_is_clean_and_identical(committed, tmp_path):
    store = tmp_path / "store"  # stands in for s3://bucket/obcp
    run(["dvc", "remote", "add", "-d", "store", str(store)], committed)
    run(["git", "commit", "-qam", "remote"], committed)
    run(["dvc", "push"], committed)
    assert any(p.is_file() for p in store.rglob("*"))

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(committed), str(clone)], tmp_path)
    assert not (clone / "data").exists()  # artifacts are not in git
    run(["dvc", "pull"], clone)
    status = run(["dvc", "status", "--json"], clone)
    assert json.loads(status.stdout) == {"validate": ["always changed"]}, status.stdout  # it runs on every repro
    for rel in ARTIFACTS:
        assert (clone / rel).read_bytes() == (committed / rel).read_bytes(), rel
    # nothing to rerun in the clone either, but the params check
    again = run(["dvc", "repro"], clone)
    assert [line for line in again.stdout.splitlines() if "Running stage" in line] == ["Running stage 'validate':"]


def _queue_status(project: Path) -> str:
    return run(["dvc", "queue", "status"], project).stdout


@pytest.mark.slow
def test_dvc_queue_runs_two_experiments_in_parallel(committed):
    for value in (1, 2):
        out = run(["dvc", "exp", "run", "--queue", "-S", f"query_times={value}"], committed)
        assert "Queued experiment" in out.stdout, out.stdout
    try:
        run(["dvc", "queue", "start", "-j", "2"], committed)
        deadline = time.time() + 300
        status = _queue_status(committed)
        while time.time() < deadline and any(w in status for w in ("Queued", "Running")):
            time.sleep(3)
            status = _queue_status(committed)
    finally:
        run(["dvc", "queue", "stop"], committed, check=False)
    tasks = [line for line in status.splitlines() if line[:1].isalnum() and "Status" not in line
             and not line.startswith("Worker")]
    assert len(tasks) == 2 and all("Success" in t for t in tasks), status

    doc = json.loads(run(["dvc", "exp", "show", "--json"], committed).stdout)
    exps = {}
    for commit in doc:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                exps[data["params"]["params.yaml"]["data"]["query_times"]] = data["metrics"]
    assert sorted(exps) == [1, 2], exps.keys()
    for metrics in exps.values():  # the summary metrics: final top-1 per arm, bits spent
        summary = metrics["reports/metrics.json"]["data"]
        assert 0 <= summary["top1"]["obcp"] <= 100  # percent
        assert summary["bits"]["obcp"] == round(50 * math.log2(10) + 45, 1)  # |I^S| labels + every question
    # the committed baseline (three cycles) is untouched by the experiments
    workspace = json.loads((committed / "reports/metrics/seed0/obcp.json").read_text())
    assert len(workspace["points"]) == 4
