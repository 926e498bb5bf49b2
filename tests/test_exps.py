"""`dvc exp show --json` → experiments table, comparison markdown and Fig. 6."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.tools import exps
from tests.conftest import run


def _data(rev: str, timestamp: str | None, query_times: int, metrics: dict) -> dict:
    """One ``data`` block as DVC 3.x prints it (deps/outs trimmed to their shape)."""
    return {
        "rev": rev,
        "timestamp": timestamp,
        "params": {"params.yaml": {"data": {"query_times": query_times, "budget": {"initial": 50, "one_bit": 332}}}},
        "metrics": metrics,
        "deps": {"stages/evaluate.py": {"hash": "a7a38df2f57ce7734860be3b528d941b", "size": 250, "nfiles": None}},
        "outs": {},
        "meta": {},
    }


def _metrics(**arms: tuple[float, float]) -> dict:
    """``{"reports/metrics.json": {"data": {...}}}``: the summary metrics (`summary_metrics`, in
    percent), arm → (top-1 mean, std) as fractions; DVC leaves a null std out."""
    data: dict = {"top1": {arm: round(100 * mean, 1) for arm, (mean, _) in arms.items()},
                  "std": {arm: round(100 * std, 1) for arm, (_, std) in arms.items() if std is not None},
                  "bits": {arm: 498.1 for arm in arms}, "n_seeds": 2}
    return {"reports/metrics.json": {"data": data}} if arms else {}


def _exp(name: str, rev: str, timestamp: str, query_times: int, metrics: dict, executor: dict | None = None,
         error: dict | None = None) -> dict:
    return {"revs": [{"rev": rev, "name": name, "data": _data(rev, timestamp, query_times, metrics),
                      "error": error, "experiments": None}],
            "executor": executor, "name": name}


BASE = "bc2e5eaabb216129abdccfee5592d21c9b3ea793"
# Shape copied from `dvc exp show --json` (DVC 3.67) in a scratch repo: workspace, the
# baseline commit, and its experiments (finished, queued, failed), newest first.
DOC = [
    {"rev": "workspace", "name": None, "error": None, "experiments": None,
     "data": _data("workspace", None, 4, _metrics(obcp=(0.84, 0.014)))},
    {"rev": BASE, "name": "main", "error": None,
     "data": _data(BASE, "2024-05-01T10:00:00", 4, _metrics(obcp=(0.83, 0.014), onebit=(0.70, None))),
     "experiments": [
         _exp("qt-8", "496fda655531e03ea67083d41a1add77a5c66f40", "2024-05-01T10:09:00", 8, {},
              executor={"state": "queued", "name": "dvc-task",
                        "local": {"root": None, "log": None, "pid": None, "returncode": None,
                                  "task_id": "496fda655531e03ea67083d41a1add77a5c66f40"}}),
         _exp("qt-3", "9e519b8a3d644455fbd33f2125543f12c6e80e37", "2024-05-01T10:08:00", 3,
              _metrics(obcp=(0.83, 0.014)),  # DVC shows the baseline's (stale) metrics for a failed run
              executor={"state": "failed", "name": None, "local": {"returncode": 255}},
              error={"msg": "Experiment run failed", "type": ""}),
         _exp("qt-2", "2a343aa6bed21ad6db94df41f8862f735b00bfa4", "2024-05-01T10:05:00", 2,
              _metrics(obcp=(0.79, 0.014), onebit=(0.66, None))),
         _exp("qt-1", "18975934a12c676f7be51182734d5fb84b1ecec0", "2024-05-01T10:02:00", 1,
              _metrics(obcp=(0.73, 0.014))),
         _exp("qt-4", "77aa34aa6bed21ad6db94df41f8862f735b00bf1", "2024-05-01T10:01:00", 4,
              _metrics(obcp=(0.82, 0.014))),
     ]},
]


def test_exps_table_rows():
    frame = exps.exps_table(DOC)
    assert list(frame.columns) == list(exps.COLUMNS)
    assert list(dict.fromkeys(frame["experiment"])) == ["qt-8", "qt-3", "qt-2", "qt-1", "qt-4", "main"]
    status = frame.drop_duplicates("experiment").set_index("experiment")["status"].to_dict()
    assert status == {"qt-8": "queued", "qt-3": "failed", "qt-2": "success", "qt-1": "success",
                      "qt-4": "success", "main": "baseline"}
    done = frame.dropna(subset=["top1"]).set_index(["experiment", "arm"])
    assert done.loc[("qt-1", "obcp"), "top1"] == 0.73 and done.loc[("qt-2", "onebit"), "top1"] == 0.66
    assert done.loc[("main", "obcp"), "top1_std"] == 0.014 and math.isnan(done.loc[("main", "onebit"), "top1_std"])
    assert len(done) == 6 and (done["n_seeds"] == 2).all() and (done["bits"] == 498.1).all()
    queued = frame[frame["experiment"].isin(["qt-8", "qt-3"])]
    assert len(queued) == 2 and queued["top1"].isna().all() and queued["arm"].isna().all()
    assert frame.set_index("experiment")["query_times"].groupby(level=0).first().to_dict() == {
        "qt-8": 8, "qt-3": 3, "qt-2": 2, "qt-1": 1, "qt-4": 4, "main": 4}
    assert (frame["baseline"] == "main").all() and (frame["initial"] == 50).all()
    assert str(frame["n_seeds"].dtype) == "Int64"


def test_exps_table_workspace_optional():
    assert "workspace" not in set(exps.exps_table(DOC)["experiment"])
    with_ws = exps.exps_table(DOC, include_workspace=True)
    assert with_ws["experiment"].iloc[0] == "workspace"  # no timestamp: counted as newest
    assert with_ws[with_ws["experiment"] == "workspace"]["top1"].tolist() == [0.84]
    # a workspace whose outputs are not reproduced for its params has no results of its own
    stale = exps.exps_table(DOC, include_workspace=True, workspace_status="modified")
    assert stale.iloc[0][["experiment", "status"]].tolist() == ["workspace", "modified"]
    assert math.isnan(stale.iloc[0]["top1"])


def test_exps_table_tolerates_missing_fields():
    doc = [{"rev": "abc1234def", "name": None},  # no data at all
           {"rev": "ffff", "name": "b", "data": {"params": {}, "metrics": {
               "reports/metrics.json": {"error": {"type": "JSONDecodeError", "msg": "bad"}},
               "reports/other.json": {"data": {"acc": 1}}}},
            "experiments": [{"revs": []}, {"name": "x", "revs": [{"rev": "1234567890", "data": None}]}]}]
    frame = exps.exps_table(doc)
    assert frame["experiment"].tolist() == ["abc1234", "b", "x"]
    assert frame["top1"].isna().all() and frame["query_times"].isna().all()


def test_comparison_table_and_report(tmp_path):
    paths = exps.build_exps_report(DOC, tmp_path / "exps")
    assert [p.name for p in paths] == ["exps.csv", "exps.md", "query_times.png", "query_times.csv"]
    assert all(p.is_file() for p in paths)
    assert (tmp_path / "exps" / "query_times.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig6 = pd.read_csv(tmp_path / "exps" / "query_times.csv")
    obcp = fig6[fig6["arm"] == "obcp"].set_index("query_times")
    assert obcp.index.tolist() == [1, 2, 4]  # failed qt-3 and queued qt-8 have no results
    assert obcp["top1"].tolist() == pytest.approx([0.73, 0.79, 0.82])  # qt-4 (newer) wins over main (0.83)
    assert obcp["top1_std"].tolist() == pytest.approx([0.014] * 3)
    assert fig6[fig6["arm"] == "onebit"]["query_times"].tolist() == [2, 4]
    md = (tmp_path / "exps" / "exps.md").read_text()
    assert "| qt-1 | success | 1 | 50 | 73.0 ± 1.4 (n=2) | — |" in md
    assert "| main | baseline | 4 | 50 | 83.0 ± 1.4 (n=2) | 70.0 (n=2) |" in md
    assert "| qt-8 | queued | 8 | 50 | — | — |" in md
    assert "| qt-3 | failed | 3 | 50 | — | — |" in md
    assert "query_times.png" in md
    table = pd.read_csv(tmp_path / "exps" / "exps.csv")
    assert len(table) == len(exps.exps_table(DOC))


def test_terminal_table_fits_the_width():
    """`obcp exps`: every arm of every experiment within `width` columns; the std goes first,
    then arms move to a further table, never into an ellipsis."""
    import io

    arms = {f"arm_number_{i}": (0.8 + i / 100, 0.012) for i in range(11)}
    doc = [{"rev": BASE, "name": "main", "error": None, "data": _data(BASE, "2024-05-01T10:00:00", 4, _metrics(**arms)),
            "experiments": [_exp("query_times-2", "2a343aa6bed21ad6db94df41f8862f735b00bfa4", "2024-05-01T10:05:00", 2,
                                 _metrics(**arms))]}]
    for width in (240, 160, 80):  # long arm names: one table only at 240
        buf = io.StringIO()
        exps.print_exps(doc, include_workspace=False, width=width, file=buf)
        text = buf.getvalue()
        assert max(map(len, text.splitlines())) <= width, text
        tables = sum(line.startswith("experiment ") for line in text.splitlines())
        assert (tables == 1) == (width == 240) and "…" not in text, text
        for arm, (mean, _) in arms.items():
            assert arm in text and f"{100 * mean:.1f}" in text
        assert ("±1.2" in text) == (width == 240), text  # the std only where it fits
        assert "  query_times-2  query_times=2" in text  # indented under its baseline, with what changed


def test_parse_errors(tmp_path):
    with pytest.raises(exps.ExpsError, match="not JSON"):
        exps.parse_exp_show("ERROR: not a repo")
    with pytest.raises(exps.ExpsError, match="DVC 3.x"):
        exps.parse_exp_show(json.dumps({"workspace": {}}))
    with pytest.raises(exps.ExpsError, match="dvc exp show --json >"):
        exps.load_exp_show(tmp_path / "missing.json")
    (tmp_path / "doc.json").write_text(json.dumps(DOC))
    assert exps.load_exp_show(tmp_path / "doc.json") == DOC
    with pytest.raises(exps.ExpsError, match="not on PATH"):
        exps.run_exp_show(tmp_path, dvc=str(tmp_path / "no-such-dvc"))


DEFAULT_ARMS = list(__import__("yaml").safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["arms"])


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_run_exp_show_real_dvc(tmp_path):
    """The installed DVC's document parses: `dvc exp show --json` holds the summary metrics'
    nested `top1.<arm>` keys (as the figures stage writes them, every default arm), a
    commit of the earlier flat format still reads, and `obcp exps` prints every arm's top-1
    in at most 160 columns."""
    import sys

    from pipeline.reporting.results import summary_metrics

    dvc = str(Path(sys.executable).parent / "dvc")
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "t@t"], repo)
    run(["git", "config", "user.name", "t"], repo)
    run([dvc, "init", "-q"], repo)
    (repo / "params.yaml").write_text("query_times: 2\n")
    (repo / "reports" / "metrics.json").write_text(json.dumps(  # the flat format of earlier commits
        {"obcp": 0.9, "onebit": 0.7, "top1_std": {"obcp": 0.01, "onebit": None},
         "bits": {"obcp": 10.0, "onebit": 10.0}, "n_seeds": 3}))
    (repo / "dvc.yaml").write_text(
        "stages:\n  figures:\n    cmd: 'true'\n    params: [query_times]\n"
        "    metrics:\n      - reports/metrics.json:\n          cache: false\n")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "flat"], repo)
    summary = pd.DataFrame({"arm": DEFAULT_ARMS, "top1_mean": [0.9 + i / 1000 for i in range(len(DEFAULT_ARMS))],
                            "top1_std": [0.01] * (len(DEFAULT_ARMS) - 1) + [math.nan],
                            "bits": [498.1] * len(DEFAULT_ARMS), "n_seeds": 3})
    (repo / "reports" / "metrics.json").write_text(json.dumps(summary_metrics(summary)))
    (repo / "params.yaml").write_text("query_times: 4\n")
    run(["git", "commit", "-qam", "nested"], repo)

    doc = exps.run_exp_show(repo, dvc=dvc)
    head = [c for c in doc if c["rev"] != "workspace"][0]["data"]["metrics"]["reports/metrics.json"]["data"]
    assert list(head["top1"]) == DEFAULT_ARMS and head["top1"]["obcp"] == 90.0  # percent, nested per arm
    assert list(head["std"]) == DEFAULT_ARMS[:-1]  # a null std is left out by DVC
    assert set(head) == {"top1", "std", "bits", "n_seeds"}
    frame = exps.exps_table(doc)
    rows = {r["arm"]: r for _, r in frame.iterrows()}
    assert sorted(rows) == sorted(DEFAULT_ARMS)
    assert (rows["obcp"]["status"], rows["obcp"]["query_times"], rows["obcp"]["top1"], rows["obcp"]["top1_std"],
            rows["obcp"]["n_seeds"], rows["obcp"]["bits"]) == ("baseline", 4, 0.9, 0.01, 3, 498.1)
    assert math.isnan(rows[DEFAULT_ARMS[-1]]["top1_std"])

    flat = exps.exps_table(exps.run_exp_show(repo, dvc=dvc, all_commits=True))
    old = {r["arm"]: r for _, r in flat[flat["query_times"] == 2].iterrows()}
    assert sorted(old) == ["obcp", "onebit"]
    assert (old["obcp"]["top1"], old["obcp"]["top1_std"]) == (0.9, 0.01) and math.isnan(old["onebit"]["top1_std"])

    out = run([sys.executable, "-m", "pipeline.cli", "exps", "--width", "160", "-A"], repo).stdout
    lines = out.splitlines()
    assert max(map(len, lines)) <= 160, out
    header = next(line for line in lines if line.startswith("experiment"))
    assert header.split()[-len(DEFAULT_ARMS):] == DEFAULT_ARMS, out  # every arm, one table
    assert "changed params" in header and "query_times=2" in out and "query_times=4" in out
    assert "90.0" in out and "…" not in out  # every arm's mean; its ±std only where the width allows
    assert ("90.0 ±1.0" in out) == ("mean ±std" in out)
    assert exps.workspace_status(repo, dvc=dvc) == "modified"  # the stage never ran: no dvc.lock
    run([dvc, "commit", "-f", "-q"], repo)
    assert exps.workspace_status(repo, dvc=dvc) == "workspace"
    # a stage that runs on every repro (like `validate`) is "always changed": not a modified workspace
    with open(repo / "dvc.yaml", "a") as fh:
        fh.write("  check:\n    cmd: 'true'\n    always_changed: true\n")
    run([dvc, "commit", "-f", "-q"], repo)
    assert "always changed" in run([dvc, "status"], repo).stdout
    assert exps.workspace_status(repo, dvc=dvc) == "workspace"
    with pytest.raises(exps.ExpsError, match="failed"):
        exps.run_exp_show(tmp_path, dvc=dvc)  # not a git/DVC repo
