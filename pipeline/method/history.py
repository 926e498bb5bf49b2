"""Prediction history for the ObCP uncertainty (paper Eq. 7) in O(N * C) memory.

Eq. 7 scores an unlabeled sample x by

    U(x) = - sum_{i=1..t} sum_c p~_c(x) * log q_{i,c}(x)

where p~ is the mean softmax over the last ``m`` recorded epochs and q_i the softmax of
each of the last ``t`` epochs before the query. Because the query epochs are known in
advance, two running sums suffice for one query: ``p_sum`` (sum of p over its
m-window) and ``logq_sum`` (sum of log q over its t-window).

Epoch numbering: epochs are 0-based and counted over the whole run (stage 1 then
stage 2). "The query at epoch Q" happens after epochs 0..Q-1 have run.

Windows (``selection.window``; :func:`pipeline.method.schedule.query_windows` lists them). Query k's windows are
``[max(S_k, Q_k - m), Q_k)`` for p~ and ``[max(S_k, Q_k - t), Q_k)`` for log q, where
the start ``S_k`` depends on the rule:

- ``since_query``: S_1 = 0, S_k = Q_{k-1}. A window never reaches back past the
  previous query, so with short cycles (digits: 3 epochs) every query after the
  first averages over the same few epochs whatever m and t are.
- ``across_queries`` (the paper's reading, m = 30 with 25-epoch cycles): S_1 = 0 and
  S_k = the end of stage 1 for k >= 2. A window reaches back across earlier queries,
  but never into stage 1 for k >= 2: stage 1 records only query 1's window, so
  ``pretrain`` does not depend on ``query_times`` (docs/design.md §4) and changing it reuses
  the cached stage 1. The first query's window lies inside stage 1 under both rules.

Under ``across_queries`` one cycle's training may feed several later queries (paper
settings: the next query's p- and q-window, plus the p-window of the query after it).
:class:`HistorySet` records into every open accumulator at once, and a cycle's
``history.npz`` carries the accumulators still open at its end; see
:func:`~pipeline.method.schedule.open_windows` and
:func:`~pipeline.method.schedule.max_open_accumulators` for the memory bound.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from pipeline.core.errors import ObcpError
from pipeline.method.schedule import QueryWindow, open_windows, window_epochs
from pipeline.core.io import atomic_path

PROB_FLOOR = 1e-8
_STATE_VERSION = 1


class HistoryError(ObcpError):
    """Bad arguments to the prediction history (epochs, ids, shapes)."""


class HistoryFileError(HistoryError):
    """A history file is missing, unreadable or does not match the expected shape."""


class Recorder(Protocol):
    """What a training loop (or an extra recording pass) needs: :class:`PredictionHistory`
    and :class:`HistorySet` both are one."""

    def in_window(self, epoch: int) -> bool:
        """Whether ``epoch``'s predictions are wanted (if not, skip computing them)."""
        ...

    def record(self, epoch: int, ids: np.ndarray, probs: np.ndarray) -> None:
        """Add softmax outputs ``probs [B, C]`` of samples ``ids [B]`` at ``epoch`` (once per sample and epoch)."""
        ...


