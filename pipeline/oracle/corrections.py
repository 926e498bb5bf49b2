"""Correcting any stored answer: what `obcp answers fix` and the answer page's store list share.

An answer in the store (pipeline.oracle.answers) is keyed by its question (sample_id,
asked_class), not by the cycle that asked it, so it can be corrected whichever cycle asked
it and whether or not that cycle still has a question sheet (a params change rebuilds
cycles, and a rebuilt cycle whose questions were all answered from the store writes none).
A correction is a new row of the store; the old row stays as history. The next run of the
active stage compares, for every finished cycle, the answers it used (its queries.parquet)
with the store, and replays from the first cycle that used a changed answer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline.oracle import answers, sheets


@dataclass(frozen=True)
class Correction:
    """What one correction did."""

    sample_id: int
    asked_class: int
    question: str  # "Is this a 3?" / "Which class is this?"
    before: str  # the answer in force before, as shown ("yes", "no", a class name)
    after: str
    before_source: str
    added: int  # store rows added: 0 when the answer already was `after`

    def describe(self, store: Path) -> str:
        head = f"sample {self.sample_id}, asked_class {self.asked_class} ({self.question!r}): "
        if not self.added:
            return head + f"already {self.after!r} in {store}; nothing added."
        return (head + f"{self.before} -> {self.after} (was from {self.before_source}). Stored in {store}; "
                "the old answer stays as history.")


def shown(asked_class: int, answer, label: int, class_names: Sequence[str]) -> str:
    """An answer as a person reads it: yes / no, or the class name of a label."""
    if int(asked_class) == answers.LABEL_QUESTION:
        return str(class_names[int(label)]) if 0 <= int(label) < len(class_names) else f"class {int(label)}"
    return "yes" if bool(answer) else "no"


def resolve_class(value, class_names: Sequence[str], what: str = "class") -> int:
    """A class given by name or index (as on a full-label sheet) → its index."""
    got = sheets.answer_choices(class_names).get(str(value).strip().lower())
    if got is None:
        raise sheets.AnswersError(
            f"{what} {value!r} is not a class name or index (0..{len(class_names) - 1}; names: "
            f"{', '.join(map(str, class_names[:20]))}{', ...' if len(class_names) > 20 else ''})."
        )
    return int(got)


def resolve_answer(asked_class: int, value, class_names: Sequence[str]) -> dict:
    """The new answer to a question, validated like a line of answers.csv: {"answer": bool}
    for a one-bit question, {"label": int} for a full-label one."""
    if int(asked_class) == answers.LABEL_QUESTION:
        return {"label": resolve_class(value, class_names, "label")}
    got = sheets.answer_choices(None).get(str(value).strip().lower())
    if got is None:
        raise sheets.AnswersError(f"answer {value!r} is not yes or no.")
    return {"answer": bool(got)}


def fix(store: str | os.PathLike, sample_id: int, asked_class: int, value, *, class_names: Sequence[str],
        source: str) -> Correction:
    """Correct the stored answer to (sample_id, asked_class) to `value` (yes/no, or a class by
    name or index for a full-label question). Raises an `ObcpError` if the value is not an
    answer to that question, or the store holds no answer to it."""
    sample_id, asked_class = int(sample_id), int(asked_class)
    if not (asked_class == answers.LABEL_QUESTION or 0 <= asked_class < len(class_names)):
        raise sheets.AnswersError(f"asked_class {asked_class} is not -1 (a full label) or a class "
                                  f"(0..{len(class_names) - 1}).")
    new = resolve_answer(asked_class, value, class_names)
    before, added = answers.correct(store, sample_id, asked_class, source=source, **new)
    return Correction(
        sample_id=sample_id, asked_class=asked_class,
        question=sheets.question_text(asked_class, class_names),
        before=shown(asked_class, before["answer"], before["label"], class_names),
        after=shown(asked_class, new.get("answer"), new.get("label", -1), class_names),
        before_source=str(before["source"]), added=added,
    )


def table(store: pd.DataFrame, class_names: Sequence[str], *, sample_id: int | None = None,
          history: bool = False) -> pd.DataFrame:
    """The store as a person reads it: the answers in force (or every row with `history`), of
    one sample or all, newest first: DataFrame[row, sample_id, asked_class, question, answer,
    answered_at, source]; a withdrawn answer shows as "(withdrawn)" in the history."""
    frame = answers.history(store, sample_id) if history else answers.current(store)
    if sample_id is not None and not history:
        frame = frame[frame["sample_id"] == int(sample_id)]
    withdrawn = frame["answer"].isna() & (frame["label"] < 0)
    return pd.DataFrame({
        "row": frame["row"].astype("int64"),
        "sample_id": frame["sample_id"].astype("int64"),
        "asked_class": frame["asked_class"].astype("int64"),
        "question": [sheets.question_text(int(c), class_names) for c in frame["asked_class"]],
        "answer": ["(withdrawn)" if w else shown(int(c), a, int(lab), class_names)
                   for c, a, lab, w in zip(frame["asked_class"], frame["answer"], frame["label"], withdrawn)],
        "answered_at": frame["answered_at"].astype(str),
        "source": frame["source"].astype(str),
    }).sort_values("row", ascending=False).reset_index(drop=True)
