"""The initial labeled set I^S of a dataset without ground truth (`dataset.name: folder`).

It comes from one of:

- the initial-labels CSV (`dataset.initial_labels`), validated by `convert` and carried in
  ``index.parquet``'s ``initial_label`` column: I^S is exactly its rows, and
  `budget.initial` must equal their number;
- a person: `budget.initial` images drawn uniformly at random (seeded; there are no labels
  to balance classes with) are asked as full-label questions ("which class is this?",
  asked_class -1) on a question sheet in ``data/runs/seed<S>/initial/``, answered on the
  page (`obcp annotate --seed S`), in Label Studio, or in that folder's ``answers.csv``.
  Until every one is answered, `init_pool` stops with `sheets.AnswersMissing` (exit
  code 3), as `active` does. Answers live in the answer store (pipeline.oracle.answers),
  keyed by the question, so the `fullbit` arm would reuse them.

The answer store's sample ids are positions in the folder's sorted file list, so before it
is used the folder's fingerprint (``classes.json``'s ``files_sha256``) is checked against
the one recorded beside the store (``reports/answers/<dataset>.images.json``): answers
given about another folder, or before files were added or removed, are never applied to
the wrong images.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.core.config import Params, resolve_size
from pipeline.core.io import write_json
from pipeline.core.layout import Layout
from pipeline.oracle import answers, sheets
from pipeline.pool import pools


class InitialLabelsError(sheets.OracleError):
    """The initial labels cannot be used as given (budget mismatch, answers about another folder)."""


def check_store_images(layout: Layout, classes_info: dict) -> None:
    """Refuse an answer store filled for another image folder (or another file list); record
    the folder's fingerprint beside the store the first time."""
    fingerprint = classes_info.get("files_sha256")
    if fingerprint is None:
        return
    record = layout.answer_store_images
    mine = {"files_sha256": fingerprint, "root": classes_info.get("root", "")}
    try:
        held = json.loads(record.read_text())
    except FileNotFoundError:
        held = None
    except (OSError, ValueError) as exc:
        raise InitialLabelsError(f"{record} is unreadable ({exc}); restore it from git.") from None
    if held is None:
        if answers.read(layout.answer_store).empty:
            write_json(record, mine)
            return
        raise InitialLabelsError(
            f"the answer store {layout.answer_store} holds answers but {record} does not say which image folder "
            "they are about. If they are about this folder, write that file with "
            f'{{"files_sha256": "{fingerprint}"}}; otherwise move the store away. Nothing was changed.'
        )
    if held.get("files_sha256") != fingerprint:
        raise InitialLabelsError(
            f"the answer store {layout.answer_store} holds answers about another list of images "
            f"({held.get('root', '?')}, files_sha256 {str(held.get('files_sha256'))[:12]}…) than the folder now "
            f"converted ({classes_info.get('root', '?')}, {fingerprint[:12]}…). Answers are keyed by the position "
            "of an image in the sorted file list, so they would land on the wrong images. Restore the folder as "
            f"it was when they were given, or move {layout.answer_store} and {record} away to start a new "
            "labeling project. Nothing was changed."
        )


def beton_images(beton: Path, ids: np.ndarray) -> np.ndarray:
    """[n, H, W, 3] uint8: the stored pixels of samples `ids` [n] (for a question sheet)."""
    from pipeline.data.loaders import make_loader

    ids = np.asarray(ids, dtype=np.int64)
    loader = make_loader(beton, batch_size=256, views=["raw"], indices=np.sort(ids), order="sequential", seed=0)
    got, images = [], []
    for batch in loader:
        got.append(batch.ids.numpy().copy())
        images.append(batch.views[0].permute(0, 2, 3, 1).numpy().copy())
    return np.concatenate(images)[np.searchsorted(np.concatenate(got), ids)]


def initial_questions(num_samples: int, size: int, seed: int) -> pd.DataFrame:
    """The full-label questions of I^S: `size` samples drawn uniformly (seeded), by sample id."""
    ids = np.sort(np.random.default_rng(seed).choice(num_samples, size=size, replace=False))
    return pd.DataFrame({"sample_id": ids.astype(np.int64), "asked_class": answers.LABEL_QUESTION})


def initial_pool_unlabeled(params: Params, layout: Layout, seed: int, files: pd.DataFrame,
                           class_names: Sequence[str], classes_info: dict) -> pd.DataFrame:
    """The cycle-0 pool of a dataset without ground truth (module docstring).

    Args:
        files: `pipeline.data.index.read_files` of the dataset.
        class_names: [C] the class names.
        classes_info: `read_classes` of the dataset (for the folder's fingerprint).

    Raises:
        InitialLabelsError: budget.initial differs from the CSV's count; a store about other images.
        sheets.AnswersMissing: the person has not labeled every image of I^S yet (the sheet is written).
    """
    train = files[files["split"] == "train"].sort_values("sample_id")
    num_samples = len(train)
    given = train["initial_label"].to_numpy(dtype=np.int64)
    size = resolve_size(params.budget.initial, num_samples)
    if (given >= 0).any():
        count = int((given >= 0).sum())
        if count != size:
            raise InitialLabelsError(
                f"the initial-labels CSV {params.dataset.initial_labels} labels {count} images, but budget.initial "
                f"is {params.budget.initial} ({size} images): I^S is the CSV's rows, so set budget.initial: {count}."
            )
        ids = np.flatnonzero(given >= 0)
        return pools.labeled_pool(num_samples, ids, given[ids])
    check_store_images(layout, classes_info)
    q = initial_questions(num_samples, size, seed)
    sheet_dir = layout.initial_sheet_dir(seed)
    store = layout.answer_store
    sheets.ingest_answers_csv(sheet_dir, store, num_samples=num_samples, class_names=class_names)
    got = answers.lookup(answers.read(store), q)
    still = q[~got["answered"].to_numpy()]
    if len(still):
        sheet = sheets.read_sheet(sheet_dir)
        listed = set() if sheet is None else set(zip(sheet["sample_id"], sheet["asked_class"]))
        if not set(zip(still["sample_id"], still["asked_class"])) <= listed:
            images = beton_images(layout.beton("train"), still["sample_id"].to_numpy())
            sheets.write_question_sheet(sheet_dir, still, list(class_names), images)
        raise sheets.AnswersMissing(
            f"waiting for the initial labels: {len(still)} of the {len(q)} images of I^S have no class yet (the "
            f"question sheet is {sheet_dir / sheets.QUESTIONS_CSV}). Label them on a local page with "
            f"`obcp annotate --seed {seed}` (keys 0-9 pick a class), or in Label Studio (`obcp annotate --seed "
            f"{seed} --export label-studio`, then `obcp annotate --import EXPORT.json`), or write "
            f"{sheets.answers_path(sheet_dir)} (`sample_id,answer` with a class name or index per row; "
            f"{sheet_dir / sheets.ANSWERS_TEMPLATE_CSV} is a template); then rerun `obcp repro` (or `dvc repro`)."
        )
    return pools.labeled_pool(num_samples, q["sample_id"].to_numpy(), got["label"].to_numpy())
