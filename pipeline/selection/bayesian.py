"""``mc_dropout`` and ``bald``: uncertainty from T Monte-Carlo dropout samples.

Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data" (ICML 2017):
dropout kept on at test time approximates the posterior predictive; with T stochastic
softmax samples p_t [n, C] and their mean p̄,

- ``mc_dropout``: max entropy, H[p̄] = −Σ_c p̄_c log p̄_c (the paper's "Max Entropy" with MC
  dropout, the "MC-Dropout" baseline of the ObCP paper);
- ``bald``: BALD (Houlsby et al. 2011, DBAL in the ObCP paper), the mutual information
  between the prediction and the weights, H[p̄] − (1/T) Σ_t H[p_t]: high where the samples
  disagree, 0 where they all agree.

An arm of either trains with dropout (`baselines.dropout`, p) on the penultimate features
before the classifier in stage 2 (`Strategy.dropout`; `pipeline.loop.train.QueryNet`), and
the scoring pass draws T = `baselines.mc_samples` masks of the same rate on the eval-mode
features (`pipeline.loop.inference.McDropout`). Every other arm trains without dropout.

Differs from the authors' code (Keras, MNIST/ISIC): their network has dropout after the
convolutions and before the dense layer; ours only before the classifier (no new layer, so
the shared stage-1 checkpoint loads, and stage 1 itself trains without dropout); BatchNorm
uses its running statistics in the T passes; the masks are a hash of (seed, cycle, sample,
feature), so the scores do not depend on the batching or the number of processes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.registry import STRATEGIES
from pipeline.selection import strategies as _builtins  # noqa: F401  (the first built-ins register first)
from pipeline.selection.base import Candidates, ScoreStrategy, SelectionError


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=axis)


def check_samples(samples: np.ndarray | None, n: int, what: str, strategy: str) -> np.ndarray:
    """[S, n, C] float64 softmax samples (rows sum to 1)."""
    if samples is None:
        raise SelectionError(f"strategy {strategy!r} needs {what} [S, n, C].")
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 3 or s.shape[1] != n or s.shape[0] < 1 or s.shape[2] < 2:
        raise SelectionError(f"{what} must have shape [S, n, C] with n = {n}, S >= 1, C >= 2; got {s.shape}.")
    if not np.isfinite(s).all() or (s < 0).any() or (np.abs(s.sum(axis=2) - 1.0) > 1e-2).any():
        raise SelectionError(f"{what} must be softmax outputs (finite, non-negative, rows summing to 1).")
    return s


def mean_entropy(samples: np.ndarray) -> np.ndarray:
    """[n] H[p̄] of samples [T, n, C]."""
    return _entropy(samples.mean(axis=0))


def bald(samples: np.ndarray) -> np.ndarray:
    """[n] H[p̄] − mean_t H[p_t] of samples [T, n, C] (≥ 0 up to rounding)."""
    return _entropy(samples.mean(axis=0)) - _entropy(samples).mean(axis=0)


class _Dropout(ScoreStrategy):
    needs = frozenset({"probs", "mc_probs"})
    dropout = True

    def own_params(self, params: Any) -> dict[str, Any]:
        return {"mc_samples": params.baselines.mc_samples, "dropout": params.baselines.dropout}


class McDropoutEntropy(_Dropout):
    """Entropy of the mean of T dropout samples."""

    name = "mc_dropout"

    def score(self, c: Candidates) -> np.ndarray:
        return mean_entropy(check_samples(c.mc_probs, len(c), "MC-dropout samples (mc_probs)", self.name))


class Bald(_Dropout):
    """Mutual information of the prediction and the weights over T dropout samples."""

    name = "bald"

    def score(self, c: Candidates) -> np.ndarray:
        return bald(check_samples(c.mc_probs, len(c), "MC-dropout samples (mc_probs)", self.name))


for _strategy in (McDropoutEntropy(), Bald()):
    STRATEGIES.register(_strategy)
