"""``ll4al``: Learning Loss for active learning.

Yoo & Kweon, "Learning Loss for Active Learning" (CVPR 2019). A small loss-prediction head
learns, jointly with the classifier, to predict each sample's cross-entropy from its
features; the candidates with the highest predicted loss are asked first. The head is
trained with the pairwise ranking loss of the paper (`pipeline.loop.train.loss_prediction_loss`): the batch is
split into pairs (i, 2B − 1 − i), and for each pair the head must order the two predicted
losses as the true ones are ordered, with margin ξ,

    L_lpl = mean_pairs max(0, −sign(l_i − l_j)·(l̂_i − l̂_j) + ξ),

and the total is L_sup + λ·L_lpl (λ = `baselines.ll4al_weight`, ξ = `baselines.ll4al_margin`).

An arm of it trains the head beside its method's model (`Strategy.loss_head`; the step's
`lpl` term, `pipeline.loop.train.QueryNet`); its gradient reaches the backbone for the first
`baselines.ll4al_joint` (0.6) of each cycle's epochs, then stops, as the paper stops it after
120 of 200 epochs. The head is carried from cycle to cycle (`cycle_KKK/loss_head.pt`); at
cycle 1 a new head is first fitted to the shared stage-1 model on the initial labeled set
(`pipeline.loop.baselines.warm_head`). The head's network, `LossNet`, lives in
`pipeline.loop.baselines` with the training that uses it, so this module imports no torch.

Differs from the authors' setup (and the Mephisto405 reimplementation the ObCP paper's
sources build on): their head reads the outputs of the four ResNet blocks (global average
pooling + FC 128 + ReLU each, concatenated, FC 1); ours reads the penultimate features only
(FC 128 + ReLU, FC 1), so it works with every backbone here; no random subset of 10 000
candidates (every candidate is scored); stage 1 (shared) trains no head.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.registry import STRATEGIES
from pipeline.selection import strategies as _builtins  # noqa: F401  (the first built-ins register first)
from pipeline.selection.base import Candidates, ScoreStrategy, SelectionError


class LearningLoss(ScoreStrategy):
    """The loss-prediction head's predicted loss."""

    name = "ll4al"
    needs = frozenset({"predicted_loss"})
    loss_head = True

    def own_params(self, params: Any) -> dict[str, Any]:
        b = params.baselines
        return {"ll4al_weight": b.ll4al_weight, "ll4al_margin": b.ll4al_margin, "ll4al_joint": b.ll4al_joint}

    def score(self, c: Candidates) -> np.ndarray:
        loss = np.asarray(c.predicted_loss, dtype=np.float64)
        if loss.shape != (len(c),) or not np.isfinite(loss).all():
            raise SelectionError(f"predicted_loss must be a finite [n] array with n = {len(c)}, got {loss.shape}.")
        return loss


STRATEGIES.register(LearningLoss())
