"""Oracles: simulated answers, the human question sheet, strict validation of answers.csv."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.errors import ObcpError
from pipeline.oracle.sheets import (
    AnswersError,
    AnswersMissing,
    OracleError,
    answers_path,
    read_answers,
    simulated_answers,
    write_question_sheet,
)

ASKED = np.array([4, 7, 9])


def test_simulated_answers():
    truth = np.array([0, 1, 2, 0, 1])
    queries = pd.DataFrame({"sample_id": [0, 1, 2, 4], "asked_class": [0, 2, 2, 0]})
    assert simulated_answers(queries, truth).tolist() == [True, False, True, False]
    with pytest.raises(OracleError, match="outside"):
        simulated_answers(pd.DataFrame({"sample_id": [5], "asked_class": [0]}), truth)


def test_write_question_sheet(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    questions = pd.DataFrame({"sample_id": [17, 3], "asked_class": [1, 0]})
    cycle = tmp_path / "cycle_001"
    (cycle / "questions").mkdir(parents=True)
    (cycle / "questions" / "99.png").write_bytes(b"stale")
    target = write_question_sheet(cycle, questions, ["cat", "dog"], images)
    assert target == cycle / "questions.csv"
    sheet = pd.read_csv(target)
    assert sheet.to_dict("list") == {
        "sample_id": [17, 3],
        "image": ["questions/17.png", "questions/3.png"],
        "asked_class": [1, 0],
        "asked_class_name": ["dog", "cat"],
    }
    assert sorted(p.name for p in (cycle / "questions").iterdir()) == ["17.png", "3.png"]
    with Image.open(cycle / "questions" / "17.png") as png:
        pixels = np.asarray(png)
    assert pixels.shape == (64, 64, 3)
    np.testing.assert_array_equal(pixels[::2, ::2], images[0])
    template = pd.read_csv(cycle / "answers_template.csv", keep_default_na=False)
    assert list(template.columns) == ["sample_id", "image", "asked_class_name", "answer"]
    assert answers_path(cycle) == cycle / "answers.csv"


def test_write_question_sheet_rejects_bad_input(tmp_path):
    questions = pd.DataFrame({"sample_id": [1], "asked_class": [0]})
    with pytest.raises(OracleError, match="uint8"):
        write_question_sheet(tmp_path, questions, ["a"], np.zeros((1, 8, 8, 3), dtype=np.float32))
    with pytest.raises(OracleError, match="out of range"):
        write_question_sheet(tmp_path, questions.assign(asked_class=[3]), ["a"], np.zeros((1, 8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def _write(tmp_path, text: str, encoding: str = "utf-8"):
    path = tmp_path / "answers.csv"
    path.write_text(text, encoding=encoding)
    return path


def test_read_answers_valid(tmp_path):
    path = _write(
        tmp_path,
        "Sample_ID , image, Answer\n9,questions/9.png,No\n\n4,questions/4.png, YES \n7,questions/7.png,no\n",
        encoding="utf-8-sig",
    )
    got = read_answers(path, ASKED)
    assert got["sample_id"].tolist() == [4, 7, 9]
    assert got["answer"].tolist() == [True, False, False]
    assert got["answer"].dtype == bool and got["sample_id"].dtype == np.int64


def test_read_answers_missing_file(tmp_path):
    with pytest.raises(AnswersMissing) as info:
        read_answers(tmp_path / "answers.csv", ASKED)
    msg = str(info.value)
    assert str(tmp_path / "answers.csv") in msg and "sample_id,answer" in msg and "questions.csv" in msg
    assert isinstance(info.value, ObcpError)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("sample_id,answer\n4,yes\nseven,no\n9,no\n", "line 3: sample_id 'seven' is not an integer"),
        ("sample_id,answer\n4,yes\n7,no\n9,no\n100,yes\n", "line 5: sample_id 100 is not a sample of the train split"),
        ("sample_id,answer\n4,yes\n7,no\n9,no\n5,yes\n", "line 5: sample_id 5 was not asked this cycle"),
        ("sample_id,answer\n4,yes\n7,no\n9,no\n7,no\n", "sample_id 7 appears on 2 lines: 3, 5"),
        ("sample_id,answer\n4,yes\n7,maybe\n9,no\n", "line 3: answer 'maybe' for sample_id 7 is not yes or no"),
        ("sample_id,answer\n4,yes\n7,\n9,no\n", "line 3: answer '' for sample_id 7 is not yes or no"),
        ("sample_id,answer\n4,yes\n9,no\n", "1 asked sample(s) have no row: sample_id 7"),
        ("sample_id,answer\n4,yes\n7,no,extra\n9,no\n", "line 3: 3 field(s) instead of 2"),
        ("id,answer\n4,yes\n", "lacks column(s) ['sample_id']"),
        ("", "is empty"),
    ],
)
def test_read_answers_each_problem(tmp_path, text, fragment):
    with pytest.raises(AnswersError) as info:
        read_answers(_write(tmp_path, text), ASKED, num_samples=50)
    assert fragment in str(info.value)


def test_read_answers_lists_every_problem_at_once(tmp_path):
    text = "sample_id,answer\n4,yes\nx,no\n4,no\n12,yes\n7,perhaps\n"
    with pytest.raises(AnswersError) as info:
        read_answers(_write(tmp_path, text), ASKED)
    msg = str(info.value)
    assert "has 5 problem(s); no answer was applied" in msg
    for fragment in (
        "line 3: sample_id 'x' is not an integer",
        "line 5: sample_id 12 was not asked this cycle",
        "line 6: answer 'perhaps' for sample_id 7 is not yes or no",
        "sample_id 4 appears on 2 lines: 2, 4",
        "1 asked sample(s) have no row: sample_id 9",
    ):
        assert fragment in msg, fragment


def test_read_answers_rejects_non_utf8(tmp_path):
    path = tmp_path / "answers.csv"
    path.write_bytes(b"sample_id,answer\n4,\xff\xfe\n")
    with pytest.raises(AnswersError, match="UTF-8"):
        read_answers(path, ASKED)
