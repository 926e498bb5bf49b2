"""Method, strategy and oracle objects, each alone; the registries."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import ArmParams, LossParams, OnebitParams
from pipeline.core.registry import METHODS, ORACLES, STRATEGIES, Registry, RegistryError
from pipeline.method.methods import LABEL_QUESTION, FullBit, ObCP, OneBit, method_of
from pipeline.oracle import answers
from pipeline.oracle.oracles import Asking, Human, Simulated
from pipeline.oracle.sheets import AnswersMissing
from pipeline.pool.pools import initial_pool


def test_registries_list_the_builtins_once():
    assert METHODS.names() == ("obcp", "onebit", "fullbit", "supervised")
    assert ORACLES.names() == ("simulated", "human")
    assert STRATEGIES.names()[:5] == ("obcp", "random", "max", "diff2", "entropy")
    with pytest.raises(RegistryError, match="unknown method 'nope'.*obcp, onebit, fullbit, supervised"):
        METHODS.get("nope")
    reg = Registry("thing", ())
    reg.register(SimpleNamespace(name="a"))
    with pytest.raises(RegistryError, match="two things are named 'a'"):
        reg.register(SimpleNamespace(name="a"))
    with pytest.raises(RegistryError, match="identifier"):
        reg.register(SimpleNamespace(name="a b"))


def test_obcp_method_applies_yes_and_no():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    pool = initial_pool(labels, 2, class_balanced=False, seed=0)
    unl = pool.loc[pool["status"] == "unlabeled", "sample_id"].to_numpy()[:2]
    q = pd.DataFrame({"sample_id": unl, "asked_class": labels[unl][[0]].tolist() + [(labels[unl[1]] + 1) % 3],
                      "answer": [True, False]})
    new = ObCP().apply(pool, q, 1, 3)
    row = new.set_index("sample_id")
    assert row.loc[unl[0], "status"] == "yes" and row.loc[unl[0], "label"] == labels[unl[0]]
    assert row.loc[unl[1], "status"] == "unlabeled" and list(row.loc[unl[1], "negatives"]) == [(labels[unl[1]] + 1) % 3]
    assert ObCP().budgets(10, 10, 4) == [3, 3, 2, 2] and ObCP().spent_through([3, 3, 2, 2], 2) == 6


def test_fullbit_asks_labels_at_equal_bits():
    m = FullBit()
    assert m.question == "full" and m.spent_through([1, 1], 1) is None
    assert m.budgets(37, 10, 2) == [6, 5]  # floor(37 / log2 10) = 11 labels, the remainder first
    asked = m.questions(pd.DataFrame({"sample_id": [4, 5], "asked_class": [1, 2]}))
    assert asked["asked_class"].tolist() == [LABEL_QUESTION] * 2
    assert m.strategy(ArmParams(method="fullbit", strategy="obcp")) == "entropy"
    plan = m.loss_plan(ArmParams(method="fullbit"), LossParams(), OnebitParams(), 15)
    assert plan.contrastive_labeled and not plan.contrastive_negative and not plan.negative_loss


def test_onebit_asks_with_the_teacher_and_keys_its_params():
    m = method_of(ArmParams(method="onebit"))
    assert isinstance(m, OneBit) and m.asks_with_teacher and not ObCP.asks_with_teacher
    params = SimpleNamespace(onebit=OnebitParams(consistency=3.0))
    assert m.own_params(params) == {"onebit": params.onebit} and ObCP().own_params(params) == {}
    assert m.loss_plan(ArmParams(method="onebit"), LossParams(), params.onebit, 15).lambda_cons == 3.0


def _asking(tmp_path, labels=(0, 1, 2, 1)):
    layout = SimpleNamespace(answer_store=tmp_path / "answers.parquet")
    ctx = SimpleNamespace(train_labels=np.array(labels), layout=layout, seed=0, num_samples=len(labels),
                          class_names=("a", "b", "c"))
    (tmp_path / "cycle_001").mkdir()
    return Asking(ctx, tmp_path / "cycle_001", "obcp")


def test_simulated_oracle_answers_from_the_truth(tmp_path):
    at = _asking(tmp_path)
    q = pd.DataFrame({"sample_id": [0, 1, 3], "asked_class": [0, 2, LABEL_QUESTION]})
    got = Simulated().answer(q, at)
    assert got["answer"].tolist() == [True, False, True]
    assert got["label_given"].tolist() == [0, -1, 1] and got["true_label"].tolist() == [0, 1, 1]
    assert Simulated().current(q, at) is None


def test_human_oracle_answers_from_the_store_or_waits(tmp_path):
    at = _asking(tmp_path)
    q = pd.DataFrame({"sample_id": [0, 1], "asked_class": [0, 2]})
    answers.append(at.ctx.layout.answer_store, answers.rows([0, 1], [0, 2], source="test", answer=[True, False]))
    got = Human().answer(q, at)
    assert got["answer"].tolist() == [True, False] and got["label_given"].tolist() == [0, -1]
    assert got["true_label"].tolist() == [-1, -1] and got["answered_at"].str.len().gt(0).all()
    assert Human().current(q, at)["answered"].all()
    # a question the store cannot answer and that the cycle's sheet already lists: waits (exit 3)
    (at.cycle_dir / "questions.csv").write_text("sample_id,image,asked_class,asked_class_name\n2,questions/2.png,1,b\n")
    with pytest.raises(AnswersMissing, match="waiting for answers \\(1 questions"):
        Human().answer(pd.DataFrame({"sample_id": [0, 2], "asked_class": [0, 1]}), at)
    assert AnswersMissing.exit_code == 3


def test_params_yaml_lists_the_registries():
    """params.yaml's comment on `arms` names every registered method and strategy, no other."""
    import re

    from conftest import ROOT

    text = (ROOT / "params.yaml").read_text()

    def listed(kind: str) -> set[str]:
        line = re.search(rf"^# Registered {kind}: (.*)\.$", text, re.M).group(1)
        return {name.split(" (")[0].strip() for name in line.split("|")}

    assert listed("methods") == set(METHODS.names())
    assert listed("strategies") == set(STRATEGIES.names())
