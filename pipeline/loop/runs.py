"""What every training stage builds from a `RunContext`: the loop's config, a fresh
state, the identity its checkpoints carry, and the test accuracy recorded beside them.

Stage 1 (`pipeline.loop.pretrain`) and every cycle of stage 2 (`pipeline.loop.cycle`) use these,
so a checkpoint written by one loads in the other.
"""
from __future__ import annotations

from pipeline.core.context import RunContext
from pipeline.method.moco import ObCP
from pipeline.loop.inference import test_accuracy
from pipeline.loop.train import LoopConfig, TrainState, build_state


def stage1_meta(ctx: RunContext) -> dict:
    """Identity of a stage-1 run, stored in and checked against its checkpoint (and
    every cycle's checkpoint, which continues it)."""
    p = ctx.params
    return {
        "dataset": p.dataset.name,
        "arch": p.model.arch,
        "num_classes": ctx.num_classes,
        "num_samples": ctx.num_samples,
        "seed": ctx.seed,
    }


def loop_config(ctx: RunContext) -> LoopConfig:
    """The training loop's explicit inputs for this run (the cosine spans both stages)."""
    p = ctx.params
    return LoopConfig(
        beton=ctx.layout.beton("train"),
        train=p.train,
        contrastive=p.contrastive,
        total_epochs=p.train.stage1_epochs + p.train.stage2_epochs,
        seed=ctx.seed,
        hflip=p.dataset.hflip,
        device=ctx.device,
        distributed=ctx.distributed,
        history_view=p.selection.history_view,
    )


def fresh_state(ctx: RunContext) -> TrainState:
    """A seeded, untrained state for this run (a checkpoint is loaded into it to continue)."""
    p = ctx.params
    return build_state(
        arch=p.model.arch,
        width=p.model.width,
        proj_dim=p.model.proj_dim,
        num_classes=ctx.num_classes,
        num_samples=ctx.num_samples,
        contrastive=p.contrastive,
        train=p.train,
        seed=ctx.seed,
        meta=stage1_meta(ctx),
        device=ctx.device,
    )


NO_TEST_LABELS = ("no labeled test split (dataset folder without dataset.val): top-1 is not measured here; "
                  "the random audit questions estimate it (pipeline/selection/audit.py)")


def evaluate_model(ctx: RunContext, model: ObCP) -> dict[str, float | str | None]:
    """Test-split accuracy of `model` (recorded next to every checkpoint when it is written);
    ``{"top1": None, "note": …}`` when the test split has no labels (never a made-up number)."""
    if (ctx.test_labels < 0).any():
        return {"top1": None, "note": NO_TEST_LABELS}
    return test_accuracy(model, ctx.layout.beton("test"), ctx.test_labels, device=ctx.device,
                         num_workers=ctx.params.train.num_workers)
