"""Oracles that answer "is sample x of class y?" with yes or no (docs/design.md §5).

- simulated: answers from the ground-truth labels (:func:`simulated_answers`).
- human: the oracle step writes a question sheet into the cycle folder
  (:func:`write_question_sheet`) for the questions the answer store (pipeline.oracle.answers)
  cannot answer yet: ``questions.csv`` plus one PNG per question under ``questions/``, and
  ``answers_template.csv``. A person answers on the page (`obcp annotate`), in Label Studio,
  or writes ``answers.csv`` (:func:`answers_path`) with header ``sample_id,answer`` and one
  row per question, answer ``yes`` or ``no`` (a class name or index for a full-label sheet,
  whose ``asked_class`` is -1). Every path goes through :func:`check_rows`;
  :func:`read_answers` validates a whole file before returning anything: either every
  answer is returned, or one :class:`AnswersError` lists every offending line.
  :func:`ingest_answers_csv` puts a valid ``answers.csv`` into the answer store.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from pipeline.oracle import answers as store
from pipeline.core.errors import ObcpError, Waiting
from pipeline.core.io import file_kind, write_bytes, write_csv, write_json

QUESTIONS_CSV = "questions.csv"
QUESTIONS_DIR = "questions"
ANSWERS_CSV = "answers.csv"
ANSWERS_TEMPLATE_CSV = "answers_template.csv"
ANSWERS_READ_JSON = "answers.read.json"  # sha256 of the answers.csv last put into the store
ANSWER_VALUES = {"yes": True, "no": False}
_MAX_LISTED = 200
_INT_RE = re.compile(r"^[+-]?\d+$")


class OracleError(ObcpError):
    """Bad input to an oracle (queries, labels, images, class names)."""


class AnswersMissing(OracleError, Waiting):
    """Questions of a cycle wait for a person's answers; the stage stops and resumes when
    they arrive. Its own exit code (3), so a script can tell waiting from an error (2)."""


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
    unknown = true_labels[ids] < 0
    if unknown.any():
        raise OracleError(
            f"the simulated oracle answers from ground-truth labels, and sample_id {ids[unknown][:10].tolist()} "
            "has none (label -1: a dataset of unlabeled images). Use `oracle.kind: human` in params.yaml: a "
            "person answers on `obcp annotate`."
        )
    return true_labels[ids].astype(np.int64) == queries["asked_class"].to_numpy().astype(np.int64)


def answers_path(cycle_dir: str | os.PathLike) -> Path:
    """Where a person puts the answers of a cycle: ``cycle_dir/answers.csv``."""
    return Path(cycle_dir) / ANSWERS_CSV


def upscale_png(image: np.ndarray, min_size: int) -> bytes:
    """PNG bytes of `image` ([H, W, 3] uint8) upscaled (nearest neighbour, integer factor) until
    its shorter side is >= min_size pixels."""
    from PIL import Image

    height, width = image.shape[:2]
    factor = max(1, math.ceil(min_size / min(height, width)))
    pil = Image.fromarray(np.ascontiguousarray(image))
    if factor > 1:
        pil = pil.resize((width * factor, height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def is_label_sheet(asked_class) -> bool:
    """Whether questions with these asked classes are full-label questions (all -1)."""
    asked = np.asarray(asked_class)
    return bool(asked.size) and bool((asked == store.LABEL_QUESTION).all())


def question_text(asked_class: int, class_names: Sequence[str]) -> str:
    """"Is this a {class}?" for a one-bit question, "Which class is this?" for a full label."""
    if int(asked_class) == store.LABEL_QUESTION:
        return "Which class is this?"
    return f"Is this a {class_names[int(asked_class)]}?"


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
        questions: DataFrame[sample_id int, asked_class int], n rows; asked_class -1 for
            every row of a full-label sheet ("which class is this?").
        class_names: [C] human-readable class names.
        images: [n, H, W, 3] uint8 RGB, row i is the image of questions row i.
        min_size: images are upscaled (nearest neighbour, integer factor) until their
            shorter side is >= min_size pixels, so a person can see tiny images.

    Writes ``questions.csv`` (sample_id, image, asked_class, asked_class_name; image
    is relative to cycle_dir; the name is empty for a full-label question),
    ``questions/<sample_id>.png`` and ``answers_template.csv`` (sample_id, image,
    asked_class_name, answer empty), each atomically. PNGs of an earlier sheet in the
    same folder are removed.
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
    labels = is_label_sheet(asked)
    bad = (asked < 0) | (asked >= len(class_names))
    if bad.any() and not labels:
        raise OracleError(
            f"asked_class out of range 0..{len(class_names) - 1} for sample_id {ids[bad][:10].tolist()} "
            "(-1 for every row of a full-label sheet)."
        )
    cycle_dir = Path(cycle_dir)
    image_dir = cycle_dir / QUESTIONS_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    rel = [f"{QUESTIONS_DIR}/{int(i)}.png" for i in ids]
    for image, name in zip(images, rel):
        write_bytes(cycle_dir / name, upscale_png(image, min_size))
    keep = {Path(name).name for name in rel}
    for stale in image_dir.glob("*.png"):
        if stale.name not in keep:
            stale.unlink()
    names = ["" if labels else str(class_names[int(c)]) for c in asked]
    sheet = pd.DataFrame(
        {"sample_id": ids, "image": rel, "asked_class": asked, "asked_class_name": names}
    )
    write_csv(cycle_dir / ANSWERS_TEMPLATE_CSV, sheet[["sample_id", "image", "asked_class_name"]].assign(answer=""))
    target = cycle_dir / QUESTIONS_CSV
    write_csv(target, sheet)
    return target


def read_sheet(cycle_dir: str | os.PathLike) -> pd.DataFrame | None:
    """A cycle's question sheet: DataFrame[sample_id, image, asked_class, asked_class_name],
    or None when the cycle has none."""
    path = Path(cycle_dir) / QUESTIONS_CSV
    if not path.is_file():
        return None
    try:
        sheet = pd.read_csv(path, keep_default_na=False, dtype={"asked_class_name": str, "image": str})
        sheet = sheet.astype({"sample_id": "int64", "asked_class": "int64"})
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
        raise OracleError(
            f"the question sheet {path} is unreadable ({type(exc).__name__}: {exc}). Delete it and rerun the "
            "active stage; it writes the sheet again."
        ) from None
    return sheet


def _format_help(path: Path, labels: bool = False) -> str:
    what = "the class, by name or index" if labels else "`yes` or `no` (case-insensitive"
    return (
        f"Write {path} as CSV with the header `sample_id,answer` and exactly one row per "
        f"question in {path.parent / QUESTIONS_CSV}, answer {what}; "
        f"extra columns are ignored; {path.parent / ANSWERS_TEMPLATE_CSV} is a template"
        + ("" if labels else ")") + "."
    )


def _listing(items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = len(items) - len(shown)
    return "; ".join(shown) + (f"; ... and {more} more" if more > 0 else "")


def answer_choices(class_names: Sequence[str] | None = None) -> dict[str, object]:
    """Accepted answers (lower-cased, stripped) → value: yes/no → bool for one-bit
    questions; with `class_names`, a class name or index → class index (full labels; a
    class *named* like another's index, e.g. folders "1".."10", means the named class)."""
    if class_names is None:
        return dict(ANSWER_VALUES)
    out: dict[str, object] = {str(i): i for i in range(len(class_names))}
    out.update({str(name).strip().lower(): i for i, name in enumerate(class_names)})
    return out


def check_rows(
    rows: Iterable[tuple[str, str, str]],
    asked_ids: np.ndarray | None,
    *,
    num_samples: int | None = None,
    class_names: Sequence[str] | None = None,
    complete: bool = True,
    unit: str = "line",
) -> tuple[dict[int, object], list[str]]:
    """Validate answer rows, the one check every input path shares (CSV, page, Label Studio).

    Args:
        rows: (place, raw sample_id, raw answer) per row; place names the row in messages
            (a line or task number).
        asked_ids: [n] the sample ids asked, or None for "any sample" (then num_samples
            bounds them).
        num_samples: ids outside 0..num_samples-1 are reported as unknown samples.
        class_names: given: answers are class names or indices (a full-label sheet);
            otherwise yes/no.
        complete: report asked ids without a row.
        unit: what a place is ("line", "task") in the messages.

    Returns:
        ({sample_id: answer (bool, or class index)} of the valid rows, [problems]).
        The caller applies nothing unless problems is empty.
    """
    choices = answer_choices(class_names)
    asked = None if asked_ids is None else np.asarray(asked_ids).astype(np.int64).ravel()
    asked_set = None if asked is None else set(asked.tolist())
    problems: list[str] = []
    seen: dict[int, list[str]] = {}
    got: dict[int, object] = {}
    for place, raw_id, raw_ans in rows:
        where = f"{unit} {place}"
        raw_id = str(raw_id).strip()
        if not _INT_RE.match(raw_id):
            problems.append(f"{where}: sample_id {_quote(raw_id, 40)} is not an integer")
            continue
        sid = int(raw_id)
        seen.setdefault(sid, []).append(str(place))
        if num_samples is not None and not 0 <= sid < num_samples:
            problems.append(f"{where}: sample_id {sid} is not a sample of the train split (0..{num_samples - 1})")
        elif asked_set is not None and sid not in asked_set:
            problems.append(f"{where}: sample_id {sid} was not asked this cycle")
        value = str(raw_ans).strip().lower()
        if value not in choices:
            expected = "yes or no" if class_names is None else \
                f"a class name or index (0..{len(class_names) - 1})"
            problems.append(f"{where}: answer {_quote(str(raw_ans), 40)} for sample_id {sid} is not {expected}")
        else:
            got[sid] = choices[value]
    for sid, places in sorted(seen.items(), key=lambda kv: kv[1][0]):
        if len(places) > 1:
            problems.append(f"sample_id {sid} appears on {len(places)} {unit}s: {', '.join(places)}")
    if complete and asked is not None:
        absent_ids = [int(s) for s in asked if int(s) not in seen]
        if absent_ids:
            shown = ", ".join(map(str, absent_ids[:_MAX_LISTED]))
            more = len(absent_ids) - min(len(absent_ids), _MAX_LISTED)
            problems.append(
                f"{len(absent_ids)} asked sample(s) have no row: sample_id {shown}"
                + (f", ... and {more} more" if more > 0 else "")
            )
    return got, problems


def not_regular(path: Path, kind: str, labels: bool = False) -> AnswersError:
    """The error for an answers file that is not a regular file (a symlink, FIFO, socket, device
    or folder): nothing is opened or read, so no content of whatever it points to is quoted."""
    return AnswersError(
        f"{path} is {kind}, not a regular file: the answers must be one regular CSV file with that name, "
        "nothing was read from it. Replace it with a regular file (or move it away) and rerun. "
        + _format_help(path, labels)
    )


def _quote(text: str, limit: int = 80) -> str:
    """`text` for an error message, shortened to `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_answers(
    path: str | os.PathLike, asked_ids: np.ndarray, *, num_samples: int | None = None,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read and validate a human answers CSV; DataFrame[sample_id int64, answer bool]
    (DataFrame[sample_id int64, label int64] for a full-label sheet: pass `class_names`).

    Args:
        path: the answers file (:func:`answers_path`).
        asked_ids: [n] the sample ids asked this cycle; rows come back in this order.
        num_samples: if given, ids outside 0..num_samples-1 are reported as unknown
            samples (otherwise as "not asked this cycle").
        class_names: the answers are class names or indices (a full-label sheet).

    Raises:
        AnswersMissing: the file does not exist (the message says where and how to write it).
        AnswersError: anything wrong, listing every offending line: a folder instead of a
            file, unreadable or malformed CSV, missing ``sample_id``/``answer`` columns, rows
            with the wrong number of fields, non-integer ids, unknown ids, ids not asked this
            cycle, duplicate ids, answers other than yes/no (case-insensitive, spaces
            stripped; a class for a label sheet), and asked ids without a row. Nothing is
            returned unless the whole file is valid.
    """
    path = Path(path)
    labels = class_names is not None
    asked = np.asarray(asked_ids).astype(np.int64).ravel()
    if np.unique(asked).size != asked.size:
        raise OracleError("asked_ids repeat a sample_id; each sample is asked at most once per cycle.")
    kind = file_kind(path)
    if kind not in ("a regular file", "missing"):
        raise not_regular(path, kind, labels)
    if kind == "missing":
        raise AnswersMissing(
            f"the answers for this cycle are missing: {path} does not exist. The questions "
            f"are in {path.parent / QUESTIONS_CSV} (images under {path.parent / QUESTIONS_DIR}/). "
            + _format_help(path, labels)
            + " Then rerun the active stage; it resumes with this cycle."
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnswersError(f"cannot read {path} as UTF-8 text ({exc}). " + _format_help(path, labels)) from exc

    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    problems: list[str] = []
    rows: list[tuple[str, str, str]] = []
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
                        f"{path} line {line}: the header {_quote(','.join(row))} lacks column(s) {absent}. "
                        + _format_help(path, labels)
                    )
                twice = sorted({c for c in header if c and header.count(c) > 1})
                if twice:
                    raise AnswersError(
                        f"{path} line {line}: the header names column(s) {twice} more than once; which one "
                        "holds the answer is ambiguous, so no answer was applied. Keep one column of each name. "
                        + _format_help(path, labels)
                    )
                i_id, i_ans = header.index("sample_id"), header.index("answer")
                continue
            if len(row) != len(header):
                problems.append(f"line {line}: {len(row)} field(s) instead of {len(header)}: {_quote(','.join(row))}")
                continue
            rows.append((str(line), row[i_id], row[i_ans]))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: malformed CSV ({exc})")
    if header is None:
        raise AnswersError(f"{path} is empty. " + _format_help(path, labels))
    got, row_problems = check_rows(rows, asked, num_samples=num_samples, class_names=class_names)
    problems = problems + row_problems
    if problems:
        raise AnswersError(
            f"{path} has {len(problems)} problem(s); no answer was applied (header on line "
            f"{header_line}): " + _listing(problems) + ". " + _format_help(path, labels)
        )
    values = [got[int(s)] for s in asked]
    if labels:
        return pd.DataFrame({"sample_id": asked, "label": np.array(values, dtype=np.int64)})
    return pd.DataFrame({"sample_id": asked, "answer": np.array(values, dtype=bool)})


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ingest_answers_csv(
    cycle_dir: str | os.PathLike, store_path: str | os.PathLike, *, num_samples: int | None,
    class_names: Sequence[str],
) -> int | None:
    """Put a cycle's ``answers.csv`` into the answer store if it changed since it was last read.

    The file is validated with :func:`read_answers` against the cycle's question sheet or,
    in a finished cycle without one (every question was answered from the store, e.g. after
    a params change rebuilt it), against the questions it asked (its ``queries.parquet``):
    an invalid file, or one that is not a regular file (:func:`not_regular`), raises
    :class:`AnswersError` and nothing is written. Its sha256 is
    then recorded in ``answers.read.json`` beside it, so an unchanged file is not read
    again (and cannot undo a later correction made elsewhere, e.g. on the page).

    Returns:
        None when there is no answers.csv, else the number of store rows added (0: the
        file was read before, or repeats what the store holds).
    """
    cycle_dir = Path(cycle_dir)
    path = answers_path(cycle_dir)
    kind = file_kind(path)
    if kind == "missing":
        return None
    if kind != "a regular file":
        raise not_regular(path, kind)
    digest = _file_sha256(path)
    record = cycle_dir / ANSWERS_READ_JSON
    try:
        if json.loads(record.read_text()).get("sha256") == digest:
            return 0
    except (OSError, ValueError, AttributeError):
        pass
    sheet = read_sheet(cycle_dir)
    if sheet is None:
        sheet = _asked(cycle_dir)
    if sheet is None:
        raise AnswersError(
            f"{path} exists but its cycle has no question sheet ({cycle_dir / QUESTIONS_CSV}) and has not "
            "asked its questions yet, so its answers cannot be matched to questions. Move the file away and "
            "rerun the active stage: it writes the sheet of the questions still open; answer those. A stored "
            "answer of any cycle can be corrected with `obcp answers fix SAMPLE --asked CLASS --answer yes|no` "
            "or on the page (`obcp annotate`)."
        )
    labels = is_label_sheet(sheet["asked_class"])
    got = read_answers(path, sheet["sample_id"].to_numpy(), num_samples=num_samples,
                       class_names=class_names if labels else None)
    rows = store.rows(sheet["sample_id"], sheet["asked_class"], source=f"answers.csv {cycle_dir}",
                      answer=None if labels else got["answer"], label=got["label"] if labels else None)
    added = store.append(store_path, rows)
    write_json(cycle_dir / ANSWERS_READ_JSON, {"sha256": digest, "read_at": store.utc_now(), "rows_added": added})
    return added


def _asked(cycle_dir: Path) -> pd.DataFrame | None:
    """The questions a finished cycle asked (its queries.parquet: sample_id, asked_class), for an
    answers.csv in a cycle that has no sheet (every answer came from the store); None if absent."""
    path = cycle_dir / "queries.parquet"
    if file_kind(path) != "a regular file":
        return None
    try:
        return pd.read_parquet(path, columns=["sample_id", "asked_class"]).astype("int64")
    except Exception:  # pyarrow raises several unrelated types for a bad file
        return None
