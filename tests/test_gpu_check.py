"""`obcp gpu-check --cpu`: the GPU check's own script on CPU (gloo, bfloat16 autocast + GradScaler,
torch view ops, tiny sizes), as CI can run it; without --cpu and without a GPU, a clear error."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.tools.gpu_check import run_gpu_check


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path, capsys):
    report = run_gpu_check(tmp_path / "gpu_check.json", cpu=True, echo=print)
    checks = report["checks"]
    assert report["ok"], json.dumps(checks, indent=1)
    assert list(checks) == ["collectives", "repro", "amp", "device_views", "bench"]
    assert json.loads((tmp_path / "gpu_check.json").read_text())["checks"].keys() == checks.keys()
    assert (checks["collectives"]["backend"], checks["collectives"]["world_size"]) == ("gloo", 2)
    assert set(checks["repro"]["top1"]) == {"obcp", "onebit"}
    assert checks["amp"]["dtype"] == "bfloat16" and checks["amp"]["loss_sup"][-1] < checks["amp"]["loss_sup"][0]
    assert checks["device_views"]["max_abs_diff"] <= 2e-4
    assert checks["bench"]["loop_images_per_s"] > 0 and 0 < checks["bench"]["ratio"]
    table = capsys.readouterr().out
    assert "gpu-check (cpu" in table and all(f"\n{name} " in table for name in checks)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_gpu_check_without_a_gpu_says_what_to_do(tmp_path):
    res = CliRunner().invoke(app, ["gpu-check", "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "no CUDA GPU" in res.output and "--cpu" in res.output
    assert not (tmp_path / "x.json").exists()
