"""One pass over a query's candidates that computes what the arm's strategy needs.

Every strategy gets the candidates' ids, their probabilities and denied classes, and says
which class each is asked about (`Strategy.ask`: by default the asking network's argmax
over classes not yet denied); the frame also holds the predicted class and its
probability, and, for a strategy that chooses the question itself, the question's rule and
per-pair score (`QUESTION_COLUMNS`). The other inputs are computed only when the strategy
declares them (`Strategy.needs`), in the same pass (the ground truth comes from the oracle,
for a counterfactual arm):

- per-sample strategies are scored batch by batch (memory O(N) for the scores);
- batch strategies get every candidate's declared arrays at once ([n, F] embeddings,
  [n, F·C] gradient embeddings, the labeled set's [m, F] embeddings).

Under DDP every rank predicts its shard of the candidates and rank 0 gathers them, as the
Eq. 7 history pass does; only rank 0 gets the scored frame (the others get None).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch

from pipeline.core import distributed as dist
from pipeline.loop.inference import PassBatch, pass_batches
from pipeline.method.history import PredictionHistory
from pipeline.method.moco import ObCP
from pipeline.selection.base import PREDICTED, Candidates, Strategy
from pipeline.selection.ranking import select_top_streaming

COLUMNS = ["sample_id", "score", "asked_class", "pred_class", "pred_prob"]
#: extra columns of a strategy that chooses the asked class (`Strategy.question_rule` ≠ predicted)
QUESTION_COLUMNS = ["question_rule", "question_score"]
PROBS = "probs"  # the [C] probabilities of the top `keep_probs` candidates (follow-up rounds rescore them)
_EMBEDDED = frozenset({"embeddings", "grad_embeddings", "labeled_embeddings"})
# per-sample arrays a pass yields where asked for (`pass_batches`' mc / members / loss_head), and
# their sample axis: [T, b, C] and [E, b, C] along 1, [b] along 0
_EXTRAS = {"mc_probs": 1, "ensemble_probs": 1, "predicted_loss": 0}


def grad_embeddings(probs: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """BADGE's gradient embedding [n, C·F] of the cross-entropy at the predicted label with
    respect to the last layer's weights: (p − onehot(argmax p)) ⊗ h, from probs [n, C] and
    penultimate features h [n, F] (no backward pass needed)."""
    p = probs.astype(np.float32, copy=True)
    p[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    return (p[:, :, None] * embeddings.astype(np.float32)[:, None, :]).reshape(len(p), -1)


def _gather(batches: list[PassBatch], embeddings: bool) -> PassBatch | None:
    """Every rank's batches, concatenated on rank 0 in id order (None elsewhere)."""
    def cat(parts: list[np.ndarray], width: int, dtype) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(parts) if parts else np.zeros((0, width), dtype))

    c = batches[0].probs.shape[1] if batches else 0
    ids = dist.all_gather_varlen(torch.from_numpy(np.concatenate([b.ids for b in batches]) if batches
                                                  else np.zeros(0, np.int64)))
    probs = dist.all_gather_varlen(cat([b.probs for b in batches], c, np.float32))
    emb = None
    if embeddings:
        f = batches[0].embeddings.shape[1] if batches else 0
        emb = dist.all_gather_varlen(cat([b.embeddings for b in batches], f, np.float32))
    extras = {}
    for name, axis in _EXTRAS.items():  # the baselines' arrays, gathered along their sample axis
        if batches and getattr(batches[0], name) is not None:
            local = np.concatenate([np.moveaxis(getattr(b, name), axis, 0) for b in batches])
            extras[name] = (axis, dist.all_gather_varlen(torch.from_numpy(np.ascontiguousarray(local))).numpy())
    if not dist.is_main():
        return None
    order = np.argsort(ids.numpy(), kind="stable")
    return PassBatch(ids=ids.numpy()[order], probs=probs.numpy()[order],
                     embeddings=None if emb is None else emb.numpy()[order],
                     **{name: np.moveaxis(a[order], 0, axis) for name, (axis, a) in extras.items()})


def _extras(b: PassBatch) -> dict[str, np.ndarray]:
    """The baselines' arrays a batch carries, as `Candidates` fields."""
    return {name: getattr(b, name) for name in _EXTRAS if getattr(b, name) is not None}


