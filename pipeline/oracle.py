"""Oracles that answer "is sample x of class y?" with yes or no (DESIGN §5).

- simulated: answers from the ground-truth labels (:func:`simulated_answers`).
- human: the score step writes a question sheet into the cycle folder
  (:func:`write_question_sheet`): ``questions.csv`` plus one PNG per question under
  ``questions/``, and ``answers_template.csv``. A person writes ``answers.csv``
  (:func:`answers_path`) with header ``sample_id,answer`` and one row per question,
  answer ``yes`` or ``no``. :func:`read_answers` validates the whole file before
  returning anything: either every answer is returned, or one :class:`AnswersError`
  lists every offending line.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.errors import ObcpError
from pipeline.io import write_bytes, write_csv

QUESTIONS_CSV = "questions.csv"
QUESTIONS_DIR = "questions"
ANSWERS_CSV = "answers.csv"
ANSWERS_TEMPLATE_CSV = "answers_template.csv"
ANSWER_VALUES = {"yes": True, "no": False}
_MAX_LISTED = 200
_INT_RE = re.compile(r"^[+-]?\d+$")


class OracleError(ObcpError):
    """Bad input to an oracle (queries, labels, images, class names)."""


class AnswersMissing(OracleError):
    """The human answers of a cycle have not been written yet; the stage should stop and wait."""


class AnswersError(OracleError):
    """The human answers file is malformed; the message lists every offending line."""


def simulated_answers(queries: pd.DataFrame, true_labels: np.ndarray) -> np.ndarray:
    """[n] bool: whether ``true_labels[sample_id] == asked_class`` for each query row.

    Args:
        queries: DataFrame[sample_id int, asked_class int], n rows.
        true_labels: [N] int, the ground-truth class of every train sample.
    """
    missing = [c for c in ("sample_id", "asked_class") if c not in queries.columns]
    if missing:
        raise OracleError(f"queries lack column(s) {missing}; expected sample_id and asked_class.")
    true_labels = np.asarray(true_labels)
    ids = queries["sample_id"].to_numpy().astype(np.int64)
    outside = (ids < 0) | (ids >= true_labels.size)
    if outside.any():
        raise OracleError(
            f"sample_id {ids[outside][:10].tolist()} outside 0..{true_labels.size - 1}; the "
            "queries do not belong to this train split."
        )
    return true_labels[ids].astype(np.int64) == queries["asked_class"].to_numpy().astype(np.int64)


def answers_path(cycle_dir: str | os.PathLike) -> Path:
    """Where a person puts the answers of a cycle: ``cycle_dir/answers.csv``."""
    return Path(cycle_dir) / ANSWERS_CSV


def _upscale(image: np.ndarray, min_size: int) -> bytes:
    from PIL import Image

    height, width = image.shape[:2]
    factor = max(1, math.ceil(min_size / min(height, width)))
    pil = Image.fromarray(np.ascontiguousarray(image))
    if factor > 1:
        pil = pil.resize((width * factor, height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def write_question_sheet(
    cycle_dir: str | os.PathLike,
    questions: pd.DataFrame,
    class_names: Sequence[str],
    images: np.ndarray,
    *,
    min_size: int = 64,
) -> Path:
    """Write the human oracle's question sheet for one cycle; returns the questions.csv path.

    Args:
        cycle_dir: the cycle folder (``.../cycle_KKK``).
        questions: DataFrame[sample_id int, asked_class int], n rows.
        class_names: [C] human-readable class names.
        images: [n, H, W, 3] uint8 RGB, row i is the image of questions row i.
        min_size: images are upscaled (nearest neighbour, integer factor) until their
            shorter side is >= min_size pixels, so a person can see tiny images.

    Writes ``questions.csv`` (sample_id, image, asked_class, asked_class_name; image
    is relative to cycle_dir), ``questions/<sample_id>.png`` and
    ``answers_template.csv`` (sample_id, image, asked_class_name, answer empty),
    each atomically. PNGs of an earlier sheet in the same folder are removed.
    """
    missing = [c for c in ("sample_id", "asked_class") if c not in questions.columns]
    if missing:
        raise OracleError(f"questions lack column(s) {missing}; expected sample_id and asked_class.")
    ids = questions["sample_id"].to_numpy().astype(np.int64)
    asked = questions["asked_class"].to_numpy().astype(np.int64)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] != ids.size:
        raise OracleError(
            f"images must be uint8 [n, H, W, 3] with n = {ids.size} (one per question), got "
            f"{images.dtype} {images.shape}."
        )
    if np.unique(ids).size != ids.size:
        raise OracleError("questions repeat a sample_id; ask each sample at most once per cycle.")
    bad = (asked < 0) | (asked >= len(class_names))
    if bad.any():
        raise OracleError(
            f"asked_class out of range 0..{len(class_names) - 1} for sample_id {ids[bad][:10].tolist()}."
        )
    cycle_dir = Path(cycle_dir)
    image_dir = cycle_dir / QUESTIONS_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    rel = [f"{QUESTIONS_DIR}/{int(i)}.png" for i in ids]
    for image, name in zip(images, rel):
        write_bytes(cycle_dir / name, _upscale(image, min_size))
    keep = {Path(name).name for name in rel}
    for stale in image_dir.glob("*.png"):
        if stale.name not in keep:
            stale.unlink()
    names = [str(class_names[int(c)]) for c in asked]
    sheet = pd.DataFrame(
        {"sample_id": ids, "image": rel, "asked_class": asked, "asked_class_name": names}
    )
    write_csv(cycle_dir / ANSWERS_TEMPLATE_CSV, sheet[["sample_id", "image", "asked_class_name"]].assign(answer=""))
    target = cycle_dir / QUESTIONS_CSV
    write_csv(target, sheet)
    return target


def _format_help(path: Path) -> str:
    return (
        f"Write {path} as CSV with the header `sample_id,answer` and exactly one row per "
        f"question in {path.parent / QUESTIONS_CSV}, answer `yes` or `no` (case-insensitive; "
        f"extra columns are ignored; {path.parent / ANSWERS_TEMPLATE_CSV} is a template)."
    )


def _listing(items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = len(items) - len(shown)
    return "; ".join(shown) + (f"; ... and {more} more" if more > 0 else "")


def read_answers(
    path: str | os.PathLike, asked_ids: np.ndarray, *, num_samples: int | None = None
) -> pd.DataFrame:
    """Read and validate a human answers CSV; DataFrame[sample_id int64, answer bool].

    Args:
        path: the answers file (:func:`answers_path`).
        asked_ids: [n] the sample ids asked this cycle; rows come back in this order.
        num_samples: if given, ids outside 0..num_samples-1 are reported as unknown
            samples (otherwise as "not asked this cycle").

    Raises:
        AnswersMissing: the file does not exist (the message says where and how to write it).
        AnswersError: anything wrong, listing every offending line: unreadable or
            malformed CSV, missing ``sample_id``/``answer`` columns, rows with the wrong
            number of fields, non-integer ids, unknown ids, ids not asked this cycle,
            duplicate ids, answers other than yes/no (case-insensitive, spaces stripped),
            and asked ids without a row. Nothing is returned unless the whole file is valid.
    """
    path = Path(path)
    asked = np.asarray(asked_ids).astype(np.int64).ravel()
    if np.unique(asked).size != asked.size:
        raise OracleError("asked_ids repeat a sample_id; each sample is asked at most once per cycle.")
    if not path.is_file():
        raise AnswersMissing(
            f"the answers for this cycle are missing: {path} does not exist. The questions "
            f"are in {path.parent / QUESTIONS_CSV} (images under {path.parent / QUESTIONS_DIR}/). "
            + _format_help(path)
            + " Then rerun the active stage; it resumes with this cycle."
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnswersError(f"cannot read {path} as UTF-8 text ({exc}). " + _format_help(path)) from exc

    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    problems: list[str] = []
    seen: dict[int, list[int]] = {}
    answers: dict[int, bool] = {}
    asked_set = set(asked.tolist())
    try:
        for row in reader:
            line = reader.line_num
            if not any(field.strip() for field in row):
                continue
            if header is None:
                header = [field.strip().lower() for field in row]
                header_line = line
                absent = [c for c in ("sample_id", "answer") if c not in header]
                if absent:
                    raise AnswersError(
                        f"{path} line {line}: the header {row!r} lacks column(s) {absent}. "
                        + _format_help(path)
                    )
                i_id, i_ans = header.index("sample_id"), header.index("answer")
                continue
            if len(row) != len(header):
                problems.append(f"line {line}: {len(row)} field(s) instead of {len(header)}: {','.join(row)!r}")
                continue
            raw_id, raw_ans = row[i_id].strip(), row[i_ans]
            if not _INT_RE.match(raw_id):
                problems.append(f"line {line}: sample_id {raw_id!r} is not an integer")
                continue
            sid = int(raw_id)
            seen.setdefault(sid, []).append(line)
            if num_samples is not None and not 0 <= sid < num_samples:
                problems.append(f"line {line}: sample_id {sid} is not a sample of the train split (0..{num_samples - 1})")
            elif sid not in asked_set:
                problems.append(f"line {line}: sample_id {sid} was not asked this cycle")
            value = raw_ans.strip().lower()
            if value not in ANSWER_VALUES:
                problems.append(f"line {line}: answer {raw_ans!r} for sample_id {sid} is not yes or no")
            else:
                answers[sid] = ANSWER_VALUES[value]
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: malformed CSV ({exc})")
    if header is None:
        raise AnswersError(f"{path} is empty. " + _format_help(path))

    for sid, lines in sorted(seen.items(), key=lambda kv: kv[1][0]):
        if len(lines) > 1:
            problems.append(f"sample_id {sid} appears on {len(lines)} lines: {', '.join(map(str, lines))}")
    absent_ids = [int(s) for s in asked if int(s) not in seen]
    if absent_ids:
        shown = ", ".join(map(str, absent_ids[:_MAX_LISTED]))
        more = len(absent_ids) - min(len(absent_ids), _MAX_LISTED)
        problems.append(
            f"{len(absent_ids)} asked sample(s) have no row: sample_id {shown}"
            + (f", ... and {more} more" if more > 0 else "")
        )
    if problems:
        raise AnswersError(
            f"{path} has {len(problems)} problem(s); no answer was applied (header on line "
            f"{header_line}): " + _listing(problems) + ". " + _format_help(path)
        )
    return pd.DataFrame(
        {"sample_id": asked, "answer": np.array([answers[int(s)] for s in asked], dtype=bool)}
    )
