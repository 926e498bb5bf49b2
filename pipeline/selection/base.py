"""What a selection strategy is: an object that scores candidates from the inputs it declares.

A strategy names the inputs it needs (`Strategy.needs`, a subset of :data:`INPUTS`); the
active loop computes only those, in one pass over the candidates (`pipeline.loop.poolpass`),
and hands them over as a :class:`Candidates`. Higher score = asked first; ties go to the
lower sample_id and NaN scores come last (`pipeline.selection.ranking`).

- A *per-sample* strategy (:class:`ScoreStrategy`) scores each candidate on its own, so
  the loop scores chunk by chunk and never holds the whole pool's inputs: a new one is a
  `score` method of one line.
- A *batch* strategy (`per_sample = False`) sees every candidate at once and returns
  scores whose top `k` are its picks (e.g. k-center greedy: the pick order, NaN for the rest).

A strategy also says which class each candidate is asked about (:meth:`Strategy.ask`): by
default the predicted class (the argmax over the classes not yet denied), as the paper
does; a one-bit-aware strategy (`pipeline.selection.onebit_aware`) sets `question_rule`
and chooses the class itself, returning its per-pair score, which the ledger records.

Register an instance in `pipeline.core.registry.STRATEGIES` (built-ins in
`pipeline.selection.strategies` and `pipeline.selection.onebit_aware`; a project's own
through `plugins:` in params.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping, Protocol

import numpy as np

from pipeline.core.errors import ObcpError
from pipeline.method.history import PredictionHistory

#: inputs a strategy may declare: the asking network's clean-view softmax [n, C]; the Eq. 7
#: prediction history; penultimate-layer embeddings [n, D]; MC-dropout softmax samples
#: [T, n, C]; last-layer gradient embeddings [n, D·C]; the labeled set's embeddings [m, D];
#: the ground truth [n] as only an oracle that knows it gives it (counterfactual arms: a
#: human oracle refuses them); the conventional learners' (docs/baselines.md): the softmax
#: of the arm's E ensemble members [E, n, C], LL4AL's predicted loss [n], the images (VAAL)
INPUTS: tuple[str, ...] = ("probs", "history", "embeddings", "mc_probs", "grad_embeddings", "labeled_embeddings",
                           "truth", "ensemble_probs", "predicted_loss", "images")
#: `Strategy.question_rule` of the paper's question: the predicted class among those not yet denied
PREDICTED = "predicted"
_PROB_TOLERANCE = 1e-2


class SelectionError(ObcpError):
    """Bad input to sample selection (strategy, shapes, ids, fully denied samples)."""


def as_ids(ids: np.ndarray) -> np.ndarray:
    """[n] int64 sample ids (an empty array of any dtype is fine)."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise SelectionError(f"ids must be a 1-D integer array [n], got shape {ids.shape}, dtype {ids.dtype}.")
    return ids.astype(np.int64, copy=False)


def check_probs(probs: np.ndarray | None, n: int, strategy: str) -> np.ndarray:
    """probs [n, C] float64, softmax outputs (rows sum to 1, no NaN or negatives)."""
    if probs is None:
        raise SelectionError(
            f"strategy {strategy!r} needs the current model's probabilities [n, C]; pass probs=."
        )
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != n or probs.shape[1] < 2:
        raise SelectionError(f"probs must have shape [n, C] with n = {n} and C >= 2, got {probs.shape}.")
    probs = probs.astype(np.float64, copy=False)
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise SelectionError("probs contain NaN, inf or negative values; pass softmax outputs.")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > _PROB_TOLERANCE
    if off.any():
        raise SelectionError(
            f"probs rows must sum to 1 (softmax outputs, not logits); {int(off.sum())} row(s) "
            f"do not, e.g. row {int(np.flatnonzero(off)[0])} sums to {sums[off][0]:.4f}."
        )
    return probs


class ImageSource(Protocol):
    """The train images of given ids, for a strategy that trains on pixels (VAAL)."""

    device: Any  # the torch device the batches are on

    def batches(self, ids: np.ndarray, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                epoch: int = 0) -> Iterator[tuple[np.ndarray, Any]]:
        """(ids [b], x [b, 3, H, W] float tensor on `device`, the clean view) per batch."""
        ...


