"""The query ledger: one row per label request ever made, for audit (docs/design.md §3).

File: ``reports/ledger/seed<S>/<arm>.parquet``. Columns:

=============  =========  ==================================================================
column         dtype      meaning
=============  =========  ==================================================================
cycle          int64      query cycle k >= 1
epoch          int64      global epoch of the query (epochs run before it)
sample_id      int64      the sample asked about
kind           str        ``one_bit`` (a yes/no question) or ``full`` (a full label request,
                          the full-label baseline)
true_label     int64      ground truth when known (simulated oracle), else -1
asked_class    int64      the class asked about; -1 for ``full`` rows
answer         boolean    yes (True) / no (False); <NA> for ``full`` rows
label_given    int64      the label the oracle revealed: asked_class on yes, -1 on no, the
                          full label for ``full`` rows
score          float64    selection score of the sample (NaN if it had none)
rank           int64      1-based selection rank within the cycle
strategy       str        selection strategy
oracle         str        ``simulated`` or ``human``
arm            str        the arm (method) of this run
seed           int64      the run's seed
asked_at       str        human oracle: UTC ISO-8601 time the person gave the answer (its
                          ``answered_at`` in the answer store); simulated oracle: <NA>
=============  =========  ==================================================================

Three optional columns appear only in the ledger of an arm whose strategy chooses the class
to ask (`Strategy.question_rule`, e.g. ``eig``) or that asks follow-up questions
(``rounds`` > 1), so every other arm's ledger is byte for byte what it was without them:

==============  =======  ================================================================
question_rule   str      how asked_class was chosen: ``predicted`` (the argmax over the
                         classes not yet denied, the paper's question) or the strategy's rule
question_score  float64  the per-pair score that chose asked_class (NaN for ``predicted``)
round           int64    the round of the cycle (1 …); a sample answered *no* may be asked
                         again about another class in a later round of the same cycle
==============  =======  ================================================================

No column of a simulated oracle's ledger holds a wall-clock time, so with the same
inputs the file is byte-identical on a rerun and after a kill and resume. A human
oracle's ledger carries the answer store's times, so it too is the same on a rerun.

Appending a cycle that is already present replaces its rows, so rerunning a cycle is
idempotent; :func:`truncate_after` drops cycles that were discarded.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from pipeline.core.errors import ObcpError
from pipeline.core.io import read_parquet, write_parquet

KINDS: tuple[str, ...] = ("one_bit", "full")
COLUMN_DTYPES: dict[str, str] = {
    "cycle": "int64",
    "epoch": "int64",
    "sample_id": "int64",
    "kind": "str",
    "true_label": "int64",
    "asked_class": "int64",
    "answer": "boolean",
    "label_given": "int64",
    "score": "float64",
    "rank": "int64",
    "strategy": "str",
    "oracle": "str",
    "arm": "str",
    "seed": "int64",
    "asked_at": "str",
}
COLUMNS: tuple[str, ...] = tuple(COLUMN_DTYPES)
#: optional columns (module docstring), kept only where some row has them, with the value a row without them gets
OPTIONAL_DTYPES: dict[str, str] = {"question_rule": "str", "question_score": "float64", "round": "int64"}
OPTIONAL_DEFAULTS: dict[str, object] = {"question_rule": "predicted", "question_score": float("nan"), "round": 1}
_SORT = ["cycle", "kind", "rank", "sample_id"]


class LedgerError(ObcpError):
    """Bad ledger rows, or a ledger file that is missing, unreadable or inconsistent."""


def deterministic_columns(ledger: pd.DataFrame | None = None) -> list[str]:
    """Columns equal between two recordings of the same answers (all but asked_at, which
    is <NA> for a simulated oracle and the recording time for a human one), with the
    optional columns `ledger` has."""
    optional = [] if ledger is None else [c for c in OPTIONAL_DTYPES if c in ledger.columns]
    return [c for c in COLUMNS if c != "asked_at"] + optional


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    """The ledger columns in canonical order and dtypes; the optional columns where present
    (missing values of a present one, e.g. rows of a cycle written without it, get its default)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise LedgerError(
            f"ledger rows lack column(s) {missing}; build rows with pipeline.pool.ledger.ledger_rows."
        )
    columns = {c: frame[c].astype(dtype) for c, dtype in COLUMN_DTYPES.items()}
    for c, dtype in OPTIONAL_DTYPES.items():
        if c in frame.columns:
            columns[c] = frame[c].where(frame[c].notna(), OPTIONAL_DEFAULTS[c]).astype(dtype)
    return pd.DataFrame(columns).reset_index(drop=True)


def empty() -> pd.DataFrame:
    """A ledger with no rows."""
    return _conform(pd.DataFrame({c: pd.Series([], dtype=d) for c, d in COLUMN_DTYPES.items()}))


