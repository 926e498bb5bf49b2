"""One-bit-aware selection (issue 25): question choice, eig, expected_gain, follow-up rounds,
the counterfactual all-yes / all-no arms, and the ledger of every other arm unchanged."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import project_from, run
from pipeline.core.config import ParamsError, parse_params
from pipeline.core.registry import ORACLES, STRATEGIES
from pipeline.method.history import PredictionHistory
from pipeline.pool import ledger
from pipeline.selection.base import Candidates, SelectionError
from pipeline.selection.onebit_aware import ExpectedGain, binary_entropy_bits, renormalised
from pipeline.selection.ranking import asked_classes


def history_of(probs: np.ndarray) -> PredictionHistory:
    """A real Eq. 7 history of one epoch: its uncertainty is the entropy of `probs` [N, C]."""
    h = PredictionHistory(len(probs), probs.shape[1], m=1, t=1, start_epoch=0, query_epoch=1)
    h.record(0, np.arange(len(probs)), probs)
    return h


def random_probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    logits = rng.normal(size=(n, c)) * 2.0
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- eig, expected_gain


def test_eig_asks_the_pair_whose_answer_is_least_certain():
    eig = STRATEGIES.get("eig")
    probs = np.array([
        [0.50, 0.30, 0.20],  # top class at 0.5: one full bit
        [0.90, 0.05, 0.05],  # sure: little to learn
        [0.20, 0.45, 0.35],  # class 1 is nearest 0.5
        [0.60, 0.30, 0.10],  # class 0 denied: renormalised (0.75, 0.25) over classes 1, 2
    ])
    denied = np.zeros((4, 3), bool)
    denied[3, 0] = True
    c = Candidates(ids=np.arange(4), probs=probs, denied=denied)
    q = eig.ask(c)
    assert q.classes.tolist() == [0, 0, 1, 1] and q.rule == "eig"
    expect = binary_entropy_bits(np.array([0.5, 0.9, 0.45, 0.75]))
    np.testing.assert_allclose(q.scores, expect)
    np.testing.assert_allclose(eig.scores(c, 2), expect)
    assert np.argsort(-eig.scores(c, 2))[0] == 0  # p = 0.5 first
    # on any belief: the class nearest 0.5 after renormalising, never a denied class, and (flat
    # classes: p_(1) + p_(2) <= 1) always the paper's question, the most probable class left
    rng = np.random.default_rng(0)
    probs = random_probs(rng, 500, 10)
    denied = rng.random((500, 10)) < 0.3
    denied[np.arange(500), rng.integers(0, 10, 500)] = False
    q = eig.ask(Candidates(ids=np.arange(500), probs=probs, denied=denied))
    p = renormalised(probs, denied)
    nearest = np.where(denied, np.inf, np.abs(p - 0.5)).min(axis=1)
    np.testing.assert_allclose(np.abs(p[np.arange(500), q.classes] - 0.5), nearest)
    assert not denied[np.arange(500), q.classes].any()
    assert (q.classes == asked_classes(probs, denied)).all()


def test_expected_gain_prices_yes_and_no():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    c = Candidates(ids=np.arange(3), probs=probs, denied=np.zeros((3, 2), bool))
    yes_worth_more = ExpectedGain(value_yes=0.05, value_no=0.01)
    np.testing.assert_allclose(yes_worth_more.scores(c, 3), [0.9 * 0.05 + 0.1 * 0.01, 0.6 * 0.05 + 0.4 * 0.01,
                                                             0.8 * 0.05 + 0.2 * 0.01])
    assert yes_worth_more.ask(c).classes.tolist() == [0, 0, 1]  # the predicted class, where the values were measured
    no_worth_more = ExpectedGain(value_yes=0.01, value_no=0.05)
    assert np.argmax(no_worth_more.scores(c, 3)) == 1  # the least confident first
    with pytest.raises(ParamsError, match="needs two different values"):
        parse_params({"selection": {"value_yes": 0.2, "value_no": 0.2}, "arms": {"eg": {"strategy": "expected_gain"}}})
    params = parse_params({"selection": {"value_yes": 0.3, "value_no": -0.1}, "arms": {"eg": {"strategy": "expected_gain"}}})
    got = STRATEGIES.get("expected_gain").configured(params)
    assert (got.value_yes, got.value_no) == (0.3, -0.1)
    assert STRATEGIES.get("max").configured(params) is STRATEGIES.get("max")


def test_default_question_is_the_predicted_class():
    rng = np.random.default_rng(1)
    probs = random_probs(rng, 200, 7).astype(np.float32)
    denied = rng.random((200, 7)) < 0.2
    denied[:, 0] = False
    for name in ("obcp", "random", "max", "diff2", "entropy"):
        q = STRATEGIES.get(name).ask(Candidates(ids=np.arange(200), probs=probs, denied=denied))
        assert (q.classes == asked_classes(probs, denied)).all() and np.isnan(q.scores).all()
        assert q.rule == "predicted" and STRATEGIES.get(name).question_rule == "predicted"


# --------------------------------------------------------------------------- counterfactual arms


def test_counterfactual_arms_ask_only_right_or_wrong_classes():
    rng = np.random.default_rng(2)
    n, c = 300, 5
    probs = random_probs(rng, n, c)
    truth = rng.integers(0, c, n)
    denied = np.zeros((n, c), bool)
    denied[:20, :] = True
    denied[np.arange(20), truth[:20]] = False  # only the label left: no wrong question for these
    cands = Candidates(ids=np.arange(n), probs=probs, history=history_of(probs), truth=truth, denied=denied)
    right = asked_classes(probs, denied) == truth
    k = 40
    yes = STRATEGIES.get("all_yes")
    scores = yes.scores(cands, k)
    top = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:k]
    assert right[top].all() and np.isnan(scores[~right]).all()
    eq7 = history_of(probs).uncertainty(np.arange(n))
    np.testing.assert_allclose(scores[right], eq7[right])  # Eq. 7's order among them: the obcp arm's
    no = STRATEGIES.get("all_no")
    asked = no.ask(cands)
    scores = no.scores(cands, k)
    ok = ~np.isnan(scores)
    assert ok[20:].all() and not ok[:20].any()
    assert (asked.classes[ok] != truth[ok]).all() and not denied[np.arange(n), asked.classes].any()
    np.testing.assert_allclose(scores[ok], eq7[ok])
    with pytest.raises(SelectionError, match="fewer than the"):
        yes.scores(cands, int(right.sum()) + 1)
    with pytest.raises(SelectionError, match="ground truth"):
        yes.scores(Candidates(ids=np.arange(n), probs=probs, history=history_of(probs)), k)


def test_counterfactual_arms_are_refused_with_a_human_oracle(tmp_path):
    raw = {"oracle": {"kind": "human"}, "arms": {"obcp": {}, "yes": {"strategy": "all_yes"},
                                                 "no": {"strategy": "all_no"}}}
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    text = str(err.value)
    assert "arms.yes.strategy: 'all_yes' is a counterfactual arm" in text and "arms.no.strategy" in text
    assert "oracle.kind 'human' cannot" in text
    parse_params({**raw, "oracle": {"kind": "simulated"}})  # fine with the ground truth
    from pipeline.oracle.oracles import Asking
    from pipeline.oracle.sheets import OracleError

    assert ORACLES.get("simulated").knows_truth and not ORACLES.get("human").knows_truth
    with pytest.raises(OracleError, match="only an oracle that knows it"):
        ORACLES.get("human").truth(np.arange(3), Asking(None, tmp_path, "yes"))


def test_rounds_need_a_per_sample_strategy_and_one_bit_questions():
    with pytest.raises(ParamsError) as err:
        parse_params({"arms": {"a": {"rounds": 0}, "b": {"method": "fullbit", "strategy": "entropy", "rounds": 2},
                               "c": {"strategy": "all_yes", "rounds": 2}}})
    text = str(err.value)
    assert "arms.a.rounds: must be ≥ 1" in text
    assert "arms.b.rounds: method 'fullbit' asks for full labels" in text
    assert "arms.c.rounds: follow-up rounds score a sample again" in text
    parse_params({"arms": {"eig": {"strategy": "eig", "rounds": 3}, "obcp": {"rounds": 2}}})


# --------------------------------------------------------------------------- ledger


def test_ledger_optional_columns_only_where_used(tmp_path):
    q = pd.DataFrame({"sample_id": [3, 1], "asked_class": [2, 0], "answer": [True, False], "score": [0.5, 0.4],
                      "rank": [1, 2]})
    plain = ledger.ledger_rows(q, cycle=1, epoch=4, strategy="obcp", oracle="simulated", arm="a", seed=0)
    assert tuple(plain.columns) == ledger.COLUMNS
    rounds = pd.DataFrame({"sample_id": [3, 1, 1], "asked_class": [2, 0, 4], "answer": [True, False, True],
                           "score": [0.5, 0.4, 0.3], "rank": [1, 2, 3], "round": [1, 1, 2],
                           "question_rule": ["eig"] * 3, "question_score": [1.0, 0.9, 0.8]})
    rows = ledger.ledger_rows(rounds, cycle=2, epoch=6, strategy="eig", oracle="simulated", arm="a", seed=0)
    assert list(rows.columns) == list(ledger.COLUMNS) + ["question_rule", "question_score", "round"]
    path = tmp_path / "a.parquet"
    ledger.append(path, plain)
    both = ledger.append(path, rows)
    assert both["round"].tolist() == [1, 1, 1, 1, 2] and both["question_rule"].tolist()[:2] == ["predicted"] * 2
    assert ledger.read(path)["round"].dtype == np.int64
    with pytest.raises(ledger.LedgerError, match="each question once"):
        ledger.ledger_rows(rounds.assign(asked_class=[2, 0, 0]), cycle=2, epoch=6, strategy="eig",
                           oracle="simulated", arm="a", seed=0)
    with pytest.raises(ledger.LedgerError, match="at most once per cycle"):
        ledger.ledger_rows(rounds.drop(columns="round"), cycle=2, epoch=6, strategy="eig", oracle="simulated",
                           arm="a", seed=0)


# --------------------------------------------------------------------------- end to end


ARMS = {
    "obcp": {"method": "obcp", "strategy": "obcp"},
    "all_yes": {"method": "obcp", "strategy": "all_yes"},
    "all_no": {"method": "obcp", "strategy": "all_no"},
    "eig_fu": {"method": "obcp", "strategy": "eig", "rounds": 3},
    "obcp_fu": {"method": "obcp", "strategy": "obcp", "rounds": 2},
}


def test_arms_end_to_end(stage1_data, tmp_path):
    """Real cycles (tiny digits, two cycles of 30 questions): the counterfactual arms get only
    yes / only no from the simulated oracle; follow-up rounds never ask a denied class nor the
    same question twice; the paper's arm keeps the ledger schema it always had."""
    import sys

    project = project_from(stage1_data, tmp_path / "p", {"arms": ARMS})
    run([sys.executable, "-m", "stages.active", "--seed", "0"], project)
    truth = pd.read_parquet(project / "data/digits/index.parquet").query("split == 'train'") \
        .set_index("sample_id")["label"]
    led = {arm: ledger.read(project / f"reports/ledger/seed0/{arm}.parquet") for arm in ARMS}
    for arm, frame in led.items():
        assert len(frame) == 60, arm  # the same bits for every arm
        assert (frame["answer"].to_numpy(bool) == (truth.loc[frame["sample_id"]].to_numpy()
                                                   == frame["asked_class"].to_numpy())).all()
    assert led["all_yes"]["answer"].all() and not led["all_no"]["answer"].any()
    assert tuple(led["obcp"].columns) == ledger.COLUMNS and tuple(led["all_yes"].columns) == ledger.COLUMNS
    assert list(led["all_no"].columns) == list(ledger.COLUMNS) + ["question_rule", "question_score"]
    for arm in ("eig_fu", "obcp_fu"):
        frame = led[arm]
        assert "round" in frame.columns and frame["round"].max() > 1
        assert not frame.duplicated(["cycle", "sample_id", "asked_class"]).any()  # never the same question twice
        assert not frame.duplicated(["cycle", "round", "sample_id"]).any()
        for cycle, rows in frame.groupby("cycle"):
            denied: dict[int, set[int]] = {}
            for _, prev in frame[frame["cycle"] < cycle].iterrows():
                if not prev["answer"]:
                    denied.setdefault(int(prev["sample_id"]), set()).add(int(prev["asked_class"]))
            for _, q in rows.sort_values("rank").iterrows():
                sid = int(q["sample_id"])
                assert int(q["asked_class"]) not in denied.get(sid, set()), (arm, cycle, sid)
                if q["answer"]:
                    assert sid not in frame[(frame["cycle"] == cycle) & (frame["round"] > q["round"])]["sample_id"].tolist()
                else:
                    denied.setdefault(sid, set()).add(int(q["asked_class"]))
            again = rows[rows.duplicated("sample_id", keep=False)]
            for sid, asks in again.groupby("sample_id"):  # a follow-up only after a no
                assert not asks.sort_values("round")["answer"].iloc[:-1].any()
            early = rows[rows["round"] < rows["round"].max()]
            if arm == "obcp_fu" and (~early["answer"].astype(bool)).any():
                # Eq. 7 ignores the class: a sample answered no in a round is asked again in the next
                assert len(again) > 0
    assert (led["eig_fu"]["question_rule"] == "eig").all()
    assert (led["obcp_fu"]["question_rule"] if "question_rule" in led["obcp_fu"] else pd.Series(["predicted"])) \
        .eq("predicted").all()
    pool = pd.read_parquet(project / "data/runs/seed0/arms/eig_fu/cycle_002/pool.parquet")
    assert int((pool["status"] == "yes").sum() + pool["negatives"].map(len).sum()) == 60


