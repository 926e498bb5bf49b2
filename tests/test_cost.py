"""Measured annotation cost: the seconds each answer took (page, Label Studio's lead_time) and
the report of seconds per yes/no and per full label, bits per second."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipeline.oracle import answers
from pipeline.reporting.cost import annotation_cost, cost_markdown


def test_cost_report_medians_and_bits_per_second():
    store = pd.concat([
        answers.rows([1, 2, 3], [4, 5, 6], source="page", answer=[True, False, True], seconds=[1.0, 2.0, 3.0]),
        answers.rows([7, 8], [-1, -1], source="page", label=[3, 4], seconds=[5.0, 7.0]),
        answers.rows([9], [2], source="answers.csv x", answer=[False]),  # no time
        answers.withdrawal(1, 4),  # undo: no answer, no time
        answers.rows([1], [4], source="page", answer=[False], seconds=[4.0]),  # the corrected answer: an act too
    ], ignore_index=True)
    doc = annotation_cost(store, num_classes=16)
    yn, full = doc["yes_no"], doc["full_label"]
    assert (yn["answers"], yn["timed"], yn["median_seconds"], yn["total_seconds"]) == (5, 4, 2.5, 10.0)
    assert yn["bits_per_second"] == pytest.approx(4 / 10) and yn["sources"] == {"page": 4, "answers.csv": 1}
    assert (full["answers"], full["median_seconds"], full["bits_per_answer"]) == (2, 6.0, 4.0)
    assert full["bits_per_second"] == pytest.approx(4 * 2 / 12, abs=1e-4)
    assert doc["ratio_full_to_yes_no"] == pytest.approx(6.0 / 2.5, abs=1e-4) and doc["break_even"] == 4.0
    assert "fewer bits per second" in doc["verdict"]  # 2.4x the time for 4x the bits
    assert "| full label | 2 | 2 | 6 |" in cost_markdown(doc)
    empty = annotation_cost(answers.rows([1], [2], source="answers.csv", answer=[True]), num_classes=10)
    assert empty["ratio_full_to_yes_no"] is None and "not enough" in empty["verdict"]


def test_a_store_written_before_timings_reads_with_nan_seconds(tmp_path):
    path = tmp_path / "store.parquet"
    old = answers.rows([1], [2], source="page", answer=[True]).drop(columns="seconds")
    old.to_parquet(path, index=False)
    store = answers.read(path)
    assert "seconds" in store.columns and math.isnan(store["seconds"].iloc[0])
    assert answers.append(path, answers.rows([3], [4], source="page", answer=[False], seconds=[1.25])) == 1
    assert answers.read(path)["seconds"].tolist()[1] == 1.25


def test_the_page_records_seconds_and_refuses_nonsense(tmp_path):
    from pipeline.oracle.annotate import AnnotateError, AnswerPage, Sheet

    q = pd.DataFrame({"sample_id": [0, 1], "image": ["questions/0.png", "questions/1.png"], "asked_class": [3, 4],
                      "asked_class_name": ["3", "4"]})
    page = AnswerPage(Sheet(tmp_path / "cycle_001", q, tuple(str(i) for i in range(10)), "obcp", 0),
                      tmp_path / "store.parquet", idle_seconds=12)
    assert page.state()["idle_seconds"] == 12.0
    page.answer(0, "yes", 1.5)
    page.answer(1, "no")  # a client that did not time it
    for bad in (-1, "fast", float("inf"), True):
        with pytest.raises(AnnotateError, match="seconds"):
            page.answer(1, "no", bad)
    store = answers.read(tmp_path / "store.parquet")
    assert store["seconds"].iloc[0] == 1.5 and math.isnan(store["seconds"].iloc[1])
    with pytest.raises(AnnotateError, match="idle"):
        AnswerPage(page.sheet, tmp_path / "store.parquet", idle_seconds=0)


def test_label_studio_lead_time_is_imported(tmp_path):
    from pipeline.oracle.labelstudio import import_export

    def task(sid, asked, choice, lead):
        ann = {"result": [{"from_name": "answer", "type": "choices", "value": {"choices": [choice]}}],
               "updated_at": "2024-01-01T00:00:00"}
        if lead is not None:
            ann["lead_time"] = lead
        return {"id": sid, "data": {"sample_id": sid, "asked_class": asked, "dataset": "digits"}, "annotations": [ann]}

    export = tmp_path / "export.json"
    export.write_text(json.dumps([task(0, 3, "yes", 2.25), task(1, 3, "no", None), task(2, -1, "7", 9.5),
                                  task(4, 5, "no", -3)]))
    store = tmp_path / "store.parquet"
    read, added, skipped = import_export(export, store, dataset="digits", num_samples=10,
                                         class_names=[str(i) for i in range(10)])
    assert (read, added, skipped) == (4, 4, 0)
    got = answers.read(store).set_index("sample_id")["seconds"]
    assert got[0] == 2.25 and got[2] == 9.5 and np.isnan(got[1]) and np.isnan(got[4])  # absent / negative: unknown
    doc = annotation_cost(answers.read(store), num_classes=10)
    assert doc["full_label"]["median_seconds"] == 9.5 and doc["yes_no"]["timed"] == 1
