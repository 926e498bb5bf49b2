"""Per query cycle: (score + oracle + update) wall time ÷ retrain wall time.

Runs the real `active` loop (simulated oracle) of one arm on a scratch project whose
stage 1 has been trained, and reads the step timings each cycle's manifest records.
"""
from __future__ import annotations

import json

import numpy as np

from pipeline.loop.cycle import run_active
from pipeline.core.context import RunContext
from pipeline.data import get_source
from pipeline.pool.pools import read_pool
from pipeline.loop.pretrain import run_stage1


def logistic_baseline(ctx: RunContext) -> float:
    """Test accuracy of a logistic regression on the raw pixels of the initial set I^S."""
    from sklearn.linear_model import LogisticRegression

    source = get_source(ctx.params.dataset.name, ctx.layout.root / ctx.params.dataset.root)
    pool = read_pool(ctx.layout.initial_pool(ctx.seed))
    ids = pool.loc[pool["status"] == "initial", "sample_id"].to_numpy()
    x_train = np.stack([source.load("train", int(i))[0].ravel() for i in ids]).astype(np.float32) / 255
    x_test = np.stack([img.ravel() for img, _ in source.iter_images("test")]).astype(np.float32) / 255
    clf = LogisticRegression(max_iter=2000).fit(x_train, ctx.train_labels[ids])
    return float((clf.predict(x_test) == ctx.test_labels).mean())


def bench_cycle(ctx: RunContext, arm: str = "obcp") -> dict:
    """Stage 1, then every cycle of `arm`; step timings and the accuracy path."""
    run_stage1(ctx, ctx.layout.stage1_dir(ctx.seed))
    stage1 = json.loads((ctx.layout.stage1_dir(ctx.seed) / "test.json").read_text())
    manifests = run_active(ctx, arm, log=lambda _: None)
    rows = []
    for m in manifests:
        s = m["seconds"]
        query = s["score"] + s["oracle"] + s["update"]
        rows.append({"cycle": m["cycle"], **s, "query_over_retrain": round(query / s["retrain"], 4),
                     "asked": m["asked"], "yes": m["yes"], "test_top1": m["test"]["top1"]})
    return {
        "arm": arm,
        "stage1_test_top1": stage1["top1"],
        "logistic_regression_on_initial_top1": round(logistic_baseline(ctx), 4),
        "cycles": rows,
        "max_ratio": max(r["query_over_retrain"] for r in rows),
        "mean_ratio": round(sum(r["query_over_retrain"] for r in rows) / len(rows), 4),
    }
