"""The training loop: learning, stop + resume, and DDP (real torchrun, gloo, 2 processes)."""
from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, merge, torchrun
from pipeline.loop import train as train_module
from pipeline.core.context import open_run
from pipeline.method.history import PredictionHistory
from pipeline.loop.pretrain import run_stage1
from pipeline.loop.runs import fresh_state, stage1_meta
from pipeline.pool.pools import read_pool
from pipeline.loop.runs import loop_config
from pipeline.loop.train import (CheckpointError, LossPlan, learning_rate, load_checkpoint, loop_precision, pool_view,
                                 stage1_plan, train_epochs)
from pipeline.method.methods import stage2_plan
from pipeline.core.config import ArmParams, LossParams


def with_params(project: Path, dest: Path, overrides: dict) -> Path:
    """A copy of a converted project (data shared by symlink) with params overridden."""
    dest.mkdir(parents=True)
    (dest / "data").mkdir()
    (dest / "data" / "digits").symlink_to(project / "data" / "digits")
    shutil.copytree(project / "data" / "runs" / "seed0" / "cycle_000", dest / "data/runs/seed0/cycle_000")
    params = merge(yaml.safe_load((project / "params.yaml").read_text()), overrides)
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    return dest


def test_cosine_schedule():
    assert learning_rate(0.1, 0, 10) == pytest.approx(0.1)
    assert learning_rate(0.1, 5, 10) == pytest.approx(0.05)
    assert learning_rate(0.1, 10, 10) == pytest.approx(0.0)


def test_loss_plans_follow_the_arm_switches():
    loss = LossParams(lambda_ctr=0.1, lambda_neg=0.2)
    full = stage2_plan(ArmParams(), loss)
    assert full.contrastive_labeled and full.contrastive_negative and full.negative_loss
    assert not stage2_plan(ArmParams(neg_ctr=False), loss).contrastive_negative
    assert not stage2_plan(ArmParams(neg_loss=False), loss).negative_loss
    onebit = stage2_plan(ArmParams(method="onebit"), loss)
    assert onebit.denied_consistency and not onebit.negative_loss and not onebit.needs_bank
    assert onebit.lambda_neg == 0 and not onebit.contrastive_unlabeled
    assert isinstance(full, LossPlan)
    fullbit = stage2_plan(ArmParams(method="fullbit", strategy="entropy"), loss)
    assert fullbit.contrastive_labeled and not fullbit.contrastive_negative and not fullbit.negative_loss


def test_stop_and_resume_is_bitwise_identical(digits_data, tmp_path):
    project = with_params(digits_data, tmp_path / "p", {"train": {"stage1_epochs": 3}})
    ctx = open_run(project / "params.yaml", 0, root=project)
    straight = run_stage1(ctx, tmp_path / "straight")

    run_stage1(ctx, tmp_path / "stopped", until_epoch=1)
    state = fresh_state(ctx)
    load_checkpoint(tmp_path / "stopped" / "checkpoint.pt", state, expect=stage1_meta(ctx))
    assert state.epoch == 1
    history = PredictionHistory.load(tmp_path / "stopped" / "history.npz")
    resumed = run_stage1(ctx, tmp_path / "stopped", state=state, history=history)

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    h1 = np.load(tmp_path / "straight" / "history.npz")
    h2 = np.load(tmp_path / "stopped" / "history.npz")
    for key in h1.files:
        np.testing.assert_array_equal(h1[key], h2[key])
    log = (tmp_path / "stopped" / "log.csv").read_text().strip().splitlines()
    assert len(log) == 1 + 3  # header + one row per epoch, across the stop


def test_stage1_does_not_depend_on_query_times_or_window(digits_data, tmp_path):
    """pretrain's outputs are the same bytes whatever query_times and selection.window are
    (docs/design.md §4; so DVC may reuse the cached stage 1 when they change)."""
    outs = []
    variants = {"a": {"query_times": 2}, "b": {"query_times": 1, "selection": {"window": "across_queries"}}}
    for name, over in variants.items():
        project = with_params(digits_data, tmp_path / name, over)
        run_stage1(open_run(project / "params.yaml", 0, root=project), tmp_path / name / "stage1")
        outs.append(tmp_path / name / "stage1")
    for file in ("checkpoint.pt", "history.npz", "test.json"):
        assert (outs[0] / file).read_bytes() == (outs[1] / file).read_bytes(), file


