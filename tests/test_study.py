"""The study: spec validation, cell planning, the rule, the report from a fabricated run table,
and `obcp study run` end to end on a tiny grid (real DVC projects, shared run-cache, resume)."""
from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import ROOT, TINY_PARAMS, make_project, merge, run
from pipeline.cli import app
from pipeline.core import project
from pipeline.tools.study import cells, report, rule, spec as study_spec, table

RULE_TEXT = "The variant with the best mean final top-1 of `obcp`,\naveraged over datasets; ties → the first listed."


def _spec(tmp_path: Path, **over) -> study_spec.Spec:
    raw = {
        "title": "Tiny study",
        "seeds": [0, 1],
        "datasets": {"digits": {"params": "params.yaml"}},
        "rule": {"block": "main", "arm": "obcp", "text": RULE_TEXT},
        "blocks": {
            "main": {"why": "two values of lambda_neg", "variants": {"base": {}, "neg": {"loss.lambda_neg": 0.3}}},
            "fig6": {"base": "rule", "arms": ["obcp"], "variants": {"qt1": {"query_times": 1},
                                                                    "qt2": {"query_times": 2}}},
        },
    }
    raw.update(over)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return study_spec.load_spec(path)


# --------------------------------------------------------------------------- spec and cells


def test_committed_spec_is_well_formed():
    s = study_spec.load_spec()
    assert s.rule.block in s.blocks and len(s.seeds) >= 5 and "digits" in s.datasets
    assert s.rule.text and all(b.variants for b in s.blocks.values())


def test_the_rule_may_average_over_some_datasets_only(tmp_path):
    two = {"digits": {"params": "params.yaml"}, "glyphs": {"preset": "glyphs"}}
    s = _spec(tmp_path, datasets=two, rule={"block": "main", "arm": "obcp", "text": RULE_TEXT, "datasets": ["digits"]})
    assert s.rule_datasets == ["digits"] and list(s.datasets) == ["digits", "glyphs"]
    assert _spec(tmp_path, datasets=two).rule_datasets == ["digits", "glyphs"]  # default: every dataset
    with pytest.raises(study_spec.StudyError, match=r"rule.datasets: \['cifar'\] are not datasets"):
        _spec(tmp_path, rule={"block": "main", "arm": "obcp", "text": RULE_TEXT, "datasets": ["cifar"]})


