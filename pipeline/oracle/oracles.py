"""The oracles as objects: who answers a cycle's questions, and whether answers can change.

- ``simulated``: answers from the ground-truth labels at once.
- ``human``: a person. Every answer comes from the answer store (`pipeline.oracle.answers`);
  questions it cannot answer yet go on a question sheet in the cycle folder
  (`pipeline.oracle.sheets`) and the stage stops with `AnswersMissing` (exit code 3) until
  they are answered on the page, in Label Studio, or in `answers.csv`.

A question is (sample_id, asked_class): "is this a {asked_class}?", or "which class is
this?" where asked_class is -1 (`LABEL_QUESTION`). An oracle's answers are
DataFrame[answer (bool: yes, or True for a label), label_given (the class, −1 after *no*),
true_label (−1 when unknown), and for a person answered_at], one row per question.
Register a new oracle in `pipeline.core.registry.ORACLES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from pipeline.core.registry import ORACLES
from pipeline.method.methods import LABEL_QUESTION
from pipeline.oracle import answers, sheets

if TYPE_CHECKING:  # the run context pulls in torch; validating params must not
    from pipeline.core.context import RunContext


@dataclass(frozen=True)
class Asking:
    """Where a cycle's questions are asked: the run, the cycle folder, and who asks (for messages)."""

    ctx: "RunContext"
    cycle_dir: Path
    arm: str

    @property
    def who(self) -> str:
        return f"--arm {self.arm} --seed {self.ctx.seed}"


