"""The answer store, the validation every input path shares, and the Label Studio round trip.

Fast: no training. The stage-level behaviour (a params change keeps every answer and asks
nothing twice, edited answers are replayed, fullbit asks a person, exit codes) is in
tests/test_active.py; the page in a real browser in tests/test_annotate.py.
"""
from __future__ import annotations

import base64
import json
import multiprocessing
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.oracle import answers, labelstudio, sheets
from pipeline.oracle.annotate import AnnotateError, AnswerPage, open_sheet
from pipeline.core.layout import Layout

FIXTURES = Path(__file__).parent / "fixtures" / "label_studio"
CLASSES = tuple(str(i) for i in range(10))  # digits' class names
STORE = "reports/answers/digits.parquet"


def one_bit(ids, asked, yes, source="t"):
    return answers.rows(ids, asked, answer=yes, source=source)


# --------------------------------------------------------------------------- the store


def test_store_is_append_only_with_corrections_and_withdrawals(tmp_path):
    path = tmp_path / STORE
    assert answers.read(path).empty
    assert answers.append(path, one_bit([4, 7, 9], [1, 2, 3], [True, False, True])) == 3
    assert answers.append(path, one_bit([4, 7], [1, 2], [True, False])) == 0  # same answers: nothing added
    assert answers.append(path, one_bit([7], [2], [True], source="fix")) == 1  # a correction supersedes
    assert answers.append(path, answers.withdrawal(9, 3)) == 1
    assert answers.append(path, answers.withdrawal(9, 3)) == 0  # already open
    labels = answers.rows([5], [answers.LABEL_QUESTION], label=[8], source="t")
    assert answers.append(path, labels) == 1
    store = answers.read(path)
    assert len(store) == 6 and store["source"].tolist()[3] == "fix"  # history stays
    assert list(store.columns) == list(answers.COLUMNS)
    got = answers.lookup(store, pd.DataFrame({"sample_id": [4, 7, 9, 5, 4], "asked_class": [1, 2, 3, -1, 2]}))
    assert got["answered"].tolist() == [True, True, False, True, False]
    assert got["answer"].tolist()[:2] == [True, True] and got["label"].tolist()[3] == 8
    with pytest.raises(answers.AnswerStoreError, match="repeat a question"):
        answers.append(path, one_bit([1, 1], [0, 0], [True, False]))


def _append_many(path: str, start: int) -> None:
    for i in range(start, start + 15):
        answers.append(path, one_bit([i], [0], [i % 2 == 0], source=f"worker {start}"))


