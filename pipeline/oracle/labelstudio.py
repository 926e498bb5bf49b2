"""Label Studio round trip for the human oracle: export the open questions as import tasks,
read a Label Studio JSON export back into the answer store.

Export (`obcp annotate --arm A --seed S --export label-studio`) writes two files:

- ``tasks.json``: Label Studio's basic JSON import format, a list of ``{"data": {...}}``
  tasks. ``data.image`` is the question's PNG as a ``data:image/png;base64,`` URI (the
  file is self-contained: no storage or URL to set up); ``data.question`` is the
  sentence shown ("Is this a 3?"); ``sample_id``, ``asked_class``, ``dataset``, ``arm``,
  ``seed``, ``cycle`` say which question it is.
- ``labeling-config.xml``: the project's labeling interface: the image, the question as a
  header, and single-choice ``answer`` choices (yes / no, hotkeys y / n; the class names
  for a full-label sheet).

Import (`obcp annotate --import EXPORT.json`) reads Label Studio's JSON export (a list of
tasks, each with ``data`` and ``annotations``; each annotation has ``result`` items
``{"from_name": "answer", "type": "choices", "value": {"choices": [...]}}`` and
``was_cancelled``). A task's answer is its most recent annotation that was not cancelled
(by ``updated_at``); tasks without one are skipped, still open. The annotation's
``lead_time`` (Label Studio's seconds spent on it) goes into the answer store's ``seconds``
column (`obcp cost`); it is NaN when absent or not a number ≥ 0. Every answer goes through
`sheets.check_rows`, the validation of an ``answers.csv``; one bad task rejects the whole
file with every problem listed, and nothing is written.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import quoteattr

import pandas as pd

from pipeline.oracle import answers, sheets
from pipeline.oracle.annotate import Sheet
from pipeline.core.io import write_json, write_text

FROM_NAME = "answer"
TO_NAME = "image"
TASKS_JSON = "tasks.json"
CONFIG_XML = "labeling-config.xml"


def labeling_config(sheet: Sheet) -> str:
    """The labeling interface (XML) for the sheet's kind of question."""
    if sheet.labels:
        options = [(name, str(i) if i < 10 else None) for i, name in enumerate(sheet.class_names)]
    else:
        options = [("yes", "y"), ("no", "n")]
    choices = "\n".join(
        f"    <Choice value={quoteattr(value)}" + (f" hotkey={quoteattr(key)}" if key else "") + "/>"
        for value, key in options
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        '  <Header value="$question"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def export_tasks(sheet: Sheet, store: Path, dataset: str) -> list[dict]:
    """Import tasks for the sheet's questions that the answer store cannot answer yet."""
    q = sheet.questions
    open_ = q[~answers.lookup(answers.read(store), q)["answered"].to_numpy()]
    tasks = []
    for sid, asked in zip(open_["sample_id"], open_["asked_class"]):
        png = base64.b64encode(sheet.image(int(sid)).read_bytes()).decode("ascii")
        tasks.append({"data": {
            "image": f"data:image/png;base64,{png}",
            "question": sheet.text(int(asked)),
            "sample_id": int(sid), "asked_class": int(asked), "dataset": dataset,
            "arm": sheet.arm, "seed": sheet.seed, "cycle": sheet.cycle,
        }})
    return tasks


def write_export(sheet: Sheet, store: Path, dataset: str, out_dir: Path) -> tuple[Path, Path, int]:
    """Write tasks.json and labeling-config.xml into `out_dir`; returns (tasks, config, n tasks)."""
    out_dir = Path(out_dir)
    tasks = export_tasks(sheet, store, dataset)
    write_json(out_dir / TASKS_JSON, tasks)
    write_text(out_dir / CONFIG_XML, labeling_config(sheet))
    return out_dir / TASKS_JSON, out_dir / CONFIG_XML, len(tasks)


def _latest(annotations: list) -> dict | None:
    kept = [(str(a.get("updated_at") or a.get("created_at") or ""), i, a) for i, a in enumerate(annotations)
            if isinstance(a, dict) and not a.get("was_cancelled")]
    return max(kept, key=lambda t: t[:2])[2] if kept else None


def _lead_time(annotation: dict) -> float | None:
    """Label Studio's seconds on an annotation (``lead_time``), None when absent or not ≥ 0."""
    value = annotation.get("lead_time")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86_400:
        return None
    return float(value)


def _choice(annotation: dict) -> tuple[str | None, str | None]:
    """(the chosen answer, None) or (None, what is wrong)."""
    items = [r for r in annotation.get("result") or [] if isinstance(r, dict)
             and r.get("from_name") == FROM_NAME and r.get("type") == "choices"]
    if len(items) != 1:
        return None, f"its annotation has {len(items)} `{FROM_NAME}` choice results instead of 1"
    chosen = (items[0].get("value") or {}).get("choices")
    if not isinstance(chosen, list) or len(chosen) != 1:
        return None, f"its `{FROM_NAME}` result chooses {chosen!r} instead of exactly one answer"
    return str(chosen[0]), None


def read_export(path: Path, *, dataset: str, num_samples: int, class_names: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """A Label Studio JSON export, validated, as answer-store rows; also the number of tasks
    skipped because nobody answered them. Raises `sheets.AnswersError` listing every problem."""
    path = Path(path)
    help_ = (f"Export the Label Studio project as JSON (Export → JSON) after importing the tasks that "
             f"`obcp annotate --export label-studio` wrote, and pass that file. {path} was not changed and "
             "nothing was written.")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise sheets.AnswersError(f"cannot read {path} as a Label Studio JSON export ({exc}). {help_}") from None
    if not isinstance(tasks, list):
        raise sheets.AnswersError(f"{path} is not a Label Studio JSON export (a list of tasks). {help_}")
    problems: list[str] = []
    groups: dict[int, list[tuple[str, str, str]]] = {}
    lead: dict[tuple[int, int], float | None] = {}  # (asked_class, sample_id) → lead_time
    skipped = 0
    for i, task in enumerate(tasks):
        place = str(task.get("id", i + 1)) if isinstance(task, dict) else str(i + 1)
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or not {"sample_id", "asked_class", "dataset"} <= set(data):
            problems.append(f"task {place}: its data lacks sample_id, asked_class or dataset (not a task of "
                            "`obcp annotate --export label-studio`)")
            continue
        if data["dataset"] != dataset:
            problems.append(f"task {place}: a question about dataset {data['dataset']!r}, not {dataset!r}")
            continue
        asked = data["asked_class"]
        if isinstance(asked, bool) or not isinstance(asked, int) or not -1 <= asked < len(class_names):
            problems.append(f"task {place}: asked_class {asked!r} is not -1..{len(class_names) - 1}")
            continue
        annotation = _latest(task.get("annotations") or [])
        if annotation is None:
            skipped += 1
            continue
        choice, wrong = _choice(annotation)
        if wrong:
            problems.append(f"task {place}: {wrong}")
            continue
        groups.setdefault(asked, []).append((place, str(data["sample_id"]), choice))
        try:
            lead[(asked, int(str(data["sample_id"]).strip()))] = _lead_time(annotation)
        except ValueError:
            pass  # check_rows reports the bad sample_id
    frames = []
    for asked, rows in sorted(groups.items()):
        labels = asked == answers.LABEL_QUESTION
        got, found = sheets.check_rows(rows, None, num_samples=num_samples, complete=False, unit="task",
                                       class_names=class_names if labels else None)
        problems += [f"({'label' if labels else f'is it {class_names[asked]}?'} questions) {p}" for p in found]
        ids = list(got)
        values = [got[s] for s in ids]
        frames.append(answers.rows(ids, [asked] * len(ids), source=f"label-studio {path.name}",
                                   seconds=[lead.get((asked, int(s))) for s in ids],
                                   **({"label": values} if labels else {"answer": values})))
    if problems:
        raise sheets.AnswersError(f"{path} has {len(problems)} problem(s); no answer was applied: "
                                  + "; ".join(problems[:200]) + f". {help_}")
    return (pd.concat(frames, ignore_index=True) if frames else answers.empty()), skipped


def import_export(path: Path, store: Path, *, dataset: str, num_samples: int,
                  class_names: Sequence[str]) -> tuple[int, int, int]:
    """Put a Label Studio JSON export's answers into the answer store; returns (answers
    read, rows added: new or changed answers, tasks skipped as unanswered)."""
    rows, skipped = read_export(path, dataset=dataset, num_samples=num_samples, class_names=class_names)
    return len(rows), answers.append(store, rows), skipped