def utc_now() -> str:
    """Current UTC time as ISO-8601 with seconds, e.g. ``2024-05-01T12:00:00+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def ledger_rows(
    queries: pd.DataFrame,
    *,
    cycle: int,
    epoch: int,
    strategy: str,
    oracle: str,
    arm: str,
    seed: int,
    kind: str = "one_bit",
    true_labels: np.ndarray | None = None,
    asked_at: str | None = None,
) -> pd.DataFrame:
    """Ledger rows for one cycle's requests.

    Args:
        queries: for ``kind="one_bit"``: DataFrame[sample_id, asked_class, answer (bool),
            score, rank]; for ``kind="full"``: DataFrame[sample_id, label (or
            label_given), score, rank]. Other columns are ignored, so a cycle's
            queries.parquet can be passed as is.
        cycle, epoch: the cycle (>= 1) and the global epoch of the query.
        strategy, oracle, arm, seed: describe the run (oracle: a registered oracle's name).
        kind: ``one_bit`` or ``full``.
        true_labels: [N] ground truth (simulated oracle). If None, a ``true_label``
            column of ``queries`` is used when present, else -1.
        asked_at: UTC ISO-8601 time for all rows; None (the default) takes each row's
            ``answered_at`` column of `queries` when it has one (a human's answers, from the
            answer store), else leaves it <NA> (a simulated oracle).
    """
    if kind not in KINDS:
        raise LedgerError(f"kind must be one of {list(KINDS)}, got {kind!r}.")
    if not (isinstance(oracle, str) and oracle.isidentifier()):
        raise LedgerError(f"oracle must be an oracle's name (an identifier), got {oracle!r}.")
    if int(cycle) < 1:
        raise LedgerError(f"ledger rows belong to a query cycle >= 1, got cycle {cycle}.")
    label_col = "label" if "label" in queries.columns else "label_given"
    need = ["sample_id", "score", "rank"] + (["asked_class", "answer"] if kind == "one_bit" else [label_col])
    missing = [c for c in need if c not in queries.columns]
    if missing:
        raise LedgerError(f"{kind} queries lack column(s) {missing}; expected {need}.")
    n = len(queries)
    ids = queries["sample_id"].to_numpy().astype(np.int64)
    if "round" in queries.columns:  # follow-up questions: once per round, never the same question twice
        if queries.duplicated(["sample_id", "round"]).any() or queries.duplicated(["sample_id", "asked_class"]).any():
            raise LedgerError("a cycle's queries repeat a sample_id within a round, or a question (sample_id, "
                              "asked_class); each sample is asked at most once per round, each question once.")
    elif np.unique(ids).size != n:
        raise LedgerError("a cycle's queries repeat a sample_id; each sample is asked at most once per cycle.")
    if true_labels is None:
        if "true_label" in queries.columns:
            truth = queries["true_label"].fillna(-1).to_numpy().astype(np.int64)
        else:
            truth = np.full(n, -1, dtype=np.int64)
    else:
        true_labels = np.asarray(true_labels)
        if n and (ids.min() < 0 or ids.max() >= true_labels.size):
            raise LedgerError(f"sample ids outside 0..{true_labels.size - 1} of true_labels.")
        truth = true_labels[ids].astype(np.int64)
    if kind == "one_bit":
        if queries["answer"].isna().any():
            raise LedgerError("one-bit queries have missing answers; record a cycle only after every answer is in.")
        asked = queries["asked_class"].to_numpy().astype(np.int64)
        answer = pd.array(queries["answer"].to_numpy().astype(bool), dtype="boolean")
        given = np.where(answer.to_numpy(dtype=bool), asked, -1)
    else:
        asked = np.full(n, -1, dtype=np.int64)
        answer = pd.array([pd.NA] * n, dtype="boolean")
        given = queries[label_col].to_numpy().astype(np.int64)
        if n and given.min() < 0:
            raise LedgerError("full-label rows need a label >= 0 for every sample.")
    if asked_at is not None:
        stamps = [str(asked_at)] * n
    elif "answered_at" in queries.columns:
        stamps = queries["answered_at"].astype(str).tolist()
    else:
        stamps = [pd.NA] * n
    optional = {c: queries[c].to_numpy() for c in OPTIONAL_DTYPES if c in queries.columns}
    return _conform(
        pd.DataFrame(
            {
                **optional,
                "cycle": np.full(n, int(cycle)),
                "epoch": np.full(n, int(epoch)),
                "sample_id": ids,
                "kind": [kind] * n,
                "true_label": truth,
                "asked_class": asked,
                "answer": answer,
                "label_given": given,
                "score": queries["score"].to_numpy().astype(np.float64),
                "rank": queries["rank"].to_numpy().astype(np.int64),
                "strategy": [strategy] * n,
                "oracle": [oracle] * n,
                "arm": [arm] * n,
                "seed": np.full(n, int(seed)),
                "asked_at": stamps,
            }
        )
    )


def read(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ledger file (canonical dtypes)."""
    frame = read_parquet(path, what="ledger", error=LedgerError,
                         fix="the active stage writes it (`dvc repro` for this arm and seed).")
    return _conform(frame)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(_SORT, kind="stable").reset_index(drop=True)


def append(path: str | os.PathLike, rows: pd.DataFrame) -> pd.DataFrame:
    """Add ``rows`` to the ledger at ``path`` (created if absent); returns the new ledger.

    Rows of a cycle already in the ledger are replaced, not duplicated, so rerunning a
    cycle is idempotent. All rows must share the ledger's arm and seed. Atomic write.
    """
    rows = _conform(rows)
    path = Path(path)
    existing = read(path) if path.is_file() else empty()
    combined = pd.concat([existing, rows], ignore_index=True)
    for column in ("arm", "seed"):
        values = combined[column].unique()
        if len(values) > 1:
            raise LedgerError(
                f"ledger {path} would mix {column} values {sorted(map(str, values))}; a ledger "
                "holds one arm and seed (reports/ledger/seed<S>/<arm>.parquet)."
            )
    kept = existing[~existing["cycle"].isin(rows["cycle"].unique())]
    ledger = _sorted(_conform(pd.concat([kept, rows], ignore_index=True)))
    write_parquet(path, ledger)
    return ledger


def truncate_after(path: str | os.PathLike, cycle: int) -> pd.DataFrame:
    """Drop rows of cycles > ``cycle`` (discarded cycles); returns the ledger. No file: no-op."""
    path = Path(path)
    if not path.is_file():
        return empty()
    ledger = read(path)
    kept = ledger[ledger["cycle"] <= int(cycle)].reset_index(drop=True)
    if len(kept) != len(ledger):
        write_parquet(path, kept)
    return kept


# ---------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------


def for_sample(ledger: pd.DataFrame, sample_id: int) -> pd.DataFrame:
    """Every request about ``sample_id``, oldest first: when, what was asked, the answer."""
    return _sorted(ledger[ledger["sample_id"] == int(sample_id)])


def for_cycle(ledger: pd.DataFrame, cycle: int) -> pd.DataFrame:
    """The requests of cycle ``cycle``, by rank."""
    return _sorted(ledger[ledger["cycle"] == int(cycle)])


class LedgerSummary(NamedTuple):
    """per_cycle: cycle, asked, yes, no, yes_rate, full (one row per cycle).
    per_class: cycle, class, asked, yes, full (one row per cycle and class 0..C-1)."""

    per_cycle: pd.DataFrame
    per_class: pd.DataFrame


def summary(ledger: pd.DataFrame, num_classes: int) -> LedgerSummary:
    """Per-cycle and per-class counts of questions, yes answers and full labels.

    ``asked``/``yes``/``no`` count one-bit questions (by asked class in per_class);
    ``full`` counts full labels (by the label given); ``yes_rate`` = yes / asked (NaN
    when nothing was asked).
    """
    cycles = np.sort(ledger["cycle"].unique()).astype(np.int64)
    one_bit = ledger[ledger["kind"] == "one_bit"]
    full = ledger[ledger["kind"] == "full"]
    yes_mask = one_bit["answer"].fillna(False).astype(bool)
    asked_c = one_bit.groupby("cycle").size().reindex(cycles, fill_value=0)
    yes_c = one_bit[yes_mask].groupby("cycle").size().reindex(cycles, fill_value=0)
    full_c = full.groupby("cycle").size().reindex(cycles, fill_value=0)
    asked_v = asked_c.to_numpy().astype(np.int64)
    yes_v = yes_c.to_numpy().astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(asked_v > 0, yes_v / np.maximum(asked_v, 1), np.nan)
    per_cycle = pd.DataFrame(
        {
            "cycle": cycles,
            "asked": asked_v,
            "yes": yes_v,
            "no": asked_v - yes_v,
            "yes_rate": rate.astype(np.float64),
            "full": full_c.to_numpy().astype(np.int64),
        }
    )

    def counts(frame: pd.DataFrame, column: str) -> np.ndarray:
        table = np.zeros((cycles.size, num_classes), dtype=np.int64)
        if len(frame):
            row = np.searchsorted(cycles, frame["cycle"].to_numpy())
            col = frame[column].to_numpy().astype(np.int64)
            if col.min() < 0 or col.max() >= num_classes:
                raise LedgerError(f"ledger has {column} outside 0..{num_classes - 1}; wrong num_classes?")
            np.add.at(table, (row, col), 1)
        return table.ravel()

    per_class = pd.DataFrame(
        {
            "cycle": np.repeat(cycles, num_classes),
            "class": np.tile(np.arange(num_classes, dtype=np.int64), cycles.size),
            "asked": counts(one_bit, "asked_class"),
            "yes": counts(one_bit[yes_mask], "asked_class"),
            "full": counts(full, "label_given"),
        }
    )
    return LedgerSummary(per_cycle=per_cycle, per_class=per_class)