def test_checkpoint_errors(digits_data, tmp_path):
    ctx = open_run(digits_data / "params.yaml", 0, root=digits_data)
    state = fresh_state(ctx)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt", state, expect=stage1_meta(ctx))
    run_stage1(ctx, tmp_path / "s1", until_epoch=1)
    good = tmp_path / "s1" / "checkpoint.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated, state, expect=stage1_meta(ctx))
    with pytest.raises(CheckpointError, match="another run"):
        load_checkpoint(good, state, expect={**stage1_meta(ctx), "dataset": "cifar10"})


def test_the_gpu_paths_train_on_cpu(digits_data, monkeypatch):
    """What a GPU runs, on CPU. Torch view ops instead of the numba kernels: the same per-step
    losses over one epoch up to float rounding (the views agree to ~1e-6, see test_loaders;
    measured here: relative differences ~1e-7, tolerance 1e-4, while a real change of the
    views or the loss moves them by > 1e-3). bfloat16 autocast + GradScaler: the loss falls
    over two epochs, nothing is NaN, and it really ran in bfloat16 (losses differ from float32)."""
    ctx = open_run(digits_data / "params.yaml", 0, root=digits_data)
    pool = pool_view(read_pool(ctx.layout.initial_pool(0)), ctx.num_classes)
    plan = stage1_plan(ctx.params.loss)
    step_loss, totals = train_module.step_loss, []

    def spy(*args, **kwargs):
        out = step_loss(*args, **kwargs)
        totals[-1].append(float(out.total.detach()))
        return out

    monkeypatch.setattr(train_module, "step_loss", spy)

    def train(epochs: int, **knobs) -> list[dict]:
        run = dataclasses.replace(ctx, params=dataclasses.replace(
            ctx.params, train=dataclasses.replace(ctx.params.train, **knobs)))
        totals.append([])
        return train_epochs(fresh_state(run), pool, plan, loop_config(run), until_epoch=epochs, log=None,
                            progress=False)

    train(1, view_backend="numba")
    train(1, view_backend="torch")
    numba, torch_ops = (np.array(t) for t in totals)
    assert len(numba) == len(torch_ops) > 10
    np.testing.assert_allclose(torch_ops, numba, rtol=1e-4, atol=0)

    mixed = dataclasses.replace(ctx.params.train, view_backend="torch", cpu_amp=True)
    assert loop_precision(mixed, ctx.device).dtype == torch.bfloat16
    rows = train(2, view_backend="torch", cpu_amp=True)
    assert all(math.isfinite(r[k]) for r in rows for k in r if k.startswith("loss_"))
    assert rows[1]["loss_total"] < rows[0]["loss_total"] and rows[1]["loss_sup"] < rows[0]["loss_sup"]
    assert np.abs(np.array(totals[2][:len(numba)]) / numba - 1).max() > 1e-4  # not float32 arithmetic


@pytest.mark.slow
def test_ddp_two_processes(digits_data, tmp_path):
    """2 ranks end with identical weights; the history saw every unlabeled sample once per
    epoch; the final loss agrees with 1 process (same global batch) within 20 %."""
    epochs = 2
    one = with_params(digits_data, tmp_path / "one", {"train": {"stage1_epochs": epochs}})
    two = with_params(
        digits_data, tmp_path / "two",
        {"train": {"stage1_epochs": epochs, "batch_size": 16}, "ddp": {"backend": "gloo"}},
    )
    script = str(ROOT / "tests" / "ddp" / "stage1_run.py")
    torchrun(2, [script, str(two), str(tmp_path / "out2")], ROOT)
    torchrun(1, [script, str(one), str(tmp_path / "out1")], ROOT)
    r0 = torch.load(tmp_path / "out2" / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "out2" / "rank1.pt", weights_only=False)
    for name, w in r0["weights"].items():
        assert torch.equal(w, r1["weights"][name]), name
    counts = r0["count_p"]
    unl = r0["unlabeled"]
    assert (counts[unl] == epochs).all()  # m ≥ epochs: every epoch is in the window
    labeled = np.setdiff1d(np.arange(len(counts)), unl)
    assert (counts[labeled] == 0).all()
    single = torch.load(tmp_path / "out1" / "rank0.pt", weights_only=False)
    assert abs(single["final_loss"] - r0["final_loss"]) <= 0.2 * single["final_loss"]
