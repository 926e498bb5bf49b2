"""Follow-up questions within a cycle: ask the cycle's questions in rounds (an arm's `rounds`).

ALPF (Hu, Lipton, Anandkumar & Ramanan, ICLR 2019) may ask again about a sample just
answered *no*. Here a cycle's k questions are split into `rounds` rounds (the first rounds
take the remainder). Round 1 asks the top of the cycle's ranking (`scores.parquet`). Before
each later round, every sample answered *no* earlier in this cycle (and not yet *yes*) is
scored again by the arm's strategy with the denied classes removed and its probabilities
renormalised over the classes left (`Candidates.denied`, `onebit_aware.renormalised`), and
asked about its next class (`Strategy.ask`: never a denied class, so never the same
question twice); it competes with the samples not asked yet, which keep their scores. The
round asks the best of both (ties to the lower sample id). ALPF's code does the same with a
heap of (example, best question) pairs popped `session_budget` at a time.

A strategy whose score does not depend on the class (Eq. 7, random) gives a sample answered
*no* its old score, so it is asked again at once: it drills down on the samples it ranks
first. Every round is answered before the next is chosen; with a human oracle the stage
stops after writing each round's question sheet (exit 3) and, when rerun, recomputes the
rounds already answered from the answer store (the same questions: the rule is
deterministic) and asks the next.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.loop.poolpass import PROBS, QUESTION_COLUMNS
from pipeline.method.history import load_query_history
from pipeline.pool import pools
from pipeline.selection.base import Candidates, Strategy
from pipeline.selection.onebit_aware import renormalised
from pipeline.selection.ranking import select_top

if TYPE_CHECKING:
    from pipeline.loop.cycle import Cycle

ROUND = "round"


def round_sizes(k: int, rounds: int) -> list[int]:
    """Questions per round: k split over `rounds`, the first rounds taking the remainder."""
    base, extra = divmod(int(k), int(rounds))
    return [base + (1 if r < extra else 0) for r in range(int(rounds))]


def rescore(strategy: Strategy, ids: np.ndarray, probs: np.ndarray, denied: np.ndarray, *, history=None,
            seed: int = 0) -> pd.DataFrame:
    """Score samples answered *no* again: probs [n, C] renormalised over the classes not in
    denied [n, C]. Returns DataFrame[sample_id, score, asked_class, *question columns*]."""
    cands = Candidates(ids=np.asarray(ids, dtype=np.int64), probs=renormalised(probs, denied), history=history,
                       seed=seed, denied=np.asarray(denied, dtype=bool))
    scores = strategy.scores(cands, len(cands))
    asked = strategy.ask(cands)
    frame = pd.DataFrame({"sample_id": cands.ids, "score": np.asarray(scores, dtype=np.float64),
                          "asked_class": asked.classes})
    if QUESTION_COLUMNS[0] in _question_columns(strategy):
        frame["question_rule"] = asked.rule
        frame["question_score"] = np.asarray(asked.scores, dtype=np.float64)
    return frame


def _question_columns(strategy: Strategy) -> list[str]:
    from pipeline.selection.base import PREDICTED

    return QUESTION_COLUMNS if strategy.question_rule != PREDICTED else []


def ask_in_rounds(c: Cycle, scores: pd.DataFrame) -> pd.DataFrame:
    """Ask cycle `c`'s questions in `c.arm.rounds` rounds (module docstring); returns the
    queries of every round (DataFrame[sample_id, asked_class, score, rank, strategy,
    *question columns*, round, answer, label_given, true_label, …]), rank continuing over
    the rounds. Raises the oracle's `AnswersMissing` while a round waits for a person."""
    ctx, strategy, k = c.ctx, c.strategy, c.budget
    qcols = [col for col in _question_columns(strategy) if col in scores.columns]
    top = scores[scores["rank"] <= k].sort_values("rank").reset_index(drop=True)
    probs = {int(s): np.asarray(p, dtype=np.float64) for s, p in zip(top["sample_id"], top[PROBS])}
    history = load_query_history(c.prev_dir / "history.npz", c.window) if "history" in strategy.needs else None
    pool = pools.read_pool(c.prev_pool)
    before = {int(s): row for s, row in zip(top["sample_id"],
                                            pools.denied_matrix(pool, top["sample_id"].to_numpy(), ctx.num_classes))}
    fresh = top[["sample_id", "score", "asked_class", *qcols]]
    waiting: dict[int, np.ndarray] = {}  # answered no this cycle: sample_id → denied classes now
    asked: list[pd.DataFrame] = []
    rank = 0
    for r, size in enumerate(round_sizes(k, c.arm.rounds), start=1):
        if size == 0:
            continue
        ids = np.array(sorted(waiting), dtype=np.int64)
        again = rescore(strategy, ids, np.stack([probs[i] for i in ids]), np.stack([waiting[i] for i in ids]),
                        history=history, seed=ctx.seed * 1000 + c.k) if len(ids) else None
        pairs = fresh if again is None else pd.concat([fresh, again[fresh.columns]], ignore_index=True)
        chosen = select_top(pairs["sample_id"].to_numpy(dtype=np.int64), pairs["score"].to_numpy(dtype=np.float64),
                            size, extra={col: pairs[col].to_numpy() for col in pairs.columns[2:]})
        chosen["rank"] = chosen["rank"] + rank
        rank += len(chosen)
        chosen["strategy"] = strategy.name
        chosen[ROUND] = r
        q = c.method.questions(chosen[["sample_id", "asked_class", "score", "rank", "strategy", *qcols, ROUND]].copy())
        got = c.oracle.answer(q[["sample_id", "asked_class"]], c.asking)
        for column in got.columns:
            q[column] = got[column].to_numpy()
        asked.append(q)
        fresh = fresh[~fresh["sample_id"].isin(q["sample_id"])]
        for sid, cls, yes in zip(q["sample_id"].tolist(), q["asked_class"].tolist(), q["answer"].tolist()):
            if bool(yes):
                waiting.pop(int(sid), None)
                continue
            denied = waiting.get(int(sid), before[int(sid)]).copy()
            denied[int(cls)] = True
            if denied.all():  # a person's answers contradict each other: nothing is left to ask
                waiting.pop(int(sid), None)
            else:
                waiting[int(sid)] = denied
    return pd.concat(asked, ignore_index=True)


def apply_in_rounds(apply, pool: pd.DataFrame, queries: pd.DataFrame, cycle: int, num_classes: int) -> pd.DataFrame:
    """The pool after `queries` of every round, applied round by round with the method's
    `apply(pool, queries, cycle, num_classes)` (a sample is asked at most once per round)."""
    if ROUND not in queries.columns:
        return apply(pool, queries, cycle, num_classes)
    for r in sorted(queries[ROUND].unique()):
        pool = apply(pool, queries[queries[ROUND] == r], cycle, num_classes)
    return pool
