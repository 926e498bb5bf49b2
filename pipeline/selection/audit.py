"""Measuring without ground truth: a random audit set per cycle, and selection quality that
never fakes what needs true labels.

**The audit set.** When no labeled test split exists (`dataset.name: folder` without
`dataset.val`), accuracy can still be measured with one-bit answers. At each query, the
model's guess for a candidate is its clean-view argmax over the classes not yet denied
(`scores.parquet`'s ``asked_class``: exactly the question a one-bit strategy asks, and the
label ``obcp export`` would give it). Draw ``audit.size`` candidates *uniformly at random*
and ask "is this a {guess}?": the share of *yes* is an unbiased estimate of the accuracy of
the model's guesses over every candidate (the unlabeled pool at that query), whatever the
strategy asks otherwise. Strategy-chosen questions cannot serve: they are chosen for being
uncertain, so their yes-rate is biased low.

The audit is part of the cycle's budget, so it is counted in the bits spent: a cycle of
budget b asks the audit set plus the strategy's best-ranked b − |audit| other candidates
(:func:`choose`). Every answer, the audit's too, then enters the pool as usual (a *yes* is
a label, a *no* a denied class). The estimate of cycle k describes the model that scored
cycle k: stage 1's for k = 1, cycle k−1's after. For a full-label arm (`fullbit`) the audit
questions are full labels of random candidates and the estimate is the share whose label
equals the guess.

**Selection quality without ground truth.** `pipeline.selection.diagnostics` reads the true
labels for ``auroc_wrong`` and ``wrong_fraction``; :func:`selection_quality` skips those two
(None, with a ``note``) when the candidates' labels are unknown (-1), and measures the
strategy's own questions only (not the audit's).

**How the active loop calls it** (pipeline/loop/active.py, or its steps):

- score step, after ``ranked["selected"] = ranked["rank"] <= c.budget``::

      ranked = audit.choose(ranked, budget=c.budget, size=ctx.params.audit.size,
                            seed=ctx.seed * 1000 + c.k)

- oracle step: keep the column, ``q = asked[[..., "strategy", "audit"]]`` (it is in every
  scores.parquet that :func:`choose` wrote; :func:`audit_column` reads older ones);
- retrain step, in the manifest::

      "selection": audit.selection_quality(scores, queries, ctx.train_labels),
      "audit": audit.estimate(scores, queries),

- cycle key: ``**({"audit": p.audit} if p.audit.size else {})`` (arms without an audit keep
  their keys), and ``audit`` in the active stage's params in dvc.yaml.

`pipeline.reporting.metrics` reads ``manifest["audit"]`` of cycle k+1 as the top-1 of the
model after cycle k when the test split has no labels.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.selection import diagnostics

AUDIT_STREAM = 0xA0D17  # mixed into the seed: the audit's draw is independent of `random` selection's
Z95 = 1.959963984540054
NO_TRUTH = ("no ground truth for the candidates (dataset of unlabeled images): auroc_wrong and "
            "wrong_fraction need true labels and are not measured")


def choose(ranked: pd.DataFrame, *, budget: int, size: int, seed: int) -> pd.DataFrame:
    """Mark a uniform random audit set among the candidates and refill the selection around it.

    Args:
        ranked: every candidate of the cycle, one row each, with ``sample_id`` and ``rank``
            (1 = the strategy's first choice), as the score step ranks them.
        budget: questions this cycle (audit included).
        size: audit questions wanted; ``min(size, budget, candidates)`` are drawn.
        seed: the draw depends only on (seed, the candidates' ids, size).

    Returns:
        A copy with ``audit`` (bool) and ``selected`` (bool): the audit set, plus the
        best-ranked ``budget − |audit|`` candidates outside it. Exactly
        ``min(budget, candidates)`` rows are selected.
    """
    if budget < 0 or size < 0:
        raise ValueError(f"budget ({budget}) and size ({size}) must be >= 0")
    out = ranked.copy()
    ids = np.sort(out["sample_id"].to_numpy(dtype=np.int64))
    n = min(int(size), int(budget), ids.size)
    drawn = np.random.default_rng([AUDIT_STREAM, int(seed)]).choice(ids, size=n, replace=False) if n else ids[:0]
    is_audit = out["sample_id"].isin(drawn).to_numpy()
    rest_rank = pd.Series(out["rank"].to_numpy(), index=out.index).where(~is_audit).rank(method="first")
    out["audit"] = is_audit
    out["selected"] = is_audit | (rest_rank <= int(budget) - n).to_numpy()
    return out


def audit_column(frame: pd.DataFrame) -> np.ndarray:
    """[n] bool: the frame's ``audit`` column, or all False for a frame written before audits."""
    if "audit" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame["audit"].fillna(False).to_numpy(dtype=bool)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(scores: pd.DataFrame, queries: pd.DataFrame) -> dict | None:
    """The audit's estimate of top-1 for one cycle, JSON-ready; None when the cycle had no audit.

    Args:
        scores: the cycle's scores.parquet (every candidate: ``sample_id``, ``asked_class``
            = the model's guess, ``audit``).
        queries: the cycle's queries.parquet (one row per question: ``sample_id``,
            ``answer``, ``label_given``).

    Returns:
        ``top1`` (share of correct guesses among the audit set), ``n``, ``correct``,
        ``ci95`` (Wilson), ``candidates`` (the population it estimates over), ``what``.
    """
    is_audit = audit_column(scores)
    if not is_audit.any():
        return None
    audited = scores.loc[is_audit, ["sample_id", "asked_class"]].rename(columns={"asked_class": "guess"})
    got = audited.merge(queries[["sample_id", "answer", "label_given"]], on="sample_id", how="left",
                        validate="one_to_one")
    if got["label_given"].isna().any():
        missing = got.loc[got["label_given"].isna(), "sample_id"].tolist()[:10]
        raise ValueError(f"audit samples {missing} have no answer in the cycle's queries")
    correct = got["label_given"].to_numpy(dtype=np.int64) == got["guess"].to_numpy(dtype=np.int64)
    n, k = int(len(got)), int(correct.sum())
    lo, hi = wilson(k, n)
    return {
        "top1": round(k / n, 6), "n": n, "correct": k, "ci95": [round(lo, 6), round(hi, 6)],
        "candidates": int(len(scores)),
        "what": (f"share of yes among {n} questions 'is this a <the model's guess>?' about candidates drawn "
                 f"uniformly from the {len(scores)} unlabeled ones: an unbiased estimate of the accuracy of the "
                 "model's guesses (argmax over classes not yet denied) on the unlabeled pool"),
    }


def selection_quality(scores: pd.DataFrame, queries: pd.DataFrame, true_labels: np.ndarray) -> dict:
    """`diagnostics.selection_quality` of the strategy's own questions (audit rows left out);
    ``auroc_wrong`` and ``wrong_fraction`` None with a ``note`` when the candidates' true labels
    are unknown (-1), never computed from missing labels."""
    audit_scores, audit_queries = audit_column(scores), audit_column(queries)
    own = scores.assign(selected=scores["selected"].to_numpy(dtype=bool) & ~audit_scores)
    out = diagnostics.selection_quality(own, queries[~audit_queries], true_labels)
    truth = np.asarray(true_labels)[scores["sample_id"].to_numpy(dtype=np.int64)]
    if (truth < 0).any():
        out.update({"auroc_wrong": None, "wrong_fraction": None, "note": NO_TRUTH})
    if audit_scores.any():
        out["audit_questions"] = int(audit_queries.sum())
    return out
