"""Selection quality of one query cycle: how useful were the questions a strategy chose?

Pure functions on the cycle's tables; `selection_quality` is what the active stage writes
into each cycle's `manifest.json` (block `selection`) and `pipeline.reporting.metrics` passes into
the metrics. Definitions (undefined values are None in the manifest, NaN here):

- **yes_rate**: the fraction of the cycle's one-bit questions answered *yes*. For full
  labels (`fullbit`) there is no yes/no answer: None.
- **answer_bits**: the information per question, as the entropy (in bits) of the
  empirical distribution of the cycle's answers: the binary entropy of the yes-rate for
  one-bit questions (≤ 1 bit), the entropy of the given labels for full labels
  (≤ log2 C). It is an upper bound on what a question tells a model that already knows
  something; a strategy whose answers are nearly all *yes* (or all *no*) learns little.
- **auroc_wrong**: the AUROC of the selection score against "the asked class is
  wrong" (the current model's clean-view guess over the classes not yet denied differs
  from the true label), over *every candidate* of the cycle, not only those asked.
  1.0: the score ranks every candidate whose guess is wrong above every one whose guess
  is right; 0.5: no better than chance. Ties count one half; a NaN score (a sample
  Eq. 7 never recorded) ranks below every finite score. None when all candidates'
  guesses are right, or all wrong. **A diagnostic: it reads the ground-truth labels**
  (the dataset's), which no strategy sees; with a human oracle it is only as good as
  those labels.
- **selected_confidence**: the mean clean-view confidence (max softmax probability,
  `scores.parquet`'s `pred_prob`) of the selected samples.
- context: **candidates** (how many were scored) and **wrong_fraction** (the fraction
  of them whose asked class is wrong: the base rate behind the AUROC; ground truth too).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


QUALITY: tuple[str, ...] = ("yes_rate", "answer_bits", "auroc_wrong", "selected_confidence")  # the four numbers
TITLES: dict[str, str] = {
    "yes_rate": "yes-rate", "answer_bits": "answer entropy (bits per question)",
    "auroc_wrong": "AUROC of the score vs 'asked class is wrong'", "selected_confidence": "confidence of the selected",
}


def yes_rate(answers: np.ndarray) -> float:
    """Fraction of True in ``answers`` [n] (bool); NaN when n = 0."""
    answers = np.asarray(answers, dtype=bool)
    return float(answers.mean()) if answers.size else math.nan


def answer_entropy_bits(answers: np.ndarray) -> float:
    """Entropy in bits of the empirical distribution of ``answers`` [n] (any hashable
    values: bools for one-bit answers, class ids for full labels); NaN when n = 0."""
    answers = np.asarray(answers)
    if answers.size == 0:
        return math.nan
    _, counts = np.unique(answers, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no -0.0 for a single value


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` [n] (higher = more likely positive) for the
    labels ``positive`` [n] (bool): P(score of a positive > score of a negative), ties
    counting one half (Mann-Whitney U with mid-ranks). NaN scores rank below every finite
    score (and tie with each other). NaN when ``positive`` is all True or all False."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError(f"scores and positive must be 1-D of one length, got {scores.shape}, {positive.shape}")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    finite = ~np.isnan(scores)  # NaN sorts below everything, -inf included
    value = np.where(finite, scores, 0.0)
    order = np.lexsort((value, finite))
    f, v = finite[order], value[order]
    starts = np.flatnonzero(np.r_[True, (f[1:] != f[:-1]) | (v[1:] != v[:-1])])  # runs of equal keys
    ends = np.r_[starts[1:], scores.size]
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based mid-ranks
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def selection_quality(scores: pd.DataFrame, queries: pd.DataFrame,
                      true_labels: np.ndarray) -> dict[str, float | int | None]:
    """The four numbers of one cycle (see the module docstring), JSON-ready (NaN → None).

    Args:
        scores: the cycle's `scores.parquet`: one row per candidate with `score`,
            `asked_class` and `pred_prob` (the asked samples are the queries' sample ids).
        queries: the cycle's `queries.parquet`: one row per question with `answer`
            (bool) and `asked_class` (-1 for a full label) and `label_given`.
        true_labels: [N] ground-truth train labels, indexed by sample_id.
    """
    full = bool(len(queries)) and bool((queries["asked_class"] < 0).all())
    if full:
        rate, bits = math.nan, answer_entropy_bits(queries["label_given"].to_numpy())
    else:
        answers = queries["answer"].fillna(False).to_numpy(dtype=bool)
        rate, bits = yes_rate(answers), answer_entropy_bits(answers)
    truth = np.asarray(true_labels)[scores["sample_id"].to_numpy(dtype=np.int64)]
    wrong = scores["asked_class"].to_numpy() != truth
    # the samples asked (with follow-up rounds, not always the ranking's top k: pipeline/loop/rounds.py)
    selected = scores["sample_id"].isin(queries["sample_id"]).to_numpy(dtype=bool)
    conf = float(scores["pred_prob"].to_numpy(dtype=np.float64)[selected].mean()) if selected.any() else math.nan
    values = {
        "yes_rate": rate,
        "answer_bits": bits,
        "auroc_wrong": auroc(scores["score"].to_numpy(dtype=np.float64), wrong),
        "selected_confidence": conf,
        "wrong_fraction": float(wrong.mean()) if wrong.size else math.nan,
    }
    out: dict[str, float | int | None] = {k: None if math.isnan(v) else round(v, 6) for k, v in values.items()}
    out["candidates"] = int(len(scores))
    return out
