"""One-bit-aware selection: choose the sample *and* the question by what the answer is worth.

Every other built-in rule comes from full-label active learning: it ranks samples by
uncertainty and always asks about the predicted class. Here an answer is one bit: a *yes*
is a full label, a *no* removes one class of C. The strategies below choose the
(sample, class) pair themselves (`Strategy.ask`), or price the two answers:

- ``eig``: the expected information gain of the answer, for flat classes the binary
  entropy H(p_c) of "is it c?" under the model's belief renormalised over the classes not
  yet denied; the pair (i, c) with the largest H(p_ic) first (ALPF's EIG, Hu, Lipton,
  Anandkumar & Ramanan, "Active Learning with Partial Feedback", ICLR 2019, Eq. for
  "MERE" with singleton questions). Because p_(1) + p_(2) ≤ 1, the class nearest 0.5 is
  always the most probable one, so with flat classes eig asks the paper's class and differs
  only in which samples it asks: those whose top probability is nearest 0.5.
- ``expected_gain``: P(yes)·v_yes + P(no)·v_no for the question about the predicted class,
  P(yes) = its renormalised probability p̂, with v_yes and v_no the measured accuracy gain
  per *yes* and per *no* (``selection.value_yes``, ``selection.value_no``; measured by the
  two counterfactual arms below). The rule, written before any run: see
  :class:`ExpectedGain`.
- ``all_yes`` and ``all_no``: **counterfactual** arms that read the ground truth as only
  an oracle that knows it can (the simulated oracle; a human oracle refuses them). They
  follow the ``obcp`` arm (Eq. 7's ranking, the same bits) except that every answer is
  *yes* (``all_yes`` asks only samples whose predicted class is right) or *no* (``all_no``
  asks Eq. 7's samples about their most probable class that is wrong). They price a *yes*
  and a *no*; they are measurements, not selection rules.

Follow-up questions (ALPF: ask again about a sample just answered *no*) are the arm's
``rounds`` (`pipeline.loop.rounds`): after each round a sample answered *no* is scored
again with the denied class removed and the probabilities renormalised.
"""
from __future__ import annotations

import numpy as np

import pipeline.selection.strategies  # noqa: F401  (the paper's strategies register first, whatever imports this)
from pipeline.core.config import SelectionParams
from pipeline.core.registry import STRATEGIES
from pipeline.selection.base import (
    PREDICTED, Candidates, Questions, ScoreStrategy, SelectionError, Strategy, check_probs,
)


def _denied(c: Candidates) -> np.ndarray:
    """[n, C] bool denied classes (none when the loop gave none)."""
    shape = np.shape(c.probs)
    return np.zeros(shape, dtype=bool) if c.denied is None else np.asarray(c.denied, dtype=bool)


def renormalised(probs: np.ndarray, denied: np.ndarray) -> np.ndarray:
    """[n, C] the belief after the *no* answers: probs [n, C] with the denied [n, C] classes
    set to 0 and each row rescaled to sum to 1; a row whose remaining classes all have
    probability 0 becomes uniform over them (as ALPF's code does). A row with every class
    denied raises `SelectionError` (no question is left to ask)."""
    probs = np.asarray(probs, dtype=np.float64)
    denied = np.asarray(denied, dtype=bool)
    if probs.shape != denied.shape:
        raise SelectionError(f"probs {probs.shape} and denied {denied.shape} must both be [n, C].")
    left = ~denied
    if not left.any(axis=1).all():
        rows = np.flatnonzero(~left.any(axis=1))[:10].tolist()
        raise SelectionError(f"row(s) {rows} have every class denied, so no question is left to ask.")
    kept = np.where(left, probs, 0.0)
    mass = kept.sum(axis=1, keepdims=True)
    uniform = left / left.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 1e-12, kept / np.where(mass > 0, mass, 1.0), uniform)