def score_pool(
    model: ObCP, strategy: Strategy, ids: np.ndarray, k: int, *, denied: Callable[[np.ndarray], np.ndarray],
    run_pass: Callable[..., object], history: PredictionHistory | None = None, seed: int = 0,
    labeled_ids: np.ndarray | None = None, distributed: bool = False,
    truth: Callable[[np.ndarray], np.ndarray] | None = None, keep_probs: int = 0,
    settings: Mapping[str, Any] | None = None, images: Any = None,
) -> pd.DataFrame | None:
    """Score the candidates `ids` [n] with `strategy` for a query of `k` questions.

    `run_pass(ids, embeddings=bool, distributed=bool)` streams :class:`PassBatch` es of the
    asking network (:func:`pass_batches` with the model, beton and device bound);
    `denied(ids)` gives the [b, C] bool classes already denied; `truth(ids)` the [b] labels
    an oracle that knows them gives (called only for a strategy that declares "truth").
    Returns, on rank 0, DataFrame[sample_id, score, asked_class, pred_class, pred_prob,
    *QUESTION_COLUMNS when the strategy chooses the question*, *probs when keep_probs*]
    (one row per candidate; with `keep_probs` = m > 0, `probs` holds the [C] probabilities
    of the m best-ranked candidates and None elsewhere, in O(m·C) memory).
    `settings` (the strategy's own params) and `images` (an `ImageSource`) are handed over as
    they are; the arrays `run_pass` yields besides probs and embeddings (MC-dropout samples,
    ensemble softmax, predicted loss) become the `Candidates` fields of the same names.
    """
    lazy = {"settings": dict(settings or {}), "images": images, "labeled_ids": labeled_ids}
    if len(ids) == 0:  # every sample is labeled or fully denied: nothing to ask (the same on every rank)
        return pd.DataFrame(columns=COLUMNS) if dist.is_main() else None
    needs = strategy.needs
    want_emb = bool(needs & _EMBEDDED)
    per_sample = strategy.per_sample and not distributed
    parts, kept, best = [], [], None

    def inputs(b: PassBatch) -> dict:
        return {"ids": b.ids, "probs": b.probs, "history": history, "seed": seed, "denied": denied(b.ids),
                "truth": truth(b.ids) if truth is not None and "truth" in needs else None}

    for b in run_pass(ids, embeddings=want_emb, distributed=distributed):
        if per_sample:
            cands = Candidates(**inputs(b), **_extras(b), **lazy)
            parts.append(_frame(b, cands, strategy.scores(cands, k), strategy))
            if keep_probs:
                best = _best_probs(best, parts[-1], b.probs, keep_probs)
        else:
            kept.append(b)
    if not per_sample:
        whole = _gather(kept, want_emb) if distributed else _concat(kept, want_emb)
        if whole is None:
            return None
        labeled = None
        if "labeled_embeddings" in needs:
            lab = _concat(list(run_pass(labeled_ids, embeddings=True, distributed=False)), True)
            labeled = lab.embeddings
        cands = Candidates(
            **(inputs(whole) if len(whole.ids) else {"ids": whole.ids, "probs": whole.probs, "history": history,
                                                       "seed": seed}),
            embeddings=whole.embeddings if "embeddings" in needs else None,
            grad_embeddings=grad_embeddings(whole.probs, whole.embeddings) if "grad_embeddings" in needs else None,
            labeled_embeddings=labeled, **_extras(whole), **lazy,
        )
        parts = [_frame(whole, cands, strategy.scores(cands, k), strategy)] if len(whole.ids) else []
        if keep_probs and parts:
            best = _best_probs(None, parts[0], whole.probs, keep_probs)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    if keep_probs:
        got = {} if best is None else dict(zip(best["sample_id"].tolist(), best[PROBS]))
        frame[PROBS] = pd.Series([got.get(int(i)) for i in frame["sample_id"]], index=frame.index, dtype=object)
    return frame


def _best_probs(best: pd.DataFrame | None, frame: pd.DataFrame, probs: np.ndarray, m: int) -> pd.DataFrame:
    """The m best-ranked rows so far (`select_top`'s order) with their [C] probabilities."""
    chunk = frame[["sample_id", "score"]].assign(**{PROBS: list(np.asarray(probs, dtype=np.float64))})
    top = select_top_streaming([chunk] if best is None else [best, chunk], m)
    return top.drop(columns=["rank"])


def _concat(batches: list[PassBatch], embeddings: bool) -> PassBatch:
    if not batches:
        return PassBatch(ids=np.zeros(0, np.int64), probs=np.zeros((0, 0), np.float32),
                         embeddings=np.zeros((0, 0), np.float32) if embeddings else None)
    extras = {name: np.concatenate([getattr(b, name) for b in batches], axis=axis)
              for name, axis in _EXTRAS.items() if getattr(batches[0], name) is not None}
    return PassBatch(ids=np.concatenate([b.ids for b in batches]), probs=np.concatenate([b.probs for b in batches]),
                     embeddings=np.concatenate([b.embeddings for b in batches]) if embeddings else None, **extras)


def _frame(b: PassBatch, cands: Candidates, scores: np.ndarray, strategy: Strategy) -> pd.DataFrame:
    asked = strategy.ask(cands)
    frame = pd.DataFrame({
        "sample_id": b.ids,
        "score": scores,
        "asked_class": asked.classes,
        "pred_class": b.probs.argmax(axis=1),
        "pred_prob": b.probs.max(axis=1),
    })
    if strategy.question_rule != PREDICTED:
        frame["question_rule"] = asked.rule
        frame["question_score"] = np.asarray(asked.scores, dtype=np.float64)
    return frame


__all__ = ["COLUMNS", "PROBS", "QUESTION_COLUMNS", "grad_embeddings", "pass_batches", "score_pool"]
