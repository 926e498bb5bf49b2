"""Which loss terms a training phase turns on, and their weights: a `LossPlan`.

Stage 1 is the same for every arm (:func:`stage1_plan`); a method object
(`pipeline.method.methods`) makes its stage-2 plan.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from pipeline.core.config import LossParams


def sigmoid_rampup(epoch: float, length: int) -> float:
    """Laine & Aila's ramp-up, as Mean Teacher (and Hu et al.) weight the consistency:
    exp(−5·(1 − e/length)²) for e in [0, length], 1 after (and when length is 0)."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(float(epoch), 0.0), float(length)) / length
    return math.exp(-5.0 * phase * phase)


@dataclass(frozen=True)
class LossPlan:
    """The loss terms that are on and their weights.

    Stage 1: L_sup + λ_ctr·L_c.u. Stage 2 (ObCP): + λ_ctr·(L_c.l + L_c.n) + λ_neg·L_neg,
    with paper Table 4's switches. The one-bit baseline replaces the contrastive and
    negative terms by a consistency loss whose teacher ignores denied classes (Mean Teacher:
    λ_cons ramped up over `cons_rampup` epochs from epoch `cons_start`, the teacher an EMA
    with decay `teacher_decay`; None keeps `contrastive.momentum`).
    """

    lambda_ctr: float
    lambda_neg: float = 0.0
    contrastive_unlabeled: bool = True
    contrastive_labeled: bool = False
    contrastive_negative: bool = False
    negative_loss: bool = False
    denied_consistency: bool = False
    lambda_cons: float = 1.0
    cons_rampup: int = 0
    cons_start: int = 0
    teacher_decay: float | None = None
    # a conventional learner (`supervised`): only the labeled views reach the query encoder
    # (cross-entropy alone; no unlabeled image in a batch, the BN statistics or the queue)
    labeled_only: bool = False
    # MC dropout's training (arms whose strategy declares `dropout`): dropout of rate p on the
    # penultimate features before the classifier, functional (no parameter), training forward only
    dropout: float = 0.0
    # Learning Loss (LL4AL): a loss-prediction head on the penultimate features, trained jointly with
    # its ranking loss (weight λ_lpl, margin ξ); its gradient stops reaching the backbone from
    # (global) epoch `lpl_detach_from` on (None: never), as Yoo & Kweon stop it after 120 of 200 epochs
    loss_prediction: bool = False
    lambda_lpl: float = 1.0
    lpl_margin: float = 1.0
    lpl_detach_from: int | None = None
    lpl_detach: bool = False  # set per epoch by `at_epoch`

    @property
    def needs_bank(self) -> bool:
        return self.contrastive_labeled or self.contrastive_negative

    @property
    def uses_projection(self) -> bool:
        """Whether a term reads the query projection q (else the projector gets no gradient)."""
        return self.contrastive_unlabeled or self.contrastive_labeled or self.contrastive_negative

    def weight(self, term: str) -> float:
        """The factor of a loss term (a key of `StepLoss.terms`) in the total."""
        return {"sup": 1.0, "c_u": self.lambda_ctr, "c_l": self.lambda_ctr, "c_n": self.lambda_ctr,
                "neg": self.lambda_neg, "cons": self.lambda_cons, "lpl": self.lambda_lpl}[term]

    def at_epoch(self, epoch: int) -> LossPlan:
        """The plan of one epoch: λ_cons times the sigmoid ramp-up at `epoch` (weights fixed);
        whether the loss-prediction head's gradient reaches the backbone in that epoch."""
        plan = self
        if plan.lpl_detach_from is not None:
            plan = dataclasses.replace(plan, lpl_detach=epoch >= plan.lpl_detach_from, lpl_detach_from=None)
        if not plan.cons_rampup:
            return plan
        ramp = sigmoid_rampup(epoch - plan.cons_start, plan.cons_rampup)
        return dataclasses.replace(plan, lambda_cons=plan.lambda_cons * ramp, cons_rampup=0)


def stage1_plan(loss: LossParams) -> LossPlan:
    return LossPlan(lambda_ctr=loss.lambda_ctr)