def test_concurrent_appends_lose_nothing(tmp_path):
    """Two forked processes (like two arm workers) append at once: every row arrives."""
    path = str(tmp_path / STORE)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, s)) for s in (0, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = answers.read(path)
    assert len(store) == 30 and sorted(store["sample_id"]) == [*range(15), *range(100, 115)]


def test_corrupt_store_is_reported_never_replaced(tmp_path):
    path = tmp_path / STORE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    with pytest.raises(answers.AnswerStoreError, match="restore it from git"):
        answers.append(path, one_bit([1], [0], [True]))
    assert path.read_bytes() == b"not parquet"


# --------------------------------------------------------------------------- answers.csv into the store


def sheet_dir(root: Path, ids=(4, 7, 9), asked=(1, 2, 3), *, arm="obcp", cycle=1) -> Path:
    """A cycle folder with a question sheet (random 8x8 images) under a project `root`."""
    cycle_dir = Layout("digits", root).cycle_dir(0, arm, cycle)
    images = np.random.default_rng(0).integers(0, 256, size=(len(ids), 8, 8, 3), dtype=np.uint8)
    sheets.write_question_sheet(cycle_dir, pd.DataFrame({"sample_id": ids, "asked_class": asked}), CLASSES, images)
    return cycle_dir


def test_ingest_reads_a_file_once_and_validates_it(tmp_path):
    cycle = sheet_dir(tmp_path)
    store = tmp_path / STORE
    assert sheets.ingest_answers_csv(cycle, store, num_samples=50, class_names=CLASSES) is None  # no file
    (cycle / "answers.csv").write_text("sample_id,answer\n4,yes\n7,maybe\n")
    with pytest.raises(sheets.AnswersError, match="'maybe'"):
        sheets.ingest_answers_csv(cycle, store, num_samples=50, class_names=CLASSES)
    assert not store.exists() and not (cycle / sheets.ANSWERS_READ_JSON).exists()
    (cycle / "answers.csv").write_text("sample_id,answer\n4,yes\n7,no\n9,no\n")
    assert sheets.ingest_answers_csv(cycle, store, num_samples=50, class_names=CLASSES) == 3
    # a correction made elsewhere (the page) is not undone by reading the unchanged file again
    answers.append(store, one_bit([7], [2], [True], source="page"))
    assert sheets.ingest_answers_csv(cycle, store, num_samples=50, class_names=CLASSES) == 0
    # an edited file is read again: only its changed rows are added
    (cycle / "answers.csv").write_text("sample_id,answer\n4,yes\n7,no\n9,yes\n")
    assert sheets.ingest_answers_csv(cycle, store, num_samples=50, class_names=CLASSES) == 2
    assert answers.read(store)["source"].tolist()[-1] == f"answers.csv {cycle}"


def _secret(tmp_path: Path) -> Path:
    """A file outside the project whose content must never appear in a message."""
    outside = tmp_path / "outside" / "passwd"
    outside.parent.mkdir()
    outside.write_text("root:x:0:0:SECRET-LINE:/root:/bin/bash\n")
    return outside


NOT_REGULAR = {
    "a folder": lambda p, tmp: p.mkdir(),
    "a symbolic link": lambda p, tmp: p.symlink_to(_secret(tmp)),  # like a link to /etc/passwd
    "a broken symbolic link": lambda p, tmp: p.symlink_to(tmp / "nowhere.csv"),
    "a FIFO (named pipe)": lambda p, tmp: os.mkfifo(p),
}


@pytest.mark.parametrize("kind", sorted(NOT_REGULAR))
def test_answers_csv_that_is_not_a_regular_file(kind, tmp_path):
    """One clear message naming what it is (exit 2, not "waiting"); nothing is read, so no content
    of a file outside the project is quoted; the store is untouched."""
    cycle = sheet_dir(tmp_path / "p")
    NOT_REGULAR[kind](cycle / "answers.csv", tmp_path)
    for call in (lambda: sheets.ingest_answers_csv(cycle, tmp_path / STORE, num_samples=50, class_names=CLASSES),
                 lambda: sheets.read_answers(cycle / "answers.csv", [4, 7, 9], num_samples=50)):
        with pytest.raises(sheets.AnswersError) as info:
            call()
        msg = str(info.value)
        assert f"answers.csv is {kind}, not a regular file" in msg and "nothing was read from it" in msg
        assert "SECRET" not in msg and "root:x" not in msg and "does not exist" not in msg
        assert info.value.exit_code == 2 and not isinstance(info.value, sheets.AnswersMissing)
    assert not (tmp_path / STORE).exists() and not (cycle / sheets.ANSWERS_READ_JSON).exists()


def test_duplicated_columns_are_rejected(tmp_path):
    """Two `answer` columns that contradict each other: which one counts is ambiguous, so none does."""
    cycle = sheet_dir(tmp_path)
    (cycle / "answers.csv").write_text("sample_id,answer,answer\n4,yes,no\n7,no,yes\n9,no,no\n")
    with pytest.raises(sheets.AnswersError, match=r"names column\(s\) \['answer'\] more than once"):
        sheets.ingest_answers_csv(cycle, tmp_path / STORE, num_samples=50, class_names=CLASSES)
    (cycle / "answers.csv").write_text("Sample_ID,answer,sample_id\n4,yes,4\n7,no,7\n9,no,9\n")
    with pytest.raises(sheets.AnswersError, match=r"\['sample_id'\] more than once"):
        sheets.ingest_answers_csv(cycle, tmp_path / STORE, num_samples=50, class_names=CLASSES)
    assert not (tmp_path / STORE).exists()
    (cycle / "answers.csv").write_text("sample_id,answer,note,note\n4,yes,,\n7,no,,\n9,no,,\n")
    with pytest.raises(sheets.AnswersError, match=r"\['note'\] more than once"):
        sheets.ingest_answers_csv(cycle, tmp_path / STORE, num_samples=50, class_names=CLASSES)


def test_long_content_is_shortened_in_messages(tmp_path):
    cycle = sheet_dir(tmp_path)
    (cycle / "answers.csv").write_text("sample_id,answer\n4,yes\n7," + "x" * 5000 + "\n9,no\n")
    with pytest.raises(sheets.AnswersError) as info:
        sheets.ingest_answers_csv(cycle, tmp_path / STORE, num_samples=50, class_names=CLASSES)
    assert "x" * 40 + "..." in str(info.value) and "x" * 41 not in str(info.value)


def test_label_sheet_takes_class_names_or_indices(tmp_path):
    cycle = sheet_dir(tmp_path, ids=(3, 5, 8), asked=(-1, -1, -1))
    sheet = pd.read_csv(cycle / "questions.csv", keep_default_na=False)
    assert sheet["asked_class"].tolist() == [-1, -1, -1] and sheet["asked_class_name"].tolist() == ["", "", ""]
    (cycle / "answers.csv").write_text("sample_id,answer\n3,7\n5,yes\n8,2\n")
    with pytest.raises(sheets.AnswersError, match=r"'yes' for sample_id 5 is not a class name or index \(0..9\)"):
        sheets.ingest_answers_csv(cycle, tmp_path / STORE, num_samples=50, class_names=CLASSES)
    (cycle / "answers.csv").write_text("sample_id,answer\n3,7\n5, 0 \n8,2\n")
    assert sheets.ingest_answers_csv(cycle, tmp_path / STORE, num_samples=50, class_names=CLASSES) == 3
    store = answers.read(tmp_path / STORE)
    assert store["label"].tolist() == [7, 0, 2] and store["answer"].isna().all()


def test_discarding_cycles_keeps_their_answers_or_stops(tmp_path):
    """A params change discards cycles: their answers.csv files go into the store first; an
    invalid one stops the discard before anything is deleted."""
    import torch

    from pipeline.loop.cycle import discard_from
    from pipeline.core.config import parse_params
    from pipeline.core.context import RunContext

    ctx = RunContext(params=parse_params({}), layout=Layout("digits", tmp_path), seed=0, device=torch.device("cpu"),
                     distributed=False, class_names=CLASSES, train_labels=np.zeros(50, np.int64),
                     test_labels=np.zeros(5, np.int64))
    one, two = sheet_dir(tmp_path), sheet_dir(tmp_path, ids=(5, 6), asked=(0, 0), cycle=2)
    (one / "answers.csv").write_text("sample_id,answer\n4,yes\n7,no\n9,no\n")
    (two / "answers.csv").write_text("sample_id,answer\n5,yes\n")  # sample 6 has no row
    with pytest.raises(sheets.AnswersError) as info:
        discard_from(ctx, "obcp", 1, why="params changed")
    assert "must be discarded (params changed)" in str(info.value) and "nothing was deleted" in str(info.value)
    assert one.is_dir() and two.is_dir()
    (two / "answers.csv").write_text("sample_id,answer\n5,yes\n6,no\n")
    said: list[str] = []
    discard_from(ctx, "obcp", 1, why="params changed", log=said.append)
    assert not one.exists() and not two.exists()
    assert len(answers.current(answers.read(ctx.layout.answer_store))) == 5
    assert "cycle(s) 1, 2 of arm obcp are discarded (params changed)" in said[0] and "all 5 answers" in said[0]


def test_page_logic_validates_like_the_csv(tmp_path):
    """The page's answer/undo without a browser (tests/test_annotate.py drives the real page)."""
    sheet_dir(tmp_path)
    layout = Layout("digits", tmp_path)
    page = AnswerPage(open_sheet(layout, "obcp", 0, CLASSES), layout.answer_store)
    with pytest.raises(AnnotateError, match="'maybe' for sample_id 4 is not yes or no"):
        page.answer(4, "maybe")
    with pytest.raises(AnnotateError, match="sample_id 5 was not asked this cycle"):
        page.answer(5, "yes")
    assert page.answer(4, "Yes")["answered"] == 1
    state = page.answer(9, "no")
    assert [q["answer"] for q in state["questions"]] == ["yes", None, "no"]
    assert page.undo()["undone"] == 9
    assert page.image(4) == (layout.cycle_dir(0, "obcp", 1) / "questions/4.png").read_bytes()
    assert page.image(5) is None  # only the sheet's images are served
    with pytest.raises(AnnotateError, match="no open question sheet"):
        open_sheet(layout, "random", 0, CLASSES)


# --------------------------------------------------------------------------- Label Studio


def test_label_studio_export_is_the_documented_import_format(tmp_path):
    cycle = sheet_dir(tmp_path)
    layout = Layout("digits", tmp_path)
    answers.append(layout.answer_store, one_bit([9], [3], [False]))  # already answered: not exported
    sheet = open_sheet(layout, "obcp", 0, CLASSES)
    tasks_file, config_file, n = labelstudio.write_export(sheet, layout.answer_store, "digits", tmp_path / "ls")
    assert n == 2
    tasks = json.loads(tasks_file.read_text())
    config = ET.fromstring(config_file.read_text())
    # every $variable of the labeling config is a key of each task's data (Label Studio checks this on import)
    variables = {el.get("value")[1:] for el in config.iter() if (el.get("value") or "").startswith("$")}
    assert variables == {"image", "question"}
    choices = config.find("Choices")
    assert choices.get("name") == "answer" and choices.get("toName") == config.find("Image").get("name")
    assert [c.get("value") for c in choices] == ["yes", "no"]
    assert isinstance(tasks, list) and [t["data"]["sample_id"] for t in tasks] == [4, 7]
    for task in tasks:
        assert set(task) == {"data"} and variables <= set(task["data"])
        prefix, b64 = task["data"]["image"].split(",", 1)
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(b64) == (cycle / f"questions/{task['data']['sample_id']}.png").read_bytes()
    assert tasks[0]["data"]["question"] == "Is this a 1?"


def as_exported(tasks: list[dict], choices: list[str]) -> list[dict]:
    """What Label Studio's JSON export gives back for `tasks` annotated with `choices`
    (the documented shape: id, data, annotations[{id, result[...], was_cancelled, ...}])."""
    out = []
    for i, (task, choice) in enumerate(zip(tasks, choices), start=1):
        result = {"id": f"r{i}", "from_name": "answer", "to_name": "image", "type": "choices",
                  "origin": "manual", "value": {"choices": [choice]}}
        out.append({"id": i, "data": task["data"], "project": 1, "predictions": [],
                    "created_at": "2026-05-01T10:00:00.000000Z", "updated_at": "2026-05-01T10:05:00.000000Z",
                    "annotations": [{"id": 100 + i, "completed_by": 1, "result": [result], "was_cancelled": False,
                                     "ground_truth": False, "created_at": "2026-05-01T10:05:00.000000Z",
                                     "updated_at": "2026-05-01T10:05:00.000000Z", "lead_time": 2.5, "task": i}]})
    return out


def test_label_studio_round_trip_answers_the_sheet(tmp_path):
    sheet_dir(tmp_path)
    layout = Layout("digits", tmp_path)
    sheet = open_sheet(layout, "obcp", 0, CLASSES)
    tasks_file, _, _ = labelstudio.write_export(sheet, layout.answer_store, "digits", tmp_path / "ls")
    export = tmp_path / "export.json"
    export.write_text(json.dumps(as_exported(json.loads(tasks_file.read_text()), ["yes", "no", "no"])))
    assert labelstudio.import_export(export, layout.answer_store, dataset="digits", num_samples=50,
                                     class_names=CLASSES) == (3, 3, 0)
    got = answers.lookup(answers.read(layout.answer_store), sheet.questions)
    assert got["answered"].all() and got["answer"].tolist() == [True, False, False]
    assert labelstudio.import_export(export, layout.answer_store, dataset="digits", num_samples=50,
                                     class_names=CLASSES)[1] == 0  # importing again adds nothing
    assert set(answers.read(layout.answer_store)["source"]) == {"label-studio export.json"}


def test_annotate_command_exports_and_imports(tmp_path, monkeypatch):
    """`obcp annotate --export label-studio` and `--import`, the command lines themselves."""
    from typer.testing import CliRunner

    from conftest import dataset_facts, make_project
    from pipeline.cli import app

    project = make_project(tmp_path / "p", git=False)
    sheet_dir(project)
    dataset_facts(project / "data/digits", list(CLASSES), 50)
    monkeypatch.chdir(project)
    cli = CliRunner()
    out = cli.invoke(app, ["annotate", "--arm", "obcp", "--seed", "0", "--export", "label-studio", "--out", "ls"])
    assert out.exit_code == 0 and "wrote 3 task(s) to ls/tasks.json" in out.output, out.output
    tasks = json.loads((project / "ls/tasks.json").read_text())
    (project / "export.json").write_text(json.dumps(as_exported(tasks, ["no", "yes", "no"])))
    out = cli.invoke(app, ["annotate", "--import", "export.json"])
    assert out.exit_code == 0 and "3 answers read, 3 new or changed added" in out.output, out.output
    (project / "bad.json").write_text(json.dumps(as_exported(tasks, ["no", "perhaps", "no"])))
    out = cli.invoke(app, ["annotate", "--import", "bad.json"])
    assert out.exit_code == 2 and "answer 'perhaps' for sample_id 7 is not yes or no" in out.output
    out = cli.invoke(app, ["annotate", "--arm", "obcp", "--seed", "1", "--export", "label-studio"])
    assert out.exit_code == 2 and "--seed 1 is not one of the seeds" in out.output  # checked before any work


def test_label_studio_fixture_export(tmp_path):
    """A hand-written export in Label Studio's documented JSON format: a task answered twice
    (the later annotation counts), a cancelled one and one never annotated (both skipped),
    a full-label task (class name), and a correction of an answer already in the store."""
    store = tmp_path / STORE
    answers.append(store, one_bit([12], [3], [True], source="page"))
    read, added, skipped = labelstudio.import_export(FIXTURES / "export.json", store, dataset="digits",
                                                     num_samples=1437, class_names=CLASSES)
    assert (read, added, skipped) == (3, 3, 2)
    now = answers.current(answers.read(store)).set_index(answers.KEY)
    assert bool(now.loc[(12, 3), "answer"]) is False  # the later annotation corrected "yes"
    assert bool(now.loc[(40, 7), "answer"]) is True
    assert int(now.loc[(41, -1), "label"]) == 5
    assert len(answers.read(store)) == 4  # the first answer stays as history


def test_label_studio_bad_export_is_rejected_whole(tmp_path):
    store = tmp_path / STORE
    answers.append(store, one_bit([1], [0], [True]))
    before = store.read_bytes()
    with pytest.raises(sheets.AnswersError) as info:
        labelstudio.import_export(FIXTURES / "export_bad.json", store, dataset="digits", num_samples=1437,
                                  class_names=CLASSES)
    msg = str(info.value)
    for fragment in ("5 problem(s); no answer was applied", "task 1: its data lacks sample_id",
                     "task 2: a question about dataset 'cifar10'", "task 3: sample_id 99999 is not a sample",
                     "task 4: answer 'maybe' for sample_id 13 is not yes or no",
                     "task 5: its `answer` result chooses ['yes', 'no'] instead of exactly one answer"):
        assert fragment in msg, fragment
    assert store.read_bytes() == before
    not_json = tmp_path / "x.json"
    not_json.write_text("{oops")
    with pytest.raises(sheets.AnswersError, match="cannot read .* as a Label Studio JSON export"):
        labelstudio.import_export(not_json, store, dataset="digits", num_samples=1437, class_names=CLASSES)


# --------------------------------------------------------------------------- corrections


def test_answers_csv_in_a_cycle_without_a_sheet_is_matched_to_its_questions(tmp_path):
    """A finished cycle whose questions all came from the store has no sheet: an answers.csv
    written there is checked against the questions it asked (queries.parquet) and taken."""
    cycle = Layout("digits", tmp_path).cycle_dir(0, "obcp", 1)
    cycle.mkdir(parents=True)
    store = tmp_path / STORE
    answers.append(store, one_bit([4, 7], [1, 2], [True, False]))
    pd.DataFrame({"sample_id": [4, 7], "asked_class": [1, 2], "answer": [True, False]}).to_parquet(
        cycle / "queries.parquet")
    (cycle / "answers.csv").write_text("sample_id,answer\n4,no\n")
    with pytest.raises(sheets.AnswersError, match="1 asked sample"):  # every question of the cycle, as on a sheet
        sheets.ingest_answers_csv(cycle, store, num_samples=50, class_names=CLASSES)
    (cycle / "answers.csv").write_text("sample_id,answer\n4,no\n7,no\n")
    assert sheets.ingest_answers_csv(cycle, store, num_samples=50, class_names=CLASSES) == 1
    assert answers.lookup(answers.read(store), pd.DataFrame({"sample_id": [4], "asked_class": [1]}))["answer"][0] == False  # noqa: E712
    (cycle / "queries.parquet").unlink()  # neither sheet nor questions: the message says what else works
    (cycle / "answers.csv").write_text("sample_id,answer\n4,yes\n7,no\n")
    with pytest.raises(sheets.AnswersError, match="obcp answers fix SAMPLE --asked CLASS --answer"):
        sheets.ingest_answers_csv(cycle, store, num_samples=50, class_names=CLASSES)


def test_answers_fix_and_list_commands(tmp_path, monkeypatch):
    """`obcp answers fix` corrects any stored answer (one-bit by class name or index, a label by
    name), keeps the history, refuses what is not a correction; `obcp answers list` shows it."""
    from typer.testing import CliRunner

    from conftest import dataset_facts, make_project
    from pipeline.cli import app

    project = make_project(tmp_path / "p", git=False)
    dataset_facts(project / "data/digits", list(CLASSES), 50)
    store = project / STORE
    answers.append(store, one_bit([12, 13], [3, 4], [True, False], source="answers.csv cycle_001"))
    answers.append(store, answers.rows([14], [-1], label=[8], source="page"))
    monkeypatch.chdir(project)
    cli = CliRunner()
    out = cli.invoke(app, ["answers", "fix", "12", "--asked", "3", "--answer", "no"])
    assert out.exit_code == 0, out.output
    assert "sample 12, asked_class 3 ('Is this a 3?'): yes -> no (was from answers.csv cycle_001)" in out.output
    assert "used by no finished cycle" in out.output and "obcp repro" in out.output
    out = cli.invoke(app, ["answers", "fix", "12", "--asked", "3", "--answer", "NO"])
    assert out.exit_code == 0 and "already 'no'" in out.output and "nothing added" in out.output
    out = cli.invoke(app, ["answers", "fix", "14", "--label", "2"])
    assert out.exit_code == 0 and "8 -> 2" in out.output, out.output
    for args, says in (
        (["12", "--asked", "5", "--answer", "no"], "holds no answer to sample 12, asked_class 5"),
        (["99", "--asked", "3", "--answer", "no"], "No question about this sample was answered"),
        (["12", "--asked", "eleven", "--answer", "no"], "--asked 'eleven' is not a class name or index"),
        (["12", "--asked", "3", "--answer", "maybe"], "answer 'maybe' is not yes or no"),
        (["12", "--asked", "3"], "give `--asked CLASS --answer yes|no`"),
        (["14", "--label", "2", "--asked", "3"], "not both"),
        (["13", "--label", "2"], "holds no answer to sample 13, asked_class -1"),
    ):
        out = cli.invoke(app, ["answers", "fix", *args])
        assert out.exit_code == 2 and says in " ".join(out.output.split()), (args, out.output)
    rows = answers.read(store)
    assert len(rows) == 5 and rows["source"].tolist()[-2:] == ["obcp answers fix"] * 2  # history kept
    listed = cli.invoke(app, ["answers", "list", "--csv"])
    frame = pd.read_csv(__import__("io").StringIO(listed.output))
    assert frame["sample_id"].tolist() == [14, 12, 13]  # the answers in force, newest first
    assert frame["answer"].tolist() == ["2", "no", "no"]
    history = cli.invoke(app, ["answers", "list", "--sample", "12", "--history", "--json"])
    assert [r["answer"] for r in json.loads(history.output)] == ["no", "yes"]
    none = cli.invoke(app, ["answers", "list", "--sample", "40"])
    assert none.exit_code == 0 and "no answer about sample 40" in none.output
