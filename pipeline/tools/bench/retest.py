"""Eq. 7 test–retest: how much of the score's ranking survives a change of augmentation draws.

Stage 1 is trained twice from the same initial weights with different loop seeds (the seed
of the loaders: their sample order and every view's augmentation draws). Each training
records the first query's history three ways at once, one per `selection.history_view`:
`strong` in the loop (the training step's view 1), and `weak` and `clean` by the loop's own
end-of-epoch pass (`pipeline.loop.train.record_pass`, called from `on_epoch_end` at the point
where the loop would call it). That pass runs in eval mode without gradients and draws no
global random numbers, so training is the same whichever views are recorded: the three
histories come from one trajectory.

Per view: the Spearman rank correlation between the two trainings' Eq. 7 scores of the
unlabeled pool, and the share of the first cycle's questions (the top k) that both ask.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from pipeline.core.config import HISTORY_VIEWS
from pipeline.core.context import RunContext
from pipeline.method.history import PredictionHistory
from pipeline.pool.budget import cycle_budgets
from pipeline.pool.pools import read_pool
from pipeline.loop.runs import fresh_state, loop_config
from pipeline.loop.train import TrainState, pool_view, record_pass, stage1_plan, train_epochs


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of a [n] and b [n] (ties share their mean rank)."""
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> set[int]:
    """The k ids with the highest scores (ties by sample_id, as selection breaks them)."""
    order = np.lexsort((ids, -scores))
    return set(ids[order[:k]].tolist())


def record_views(ctx: RunContext, loop_seed: int) -> dict[str, np.ndarray]:
    """Train stage 1 from the seed's initial weights with loop seed `loop_seed`; Eq. 7 [n]
    of the unlabeled pool (id order) from the history of each view."""
    p = ctx.params
    epochs = p.train.stage1_epochs
    pool = pool_view(read_pool(ctx.layout.initial_pool(ctx.seed)), ctx.num_classes)
    cfg = dataclasses.replace(loop_config(ctx), seed=loop_seed, history_view="strong")
    histories = {view: PredictionHistory(ctx.num_samples, ctx.num_classes, m=p.selection.m, t=p.selection.t,
                                         start_epoch=0, query_epoch=epochs) for view in HISTORY_VIEWS}

    def record_eval_views(state: TrainState, row: dict) -> None:
        for view in HISTORY_VIEWS:
            if view != "strong" and histories[view].in_window(int(row["epoch"])):
                record_pass(histories[view], state.model, pool.unlabeled_ids, int(row["epoch"]),
                            dataclasses.replace(cfg, history_view=view))

    train_epochs(fresh_state(ctx), pool, stage1_plan(p.loss), cfg, until_epoch=epochs,
                 history=histories["strong"], on_epoch_end=record_eval_views, log=None, progress=False)
    return {view: h.uncertainty(pool.unlabeled_ids) for view, h in histories.items()}


def bench_retest(ctx: RunContext, pairs: int = 3) -> dict:
    """`pairs` pairs of trainings (loop seeds 2i, 2i + 1); per view the Spearman correlation
    and the top-k overlap of each pair, and their means."""
    p = ctx.params
    k = cycle_budgets(ctx.one_bit_budget, p.query_times)[0]
    ids = pool_view(read_pool(ctx.layout.initial_pool(ctx.seed)), ctx.num_classes).unlabeled_ids
    per_view: dict[str, dict[str, list[float]]] = {v: {"spearman": [], "top_k_overlap": []} for v in HISTORY_VIEWS}
    for i in range(pairs):
        a, b = record_views(ctx, 2 * i), record_views(ctx, 2 * i + 1)
        for view in HISTORY_VIEWS:
            per_view[view]["spearman"].append(round(spearman(a[view], b[view]), 4))
            both = top_k(ids, a[view], k) & top_k(ids, b[view], k)
            per_view[view]["top_k_overlap"].append(round(len(both) / k, 4))
    views = {view: {**r, "spearman_mean": round(float(np.mean(r["spearman"])), 4),
                    "top_k_overlap_mean": round(float(np.mean(r["top_k_overlap"])), 4)}
             for view, r in per_view.items()}
    return {
        "dataset": p.dataset.name,
        "stage1_epochs": p.train.stage1_epochs,
        "m": p.selection.m,
        "t": p.selection.t,
        "unlabeled": int(len(ids)),
        "k": int(k),
        "loop_seed_pairs": [[2 * i, 2 * i + 1] for i in range(pairs)],
        "views": views,
    }