@dataclass(frozen=True)
class Candidates:
    """The n candidates of one query (unlabeled samples with a class left to ask) and the
    inputs the strategy declared; the others are None.

    ids [n] int64; probs [n, C] float; history: the Eq. 7 :class:`PredictionHistory`
    (indexed by sample_id); embeddings [n, D]; mc_probs [T, n, C]; grad_embeddings [n, E];
    labeled_embeddings [m, D]; seed: this query's seed (seed·1000 + cycle); denied [n, C]
    bool: the classes the oracle already denied (earlier cycles, and earlier rounds of this
    cycle; always given by the loop); truth [n] int64: the label the oracle would answer
    from (only for a strategy that declares "truth", and only from an oracle that knows it);
    ensemble_probs [E, n, C]; predicted_loss [n]; images: an :class:`ImageSource` (with
    labeled_ids [m], the labeled samples' ids); settings: the strategy's own params
    (`Strategy.own_params`).
    """

    ids: np.ndarray
    probs: np.ndarray | None = None
    history: PredictionHistory | None = None
    embeddings: np.ndarray | None = None
    mc_probs: np.ndarray | None = None
    grad_embeddings: np.ndarray | None = None
    labeled_embeddings: np.ndarray | None = None
    seed: int = 0
    denied: np.ndarray | None = None
    truth: np.ndarray | None = None
    ensemble_probs: np.ndarray | None = None
    predicted_loss: np.ndarray | None = None
    images: ImageSource | None = None
    labeled_ids: np.ndarray | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.size)


@dataclass(frozen=True)
class Questions:
    """The question asked about each candidate: classes [n] int64 (never a denied class);
    scores [n] float64, the per-pair score that chose the class (NaN under the paper's rule);
    rule: how the class was chosen (`Strategy.question_rule`), recorded in the ledger."""

    classes: np.ndarray
    scores: np.ndarray
    rule: str = PREDICTED


class Strategy:
    """Scores [n] float64 for `Candidates`; higher = asked first. Subclass and register."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset({"probs"})
    per_sample: ClassVar[bool] = True  # scores of a chunk do not depend on the other candidates
    #: how the asked class is chosen: PREDICTED (the paper; `ask` is not overridden) or the
    #: name of the strategy's own rule (it overrides `ask`; the ledger records the rule and score)
    question_rule: ClassVar[str] = PREDICTED

    # what an arm of this strategy trains besides its method's model (docs/baselines.md); the
    # loop reads these, so the other arms' training stays exactly as it was:
    dropout: ClassVar[bool] = False  # dropout (`baselines.dropout`) before the classifier in stage 2
    ensemble: ClassVar[bool] = False  # `baselines.ensemble` − 1 more models, seeded apart
    loss_head: ClassVar[bool] = False  # LL4AL's loss-prediction head, trained jointly

    def own_params(self, params: Any) -> dict[str, Any]:
        """The settings this strategy reads from `params` (part of its cycles' resume key and
        handed over as `Candidates.settings`); {} for most."""
        return {}

    def scores(self, cands: Candidates, k: int) -> np.ndarray:
        raise NotImplementedError

    def ask(self, cands: Candidates) -> Questions:
        """The class to ask about each candidate: the argmax of `cands.probs` over the classes
        not in `cands.denied` (ties to the lowest class), the paper's question."""
        from pipeline.selection.ranking import asked_classes

        n = len(cands)
        denied = cands.denied if cands.denied is not None else np.zeros(np.shape(cands.probs), dtype=bool)
        return Questions(classes=asked_classes(cands.probs, denied), scores=np.full(n, np.nan))

    def configured(self, params) -> "Strategy":
        """This strategy with its settings from `params` (a `Params`): itself unless it reads
        some (e.g. `expected_gain`'s values of a yes and a no)."""
        return self

    def check_params(self, params) -> list[str]:
        """Problems with the settings this strategy reads from `params` (checked at validation)."""
        return []

    def check(self, cands: Candidates) -> None:
        """Raise `SelectionError` naming a declared input that is missing."""
        for need in self.needs:
            if getattr(cands, need) is None:
                what = {"history": "the prediction history (Eq. 7); pass history=",
                        "probs": "the current model's probabilities [n, C]; pass probs=",
                        "truth": "the ground truth [n], which only an oracle that knows it gives (a "
                                 "counterfactual arm: a human oracle cannot run it); pass truth="}.get(need, need)
                raise SelectionError(f"strategy {self.name!r} needs {what}.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ScoreStrategy(Strategy):
    """A per-sample strategy: implement `score(cands) -> [n]` (probs already validated)."""

    def score(self, cands: Candidates) -> np.ndarray:
        raise NotImplementedError

    def scores(self, cands: Candidates, k: int) -> np.ndarray:
        self.check(cands)
        if "probs" in self.needs:
            cands = _with_probs(cands, check_probs(cands.probs, len(cands), self.name))
        return np.asarray(self.score(cands), dtype=np.float64)


def _with_probs(cands: Candidates, probs: np.ndarray) -> Candidates:
    from dataclasses import replace

    return replace(cands, probs=probs)