def test_spec_errors_list_every_problem(tmp_path):
    bad = {"seeds": [0, 0], "colour": 1,
           "datasets": {"digits": {"params": "params.yaml", "preset": "cifar10"}},
           "rule": {"block": "main", "arm": "obcp", "text": ""},
           "blocks": {"early": {"base": "rule", "variants": {"a": {}}},
                      "main": {"variants": {"ok": {"arms.obcp.neg_loss": False}, "bad/name": {"seeds": [1]}}}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(study_spec.StudyError) as exc:
        study_spec.load_spec(tmp_path / "s.yaml")
    msg = str(exc.value)
    for needle in ("seeds: duplicates", "colour: unknown key", "exactly one of `params`", "rule.text",
                   "blocks.early.base", "arms.obcp.neg_loss: `arms` cannot be overridden", "bad/name",
                   "seeds: `seeds` cannot be overridden"):
        assert needle in msg, needle
    assert "8 problems" in msg


def test_cells_get_overrides_seeds_and_arms_and_bad_params_are_listed(tmp_path):
    s = _spec(tmp_path)
    main = study_spec.block_cells(s, "main", ROOT)
    assert [c.id for c in main] == ["digits/main/base", "digits/main/neg"]
    neg = main[1]
    assert neg.params["loss"]["lambda_neg"] == 0.3 and neg.params["loss"]["lambda_ctr"] == 0.1
    all_arms = tuple(yaml.safe_load((ROOT / "params.yaml").read_text())["arms"])
    assert neg.params["seeds"] == [0, 1] and neg.arms == all_arms
    fig6 = study_spec.block_cells(s, "fig6", ROOT, picked="neg")
    assert fig6[0].overrides == {"loss.lambda_neg": 0.3, "query_times": 1} and fig6[0].arms == ("obcp",)
    with pytest.raises(study_spec.StudyError, match="has not picked"):
        study_spec.block_cells(s, "fig6", ROOT)
    fresh = _spec(tmp_path, blocks={"main": {"variants": {"a": {}}},
                                    "confirm": {"base": "rule", "seeds": [5, 6], "variants": {"picked": {}}}})
    assert study_spec.block_cells(fresh, "confirm", ROOT, picked="a")[0].params["seeds"] == [5, 6]  # its own seeds
    assert study_spec.block_cells(fresh, "main", ROOT)[0].params["seeds"] == [0, 1]
    s = _spec(tmp_path, blocks={"main": {"arms": ["obcp", "nope"], "variants": {"a": {}}}})
    with pytest.raises(study_spec.StudyError, match=r"arms \['nope'\] are not in"):
        study_spec.block_cells(s, "main", ROOT)
    s = _spec(tmp_path, blocks={"main": {"variants": {"a": {"loss.lambda_neg": -1, "selection.t": 99}}}})
    with pytest.raises(study_spec.StudyError) as exc:
        study_spec.block_cells(s, "main", ROOT)
    assert "digits/main/a: loss.lambda_neg: must be ≥ 0" in str(exc.value)
    assert "digits/main/a: selection.t: t (99) must be ≤ m" in str(exc.value)


def test_a_cell_with_the_settings_of_an_earlier_one_reuses_it(tmp_path, monkeypatch):
    tiny = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY_PARAMS)  # query_times 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny))
    s = _spec(tmp_path)
    study = cells.Study(s, cells.StudyLayout(tmp_path), code="x")
    study.plan_block("main")
    monkeypatch.setattr(study, "pick", lambda: rule.Pick(None, "not decided: results missing", pd.DataFrame()))
    assert study.plan_block("fig6") == [] and "waits for the rule" in study.waiting["fig6"]
    monkeypatch.setattr(study, "pick", lambda: rule.Pick("neg", "neg", pd.DataFrame()))
    study.plan_block("fig6")
    assert "fig6" not in study.waiting
    assert {k: v.id for k, v in study.source.items()} == {"digits/fig6/qt2": "digits/main/neg"}  # query_times 2
    status = study.cells_table().set_index("cell")["status"]
    assert status.to_dict() == {"digits/main/base": "pending", "digits/main/neg": "pending",
                                "digits/fig6/qt1": "pending", "digits/fig6/qt2": "waits for digits/main/neg"}


def test_shared_inputs_are_the_deps_no_stage_writes(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "x", "deps": ["stages/a.py", "pipeline/core/io.py", "reports/answers", "extra/table.csv"],
              "outs": ["data/${dataset.name}"]},
        "b": {"foreach": "${seeds}", "do": {"cmd": "y", "deps": ["data/${dataset.name}/i.parquet", "data/digits/x"],
                                           "metrics": [{"reports/metrics/seed${item}": {"cache": False}}]}},
        "c": {"cmd": "z", "deps": ["reports/metrics"], "outs": [{"reports/index.md": {"cache": False}}]}}}))
    assert project.shared_inputs(tmp_path) == ["reports/answers", "extra/table.csv"]


