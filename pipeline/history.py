"""Prediction history for the ObCP uncertainty (paper Eq. 7) in O(N * C) memory.

Eq. 7 scores an unlabeled sample x by

    U(x) = - sum_{i=1..t} sum_c p~_c(x) * log q_{i,c}(x)

where p~ is the mean softmax over the last ``m`` epochs and q_i the softmax of each of
the last ``t`` epochs before the query. Because the query epochs are known in advance,
two running sums suffice for the next query: ``p_sum`` (sum of p over the m-window)
and ``logq_sum`` (sum of log q over the t-window). Windows never reach back past the
previous query (or the start of training), ``start_epoch``.

Epoch numbering: epochs are 0-based and counted over the whole run (stage 1 then
stage 2). "The query at epoch Q" happens after epochs 0..Q-1 have run.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.errors import ObcpError
from pipeline.io import atomic_path

PROB_FLOOR = 1e-8
_STATE_VERSION = 1


class HistoryError(ObcpError):
    """Bad arguments to the prediction history (epochs, ids, shapes)."""


class HistoryFileError(HistoryError):
    """A history file is missing, unreadable or does not match the expected shape."""


def window_epochs(start_epoch: int, query_epoch: int, length: int) -> range:
    """Epochs of a window of ``length`` before the query: [max(start, Q - length), Q)."""
    if length < 1:
        raise HistoryError(f"a window length must be >= 1 epoch, got {length}.")
    return range(max(int(start_epoch), int(query_epoch) - int(length)), int(query_epoch))


def epoch_shares(stage2_epochs: int, query_times: int) -> list[int]:
    """Stage-2 epochs of each cycle: an even split, the remainder to the early cycles.

    Cycle k's share runs after its query. Each cycle needs >= 1 epoch, otherwise two
    queries would see the same model.
    """
    if query_times < 1:
        raise HistoryError(f"query_times must be >= 1, got {query_times}.")
    if stage2_epochs < query_times:
        raise HistoryError(
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
        raise HistoryError(
            f"stage 1 must run >= 1 epoch before the first query, got {stage1_epochs}."
        )
    shares = epoch_shares(stage2_epochs, query_times)
    epochs = [int(stage1_epochs)]
    for share in shares[:-1]:
        epochs.append(epochs[-1] + share)
    return epochs


def query_windows(stage1_epochs: int, stage2_epochs: int, query_times: int) -> list[tuple[int, int]]:
    """(start_epoch, query_epoch) of each query: the window starts at the previous query (or 0)."""
    queries = query_epochs(stage1_epochs, stage2_epochs, query_times)
    return list(zip([0] + queries[:-1], queries))


class PredictionHistory:
    """Accumulates Eq. 7's two sums for ONE query at epoch ``query_epoch``.

    Memory: ``p_sum`` and ``logq_sum`` float32 [N, C], plus int32 [N] counters
    ``count_p``, ``count_q`` (epochs added per sample) and ``last_epoch`` (the last
    epoch a sample was recorded in, for de-duplication). The arrays are allocated at
    the first record inside a window, so a history created at the start of a long
    training costs nothing until its window begins.

    Args:
        num_samples: N, the train split size (ids are 0..N-1).
        num_classes: C.
        m: epochs averaged into p~ (paper: 30).
        t: epochs of log q summed (paper: 5).
        start_epoch: first epoch that may be recorded (previous query, or 0).
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
        return self.p_sum is not None

    def in_window(self, epoch: int) -> bool:
        """Whether ``epoch``'s predictions contribute to either sum."""
        return epoch in self.p_window or epoch in self.q_window

    def _allocate(self) -> None:
        n, c = self.num_samples, self.num_classes
        self.p_sum = np.zeros((n, c), dtype=np.float32)
        self.logq_sum = np.zeros((n, c), dtype=np.float32)
        self.count_p = np.zeros(n, dtype=np.int32)
        self.count_q = np.zeros(n, dtype=np.int32)
        self.last_epoch = np.full(n, -1, dtype=np.int32)

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
        if not self.allocated:
            self._allocate()
        assert self.last_epoch is not None and self.p_sum is not None
        assert self.logq_sum is not None and self.count_p is not None and self.count_q is not None
        uniq, first = np.unique(ids, return_index=True)
        fresh = self.last_epoch[uniq] != epoch
        rows = uniq[fresh]
        if rows.size == 0:
            return
        batch = probs[first[fresh]].astype(np.float32, copy=False)
        self.last_epoch[rows] = epoch
        if epoch in self.p_window:
            self.p_sum[rows] += batch
            self.count_p[rows] += 1
        if epoch in self.q_window:
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
        """All state as numpy arrays (the sums are empty [0, C] while unallocated)."""
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
        p_sum = np.asarray(state["p_sum"])
        if p_sum.shape[0] == 0:
            return hist
        shapes = {
            "p_sum": (n, c),
            "logq_sum": (n, c),
            "count_p": (n,),
            "count_q": (n,),
            "last_epoch": (n,),
        }
        for key, shape in shapes.items():
            if np.asarray(state[key]).shape != shape:
                raise HistoryFileError(
                    f"history state {key} has shape {np.asarray(state[key]).shape}, expected "
                    f"{shape}. The file is corrupt; rerun the training stage."
                )
        hist.p_sum = np.array(state["p_sum"], dtype=np.float32)
        hist.logq_sum = np.array(state["logq_sum"], dtype=np.float32)
        hist.count_p = np.array(state["count_p"], dtype=np.int32)
        hist.count_q = np.array(state["count_q"], dtype=np.int32)
        hist.last_epoch = np.array(state["last_epoch"], dtype=np.int32)
        return hist

    def save(self, path: str | os.PathLike) -> None:
        """Write the state as an uncompressed ``.npz`` atomically (temp file + rename)."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PredictionHistory":
        """Read a history written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise HistoryFileError(
                f"prediction history {path} does not exist. It is written by the training "
                "stage before each query (stage1/history.npz, cycle_KKK/history.npz); rerun it."
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
        except Exception as exc:  # zipfile/numpy raise several types for a bad file
            raise HistoryFileError(
                f"prediction history {path} is unreadable ({type(exc).__name__}: {exc}); delete "
                "it and rerun the training stage."
            ) from exc
        return cls.from_state_dict(state)
