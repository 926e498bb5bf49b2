"""Which view feeds what: Eq. 7's history (`selection.history_view`) and the classification
terms (`train.sup_view`)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import ROOT, torchrun
from pipeline.method import losses
from pipeline.core.config import ArmParams, ContrastiveParams, LossParams
from pipeline.core.context import open_run
from pipeline.method.history import PredictionHistory
from pipeline.method.models import build_encoder
from pipeline.method.moco import LabelBank, ObCP
from pipeline.pool.pools import read_pool
from pipeline.loop.runs import fresh_state, loop_config
from pipeline.loop.inference import predict
from pipeline.loop.train import (LossPlan, PoolView, Precision, StepBatch, loop_views, pool_view, record_pass,
                                 stage1_plan, step_loss, train_epochs)
from pipeline.method.methods import stage2_plan


def stage1_setup(project):
    ctx = open_run(project / "params.yaml", 0, root=project)
    return ctx, pool_view(read_pool(ctx.layout.initial_pool(0)), ctx.num_classes)


def history(ctx, m: int, query_epoch: int) -> PredictionHistory:
    return PredictionHistory(ctx.num_samples, ctx.num_classes, m=m, t=1, start_epoch=0, query_epoch=query_epoch)


def assert_same_history(a: PredictionHistory, b: PredictionHistory) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def test_clean_history_is_an_eval_pass_over_the_unlabeled_pool(digits_data):
    ctx, pool = stage1_setup(digits_data)
    cfg = dataclasses.replace(loop_config(ctx), history_view="clean")
    looped, explicit = history(ctx, 2, 2), history(ctx, 2, 2)

    def eval_pass(state, row):  # the model as the epoch ends
        ids, probs = predict(state.model, cfg.beton, pool.unlabeled_ids, device=cfg.device)
        explicit.record(row["epoch"], ids, probs)

    train_epochs(fresh_state(ctx), pool, stage1_plan(ctx.params.loss), cfg, until_epoch=2, history=looped,
                 on_epoch_end=eval_pass, log=None, progress=False)
    assert_same_history(looped, explicit)
    assert (looped.count_p[pool.unlabeled_ids] == 2).all() and looped.count_p.sum() == 2 * len(pool.unlabeled_ids)


def test_history_passes_leave_training_alone_and_weak_draws_are_seeded(digits_data):
    ctx, pool = stage1_setup(digits_data)
    weights, last = {}, {}
    for view in ("strong", "weak"):
        cfg = dataclasses.replace(loop_config(ctx), history_view=view)
        last[view] = history(ctx, 1, 2)  # epoch 1 only: the final model's
        state = fresh_state(ctx)
        train_epochs(state, pool, stage1_plan(ctx.params.loss), cfg, until_epoch=2, history=last[view], log=None,
                     progress=False)
        weights[view] = state.model.state_dict()
    for name, w in weights["strong"].items():
        assert torch.equal(w, weights["weak"][name]), name
    replayed, clean = history(ctx, 1, 2), history(ctx, 1, 2)
    record_pass(replayed, state.model, pool.unlabeled_ids, 1, dataclasses.replace(cfg, history_view="weak"))
    assert_same_history(last["weak"], replayed)  # the weak draws are a function of (seed, epoch, sample)
    record_pass(clean, state.model, pool.unlabeled_ids, 1, dataclasses.replace(cfg, history_view="clean"))
    assert not np.array_equal(clean.p_sum, replayed.p_sum) and not np.array_equal(clean.p_sum, last["strong"].p_sum)


@pytest.mark.slow
def test_history_pass_is_sharded_over_ranks(digits_data, tmp_path):
    """2 gloo ranks each predict their shard; rank 0's history equals one process's."""
    torchrun(2, [str(ROOT / "tests" / "ddp" / "history_pass.py"), str(digits_data), str(tmp_path)], ROOT)
    ctx, pool = stage1_setup(digits_data)
    state = fresh_state(ctx)
    for view in ("clean", "weak"):
        single = history(ctx, 1, 1)
        cfg = dataclasses.replace(loop_config(ctx), history_view=view)
        record_pass(single, state.model, pool.unlabeled_ids, 0, cfg)
        sharded = PredictionHistory.load(tmp_path / f"{view}.npz")
        np.testing.assert_array_equal(sharded.count_p, single.count_p)
        np.testing.assert_allclose(sharded.p_sum, single.p_sum, rtol=1e-5, atol=1e-6)


def test_loop_views_follow_sup_view():
    s1, loss = stage1_plan(LossParams()), LossParams()
    obcp, onebit = stage2_plan(ArmParams(), loss), stage2_plan(ArmParams(method="onebit"), loss)
    fullbit = stage2_plan(ArmParams(method="fullbit", strategy="entropy"), loss)
    for plan in (s1, obcp, fullbit):  # the default: no extra view
        assert loop_views(plan, "strong") == (["strong", "strong"], ["strong", "strong"])
    assert loop_views(s1, "weak") == (["weak", "strong"], ["strong", "strong"])
    assert loop_views(obcp, "weak") == (["strong", "strong", "weak"], ["strong", "strong", "weak"])
    assert loop_views(fullbit, "weak") == (["strong", "strong", "weak"], ["strong", "strong"])
    assert loop_views(onebit, "strong") == (["weak", "weak"], ["weak", "weak"])  # Hu et al.'s views, always
    assert loop_views(onebit, "weak") == (["weak", "weak"], ["weak", "weak"])


def tiny_model(num_classes: int = 3) -> ObCP:
    torch.manual_seed(0)
    return ObCP(build_encoder("smallcnn", num_classes, width=4, proj_dim=8), queue_size=16, momentum=0.9)


def tiny_batch(nl: int, nu: int, *, extra: bool) -> StepBatch:
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(n, 3, 8, 8, generator=g) for n in (nl, nl, nu, nu, nl, nu)]
    ids_l, ids_u = torch.arange(nl), torch.arange(nl, nl + nu)
    return StepBatch(x[0], x[1], ids_l, x[2], x[3], ids_u, *((x[4], x[5]) if extra else ()))


def tiny_pool(nl: int, nu: int, num_classes: int = 3) -> PoolView:
    labels = torch.tensor([i % num_classes for i in range(nl)] + [-1] * nu)
    denied = torch.zeros(nl + nu, num_classes, dtype=torch.bool)
    denied[nl:, 0] = True  # every unlabeled sample: class 0 answered *no*
    denied[nl + 1, 2] = True
    denied[0, 1] = True  # a labeled (yes) sample that was denied another class earlier
    return PoolView(labeled_ids=np.arange(nl), unlabeled_ids=np.arange(nl, nl + nu), labels=labels,
                    in_sup=labels >= 0, in_bank=labels >= 0, denied=denied)


def test_classification_terms_see_the_classification_views():
    nl, nu = 4, 6
    model = tiny_model().eval()  # eval-mode BN: each sample's logits are its own
    batch, pool = tiny_batch(nl, nu, extra=True), tiny_pool(nl, nu)
    plan = LossPlan(lambda_ctr=0.1, lambda_neg=0.1, negative_loss=True)
    out = step_loss(model, model.encoder_q, LabelBank(nl + nu, 8), batch, pool, plan, ContrastiveParams(),
                    Precision("cpu"))
    yl, den_u = pool.labels[:nl], pool.denied[nl:]
    with torch.no_grad():
        cls_l, cls_u = model(batch.xlc)[0], model(batch.xuc)[0]
        view1_l = model(batch.xl1)[0]
        torch.testing.assert_close(out.logits_u, model(batch.xu1)[0])  # the history's view stays view 1
    torch.testing.assert_close(out.terms["sup"], losses.sup_loss(cls_l, yl))
    torch.testing.assert_close(out.terms["neg"], losses.negative_loss(cls_u, den_u))
    assert not torch.allclose(out.terms["sup"], losses.sup_loss(view1_l, yl))
