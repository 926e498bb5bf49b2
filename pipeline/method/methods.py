"""The compared methods as objects: what each asks, how it learns from the answers, what it costs.

A method owns its stage-2 loss plan, its question kind (a yes/no question about one class,
or a full label), which network asks (the query encoder, or the EMA teacher), how the
answers update the pool, and its bit accounting. The active loop asks the arm's method;
it never tests a method's name. Register a new one in `pipeline.core.registry.METHODS`
(built-ins here; a project's own through `plugins:` in params.yaml).

- ``obcp``: paper Sec. 3. *Yes* → a label (L_sup, L_c.l); *no* → a hard negative (L_c.n, L_neg).
- ``onebit``: Hu et al., "One-bit supervision for image classification" (NeurIPS 2020):
  Mean Teacher whose teacher ignores denied classes; the teacher asks (`asks_with_teacher`).
- ``fullbit``: ObCP's training with full labels at equal bits (log2 C bits a label).
- ``supervised``: a conventional learner, full labels and cross-entropy alone (the paper's baselines).
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd

from pipeline.core.config import ArmParams, LossParams, OnebitParams, Params
from pipeline.core.registry import METHODS
from pipeline.method.plan import LossPlan
from pipeline.pool import pools
from pipeline.pool.budget import cycle_budgets, full_label_budget

LABEL_QUESTION = -1  # asked_class of a full-label question ("which class is this?")


class Method:
    """One way to spend a labeling budget and learn from the answers. Subclass and register."""

    name: ClassVar[str]
    question: ClassVar[str] = "one_bit"  # "one_bit" (is it class c?) or "full" (which class?): the ledger's kind
    asks_with_teacher: ClassVar[bool] = False  # the EMA teacher (key encoder) predicts the asked class

    def loss_plan(self, arm: ArmParams, loss: LossParams, onebit: OnebitParams, start_epoch: int) -> LossPlan:
        """The stage-2 loss of an arm of this method, starting at (global) epoch `start_epoch`."""
        raise NotImplementedError

    def strategy(self, arm: ArmParams) -> str:
        """The selection strategy this arm scores with."""
        return arm.strategy

    def own_params(self, params: Params) -> dict[str, Any]:
        """Params groups that shape only this method's cycles (part of a cycle's resume key)."""
        return {}

    def budgets(self, one_bit: int, num_classes: int, query_times: int) -> list[int]:
        """Questions per cycle for a budget of `one_bit` yes/no questions' worth of bits."""
        raise NotImplementedError

    def questions(self, selected: pd.DataFrame) -> pd.DataFrame:
        """The questions for the selected rows (DataFrame[sample_id, asked_class, …])."""
        return selected

    def apply(self, pool: pd.DataFrame, queries: pd.DataFrame, cycle: int, num_classes: int) -> pd.DataFrame:
        """The pool after this cycle's answered `queries` (sample_id, asked_class, answer, label_given)."""
        raise NotImplementedError

    def spent_through(self, budgets: Sequence[int], cycle: int) -> int | None:
        """One-bit questions the pool may hold after `cycle` (checked on write); None: not counted."""
        return None

    def same_answers(self, now: pd.DataFrame, used: pd.DataFrame) -> np.ndarray:
        """[n] bool: the answers in the store now (`answers.lookup`) equal the ones a cycle used."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class OneBitMethod(Method):
    """Asks "is this a {class}?"; *yes* gives the label, *no* denies one class."""

    question = "one_bit"

    def budgets(self, one_bit: int, num_classes: int, query_times: int) -> list[int]:
        return cycle_budgets(one_bit, query_times)

    def apply(self, pool: pd.DataFrame, queries: pd.DataFrame, cycle: int, num_classes: int) -> pd.DataFrame:
        return pools.apply_answers(pool, queries[["sample_id", "asked_class", "answer"]], cycle,
                                   num_classes=num_classes)

    def spent_through(self, budgets: Sequence[int], cycle: int) -> int | None:
        return pools.budget_through(budgets, cycle)

    def same_answers(self, now: pd.DataFrame, used: pd.DataFrame) -> np.ndarray:
        return (now["answered"] & (now["answer"].fillna(False).to_numpy(dtype=bool)
                                   == used["answer"].to_numpy(bool))).to_numpy(bool)


class FullLabelMethod(Method):
    """Asks "which class is this?"; a label costs log2 C bits, so it gets fewer questions."""

    question = "full"

    def budgets(self, one_bit: int, num_classes: int, query_times: int) -> list[int]:
        return cycle_budgets(full_label_budget(one_bit, num_classes), query_times)

    def questions(self, selected: pd.DataFrame) -> pd.DataFrame:
        return selected.assign(asked_class=LABEL_QUESTION)

    def apply(self, pool: pd.DataFrame, queries: pd.DataFrame, cycle: int, num_classes: int) -> pd.DataFrame:
        return pools.apply_full_labels(pool, queries["sample_id"].to_numpy(), queries["label_given"].to_numpy(),
                                       cycle, num_classes=num_classes)

    def same_answers(self, now: pd.DataFrame, used: pd.DataFrame) -> np.ndarray:
        return (now["answered"] & (now["label"].to_numpy() == used["label_given"].to_numpy())).to_numpy(bool)


class ObCP(OneBitMethod):
    """Paper Sec. 3: L_sup + λ_ctr·(L_c.u + L_c.l + L_c.n) + λ_neg·L_neg, with Table 4's switches."""

    name = "obcp"

    def loss_plan(self, arm: ArmParams, loss: LossParams, onebit: OnebitParams, start_epoch: int) -> LossPlan:
        return LossPlan(lambda_ctr=loss.lambda_ctr, lambda_neg=loss.lambda_neg, contrastive_labeled=True,
                        contrastive_negative=arm.neg_ctr, negative_loss=arm.neg_loss)


