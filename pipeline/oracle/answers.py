"""The answer store: every answer a person gave, kept outside the cycles (docs/design.md §3, §5).

File: ``reports/answers/<dataset>.parquet`` (:meth:`pipeline.core.layout.Layout.answer_store`),
shared by every arm and seed of the dataset: it is keyed by the question, so a question
answered once is never asked again, whichever arm or seed asks it. Cycle folders are derived
data that a params change may discard; this file is not derived: no stage deletes it, and it
is a DVC *dependency* of ``active@seed`` (never an output DVC could remove or check out over),
so new answers rerun the stage. Keep it in git.

Append-only. One row per answer given, in the order given:

============  =======  ==============================================================
column        dtype    meaning
============  =======  ==============================================================
sample_id     int64    the train sample asked about
asked_class   int64    the class asked about ("is this a {class}?"); -1 for a full-label
                       question ("which class is this?", the `fullbit` arm)
answer        boolean  yes / no to a one-bit question; <NA> for a label or a withdrawal
label         int64    the class given to a full-label question; -1 otherwise
answered_at   str      UTC ISO-8601 time the row was recorded
source        str      where it came from: ``answers.csv <cycle folder>``, ``page``,
                       ``page undo``, ``label-studio <file>``
seconds       float64  the person's time on this answer: on the page from the question
                       shown to the key pressed, idle gaps cut to a threshold
                       (pipeline.oracle.annotate); Label Studio's ``lead_time``; NaN when
                       unknown (``answers.csv``, withdrawals, stores written before it)
============  =======  ==============================================================

The current answer to a question (sample_id, asked_class) is its last row. A correction is
a new row; the old one stays as history. A row with ``answer`` <NA> and ``label`` -1
withdraws the answer (the page's undo): the question is open again.

Writers (arm worker processes, the answer page, imports) may run at once: every append
holds an exclusive ``flock`` on the store's folder while it reads, adds and atomically
replaces the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from pipeline.core.errors import ObcpError
from pipeline.core.io import read_parquet, write_parquet

COLUMN_DTYPES: dict[str, str] = {
    "sample_id": "int64",
    "asked_class": "int64",
    "answer": "boolean",
    "label": "int64",
    "answered_at": "str",
    "source": "str",
    "seconds": "float64",
}
OPTIONAL: dict[str, object] = {"seconds": np.nan}  # columns a store written before them lacks (filled)
COLUMNS: tuple[str, ...] = tuple(COLUMN_DTYPES)
KEY = ["sample_id", "asked_class"]
from pipeline.method.methods import LABEL_QUESTION  # noqa: E402,F401  (asked_class of a full-label question)


class AnswerStoreError(ObcpError):
    """The answer store is unreadable, or rows to add are malformed."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.assign(**{c: v for c, v in OPTIONAL.items() if c not in frame.columns})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise AnswerStoreError(f"answer rows lack column(s) {missing}; expected {list(COLUMNS)}.")
    return pd.DataFrame({c: frame[c].astype(d) for c, d in COLUMN_DTYPES.items()}).reset_index(drop=True)


def empty() -> pd.DataFrame:
    return _conform(pd.DataFrame({c: pd.Series([], dtype=d) for c, d in COLUMN_DTYPES.items()}))


def read(path: str | os.PathLike) -> pd.DataFrame:
    """Every row of the store at `path`, oldest first (empty if the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return empty()
    frame = read_parquet(path, what="answer store", error=AnswerStoreError,
                         fix="It holds people's answers and no stage can rebuild it: restore it from git "
                             "(`git checkout -- <file>`) or from a backup; never delete it.")
    return _conform(frame)


def current(store: pd.DataFrame) -> pd.DataFrame:
    """The answer in force for each answered question: DataFrame[sample_id, asked_class,
    answer, label, answered_at, source, row] (row = position in the store), withdrawn
    questions left out."""
    last = store.assign(row=np.arange(len(store))).drop_duplicates(KEY, keep="last")
    withdrawn = last["answer"].isna() & (last["label"] < 0)
    return last[~withdrawn].reset_index(drop=True)


def lookup(store: pd.DataFrame, questions: pd.DataFrame) -> pd.DataFrame:
    """The current answers to `questions` (DataFrame[sample_id, asked_class], n rows), in
    their order: DataFrame[sample_id, asked_class, answered (bool), answer (boolean),
    label (int64), answered_at (str)]; unanswered rows have answered False, answer <NA>, label -1."""
    q = questions[KEY].astype("int64").reset_index(drop=True)
    got = q.merge(current(store)[KEY + ["answer", "label", "answered_at"]], on=KEY, how="left",
                  validate="many_to_one")
    got["answered"] = got["answer"].notna() | (got["label"].fillna(-1) >= 0)
    got["answer"] = got["answer"].astype("boolean")
    got["label"] = got["label"].fillna(-1).astype("int64")
    return got[KEY + ["answered", "answer", "label", "answered_at"]]


def digest(answers: pd.DataFrame) -> str:
    """sha256 of (sample_id, asked_class, answer, label) rows, order-independent."""
    rows = sorted(
        (int(s), int(c), None if pd.isna(a) else bool(a), int(lab))
        for s, c, a, lab in answers[KEY + ["answer", "label"]].itertuples(index=False)
    )
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def rows(sample_id, asked_class, *, source: str, answer=None, label=None, seconds=None) -> pd.DataFrame:
    """New store rows for arrays of questions: one-bit ``answer`` (bool) or full ``label`` (int);
    ``seconds`` [n] the person's time per answer (NaN or None where unknown)."""
    ids = np.asarray(sample_id, dtype=np.int64).ravel()
    n = ids.size
    asked = np.broadcast_to(np.asarray(asked_class, dtype=np.int64), (n,))
    ans = pd.array([pd.NA] * n if answer is None else np.asarray(answer, dtype=bool), dtype="boolean")
    lab = np.full(n, -1, np.int64) if label is None else np.asarray(label, dtype=np.int64).ravel()
    sec = np.full(n, np.nan) if seconds is None else np.asarray(
        [np.nan if s is None else float(s) for s in np.asarray(seconds, dtype=object).ravel()], dtype=np.float64)
    return _conform(pd.DataFrame({"sample_id": ids, "asked_class": asked, "answer": ans, "label": lab,
                                  "answered_at": [utc_now()] * n, "source": [source] * n, "seconds": sec}))


