"""Query ledger: row representation, idempotent append, truncation, audit queries."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.pool import ledger

TRUTH = np.array([0, 1, 2, 0, 1, 2, 0, 1])


def _one_bit(cycle: int, ids, asked, stamp: str = "2024-01-01T00:00:00+00:00") -> pd.DataFrame:
    ids = np.asarray(ids)
    queries = pd.DataFrame(
        {
            "sample_id": ids,
            "asked_class": asked,
            "answer": TRUTH[ids] == np.asarray(asked),
            "score": np.linspace(1.0, 0.5, ids.size),
            "rank": np.arange(1, ids.size + 1),
        }
    )
    return ledger.ledger_rows(
        queries, cycle=cycle, epoch=10 * cycle, strategy="obcp", oracle="simulated", arm="obcp",
        seed=0, true_labels=TRUTH, asked_at=stamp,
    )


def test_rows_one_bit_and_full():
    rows = _one_bit(1, [1, 2, 3], [1, 0, 0])
    assert list(rows.columns) == list(ledger.COLUMNS)
    assert rows["kind"].tolist() == ["one_bit"] * 3
    assert rows["answer"].tolist() == [True, False, True]
    assert rows["label_given"].tolist() == [1, -1, 0]
    assert rows["true_label"].tolist() == [1, 2, 0]
    assert rows["epoch"].tolist() == [10] * 3
    full = ledger.ledger_rows(
        pd.DataFrame({"sample_id": [5], "label": [2], "score": [0.3], "rank": [1]}),
        cycle=2, epoch=20, strategy="max", oracle="human", arm="fullbit", seed=1, kind="full",
    )
    assert full["asked_class"].tolist() == [-1] and full["label_given"].tolist() == [2]
    assert full["answer"].isna().all() and full["true_label"].tolist() == [-1]
    # a cycle's queries.parquet (label_given, true_label columns) can be passed as is
    from_queries = ledger.ledger_rows(
        pd.DataFrame({"sample_id": [5, 6], "asked_class": [-1, -1], "answer": [True, True],
                      "label_given": [2, 0], "true_label": [2, 0], "score": [0.3, 0.2], "rank": [1, 2]}),
        cycle=1, epoch=5, strategy="max", oracle="simulated", arm="fullbit", seed=1, kind="full",
    )
    assert from_queries["label_given"].tolist() == [2, 0] and from_queries["true_label"].tolist() == [2, 0]
    assert from_queries["answer"].isna().all()
    assert full["asked_at"].isna().all()  # no time given: <NA>, as a simulated oracle's rows
    stamped = ledger.ledger_rows(
        pd.DataFrame({"sample_id": [5], "label": [2], "score": [0.3], "rank": [1]}),
        cycle=2, epoch=20, strategy="max", oracle="human", arm="fullbit", seed=1, kind="full",
        asked_at=ledger.utc_now(),
    )
    assert stamped["asked_at"].str.endswith("+00:00").all()


def test_rows_validation():
    with pytest.raises(ledger.LedgerError, match="lack column"):
        ledger.ledger_rows(pd.DataFrame({"sample_id": [1]}), cycle=1, epoch=1, strategy="obcp",
                           oracle="simulated", arm="a", seed=0)
    with pytest.raises(ledger.LedgerError, match="oracle must be"):
        _ = ledger.ledger_rows(pd.DataFrame(), cycle=1, epoch=1, strategy="obcp", oracle="a crowd", arm="a", seed=0)
    with pytest.raises(ledger.LedgerError, match="cycle >= 1"):
        _one_bit(0, [1], [1])


def test_deterministic_columns():
    cols = ledger.deterministic_columns()
    assert "asked_at" not in cols and len(cols) == len(ledger.COLUMNS) - 1


def test_append_is_idempotent_per_cycle(tmp_path):
    path = tmp_path / "ledger" / "seed0" / "obcp.parquet"
    ledger.append(path, _one_bit(1, [1, 2, 3], [1, 0, 0]))
    ledger.append(path, _one_bit(2, [2, 4], [1, 1]))
    first = ledger.read(path)
    again = ledger.append(path, _one_bit(1, [1, 2, 3], [1, 0, 0], stamp="2025-06-01T00:00:00+00:00"))
    assert len(again) == 5
    cols = ledger.deterministic_columns()
    pd.testing.assert_frame_equal(again[cols], first[cols])
    assert not again["asked_at"].equals(first["asked_at"])
    pd.testing.assert_frame_equal(ledger.read(path), again)
    replaced = ledger.append(path, _one_bit(1, [5], [2]))
    assert ledger.for_cycle(replaced, 1)["sample_id"].tolist() == [5]
    assert replaced["answer"].dtype == "boolean"


def test_append_refuses_other_arm(tmp_path):
    path = tmp_path / "l.parquet"
    ledger.append(path, _one_bit(1, [1], [1]))
    other = _one_bit(2, [2], [2]).assign(arm="random")
    with pytest.raises(ledger.LedgerError, match="mix arm"):
        ledger.append(path, other)
    assert len(ledger.read(path)) == 1


def test_truncate_after(tmp_path):
    path = tmp_path / "l.parquet"
    for cycle in (1, 2, 3):
        ledger.append(path, _one_bit(cycle, [cycle, cycle + 4], [0, 1]))
    kept = ledger.truncate_after(path, 1)
    assert kept["cycle"].unique().tolist() == [1]
    assert ledger.read(path)["cycle"].unique().tolist() == [1]
    assert len(ledger.truncate_after(tmp_path / "absent.parquet", 0)) == 0


def test_read_errors(tmp_path):
    with pytest.raises(ledger.LedgerError, match="does not exist"):
        ledger.read(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_text("x")
    with pytest.raises(ledger.LedgerError, match="not readable"):
        ledger.read(tmp_path / "bad.parquet")


def test_audit_queries_and_summary(tmp_path):
    path = tmp_path / "l.parquet"
    ledger.append(path, _one_bit(1, [1, 2, 3], [1, 0, 0]))  # yes, no, yes
    led = ledger.append(path, _one_bit(2, [2, 4], [1, 2]))  # no, no
    history = ledger.for_sample(led, 2)
    assert history[["cycle", "asked_class", "answer"]].to_dict("list") == {
        "cycle": [1, 2], "asked_class": [0, 1], "answer": [False, False],
    }
    assert ledger.for_cycle(led, 2)["sample_id"].tolist() == [2, 4]
    per_cycle, per_class = ledger.summary(led, num_classes=3)
    assert per_cycle.to_dict("list") == {
        "cycle": [1, 2], "asked": [3, 2], "yes": [2, 0], "no": [1, 2],
        "yes_rate": [2 / 3, 0.0], "full": [0, 0],
    }
    assert len(per_class) == 6
    c1 = per_class[per_class["cycle"] == 1]
    assert c1["asked"].tolist() == [2, 1, 0] and c1["yes"].tolist() == [1, 1, 0]
    c2 = per_class[per_class["cycle"] == 2]
    assert c2["asked"].tolist() == [0, 1, 1] and c2["yes"].tolist() == [0, 0, 0]


def test_summary_full_rows_and_empty():
    full = ledger.ledger_rows(
        pd.DataFrame({"sample_id": [5, 6], "label": [2, 2], "score": [0.3, 0.2], "rank": [1, 2]}),
        cycle=1, epoch=20, strategy="max", oracle="simulated", arm="fullbit", seed=1, kind="full",
        true_labels=TRUTH,
    )
    per_cycle, per_class = ledger.summary(full, 3)
    assert per_cycle.loc[0, "full"] == 2 and per_cycle.loc[0, "asked"] == 0
    assert np.isnan(per_cycle.loc[0, "yes_rate"])
    assert per_class["full"].tolist() == [0, 0, 2]
    empty_cycle, empty_class = ledger.summary(ledger.empty(), 3)
    assert len(empty_cycle) == 0 and len(empty_class) == 0
