"""Per query cycle: (score + oracle + update) wall time ÷ retrain wall time.

Runs the real `active` loop (simulated oracle) of one arm on a scratch project whose
stage 1 has been trained, and reads the step timings each cycle's manifest records.
"""
from __future__ import annotations

from pipeline.active import run_active
from pipeline.context import RunContext
from pipeline.pretrain import run_stage1


def bench_cycle(ctx: RunContext, arm: str = "obcp") -> dict:
    run_stage1(ctx, ctx.layout.stage1_dir(ctx.seed))
    manifests = run_active(ctx, arm, log=lambda _: None)
    rows = []
    for m in manifests:
        s = m["seconds"]
        query = s["score"] + s["oracle"] + s["update"]
        rows.append({"cycle": m["cycle"], **s, "query_over_retrain": round(query / s["retrain"], 4)})
    return {
        "arm": arm,
        "cycles": rows,
        "max_ratio": max(r["query_over_retrain"] for r in rows),
        "mean_ratio": round(sum(r["query_over_retrain"] for r in rows) / len(rows), 4),
    }
