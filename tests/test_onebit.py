"""The `onebit` arm is Hu et al. 2020's method as their code runs it: a random subset, the
EMA teacher's question, Mean Teacher's ramped consistency with the denied classes masked."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, project_from
from pipeline.loop.cycle import Cycle, cycle_key
from pipeline.loop.steps import score_step
from pipeline.core.config import ArmParams, ContrastiveParams, LossParams, OnebitParams, load_params
from pipeline.core.context import open_run
from pipeline.method.moco import LabelBank
from pipeline.loop.runs import fresh_state, stage1_meta
from pipeline.loop.inference import predict
from pipeline.loop.train import Precision, load_checkpoint, step_loss
from pipeline.method.methods import stage2_plan
from pipeline.method.plan import sigmoid_rampup
from test_views import tiny_batch, tiny_model, tiny_pool

PRESETS = sorted((ROOT / "pipeline" / "presets").glob("*.yaml"))


@pytest.mark.parametrize("path", [ROOT / "params.yaml", *PRESETS], ids=lambda p: Path(p).name)
def test_onebit_arm_selects_a_random_subset(path):
    arms = load_params(path).arms
    onebit = [a.strategy for a in arms.values() if a.method == "onebit"]
    # every comparison has Hu et al.'s arm, selecting at random; fig6left varies I^S for obcp alone
    assert onebit == ([] if Path(path).name == "fig6left.yaml" else ["random"])
    assert "onebit" in yaml.safe_load(Path(path).read_text())  # its Mean-Teacher settings are spelled out


def test_consistency_ramps_up_from_stage_2():
    onebit = OnebitParams(consistency=10.0, rampup_epochs=5, ema_decay=0.97)
    plan = stage2_plan(ArmParams(method="onebit"), LossParams(), onebit, start_epoch=15)
    assert plan.teacher_decay == 0.97 and not plan.needs_bank and not plan.contrastive_unlabeled
    for epoch, ramp in [(15, math.exp(-5)), (16, math.exp(-5 * 0.8 ** 2)), (18, math.exp(-5 * 0.4 ** 2)),
                        (20, 1.0), (30, 1.0)]:
        assert plan.at_epoch(epoch).lambda_cons == pytest.approx(10.0 * ramp)
        assert plan.at_epoch(epoch).weight("cons") == pytest.approx(10.0 * ramp)
    assert sigmoid_rampup(3, 0) == 1.0
    no_ramp = stage2_plan(ArmParams(method="onebit"), LossParams(), OnebitParams(rampup_epochs=0), start_epoch=15)
    assert no_ramp.at_epoch(15).lambda_cons == no_ramp.lambda_cons == 10.0
    assert stage2_plan(ArmParams(), LossParams()).at_epoch(15).teacher_decay is None  # ObCP arms: MoCo's EMA


def test_teacher_masks_denied_classes_over_the_whole_batch():
    nl, nu = 4, 6
    model = tiny_model().eval()  # eval-mode BN: each sample's logits are its own
    before = copy.deepcopy(model)
    with torch.no_grad():  # make the teacher differ from the student
        for p in model.encoder_k.parameters():
            p.add_(0.05 * torch.randn_like(p))
    k0 = [p.clone() for p in model.encoder_k.parameters()]
    batch, pool = tiny_batch(nl, nu, extra=False), tiny_pool(nl, nu)
    plan = stage2_plan(ArmParams(method="onebit"), LossParams(), OnebitParams(ema_decay=0.97))
    out = step_loss(model, model.encoder_q, LabelBank(nl + nu, 8), batch, pool, plan, ContrastiveParams(),
                    Precision("cpu"))
    assert set(out.terms) == {"sup", "cons"}
    for k, k_before, q in zip(model.encoder_k.parameters(), k0, before.encoder_q.parameters()):
        torch.testing.assert_close(k, 0.97 * k_before + 0.03 * q)  # the teacher's own EMA decay
    with torch.no_grad():
        student = model(torch.cat([batch.xl1, batch.xu1]))[0]
        teacher = model.keys(torch.cat([batch.xl2, batch.xu2]))[0]
    p_t = torch.softmax(teacher.masked_fill(pool.denied, float("-inf")), dim=1)
    assert (p_t[pool.denied] == 0).all() and pool.denied[0].any() and pool.denied[nl:].all(0).any()
    expected = ((torch.softmax(student, dim=1) - p_t) ** 2).sum(1).mean()
    torch.testing.assert_close(out.terms["cons"], expected)


def test_onebit_asks_the_teachers_question(stage1_data, tmp_path):
    arms = {"obcp": {"method": "obcp", "strategy": "obcp"}, "onebit": {"method": "onebit", "strategy": "random"}}
    project = project_from(stage1_data, tmp_path / "p", {"arms": arms})
    ctx = open_run(project / "params.yaml", 0, root=project)
    c = Cycle(ctx, "onebit", 1)
    c.dir.mkdir(parents=True)
    scores = score_step(c).sort_values("sample_id")
    assert (scores["strategy"] == "random").all()
    state = fresh_state(ctx)
    load_checkpoint(c.prev_dir / "checkpoint.pt", state, expect=stage1_meta(ctx))
    ids = scores["sample_id"].to_numpy()
    _, teacher = predict(state.model, ctx.layout.beton("train"), ids, device=ctx.device, teacher=True)
    _, student = predict(state.model, ctx.layout.beton("train"), ids, device=ctx.device)
    np.testing.assert_array_equal(scores["asked_class"].to_numpy(), teacher.argmax(1))  # nothing denied yet
    assert (teacher.argmax(1) != student.argmax(1)).any()  # the two questions differ: the test tells them apart
    # the Mean-Teacher settings shape the onebit arm's cycles only
    assert "onebit" in cycle_key(c)["params"] and "onebit" not in cycle_key(Cycle(ctx, "obcp", 1))["params"]