def binary_entropy_bits(p: np.ndarray) -> np.ndarray:
    """H(p) = −p log2 p − (1 − p) log2 (1 − p), elementwise, with 0 log 0 = 0 (in [0, 1])."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0))
    return np.maximum(h, 0.0)


class PairStrategy(ScoreStrategy):
    """A per-sample strategy that scores every (sample, class) pair: implement
    `pair_scores(cands) -> [n, C]` (probs validated, denied classes are masked here).

    A sample's score is its best pair's score, and it is asked about that pair's class
    (ties to the lowest class). Denied classes are never asked."""

    def pair_scores(self, c: Candidates) -> np.ndarray:
        raise NotImplementedError

    def _best(self, c: Candidates) -> tuple[np.ndarray, np.ndarray]:
        c = _validated(c, self.name)
        pairs = np.asarray(self.pair_scores(c), dtype=np.float64)
        if pairs.shape != np.shape(c.probs):
            raise SelectionError(f"strategy {self.name!r}: pair scores {pairs.shape} must be [n, C] like probs.")
        pairs = np.where(_denied(c), -np.inf, np.nan_to_num(pairs, nan=-np.inf))
        classes = pairs.argmax(axis=1).astype(np.int64)
        return classes, pairs[np.arange(len(classes)), classes]

    def score(self, c: Candidates) -> np.ndarray:
        return self._best(c)[1]

    def ask(self, c: Candidates) -> Questions:
        classes, best = self._best(c)
        return Questions(classes=classes, scores=best, rule=self.question_rule)


def _validated(c: Candidates, name: str) -> Candidates:
    from dataclasses import replace

    probs = check_probs(c.probs, len(c), name)
    denied = _denied(replace(c, probs=probs))
    if not (~denied).any(axis=1).all():
        raise SelectionError(f"strategy {name!r}: a candidate has every class denied; drop it from the candidates.")
    return replace(c, probs=probs, denied=denied)


class EIG(PairStrategy):
    """ALPF's expected information gain for flat classes: the pair (i, c) maximising the
    binary entropy H(p̂_ic) of the answer to "is it c?", p̂ renormalised over the classes
    not yet denied (bits).

    Where it differs from Hu et al.'s code (github.com/peiyunh/alpf, `model.py`, score rule
    ``MERE``): no composite (WordNet) questions, only the C singleton classes, so the asked
    class is always the renormalised argmax and only the sample choice changes; p is this
    loop's asking network's clean-view softmax (theirs: the classifier's softmax); ties go to
    the lower sample id and class (theirs: the heap's order); follow-up questions are the
    arm's ``rounds`` (theirs: ``session_budget`` pops of a heap within a round).
    """

    name = "eig"
    question_rule = "eig"

    def pair_scores(self, c: Candidates) -> np.ndarray:
        return binary_entropy_bits(renormalised(c.probs, c.denied))


class ExpectedGain(PairStrategy):
    """The expected accuracy gain of the answer, priced by the counterfactual arms.

    The rule (written before any run; docs/onebit-aware.md): a candidate is asked about its
    predicted class (the argmax over the classes not yet denied: the question the two
    values were measured on), and scored

        E[gain] = p̂ · v_yes + (1 − p̂) · v_no,

    p̂ = the predicted class's probability renormalised over the classes not yet denied
    (P(yes) under the model), v_yes and v_no = the top-1 percentage points gained per *yes*
    and per *no* (``selection.value_yes`` and ``selection.value_no``, measured with the
    ``all_yes`` and ``all_no`` arms at the obcp arm's bits). Highest first; ties to the
    lower sample id. The score is affine in p̂, so only the sign of v_yes − v_no orders the
    samples: v_yes > v_no asks the most confident predictions first, v_yes < v_no the least
    confident (the ``max`` ranking on renormalised probabilities); equal values tie every
    candidate (then the lowest sample ids are asked).
    """

    name = "expected_gain"
    question_rule = "expected_gain"

    def __init__(self, value_yes: float = SelectionParams.value_yes, value_no: float = SelectionParams.value_no):
        self.value_yes = float(value_yes)
        self.value_no = float(value_no)

    def configured(self, params) -> "ExpectedGain":
        s = params.selection
        return ExpectedGain(s.value_yes, s.value_no)

    def check_params(self, params) -> list[str]:
        s = params.selection
        if isinstance(s.value_yes, float) and s.value_yes == s.value_no:
            return [f"selection.value_yes and selection.value_no: strategy {self.name!r} needs two different values "
                    f"(both are {s.value_yes}: every candidate would tie); measure them with the all_yes and all_no "
                    "arms (docs/onebit-aware.md)"]
        return []

    def pair_scores(self, c: Candidates) -> np.ndarray:
        p = renormalised(c.probs, c.denied)
        top = np.where(c.denied, -np.inf, p).argmax(axis=1)
        gain = p * self.value_yes + (1.0 - p) * self.value_no
        return np.where(np.arange(p.shape[1])[None, :] == top[:, None], gain, -np.inf)

    def __repr__(self) -> str:
        return f"ExpectedGain(value_yes={self.value_yes}, value_no={self.value_no})"


# --------------------------------------------------------------------------- counterfactual arms


def _restricted(scores: np.ndarray, eligible: np.ndarray, k: int, name: str, why: str) -> np.ndarray:
    """Eq. 7's scores for the eligible candidates (NaN → −inf, so they stay ahead), NaN for
    the rest; raises when fewer than `k` are eligible (the arm would spend fewer bits)."""
    if int(eligible.sum()) < int(k):
        raise SelectionError(
            f"counterfactual strategy {name!r}: only {int(eligible.sum())} candidate(s) {why}, fewer than the "
            f"{int(k)} questions of this query, so it cannot spend the obcp arm's bits. Lower budget.one_bit, "
            "or do not run this arm on this dataset."
        )
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(eligible, np.where(np.isnan(scores), -np.inf, scores), np.nan)


class _Counterfactual(Strategy):
    """Reads `Candidates.truth`: the labels only an oracle that knows them can give."""

    needs = frozenset({"history", "truth"})
    per_sample = False  # it must see every candidate to know that k of them are eligible

    def _truth(self, c: Candidates) -> np.ndarray:
        self.check(c)
        truth = np.asarray(c.truth, dtype=np.int64)
        if truth.shape != (len(c),):
            raise SelectionError(f"strategy {self.name!r}: truth must be [n] = [{len(c)}], got {truth.shape}.")
        return truth


class AllYes(_Counterfactual):
    """Counterfactual: every answer is *yes*. Asks only candidates whose predicted class (the
    argmax over the classes not yet denied: the paper's question) is the true label, in
    Eq. 7's order; otherwise the obcp arm. Reads the ground truth as an oracle would:
    only with the simulated oracle."""

    name = "all_yes"

    def scores(self, c: Candidates, k: int) -> np.ndarray:
        truth = self._truth(c)
        right = Strategy.ask(self, c).classes == truth
        return _restricted(c.history.uncertainty(c.ids), right, k, self.name, "have a right predicted class")


class AllNo(_Counterfactual):
    """Counterfactual: every answer is *no*. Asks Eq. 7's candidates, in Eq. 7's order (the
    obcp arm's samples), each about its most probable class that is not yet denied and is
    not its true label (its predicted class whenever that is wrong); a candidate whose only
    class left is its label is never asked. Reads the ground truth as an oracle would: only
    with the simulated oracle."""

    name = "all_no"
    question_rule = "all_no"

    def _wrong(self, c: Candidates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        truth = self._truth(c)
        probs = check_probs(c.probs, len(c), self.name)
        masked = np.where(_denied(c), -np.inf, probs)
        masked[np.arange(len(truth)), truth] = -np.inf
        classes = masked.argmax(axis=1).astype(np.int64)
        best = masked[np.arange(len(truth)), classes]
        return classes, best, np.isfinite(best)

    def scores(self, c: Candidates, k: int) -> np.ndarray:
        eligible = self._wrong(c)[2]
        return _restricted(c.history.uncertainty(c.ids), eligible, k, self.name, "have a wrong class left to ask")

    def ask(self, c: Candidates) -> Questions:
        classes, best, eligible = self._wrong(c)
        if not eligible.all():  # nothing wrong is left to ask: keep the paper's question (never selected)
            classes = np.where(eligible, classes, Strategy.ask(self, c).classes)
        return Questions(classes=classes, scores=np.where(eligible, best, np.nan), rule=self.question_rule)


for _strategy in (EIG(), ExpectedGain(), AllYes(), AllNo()):
    STRATEGIES.register(_strategy)

__all__ = ["AllNo", "AllYes", "EIG", "ExpectedGain", "PairStrategy", "PREDICTED", "binary_entropy_bits",
           "renormalised"]