class OneBit(OneBitMethod):
    """Hu et al. 2020: Mean Teacher, the teacher blind to denied classes, asking with the teacher.

    Differs from their code: our backbone, views and schedule (the same for every arm), and
    λ_cons in our normalisation (params.yaml, `onebit`).
    """

    name = "onebit"
    asks_with_teacher = True

    def loss_plan(self, arm: ArmParams, loss: LossParams, onebit: OnebitParams, start_epoch: int) -> LossPlan:
        return LossPlan(lambda_ctr=0.0, contrastive_unlabeled=False, denied_consistency=True,
                        lambda_cons=onebit.consistency, cons_rampup=onebit.rampup_epochs, cons_start=start_epoch,
                        teacher_decay=onebit.ema_decay)

    def own_params(self, params: Params) -> dict[str, Any]:
        return {"onebit": params.onebit}


class FullBit(FullLabelMethod):
    """ObCP's training (no hard negatives: a full label denies nothing) with full labels at equal bits;
    Eq. 7 needs no history here, so an arm that says `obcp` ranks by entropy."""

    name = "fullbit"

    def loss_plan(self, arm: ArmParams, loss: LossParams, onebit: OnebitParams, start_epoch: int) -> LossPlan:
        return LossPlan(lambda_ctr=loss.lambda_ctr, lambda_neg=loss.lambda_neg, contrastive_labeled=True)

    def strategy(self, arm: ArmParams) -> str:
        return "entropy" if arm.strategy == "obcp" else arm.strategy


class Supervised(FullLabelMethod):
    """A conventional active learner: full labels from the oracle, cross-entropy alone.

    This is how the paper's baselines (Core-set, MC-Dropout, DBAL, ensembles, LL4AL, VAAL)
    train: no contrastive term, no unlabeled image in a training batch, the BatchNorm
    statistics or the queue (`LossPlan.labeled_only`). Same backbone, epochs, learning-rate
    schedule, batch size and classification view (`train.sup_view`) as every other arm,
    and the same bits (log2 C a label). Next to ``fullbit`` (ObCP's training with the same
    full labels) it separates the effect of the training from that of the selection.

    Weights: each cycle continues from the previous one, and cycle 1 from the stage-1
    checkpoint that every arm of the seed shares (trained on I^S with L_sup + λ·L_c.u), so
    only stage 2 differs between arms. The authors' code retrains from scratch each cycle:
    VAAL's `main.py` re-creates the VGG-16 task model (and the VAE and discriminator) for
    every split ("re initialize and retrain the models"), TA-VAAL's `main.py` creates a new
    ResNet-18 every cycle ("create new instance for every cycle so that it resets"), while
    the Learning-Loss reimplementation the paper's sources build on keeps one model per trial
    and continues it with a fresh optimizer. From scratch would need a schedule of its own per
    cycle (a cycle here retrains for `stage2_epochs / query_times` epochs); docs/baselines.md.
    An arm that says ``obcp`` ranks by entropy (Eq. 7 needs ObCP's history).
    """

    name = "supervised"

    def loss_plan(self, arm: ArmParams, loss: LossParams, onebit: OnebitParams, start_epoch: int) -> LossPlan:
        return LossPlan(lambda_ctr=0.0, contrastive_unlabeled=False, labeled_only=True)

    def strategy(self, arm: ArmParams) -> str:
        return "entropy" if arm.strategy == "obcp" else arm.strategy


for _method in (ObCP(), OneBit(), FullBit(), Supervised()):
    METHODS.register(_method)


def method_of(arm: ArmParams) -> Method:
    """The method object an arm names."""
    return METHODS.get(arm.method)


def stage2_plan(arm: ArmParams, loss: LossParams, onebit: OnebitParams = OnebitParams(),
                start_epoch: int = 0) -> LossPlan:
    """The loss of an arm's stage 2, which starts at (global) epoch `start_epoch`."""
    return method_of(arm).loss_plan(arm, loss, onebit, start_epoch)