def test_cli_plan_lists_the_cells(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    result = CliRunner().invoke(app, ["study", "plan", "--spec", str(_spec(tmp_path).path)])
    assert result.exit_code == 0, result.output
    assert "digits/main/neg" in result.output and "waits for the rule" in result.output
    assert not (tmp_path / "data").exists()  # planning creates nothing


# --------------------------------------------------------------------------- rule and report


def _runs() -> pd.DataFrame:
    """A fabricated run table: 2 datasets × main {v1, v2} × arms {obcp, random} × seeds {0, 1, 2}, and fig6."""
    final = {  # (dataset, variant, arm) → final top-1 per seed 0, 1, 2
        ("d1", "v1", "obcp"): [0.80, 0.82, 0.84], ("d1", "v1", "random"): [0.78, 0.81, 0.80],
        ("d1", "v2", "obcp"): [0.90, 0.91, 0.89], ("d1", "v2", "random"): [0.85, 0.86, 0.90],
        ("d2", "v1", "obcp"): [0.60, 0.62, 0.64], ("d2", "v1", "random"): [0.61, 0.60, 0.62],
        ("d2", "v2", "obcp"): [0.55, 0.56, 0.57], ("d2", "v2", "random"): [0.50, 0.52, 0.53],
    }
    rows = []
    for (dataset, variant, arm), top1 in final.items():
        for seed, acc in enumerate(top1):
            for cycle, value in ((0, 0.5), (1, 0.6), (2, acc)):
                rows.append({"dataset": dataset, "block": "main", "variant": variant, "query_times": 2, "arm": arm,
                             "method": "obcp", "strategy": arm, "seed": seed, "cycle": cycle, "top1": value,
                             "bits": 100.0 * (cycle + 1), "yes": 5 * cycle, "asked": 10 * cycle,
                             "selection.auroc": 0.7 + 0.01 * seed if cycle else None})
    for dataset in ("d1", "d2"):
        for qt, top1 in ((1, [0.70, 0.72, 0.74]), (4, [0.75, 0.74, 0.79])):
            for seed, acc in enumerate(top1):
                rows.append({"dataset": dataset, "block": "fig6", "variant": f"qt{qt}", "query_times": qt,
                             "arm": "obcp", "method": "obcp", "strategy": "obcp", "seed": seed, "cycle": qt,
                             "top1": acc, "bits": 300.0, "yes": 5, "asked": 10})
    return table.from_rows(rows)


def _fabricated_spec(tmp_path: Path) -> study_spec.Spec:
    datasets = {"d1": {"params": "params.yaml"}, "d2": {"params": "params.yaml"}}
    return _spec(tmp_path, seeds=[0, 1, 2], datasets=datasets,
                 blocks={"main": {"why": "v2 changes lambda_neg",
                                  "variants": {"v1": {}, "v2": {"loss.lambda_neg": 0.2}}},
                         "fig6": {"base": "rule", "arms": ["obcp"],
                                  "variants": {"qt1": {"query_times": 1}, "qt4": {"query_times": 4}}}})


def test_t_interval_by_hand():
    # d = [0.02, 0.01, 0.04]: mean 0.07/3; sd² = (1/9 + 16/9 + 25/9)·1e-4 / 2 = 7/3·1e-4;
    # half-width = t(0.975, 2) · sd / √3 = 4.302653 · 0.0152753 / 1.7320508 = 0.0379462
    mean, sd, lo, hi = report.t_interval([0.02, 0.01, 0.04])
    assert mean == pytest.approx(0.0233333, abs=1e-7) and sd == pytest.approx(0.0152753, abs=1e-7)
    assert (lo, hi) == (pytest.approx(-0.0146129, abs=1e-6), pytest.approx(0.0612796, abs=1e-6))
    assert math.isnan(report.t_interval([0.1])[2]) and report.t_interval([0.1])[0] == 0.1


def test_paired_differences_by_hand():
    paired = report.paired_arms(_runs(), "obcp").set_index(["dataset", "variant", "arm"])
    row = paired.loc[("d1", "v1", "random")]  # obcp − random per seed: 0.02, 0.01, 0.04 (see above)
    assert row["n"] == 3 and row["diff_mean"] == pytest.approx(0.0233333, abs=1e-7)
    assert (row["lo"], row["hi"]) == (pytest.approx(-0.0146129, abs=1e-6), pytest.approx(0.0612796, abs=1e-6))
    row = paired.loc[("d2", "v2", "random")]  # 0.05, 0.04, 0.04: mean 0.0433333, sd 0.0057735
    # half-width 4.302653 · 0.0057735 / √3 = 0.0143422
    assert (row["lo"], row["hi"]) == (pytest.approx(0.0289911, abs=1e-6), pytest.approx(0.0576755, abs=1e-6))
    fig6 = report.paired_variants(_runs(), "obcp", {"main": "v1", "fig6": "qt1"}).set_index(
        ["dataset", "block", "variant"])
    row = fig6.loc[("d1", "fig6", "qt4")]  # 0.05, 0.02, 0.05: mean 0.04, sd 0.0173205, half 0.0430265
    assert row["versus"] == "qt1" and row["diff_mean"] == pytest.approx(0.04)
    assert (row["lo"], row["hi"]) == (pytest.approx(-0.0030265, abs=1e-6), pytest.approx(0.0830265, abs=1e-6))


def test_rule_picks_by_the_mean_over_datasets_ties_first_and_waits_for_missing_results():
    runs = _runs()
    args = {"block": "main", "arm": "obcp", "datasets": ["d1", "d2"], "seeds": [0, 1, 2]}
    # v1: (0.82 + 0.62) / 2 = 0.72; v2: (0.90 + 0.56) / 2 = 0.73 → v2, although v1 wins on d2
    got = rule.pick(runs, variants=["v1", "v2"], **args)
    assert got.variant == "v2" and got.ranking["mean"].tolist() == pytest.approx([0.72, 0.73])
    tied = runs.copy()
    tied.loc[(tied["variant"] == "v2") & (tied["dataset"] == "d1") & (tied["cycle"] == 2), "top1"] -= 0.02
    assert rule.pick(tied, variants=["v2", "v1"], **args).variant == "v2"  # 0.72 = 0.72: the first listed
    assert rule.pick(tied, variants=["v1", "v2"], **args).variant == "v1"
    close = runs.copy()  # v2 ahead by 0.0008 < 0.1 percentage points: still a tie
    close.loc[(close["variant"] == "v2") & (close["dataset"] == "d1") & (close["cycle"] == 2), "top1"] -= 0.0184
    assert rule.pick(close, variants=["v1", "v2"], **args).variant == "v1"
    partial = runs[~((runs["variant"] == "v1") & (runs["dataset"] == "d2") & (runs["seed"] == 2))]
    waiting = rule.pick(partial, variants=["v1", "v2"], **args)
    assert waiting.variant is None and "v1 (5/6)" in waiting.reason


def test_report_from_a_fabricated_run_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the project root: the spec's datasets read params.yaml here
    s = _fabricated_spec(tmp_path)
    runs_csv = tmp_path / "reports/study/runs.csv"
    table.write_table(runs_csv, _runs())
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    result = CliRunner().invoke(app, ["study", "report", "--spec", str(s.path), "--runs", str(runs_csv),
                                      "--out", str(tmp_path / "reports/study.md")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "reports/study.md").read_text()
    quoted = ("> The variant with the best mean final top-1 of `obcp`,\n"
              "> averaged over datasets; ties → the first listed.")
    assert quoted in text  # verbatim
    assert "| v1 | 82.0 ± 2.0 (n=3) | 79.7 ± 1.5 (n=3) |" in text  # mean ± std (ddof 1) per variant and arm
    assert "| v1 | +2.3 [−1.5, +6.1] (n=3) |" in text  # obcp − random on d1, the interval above
    assert "| qt4 | +4.0 [−0.3, +8.3] (n=3) |" in text  # fig6: qt4 − qt1
    assert "**v2: highest mean final top-1" in text and "| digits" not in text
    assert "| d1 | loss.lambda_neg | 0.1 | 0.2 |" in text  # the params the pick implies
    figs = tmp_path / "reports/study/figures"
    for name in ("main_d1_yes_rate", "main_d2_selection.auroc", "fig6_d1_query_times"):
        assert (figs / f"{name}.png").read_bytes()[:4] == b"\x89PNG" and (figs / f"{name}.csv").is_file(), name
        assert f"study/figures/{name}.png" in text
    auroc = pd.read_csv(figs / "main_d2_selection.auroc.csv")
    assert auroc["selection.auroc"].tolist() == pytest.approx([0.71] * 8)  # mean of 0.70, 0.71, 0.72
    paired = pd.read_csv(tmp_path / "reports/study/paired.csv")
    assert len(paired) == 4 + 2 + 2  # obcp vs random in 4 cells; v2 − v1 and qt4 − qt1 per dataset
    (tmp_path / "bad.csv").write_text("dataset,arm\nd1,obcp\n")
    bad = CliRunner().invoke(app, ["study", "report", "--spec", str(s.path), "--runs", str(tmp_path / "bad.csv")])
    assert bad.exit_code == 2 and "lacks columns" in bad.output

    # before any run: the rule and the grid, no results
    before = CliRunner().invoke(app, ["study", "report", "--spec", str(s.path), "--runs", str(tmp_path / "no.csv"),
                                      "--out", str(tmp_path / "before.md")])
    assert before.exit_code == 0 and "does not exist yet" in before.output, before.output
    text = (tmp_path / "before.md").read_text()
    assert quoted in text and "No finished cells yet." in text and "**not decided: results missing" in text


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_study_run_end_to_end_skips_finished_cells_and_reuses_the_run_cache(tmp_path):
    project = make_project(tmp_path / "p", {"seeds": [0, 1]}, git=False)  # the cells share data/study/.dvc-cache
    params_before = (project / "params.yaml").read_bytes()
    spec = {"seeds": [0, 1], "datasets": {"digits": {"params": "params.yaml"}},
            "rule": {"block": "main", "arm": "obcp", "text": RULE_TEXT},
            "blocks": {"main": {"variants": {"base": {}, "human": {"oracle.kind": "human"}}},
                       "fig6": {"base": "rule", "arms": ["obcp"], "variants": {"qt1": {"query_times": 1}}}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    study = [sys.executable, "-m", "pipeline.cli", "study", "run", "--spec", str(tmp_path / "spec.yaml")]

    first = run([*study, "--only", "digits/main/base"], project)
    assert "[1/3] digits/main/base: done" in first.stdout and "digits/main/human" not in first.stdout
    runs = table.read_table(project / "reports/study/runs.csv")
    assert len(runs) == 2 * 3 and set(runs["variant"]) == {"base"}  # 2 seeds × cycles 0..2 of obcp
    cell = project / "data/study/digits/main/base"
    assert (cell / "dvc.lock").is_file() and (cell / "reports/metrics/seed1/obcp.json").is_file()
    assert (project / "data/study/.dvc-cache/runs").is_dir()  # DVC's run-cache, shared by every cell
    assert (cell / "reports/answers").resolve() == (project / "reports/answers").resolve()  # one answer store

    # a human oracle stops the cell at its first question sheet: a failed cell, reported, the study goes on
    second = run(study, project, check=False)
    out = second.stdout
    assert second.returncode == 2, out + second.stderr
    assert "[1/3] digits/main/base: finished earlier, skipped" in out
    for stage in ("convert", "init_pool@0", "init_pool@1", "pretrain@0", "pretrain@1"):
        assert f"      {stage}: from DVC run-cache" in out, stage  # oracle.kind is no param of theirs
    assert "[2/3] digits/main/human: FAILED (exit" in out and "answers.csv" in out  # the tail of the cell's log
    assert "block fig6: waits for the rule (not decided: results missing for human (0/2)" in out
    assert "1 cell(s) failed: digits/main/human" in second.stderr
    assert len(table.read_table(project / "reports/study/runs.csv")) == 6
    status = pd.read_csv(project / "reports/study/cells.csv").set_index("cell")
    assert status.loc["digits/main/human", "status"] == "failed"
    assert status.loc["digits/main/human", "from_run_cache"] == 5
    assert status.loc["digits/main/base", "stages_ran"] == 11  # validate, convert, 2 × 4 per seed, figures
    assert status.loc["digits/fig6/qt1", "status"].startswith("waits for the rule")
    assert (project / "params.yaml").read_bytes() == params_before and not (project / "data/digits").exists()

    # the cell's folder is lost (another machine, a cleanup): the run table is the record, nothing reruns
    shutil.rmtree(cell)
    third = run([*study, "--only", "digits/main/base"], project)
    assert "[1/3] digits/main/base: finished earlier (recorded in" in third.stdout and not cell.exists()
    assert len(table.read_table(project / "reports/study/runs.csv")) == 6
    status = pd.read_csv(project / "reports/study/cells.csv").set_index("cell")
    assert status.loc["digits/main/base", "status"].startswith("done (recorded in the run table")



def test_a_run_table_without_finished_cells_reads_back_empty(tmp_path):
    """`obcp study run` interrupted before any cell finished writes the table's key columns only;
    the next run reads it as empty instead of refusing it."""
    from pipeline.tools.study import table

    path = tmp_path / "runs.csv"
    table.write_table(path, table.from_rows([]))
    assert table.read_table(path).empty