class PredictionHistory:
    """Accumulates Eq. 7's two sums for ONE query at epoch ``query_epoch``.

    Memory: ``p_sum`` and ``logq_sum`` float32 [N, C], plus int32 [N] counters
    ``count_p``, ``count_q`` (epochs added per sample) and ``last_epoch`` (the last
    epoch a sample was recorded in, for de-duplication). Each sum (with its counter) is
    allocated at the first record inside its own window, so a history created long
    before its query costs nothing until its m-window begins, and only its p-sum until
    its t-window begins.

    Args:
        num_samples: N, the train split size (ids are 0..N-1).
        num_classes: C.
        m: epochs averaged into p~ (paper: 30).
        t: epochs of log q summed (paper: 5).
        start_epoch: first epoch that may be recorded (:func:`window_start`).
        query_epoch: Q; epochs start_epoch..Q-1 precede the query.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        *,
        m: int,
        t: int,
        start_epoch: int,
        query_epoch: int,
    ) -> None:
        if num_samples < 1 or num_classes < 2:
            raise HistoryError(
                f"need num_samples >= 1 and num_classes >= 2, got {num_samples} and {num_classes}."
            )
        if m < 1 or t < 1:
            raise HistoryError(f"m and t must be >= 1 epoch, got m={m}, t={t}.")
        if not 0 <= start_epoch <= query_epoch:
            raise HistoryError(
                f"need 0 <= start_epoch <= query_epoch, got start_epoch={start_epoch}, "
                f"query_epoch={query_epoch}."
            )
        self.num_samples = int(num_samples)
        self.num_classes = int(num_classes)
        self.m = int(m)
        self.t = int(t)
        self.start_epoch = int(start_epoch)
        self.query_epoch = int(query_epoch)
        self.p_window = window_epochs(start_epoch, query_epoch, m)
        self.q_window = window_epochs(start_epoch, query_epoch, t)
        self.latest_epoch = -1
        self.p_sum: np.ndarray | None = None
        self.logq_sum: np.ndarray | None = None
        self.count_p: np.ndarray | None = None
        self.count_q: np.ndarray | None = None
        self.last_epoch: np.ndarray | None = None

    # -- recording ---------------------------------------------------------

    @property
    def allocated(self) -> bool:
        """Whether both sums exist (both windows have begun)."""
        return self.p_sum is not None and self.logq_sum is not None

    def in_window(self, epoch: int) -> bool:
        """Whether ``epoch``'s predictions contribute to either sum."""
        return epoch in self.p_window or epoch in self.q_window

    def _allocate(self, epoch: int) -> None:
        n, c = self.num_samples, self.num_classes
        if self.last_epoch is None:
            self.last_epoch = np.full(n, -1, dtype=np.int32)
        if self.p_sum is None and epoch in self.p_window:
            self.p_sum = np.zeros((n, c), dtype=np.float32)
            self.count_p = np.zeros(n, dtype=np.int32)
        if self.logq_sum is None and epoch in self.q_window:
            self.logq_sum = np.zeros((n, c), dtype=np.float32)
            self.count_q = np.zeros(n, dtype=np.int32)

    def record(self, epoch: int, ids: np.ndarray, probs: np.ndarray) -> None:
        """Add one batch of softmax outputs of ``epoch``.

        Args:
            epoch: 0-based global epoch of the forward pass.
            ids: [B] int sample ids (0..N-1).
            probs: [B, C] softmax probabilities (any float dtype; CPU numpy or a CPU tensor).

        A sample counts at most once per epoch: repeated ids (within the batch, or in
        a later batch of the same epoch, e.g. DDP padding) are ignored. Epochs outside
        both windows are a cheap no-op. Epochs must not decrease between calls.
        """
        epoch = int(epoch)
        if epoch < self.latest_epoch:
            raise HistoryError(
                f"record() got epoch {epoch} after epoch {self.latest_epoch}; epochs must be "
                "recorded in order."
            )
        self.latest_epoch = epoch
        if not self.in_window(epoch):
            return
        ids = np.asarray(ids)
        probs = np.asarray(probs)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise HistoryError(f"ids must be a 1-D integer array [B], got shape {ids.shape}, dtype {ids.dtype}.")
        if probs.shape != (ids.size, self.num_classes):
            raise HistoryError(
                f"probs must have shape [B, C] = [{ids.size}, {self.num_classes}], got {probs.shape}."
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise HistoryError(
                f"sample ids must lie in 0..{self.num_samples - 1}, got range "
                f"{int(ids.min())}..{int(ids.max())}."
            )
        if not np.isfinite(probs).all():
            raise HistoryError("probs contain NaN or inf; the model diverged or the softmax overflowed.")
        self._allocate(epoch)
        assert self.last_epoch is not None
        uniq, first = np.unique(ids, return_index=True)
        fresh = self.last_epoch[uniq] != epoch
        rows = uniq[fresh]
        if rows.size == 0:
            return
        batch = probs[first[fresh]].astype(np.float32, copy=False)
        self.last_epoch[rows] = epoch
        if epoch in self.p_window:
            assert self.p_sum is not None and self.count_p is not None
            self.p_sum[rows] += batch
            self.count_p[rows] += 1
        if epoch in self.q_window:
            assert self.logq_sum is not None and self.count_q is not None
            self.logq_sum[rows] += np.log(np.maximum(batch, np.float32(PROB_FLOOR)))
            self.count_q[rows] += 1

    # -- scoring -----------------------------------------------------------

    def uncertainty(self, ids: np.ndarray, *, chunk_size: int = 8192) -> np.ndarray:
        """Eq. 7 uncertainty U [n] (float64) of the samples ``ids`` [n]; higher = more uncertain.

        U = -sum_c p~_c * L_c with p~ = p_sum / count_p and L = logq_sum scaled to the full
        t-window: L = logq_sum * (len(t-window) / count_q). When a sample was recorded in
        every window epoch (the normal case) the scale is 1 and U is exactly Eq. 7; if a
        sample missed an epoch (e.g. dropped by a sampler), the scale extrapolates its
        mean instead of under-counting it.

        Samples never recorded in one of the windows get NaN; selection ranks NaN last.
        Computed in chunks of ``chunk_size`` rows: extra memory O(chunk_size * C).
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise HistoryError(f"ids must be a 1-D integer array, got shape {ids.shape}, dtype {ids.dtype}.")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise HistoryError(f"sample ids must lie in 0..{self.num_samples - 1}.")
        scores = np.full(ids.size, np.nan, dtype=np.float64)
        if not self.allocated or ids.size == 0:
            return scores
        assert self.p_sum is not None and self.logq_sum is not None
        assert self.count_p is not None and self.count_q is not None
        t_len = len(self.q_window)
        for lo in range(0, ids.size, chunk_size):
            chunk = ids[lo : lo + chunk_size]
            cp = self.count_p[chunk].astype(np.float64)
            cq = self.count_q[chunk].astype(np.float64)
            ok = (cp > 0) & (cq > 0)
            rows = chunk[ok]
            p_mean = self.p_sum[rows].astype(np.float64) / cp[ok, None]
            logq = self.logq_sum[rows].astype(np.float64) * (t_len / cq[ok])[:, None]
            out = np.full(chunk.size, np.nan, dtype=np.float64)
            out[ok] = -np.einsum("nc,nc->n", p_mean, logq)
            scores[lo : lo + chunk_size] = out
        return scores

    # -- state -------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """All state as numpy arrays (a sum and its counter are empty, [0, C] and [0], until
        its window begins)."""
        meta = np.array(
            [
                _STATE_VERSION,
                self.num_samples,
                self.num_classes,
                self.m,
                self.t,
                self.start_epoch,
                self.query_epoch,
                self.latest_epoch,
            ],
            dtype=np.int64,
        )
        c = self.num_classes
        empty2 = np.zeros((0, c), dtype=np.float32)
        empty1 = np.zeros(0, dtype=np.int32)
        return {
            "meta": meta,
            "p_sum": self.p_sum if self.p_sum is not None else empty2,
            "logq_sum": self.logq_sum if self.logq_sum is not None else empty2,
            "count_p": self.count_p if self.count_p is not None else empty1,
            "count_q": self.count_q if self.count_q is not None else empty1,
            "last_epoch": self.last_epoch if self.last_epoch is not None else empty1,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> "PredictionHistory":
        """Rebuild a history from :meth:`state_dict` (arrays are copied)."""
        keys = ("meta", "p_sum", "logq_sum", "count_p", "count_q", "last_epoch")
        missing = [k for k in keys if k not in state]
        if missing:
            raise HistoryFileError(f"history state lacks {missing}; it was not written by PredictionHistory.")
        meta = np.asarray(state["meta"]).astype(np.int64)
        if meta.shape != (8,) or meta[0] != _STATE_VERSION:
            raise HistoryFileError(
                f"history state has meta {meta.tolist()}; expected version {_STATE_VERSION}. "
                "Regenerate it by rerunning the training stage."
            )
        _, n, c, m, t, start, query, latest = (int(v) for v in meta)
        hist = cls(n, c, m=m, t=t, start_epoch=start, query_epoch=query)
        hist.latest_epoch = latest
        groups = {"last_epoch": (("last_epoch", (n,), np.int32),),
                  "p_sum": (("p_sum", (n, c), np.float32), ("count_p", (n,), np.int32)),
                  "logq_sum": (("logq_sum", (n, c), np.float32), ("count_q", (n,), np.int32))}
        for lead, members in groups.items():
            if np.asarray(state[lead]).shape[0] == 0:
                continue  # this window had not begun
            for key, shape, dtype in members:
                value = np.asarray(state[key])
                if value.shape != shape:
                    raise HistoryFileError(
                        f"history state {key} has shape {value.shape}, expected {shape}. The file is "
                        "corrupt; rerun the training stage."
                    )
                setattr(hist, key, np.array(value, dtype=dtype))
        if hist.last_epoch is None and (hist.p_sum is not None or hist.logq_sum is not None):
            raise HistoryFileError("history state has sums but no last_epoch; the file is corrupt. "
                                   "Rerun the training stage.")
        return hist

    def save(self, path: str | os.PathLike) -> None:
        """Write the state as an uncompressed ``.npz`` atomically (temp file + rename)."""
        HistorySet([self]).save(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PredictionHistory":
        """Read a history written by :meth:`save` (of a :class:`HistorySet` file: its earliest query's)."""
        hists = read_histories(path, first_only=True)
        if not hists:
            raise HistoryFileError(f"prediction history {path} holds no accumulator; rerun the training stage.")
        return hists[0]


_LATER = "query{}/"  # key prefix of the later queries' accumulators in a HistorySet file


def matches(window: QueryWindow, hist: PredictionHistory) -> bool:
    """Whether ``hist`` accumulates exactly the windows of ``window``."""
    return (hist.start_epoch, hist.query_epoch, hist.m, hist.t) == (
        window.start_epoch, window.query_epoch, window.m, window.t)


def window_history(window: QueryWindow, num_samples: int, num_classes: int) -> PredictionHistory:
    """An empty accumulator for the query of ``window``."""
    return PredictionHistory(num_samples, num_classes, m=window.m, t=window.t,
                             start_epoch=window.start_epoch, query_epoch=window.query_epoch)


class HistorySet:
    """The accumulators that one training run records into: one :class:`PredictionHistory`
    per query whose windows its epochs overlap (:func:`open_windows`), in query order.

    It has the recording API of a single history (``in_window(epoch)``,
    ``record(epoch, ids, probs)``), so the training loop and any extra recording pass call
    it the same way whatever the number of queries fed. ``get(query_epoch)`` returns one
    query's accumulator for ``uncertainty``.

    File format (``history.npz``, uncompressed): the earliest query's accumulator under
    :meth:`PredictionHistory.state_dict`'s keys, so a file with one accumulator is exactly
    what :meth:`PredictionHistory.save` writes (and ``since_query`` files never change); each
    later query's under the prefix ``query<Q>/`` (Q = its query epoch).
    """

    def __init__(self, histories: Sequence[PredictionHistory]) -> None:
        hists = sorted(histories, key=lambda h: h.query_epoch)
        if not hists:
            raise HistoryError("a HistorySet needs at least one accumulator.")
        epochs = [h.query_epoch for h in hists]
        if len(set(epochs)) != len(epochs):
            raise HistoryError(f"a HistorySet holds one accumulator per query epoch, got {epochs}.")
        shapes = {(h.num_samples, h.num_classes) for h in hists}
        if len(shapes) != 1:
            raise HistoryError(f"the accumulators of a HistorySet must share [N, C], got {sorted(shapes)}.")
        self.histories: tuple[PredictionHistory, ...] = tuple(hists)

    def in_window(self, epoch: int) -> bool:
        """Whether ``epoch``'s predictions contribute to any accumulator."""
        return any(h.in_window(epoch) for h in self.histories)

    def record(self, epoch: int, ids: np.ndarray, probs: np.ndarray) -> None:
        """:meth:`PredictionHistory.record` into every accumulator (each ignores epochs
        outside its windows)."""
        for h in self.histories:
            h.record(epoch, ids, probs)

    def get(self, query_epoch: int) -> PredictionHistory | None:
        """The accumulator of the query at ``query_epoch``, or None."""
        return next((h for h in self.histories if h.query_epoch == int(query_epoch)), None)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = dict(self.histories[0].state_dict())
        for h in self.histories[1:]:
            prefix = _LATER.format(h.query_epoch)
            state.update({prefix + k: v for k, v in h.state_dict().items()})
        return state

    def save(self, path: str | os.PathLike) -> None:
        """Write every accumulator to one ``.npz`` atomically (temp file + rename)."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, *, query_epochs: Sequence[int] | None = None) -> "HistorySet":
        """Read a file written by :meth:`save`: every accumulator, or only those of the queries
        at ``query_epochs`` that it holds (only their arrays are read; at least one must be there)."""
        hists = read_histories(path, query_epochs)
        if not hists:
            raise HistoryFileError(
                f"prediction history {path} holds no accumulator for the queries at epochs "
                f"{list(query_epochs or [])}; it was written for other windows. Rerun the training stage."
            )
        return cls(hists)


def read_histories(path: str | os.PathLike, query_epochs: Sequence[int] | None = None, *,
                   first_only: bool = False) -> list[PredictionHistory]:
    """The accumulators in a :class:`HistorySet` file, in query order: all, those of the
    queries at ``query_epochs``, or (``first_only``) the earliest one. Others are not read,
    so memory stays O(N·C) per accumulator loaded."""
    path = Path(path)
    if not path.is_file():
        raise HistoryFileError(
            f"prediction history {path} does not exist. It is written by the training "
            "stage before each query (stage1/history.npz, cycle_KKK/history.npz); rerun it."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            prefixes = {"": int(np.asarray(data["meta"])[6])} if "meta" in data.files else {}
            for key in data.files:
                if "/" in key:
                    head = key.split("/")[0]
                    prefixes[head + "/"] = int(head[len("query"):])
            keep = [pre for pre, q in sorted(prefixes.items(), key=lambda kv: kv[1])
                    if query_epochs is None or q in {int(e) for e in query_epochs}]
            keep = keep[:1] if first_only else keep
            states = [{k[len(pre):]: data[k] for k in data.files if k.startswith(pre) and "/" not in k[len(pre):]}
                      for pre in keep]
    except Exception as exc:  # zipfile/numpy raise several types for a bad file
        raise HistoryFileError(
            f"prediction history {path} is unreadable ({type(exc).__name__}: {exc}); delete "
            "it and rerun the training stage."
        ) from exc
    return [PredictionHistory.from_state_dict(state) for state in states]


def load_query_history(path: str | os.PathLike, window: QueryWindow) -> PredictionHistory:
    """The accumulator of ``window``'s query from a history file (the earliest one in it),
    checked against the windows this run's params give."""
    hist = PredictionHistory.load(path)
    if not matches(window, hist):
        raise HistoryFileError(
            f"prediction history {path} was recorded for a query at epoch {hist.query_epoch} over epochs "
            f"{hist.start_epoch}.. with m={hist.m}, t={hist.t}, but query {window.k} is at epoch "
            f"{window.query_epoch} over epochs {window.start_epoch}.. with m={window.m}, t={window.t} "
            "(selection or train params changed). Rerun the training stage that writes it."
        )
    return hist


def cycle_history(windows: list[QueryWindow], first_epoch: int, end_epoch: int, num_samples: int,
                  num_classes: int, *, carried: str | os.PathLike | None = None) -> HistorySet | None:
    """What training epochs [first_epoch, end_epoch) record into, or None if they feed no query.

    A window that began before ``first_epoch`` continues the partial accumulator in
    ``carried`` (the previous cycle's ``history.npz``); the others start empty. Without
    ``carried`` every accumulator starts empty: for DDP ranks other than 0, which only
    ask ``in_window`` (rank 0 records), so they hold no [N, C] arrays.
    """
    fed = open_windows(windows, first_epoch, end_epoch)
    earlier = [w for w in fed if w.p.start < first_epoch] if carried is not None else []
    loaded = {h.query_epoch: h for h in read_histories(carried, [w.query_epoch for w in earlier])} \
        if earlier else {}
    hists = []
    for w in fed:
        hist = loaded.get(w.query_epoch)
        if w in earlier and (hist is None or not matches(w, hist)):
            raise HistoryFileError(
                f"query {w.k}'s window begins at epoch {w.p.start}, before this training (epoch {first_epoch}), "
                f"but {carried} holds no matching partial accumulator for it. Rerun the previous cycle."
            )
        hists.append(hist if hist is not None else window_history(w, num_samples, num_classes))
    return HistorySet(hists) if hists else None