class Oracle:
    """Answers questions, or says it is waiting (`sheets.AnswersMissing`). Subclass and register."""

    name: ClassVar[str]
    #: it answers from labels it holds before anyone asks (`truth`): counterfactual arms may run with it
    knows_truth: ClassVar[bool] = False

    def answer(self, questions: pd.DataFrame, at: Asking) -> pd.DataFrame:
        """Answers to `questions` (DataFrame[sample_id, asked_class], n rows), in their order."""
        raise NotImplementedError

    def current(self, questions: pd.DataFrame, at: Asking) -> pd.DataFrame | None:
        """The answers held now (`answers.lookup` columns), to tell whether a finished cycle's
        answers changed since; None for an oracle whose answers never change."""
        return None

    def keep(self, at: Asking, why: str) -> None:
        """Save what a person wrote in a cycle folder before the folder is deleted."""

    def truth(self, ids: np.ndarray, at: Asking) -> np.ndarray:
        """[n] the labels it would answer from for samples `ids` [n], without asking: only for
        a counterfactual arm (`pipeline.selection.onebit_aware`), and only from an oracle that
        holds them (`knows_truth`)."""
        raise sheets.OracleError(
            f"a counterfactual arm (arm {at.arm}) reads the ground truth before asking, which only an oracle that "
            f"knows it can give; the {self.name!r} oracle cannot (a person answers only what is asked). Run the arm "
            "with oracle.kind: simulated, or remove it from arms."
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _given(asked: np.ndarray, yes: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(answer, label_given): a label question is answered (True, its label); a yes/no one
    (yes, asked class or −1)."""
    is_label = asked == LABEL_QUESTION
    answer = np.where(is_label, True, yes).astype(bool)
    return answer, np.where(is_label, label, np.where(answer, asked, -1)).astype(np.int64)


class Simulated(Oracle):
    """The ground truth answers: yes iff the true label is the asked class; a label question gets the true label."""

    name = "simulated"
    knows_truth = True

    def truth(self, ids: np.ndarray, at: Asking) -> np.ndarray:
        return at.ctx.train_labels[np.asarray(ids, dtype=np.int64)].astype(np.int64)

    def answer(self, questions: pd.DataFrame, at: Asking) -> pd.DataFrame:
        truth = at.ctx.train_labels[questions["sample_id"].to_numpy()]
        asked = questions["asked_class"].to_numpy(dtype=np.int64)
        yes = sheets.simulated_answers(questions[["sample_id", "asked_class"]].assign(
            asked_class=np.where(asked == LABEL_QUESTION, truth, asked)), at.ctx.train_labels)
        answer, label = _given(asked, yes, truth)
        return pd.DataFrame({"answer": answer, "label_given": label, "true_label": truth})


class Human(Oracle):
    """A person, through the answer store; open questions go on the cycle's question sheet."""

    name = "human"

    def _ingest(self, at: Asking) -> Path:
        store = at.ctx.layout.answer_store
        sheets.ingest_answers_csv(at.cycle_dir, store, num_samples=at.ctx.num_samples,
                                  class_names=at.ctx.class_names)
        return store

    def answer(self, questions: pd.DataFrame, at: Asking) -> pd.DataFrame:
        store = self._ingest(at)
        got = answers.lookup(answers.read(store), questions)
        still = questions[~got["answered"].to_numpy()]
        if len(still):
            self._ask(still, at)
            where = at.cycle_dir / sheets.QUESTIONS_CSV
            raise sheets.AnswersMissing(
                f"waiting for answers ({len(still)} questions at {where}). Answer them on a local page with "
                f"`obcp annotate {at.who}`, or in Label Studio (`obcp annotate {at.who} --export label-studio`, "
                f"then `obcp annotate --import EXPORT.json`), or write {sheets.answers_path(at.cycle_dir)} "
                f"(`sample_id,answer`, one row per question of the sheet; "
                f"{at.cycle_dir / sheets.ANSWERS_TEMPLATE_CSV} is a template); then rerun `obcp repro` (or `dvc repro`). "
                f"{len(questions) - len(still)} of this cycle's {len(questions)} questions were answered from "
                f"the answer store {store}."
            )
        asked = questions["asked_class"].to_numpy(dtype=np.int64)
        answer, label = _given(asked, got["answer"].fillna(False).to_numpy(dtype=bool), got["label"].to_numpy())
        return pd.DataFrame({"answer": answer, "label_given": label, "true_label": np.full(len(questions), -1),
                             "answered_at": got["answered_at"].astype(str).to_numpy()})

    def _ask(self, still: pd.DataFrame, at: Asking) -> None:
        """Write the question sheet of the open questions unless the cycle's sheet lists them."""
        sheet = sheets.read_sheet(at.cycle_dir)
        listed = set() if sheet is None else set(zip(sheet["sample_id"], sheet["asked_class"]))
        if not set(zip(still["sample_id"], still["asked_class"])) <= listed:
            images = raw_images(at.ctx, still["sample_id"].to_numpy())
            sheets.write_question_sheet(at.cycle_dir, still[["sample_id", "asked_class"]], list(at.ctx.class_names),
                                        images)

    def current(self, questions: pd.DataFrame, at: Asking) -> pd.DataFrame:
        return answers.lookup(answers.read(self._ingest(at)), questions)

    def keep(self, at: Asking, why: str) -> None:
        try:
            self._ingest(at)
        except sheets.AnswersError as exc:
            raise sheets.AnswersError(
                f"{at.cycle_dir} must be discarded ({why or 'its inputs changed'}), but the answers written there "
                f"cannot be kept: {exc} Fix the file (its answers then go into the answer store and are reused), "
                "or move it out of the cycle folder, and rerun; nothing was deleted."
            ) from None


def raw_images(ctx: "RunContext", ids: np.ndarray) -> np.ndarray:
    """[n, H, W, 3] uint8 source pixels of train samples `ids` (for a question sheet)."""
    from pipeline.data.loaders import make_loader

    loader = make_loader(ctx.layout.beton("train"), batch_size=256, views=["raw"], indices=np.sort(ids),
                         order="sequential", seed=0)
    got_ids, imgs = [], []
    for batch in loader:
        got_ids.append(batch.ids.numpy().copy())
        imgs.append(batch.views[0].permute(0, 2, 3, 1).numpy().copy())
    got = np.concatenate(got_ids)
    return np.concatenate(imgs)[np.searchsorted(got, ids)]


for _oracle in (Simulated(), Human()):
    ORACLES.register(_oracle)