def _active(project, monkeypatch, capsys) -> tuple[int, str, str]:
    """The `active` stage in this process: (exit code, stdout, stderr)."""
    from pathlib import Path

    from stages.active import main

    monkeypatch.chdir(project)
    capsys.readouterr()
    code = 0
    try:
        main(seed=0, arm=["obcp_fu"], workers=None, params=Path("params.yaml"))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_follow_up_rounds_with_a_person(stage1_data, tmp_path, monkeypatch, capsys):
    """A person answers round by round, on the page, in Label Studio and in answers.csv;
    the answer store keys every answer by (sample_id, asked_class), a follow-up question about
    another class included; the audit reads the rounds."""
    import json

    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.core.layout import Layout
    from pipeline.oracle import answers, labelstudio
    from pipeline.oracle.annotate import AnswerPage, open_sheet

    project = project_from(stage1_data, tmp_path / "p", {
        "oracle": {"kind": "human"}, "query_times": 1,
        # Eq. 7's score ignores the class, so a sample answered no is asked again at once
        "arms": {"obcp_fu": {"method": "obcp", "strategy": "obcp", "rounds": 3}}})
    truth = pd.read_parquet(project / "data/digits/index.parquet").query("split == 'train'") \
        .set_index("sample_id")["label"]
    store = project / "reports/answers/digits.parquet"
    classes = [str(i) for i in range(10)]
    cdir = project / "data/runs/seed0/arms/obcp_fu/cycle_001"

    def truthful(sheet: pd.DataFrame) -> list[str]:
        return ["yes" if truth.loc[s] == c else "no" for s, c in zip(sheet["sample_id"], sheet["asked_class"])]

    sheets_seen = []
    code, out, err = _active(project, monkeypatch, capsys)  # 60 questions in 3 rounds of 20
    assert code == 3 and "waiting for answers (20 questions" in err
    sheet = pd.read_csv(cdir / "questions.csv")
    sheets_seen.append(sheet)
    page = AnswerPage(open_sheet(Layout("digits", project), "obcp_fu", 0, classes), store)
    for sid, value in zip(sheet["sample_id"], truthful(sheet)):  # on the page
        state = page.answer(int(sid), value)
    assert state["complete"]

    code, out, err = _active(project, monkeypatch, capsys)  # round 2, in Label Studio
    assert code == 3 and "waiting for answers (20 questions" in err
    sheet = pd.read_csv(cdir / "questions.csv")
    sheets_seen.append(sheet)
    tasks = labelstudio.export_tasks(open_sheet(Layout("digits", project), "obcp_fu", 0, classes), store, "digits")
    assert [(t["data"]["sample_id"], t["data"]["asked_class"]) for t in tasks] == \
        list(zip(sheet["sample_id"], sheet["asked_class"]))
    for task, value in zip(tasks, truthful(sheet)):
        task["annotations"] = [{"result": [{"from_name": "answer", "type": "choices",
                                            "value": {"choices": [value]}}], "updated_at": "2026-01-01T00:00:00"}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    labelstudio.import_export(export, store, dataset="digits", num_samples=len(truth), class_names=classes)

    code, out, err = _active(project, monkeypatch, capsys)  # round 3, in answers.csv
    assert code == 3 and "waiting for answers (20 questions" in err
    sheet = pd.read_csv(cdir / "questions.csv")
    sheets_seen.append(sheet)
    pd.DataFrame({"sample_id": sheet["sample_id"], "answer": truthful(sheet)}).to_csv(cdir / "answers.csv",
                                                                                      index=False)
    code, out, err = _active(project, monkeypatch, capsys)
    assert code == 0, err

    led = ledger.read(project / "reports/ledger/seed0/obcp_fu.parquet")
    assert len(led) == 60 and (led["oracle"] == "human").all() and sorted(led["round"].unique()) == [1, 2, 3]
    asked = pd.concat(sheets_seen, ignore_index=True)[["sample_id", "asked_class"]]
    pd.testing.assert_frame_equal(led.sort_values("rank")[["sample_id", "asked_class"]].reset_index(drop=True),
                                  asked.astype("int64"))
    assert not led.duplicated(["sample_id", "asked_class"]).any()
    now = answers.lookup(answers.read(store), led)
    assert now["answered"].all() and (now["answer"].to_numpy(bool) == led["answer"].to_numpy(bool)).all()
    followed = led[led.duplicated("sample_id", keep=False)]
    assert len(followed), "no follow-up question was asked"
    monkeypatch.chdir(project)
    cli = CliRunner()
    summary = json.loads(cli.invoke(app, ["audit", "summary", "--arm", "obcp_fu", "--json"]).output)
    assert summary["per_cycle"][0]["asked"] == 60
    sid = int(followed["sample_id"].iloc[0])
    rows = json.loads(cli.invoke(app, ["audit", "sample", str(sid), "--arm", "obcp_fu", "--json"]).output)
    assert [r["round"] for r in rows] == sorted(r["round"] for r in rows) and len(rows) >= 2
    assert not any(r["answer"] for r in rows[:-1]) and len({r["asked_class"] for r in rows}) == len(rows)


# --------------------------------------------------------------------------- the study's rule of kind `arms`


def _arm_runs() -> pd.DataFrame:
    """A fabricated run table: 2 datasets × 3 seeds × arms obcp, eig, eg, max (block main, one variant)."""
    from pipeline.tools.study import table

    final = {"obcp": [0.80, 0.82, 0.84, 0.60, 0.62, 0.64], "eig": [0.82, 0.83, 0.86, 0.61, 0.64, 0.65],
             "eg": [0.85, 0.70, 0.90, 0.62, 0.50, 0.70], "max": [0.90, 0.90, 0.90, 0.70, 0.70, 0.70]}
    rows = []
    for arm, accs in final.items():
        for i, acc in enumerate(accs):
            dataset, seed = ("d1", "d2")[i // 3], 10 + i % 3
            for cycle, value in ((0, 0.5), (1, acc)):
                rows.append({"dataset": dataset, "block": "main", "variant": "default", "query_times": 1, "arm": arm,
                             "method": "obcp", "strategy": arm, "seed": seed, "cycle": cycle, "top1": value,
                             "bits": 100.0, "yes": 5, "asked": 10})
    return table.from_rows(rows)


def test_rule_of_kind_arms_picks_a_candidate_only_above_the_reference():
    from pipeline.tools.study import rule

    args = {"block": "main", "reference": "obcp", "datasets": ["d1", "d2"], "seeds": [10, 11, 12]}
    got = rule.pick_arm(_arm_runs(), candidates=["eig", "eg"], **args)
    # eig − obcp per pair: .02 .01 .02 .01 .02 .01 → mean 0.015, interval above 0; eg's mean is higher
    # (0.7117 vs 0.735?) no: eg (0.85+0.70+0.90)/3 = 0.8167, (0.62+0.50+0.70)/3 = 0.6067 → 0.7117 < eig 0.735
    r = got.ranking.set_index("arm")
    assert r.loc["eig", "mean"] == pytest.approx((0.8367 + 0.6333) / 2, abs=1e-4)
    assert got.arm == "eig" and r.loc["eig", "diff_mean"] == pytest.approx(0.015) and r.loc["eig", "lo"] > 0
    assert r.loc["max", "role"] == "other" and r.loc["obcp", "role"] == "reference"
    stays = rule.pick_arm(_arm_runs(), candidates=["eg"], **args)  # eg: a mean above obcp, an interval across 0
    assert stays.arm == "obcp" and "obcp stays" in stays.reason
    partial = _arm_runs()
    partial = partial[~((partial["arm"] == "max") & (partial["seed"] == 12) & (partial["dataset"] == "d2"))]
    assert rule.pick_arm(partial, candidates=["eig"], **args).arm is None


def test_a_named_study_with_its_own_arms_and_an_arm_rule(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from conftest import ROOT
    from pipeline.cli import app
    from pipeline.tools.study import cells, spec as study_spec, table

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    arms = {"obcp": {"method": "obcp", "strategy": "obcp"}, "eig": {"method": "obcp", "strategy": "eig"},
            "eg": {"method": "obcp", "strategy": "expected_gain"}, "max": {"method": "obcp", "strategy": "max"}}
    raw = {"title": "Arms", "name": "arms_study", "seeds": [10, 11, 12], "arms": arms,
           "datasets": {"d1": {"params": "params.yaml", "overrides": {"selection.value_yes": 0.03,
                                                                      "selection.value_no": 0.01}},
                        "d2": {"params": "params.yaml", "overrides": {"budget.initial": 40, "selection.value_yes": 0.02,
                                                                      "selection.value_no": 0.01}}},
           "rule": {"kind": "arms", "block": "main", "arm": "obcp", "candidates": ["eig", "eg"],
                    "text": "The best candidate replaces obcp when its pooled paired interval is above 0."},
           "blocks": {"main": {"why": "one-bit-aware rules at equal bits", "variants": {"default": {}}}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    s = study_spec.load_spec(tmp_path / "spec.yaml")
    assert s.name == "arms_study" and s.rule.kind == "arms" and s.rule.candidates == ("eig", "eg")
    cell = study_spec.block_cells(s, "main", tmp_path)[0]
    assert set(cell.params["arms"]) == set(arms) and cell.arms == tuple(arms)
    layout = cells.StudyLayout(tmp_path, s.name)
    assert layout.cell_dir(cell) == tmp_path / "data/studies/arms_study/d1/main/default"
    assert layout.runs == tmp_path / "reports/arms_study/study/runs.csv"
    table.write_table(layout.runs, _arm_runs())
    result = CliRunner().invoke(app, ["study", "report", "--spec", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "reports/arms_study/study.md").read_text()
    assert "**eig: the best candidate" in text and "rule.pick_arm" in text
    assert "| ✓ | eig | candidate |" in text and "+1.50 [" in text
    assert not (tmp_path / "reports/study.md").exists()  # the committed study's report is untouched
    bad = dict(raw, rule={**raw["rule"], "candidates": ["obcp", "nope"]})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    with pytest.raises(study_spec.StudyError) as err:
        study_spec.load_spec(tmp_path / "bad.yaml")
    assert "cannot be a candidate" in str(err.value) and "['nope'] do not run" in str(err.value)
