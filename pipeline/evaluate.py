"""Test accuracy of checkpoints (top-1, and top-5 when C > 10)."""
from __future__ import annotations

import numpy as np

from pipeline.context import RunContext
from pipeline.datasets.convert import read_index
from pipeline.moco import ObCP
from pipeline.train import accuracy, predict


def test_accuracy(model: ObCP, ctx: RunContext) -> dict[str, float]:
    """{"top1": …, ["top5": …]} of `model` on the test split, in [0, 1]."""
    index = read_index(ctx.layout.data_dir)
    test = index[index["split"] == "test"].sort_values("sample_id")
    labels = test["label"].to_numpy(dtype=np.int64)
    _, probs = predict(model, ctx.layout.beton("test"), None, device=ctx.device,
                       num_workers=ctx.params.train.num_workers)
    out = {"top1": accuracy(probs, labels, 1)}
    if ctx.num_classes > 10:
        out["top5"] = accuracy(probs, labels, 5)
    return out
