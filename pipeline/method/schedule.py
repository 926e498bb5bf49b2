"""The epoch schedule of a run: when each query happens and which epochs its Eq. 7 windows cover.

Epochs are 0-based and counted over the whole run (stage 1, then stage 2). Query k happens
at epoch Q_k, after epochs 0..Q_k−1: Q_1 is the end of stage 1, and the stage-2 epochs are
split evenly over the cycles (:func:`epoch_shares`). The windows of query k
(:class:`QueryWindow`) are [max(S_k, Q_k − m), Q_k) for p̃ and [max(S_k, Q_k − t), Q_k) for
log q, where S_k depends on `selection.window` (:func:`window_start`; the rules are
explained in `pipeline.method.history`).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.config import WINDOWS as WINDOW_RULES
from pipeline.core.errors import ObcpError


class ScheduleError(ObcpError):
    """Bad arguments to the epoch schedule (epochs, query counts, windows)."""


def window_epochs(start_epoch: int, query_epoch: int, length: int) -> range:
    """Epochs of a window of ``length`` before the query: [max(start, Q - length), Q)."""
    if length < 1:
        raise ScheduleError(f"a window length must be >= 1 epoch, got {length}.")
    return range(max(int(start_epoch), int(query_epoch) - int(length)), int(query_epoch))


def epoch_shares(stage2_epochs: int, query_times: int) -> list[int]:
    """Stage-2 epochs of each cycle: an even split, the remainder to the early cycles.

    Cycle k's share runs after its query. Each cycle needs >= 1 epoch, otherwise two
    queries would see the same model.
    """
    if query_times < 1:
        raise ScheduleError(f"query_times must be >= 1, got {query_times}.")
    if stage2_epochs < query_times:
        raise ScheduleError(
            f"stage 2 has {stage2_epochs} epochs for {query_times} query cycles; every cycle "
            "must retrain for at least one epoch. Raise the stage-2 epochs or lower "
            "query_times."
        )
    share, rest = divmod(int(stage2_epochs), int(query_times))
    return [share + (1 if k < rest else 0) for k in range(int(query_times))]


def query_epochs(stage1_epochs: int, stage2_epochs: int, query_times: int) -> list[int]:
    """Epoch Q_k of each query k = 1..query_times (0-based count of epochs run before it).

    Q_1 = stage1_epochs (end of stage 1); Q_k = Q_{k-1} + share of cycle k-1, where the
    stage-2 epochs are split by :func:`epoch_shares`.
    """
    if stage1_epochs < 1:
        raise ScheduleError(
            f"stage 1 must run >= 1 epoch before the first query, got {stage1_epochs}."
        )
    shares = epoch_shares(stage2_epochs, query_times)
    epochs = [int(stage1_epochs)]
    for share in shares[:-1]:
        epochs.append(epochs[-1] + share)
    return epochs


def window_start(k: int, queries: list[int], rule: str) -> int:
    """S_k, the first epoch any window of query k (1-based) may use; see the module docstring.

    ``queries`` are the query epochs Q_1..Q_K (:func:`query_epochs`); Q_1 is the end of stage 1.
    """
    if rule not in WINDOW_RULES:
        raise ScheduleError(f"unknown window rule {rule!r}; choose one of {list(WINDOW_RULES)}.")
    if not 1 <= k <= len(queries):
        raise ScheduleError(f"query {k} does not exist; there are {len(queries)} queries.")
    if k == 1:
        return 0
    return queries[k - 2] if rule == "since_query" else queries[0]


@dataclass(frozen=True)
class QueryWindow:
    """The Eq. 7 windows of query ``k`` (1-based) at epoch ``query_epoch``: p~ averages the
    epochs in :attr:`p`, log q sums those in :attr:`q` (``q`` ⊆ ``p`` because t ≤ m)."""

    k: int
    start_epoch: int
    query_epoch: int
    m: int
    t: int

    @property
    def p(self) -> range:
        return window_epochs(self.start_epoch, self.query_epoch, self.m)

    @property
    def q(self) -> range:
        return window_epochs(self.start_epoch, self.query_epoch, self.t)

    def fed_by(self, first_epoch: int, end_epoch: int) -> bool:
        """Whether training epochs [first_epoch, end_epoch) contribute to this query."""
        p = self.p
        return len(p) > 0 and p.start < end_epoch and first_epoch < p.stop


def query_windows(stage1_epochs: int, stage2_epochs: int, query_times: int, *, m: int, t: int,
                  rule: str = "since_query") -> list[QueryWindow]:
    """The windows of every query k = 1..query_times under ``rule`` (``selection.window``)."""
    if m < 1 or not 1 <= t <= m:
        raise ScheduleError(f"need 1 <= t <= m, got m={m}, t={t}.")
    queries = query_epochs(stage1_epochs, stage2_epochs, query_times)
    return [QueryWindow(k, window_start(k, queries, rule), q, int(m), int(t)) for k, q in enumerate(queries, 1)]


def open_windows(windows: list[QueryWindow], first_epoch: int, end_epoch: int) -> list[QueryWindow]:
    """The windows that training epochs [first_epoch, end_epoch) record into, in query order."""
    return [w for w in windows if w.fed_by(first_epoch, end_epoch)]


def accumulator_arrays(windows: list[QueryWindow], first_epoch: int, end_epoch: int) -> int:
    """How many [N, C] float32 sums are allocated at the end of training epochs
    [first_epoch, end_epoch): a p-sum per open window, plus a log-q sum where its
    t-window has begun (the arrays of a sum are allocated at its window's first epoch)."""
    return sum(1 + (w.q.start < end_epoch and len(w.q) > 0) for w in open_windows(windows, first_epoch, end_epoch))


def max_open_accumulators(stage1_epochs: int, stage2_epochs: int, query_times: int, *, m: int, t: int,
                          rule: str = "since_query") -> int:
    """The most [N, C] float32 sums held at once by any training stage (stage 1 or a cycle).

    ``since_query``: 2 (one query's p- and log-q sum). ``across_queries`` with equal cycles
    of s epochs: up to ceil(m / s) p-sums and ceil(t / s) log-q sums, fewer when fewer
    queries remain (paper: m = 30, t = 5, s = 25 → 3; digits defaults → 4).
    """
    windows = query_windows(stage1_epochs, stage2_epochs, query_times, m=m, t=t, rule=rule)
    queries = [w.query_epoch for w in windows] + [stage1_epochs + stage2_epochs]
    spans = [(0, stage1_epochs)] + list(zip(queries[:-1], queries[1:]))
    return max(accumulator_arrays(windows, a, b) for a, b in spans)