def withdrawal(sample_id: int, asked_class: int, source: str = "page undo") -> pd.DataFrame:
    """One row that withdraws the answer to (sample_id, asked_class)."""
    return rows([sample_id], [asked_class], source=source)


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive lock of the store at `path` for a read-modify-write (flock on its folder,
    so no lock file joins the folder that DVC hashes)."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append(path: str | os.PathLike, new: pd.DataFrame) -> int:
    """Add `new` rows to the store (created if absent); returns how many were added.

    A row that repeats a question's current answer is not added (reading the same file
    twice adds nothing), and neither is a withdrawal of an unanswered question. Atomic,
    and safe against other processes appending at the same time.
    """
    new = _conform(new)
    if new.duplicated(KEY).any():
        raise AnswerStoreError("rows to add repeat a question (sample_id, asked_class); give one answer each.")
    with locked(path):
        return _append_locked(path, read(path), new)


def _append_locked(path: str | os.PathLike, store: pd.DataFrame, new: pd.DataFrame) -> int:
    now = lookup(store, new)
    same_answer = (now["answer"].fillna(False) == new["answer"].fillna(False)) & \
                  (now["answer"].isna() == new["answer"].isna()) & (now["label"] == new["label"])
    withdraw = new["answer"].isna() & (new["label"] < 0)
    redundant = (now["answered"] & same_answer) | (~now["answered"] & withdraw)
    add = new[~redundant.to_numpy()]
    if len(add):
        write_parquet(path, _conform(pd.concat([store, add], ignore_index=True)))
    return int(len(add))


def history(store: pd.DataFrame, sample_id: int | None = None) -> pd.DataFrame:
    """Every row of the store (of one sample), oldest first, with its position: DataFrame[row,
    sample_id, asked_class, answer, label, answered_at, source]."""
    rows = store.assign(row=np.arange(len(store)))
    if sample_id is not None:
        rows = rows[rows["sample_id"] == int(sample_id)]
    return rows[["row", *COLUMNS]].reset_index(drop=True)


def correct(path: str | os.PathLike, sample_id: int, asked_class: int, *, source: str,
            answer: bool | None = None, label: int | None = None) -> tuple[pd.Series, int]:
    """Correct the stored answer to one question (sample_id, asked_class): a new row, the old
    ones stay as history. Exactly one of `answer` (a one-bit question) or `label` (a full-label
    question, asked_class -1) is given. Returns (the answer in force before, rows added: 0 when
    it already was this answer).

    Raises `AnswerStoreError` when the question has no answer in force (never answered, or
    withdrawn): a correction changes an answer given; it does not answer a question nobody asked
    (a mistyped class would otherwise go unnoticed). The store's answered questions of that
    sample are listed.
    """
    if (answer is None) == (label is None):
        raise AnswerStoreError("give either a yes/no answer (one-bit question) or a label (full-label question).")
    if (label is not None) != (int(asked_class) == LABEL_QUESTION):
        raise AnswerStoreError("a label answers a full-label question (asked_class -1); a one-bit question "
                               "takes yes or no.")
    row = rows([sample_id], [asked_class], source=source,
               answer=None if answer is None else [bool(answer)], label=None if label is None else [int(label)])
    with locked(path):
        store = read(path)
        now = current(store)
        hit = now[(now["sample_id"] == int(sample_id)) & (now["asked_class"] == int(asked_class))]
        if hit.empty:
            given = now[now["sample_id"] == int(sample_id)]
            listed = ", ".join(
                f"asked_class {int(c)} ({'label ' + str(int(lab)) if c == LABEL_QUESTION else ('yes' if a else 'no')})"
                for c, a, lab in zip(given["asked_class"], given["answer"], given["label"]))
            raise AnswerStoreError(
                f"the answer store {path} holds no answer to sample {int(sample_id)}, asked_class "
                f"{int(asked_class)}, so there is nothing to correct. "
                + (f"Its answered questions: {listed}." if listed else "No question about this sample was answered.")
                + " `obcp answers list --sample ID` shows them."
            )
        return hit.iloc[0], _append_locked(path, store, row)
