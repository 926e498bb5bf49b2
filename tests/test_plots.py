"""Figures: each writes a valid PNG and the CSV behind it; the CSVs hold the expected series."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.pool import ledger
from pipeline.reporting import plots as P
from pipeline.reporting import results as R
from pipeline.core.config import ArmParams

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000, f"{path} is not a non-trivial PNG"


def results_frame(arms: dict[str, tuple[str, str]], top1: dict[tuple[str, int], list[float]],
                  switches_off: dict[str, str] | None = None) -> pd.DataFrame:
    """A results table like `collect` returns: arms name → (method, strategy), 3 cycles per seed."""
    rows = []
    for arm, (method, strategy) in arms.items():
        for seed in (0, 1):
            for cycle, acc in enumerate(top1[(arm, seed)]):
                row = {"arm": arm, "seed": seed, "method": method, "strategy": strategy, "cycle": cycle,
                       "bits": 166.1 + 83 * cycle, "labeled_equiv_pct": 3.48 + 1.74 * cycle, "top1": acc,
                       "yes": [0, 40 + seed, 50 + 2 * seed][cycle], "asked": [0, 83, 83][cycle]}
                row.update({k: k != (switches_off or {}).get(arm) for k in R.SWITCHES})
                rows.append(row)
    return R.from_rows(rows)


TOP1 = {("obcp", 0): [0.50, 0.60, 0.70], ("obcp", 1): [0.52, 0.64, 0.74],
        ("onebit", 0): [0.50, 0.55, 0.60], ("onebit", 1): [0.52, 0.57, 0.66]}


@pytest.fixture
def two_arms() -> pd.DataFrame:
    return results_frame({"obcp": ("obcp", "obcp"), "onebit": ("onebit", "obcp")}, TOP1)


def test_accuracy_vs_labels_csv_by_hand(two_arms, tmp_path):
    png = P.accuracy_vs_labels(two_arms, tmp_path / "acc.png")
    assert png == tmp_path / "acc.png"
    assert_png(png)
    csv = pd.read_csv(tmp_path / "acc.csv")
    assert list(csv.columns) == list(P.CURVE_COLUMNS)
    assert csv["arm"].tolist() == ["obcp"] * 3 + ["onebit"] * 3
    obcp = csv[csv["arm"] == "obcp"]
    assert obcp["top1"].tolist() == pytest.approx([0.51, 0.62, 0.72])
    assert obcp["top1_std"].tolist() == pytest.approx([np.std([a, b], ddof=1) for a, b in
                                                       zip(TOP1[("obcp", 0)], TOP1[("obcp", 1)])])
    assert obcp["labeled_equiv_pct"].tolist() == pytest.approx([3.48, 5.22, 6.96])
    assert (csv["n_seeds"] == 2).all()


def test_selection_quality_csv_by_hand(two_arms, tmp_path):
    frame = two_arms.copy()
    obcp = frame["arm"] == "obcp"
    for q, values in {"auroc_wrong": (0.6, 0.8), "yes_rate": (0.5, 0.7)}.items():
        frame.loc[obcp & (frame["cycle"] == 1), f"selection.{q}"] = [values[s] for s in frame[obcp & (
            frame["cycle"] == 1)]["seed"]]
    assert_png(P.selection_quality(frame, tmp_path / "sq.png"))
    csv = pd.read_csv(tmp_path / "sq.csv").set_index(["arm", "cycle", "quantity"])
    assert len(csv) == 2  # only what is defined: obcp, cycle 1, two numbers
    assert csv.loc[("obcp", 1, "auroc_wrong"), "mean"] == pytest.approx(0.7)
    assert csv.loc[("obcp", 1, "auroc_wrong"), "std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert csv.loc[("obcp", 1, "yes_rate"), "n_seeds"] == 2
    assert_png(P.selection_quality(two_arms, tmp_path / "none.png"))  # no numbers: a page that says so


def test_selection_strategies_only_present_arms(tmp_path):
    top1 = {**{k: v for k, v in TOP1.items() if k[0] == "obcp"},
            ("random", 0): [0.5, 0.55, 0.58], ("random", 1): [0.5, 0.56, 0.6],
            ("no_nloss", 0): [0.5, 0.5, 0.5], ("no_nloss", 1): [0.5, 0.5, 0.5]}
    frame = results_frame({"obcp": ("obcp", "obcp"), "random": ("obcp", "random"),
                           "no_nloss": ("obcp", "obcp")}, top1, switches_off={"no_nloss": "neg_loss"})
    assert_png(P.selection_strategies(frame, tmp_path / "sel.png"))
    csv = pd.read_csv(tmp_path / "sel.csv")
    assert list(dict.fromkeys(csv["arm"])) == ["obcp", "random"]  # the ablation arm is not a strategy
    assert csv[csv["arm"] == "random"]["top1"].tolist() == pytest.approx([0.5, 0.555, 0.59])


def test_figure_with_no_matching_arms_does_not_crash(tmp_path):
    frame = results_frame({"onebit": ("onebit", "obcp")}, {k: v for k, v in TOP1.items() if k[0] == "onebit"})
    assert_png(P.selection_strategies(frame, tmp_path / "sel.png"))
    assert pd.read_csv(tmp_path / "sel.csv").empty
    assert_png(P.ablations(frame, {"onebit": ArmParams(method="onebit")}, tmp_path / "abl.png"))
    assert "No full obcp arm" in (tmp_path / "abl.md").read_text()
    assert_png(P.query_times(pd.DataFrame(columns=["query_times", "arm", "top1", "top1_std"]), tmp_path / "qt.png"))


def test_equal_bits_and_ablations_tables(two_arms, tmp_path):
    png = P.equal_bits(two_arms, tmp_path / "eq.png")
    assert_png(png)
    csv = pd.read_csv(tmp_path / "eq.csv")
    assert csv["method"].tolist() == ["onebit", "obcp"]
    assert csv["top1_mean"].tolist() == pytest.approx([0.63, 0.72])
    md = (tmp_path / "eq.md").read_text()
    assert "| onebit | onebit |" in md and "| obcp | obcp |" in md

    top1 = {**TOP1, ("no_nctr", 0): [0.5, 0.6, 0.68], ("no_nctr", 1): [0.5, 0.6, 0.70]}
    frame = results_frame({"obcp": ("obcp", "obcp"), "onebit": ("onebit", "obcp"),
                           "no_nctr": ("obcp", "obcp")}, top1, switches_off={"no_nctr": "neg_ctr"})
    arms = {"obcp": ArmParams(), "onebit": ArmParams(method="onebit"), "no_nctr": ArmParams(neg_ctr=False)}
    assert_png(P.ablations(frame, arms, tmp_path / "abl.png"))
    table = pd.read_csv(tmp_path / "abl.csv")
    assert table["arm"].tolist() == ["no_nctr", "obcp"]
    assert table["delta"].tolist() == pytest.approx([0.69 - 0.72, 0.0])
    assert "| no_nctr | ✓ | ✓ | ✗ | ✓ | 69.0 ± 1.4 (−3.0) | 2 |" in (tmp_path / "abl.md").read_text()


def _ledger(arm: str, seed: int, asked: list[int], truth: list[int]) -> pd.DataFrame:
    q = pd.DataFrame({"sample_id": range(len(asked)), "asked_class": asked,
                      "answer": np.array(asked) == np.array(truth), "score": 1.0, "rank": range(1, len(asked) + 1)})
    return ledger.ledger_rows(q, cycle=1, epoch=2, strategy="obcp", oracle="simulated", arm=arm, seed=seed)


def _full_ledger(labels: list[int]) -> pd.DataFrame:
    q = pd.DataFrame({"sample_id": range(len(labels)), "label": labels, "score": 1.0,
                      "rank": range(1, len(labels) + 1)})
    return ledger.ledger_rows(q, cycle=1, epoch=2, strategy="entropy", oracle="simulated", arm="fullbit",
                              seed=0, kind="full")


def test_class_queries_counts(tmp_path):
    ledgers = {
        "obcp": pd.concat([_ledger("obcp", 0, [0, 1, 1, 2], [0, 1, 2, 0]), _ledger("obcp", 1, [2], [2])]),
        "fullbit": _full_ledger([1, 1, 2]),
        "empty": ledger.empty(),
    }
    png = P.class_queries(ledgers, tmp_path / "cls.png", num_classes=4, class_names=["a", "b", "c", "d"])
    assert_png(png)
    csv = pd.read_csv(tmp_path / "cls.csv")
    assert list(dict.fromkeys(csv["arm"])) == ["obcp", "fullbit"]
    obcp = csv[csv["arm"] == "obcp"]
    assert obcp["asked"].tolist() == [1, 2, 2, 0]
    assert obcp["yes"].tolist() == [1, 1, 1, 0]
    assert obcp["full"].tolist() == [0, 0, 0, 0] and (obcp["n_seeds"] == 2).all()
    full = csv[csv["arm"] == "fullbit"]
    assert full["asked"].sum() == 0 and full["full"].tolist() == [0, 2, 1, 0]
    assert csv["class_name"].tolist()[:4] == ["a", "b", "c", "d"]


def test_class_queries_is_one_compact_figure(tmp_path):
    """Eleven arms × ten classes: one heatmap row (not one panel per arm), wider than tall,
    redrawn from its CSV alone."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = [{"arm": f"arm{a}", "class": c, "class_name": f"c{c}", "asked": int(n), "yes": int(n) // 2, "full": 0,
             "n_seeds": 3} for a in range(10) for c, n in enumerate(rng.integers(0, 200, 10))]
    rows += [{"arm": "fullbit", "class": c, "class_name": f"c{c}", "asked": 0, "yes": 0, "full": 5 + c, "n_seeds": 3}
             for c in range(10)]
    pd.DataFrame(rows).to_csv(tmp_path / "cls.csv", index=False)
    png = P.draw_class_queries(pd.read_csv(tmp_path / "cls.csv"), tmp_path / "cls.png")
    assert_png(png)
    width, height = Image.open(png).size
    assert width > height and height < 900, (width, height)  # it was 853 × 2917


def test_query_times_csv(tmp_path):
    frame = pd.DataFrame({  # exps_table rows, newest first
        "query_times": [4, 1, 2, 4, 8, 2],
        "arm": ["obcp", "obcp", "obcp", "obcp", None, "onebit"],
        "top1": [0.80, 0.61, 0.72, 0.10, np.nan, 0.5],  # (obcp, 4) twice: the first (newest) wins
        "top1_std": [0.01, 0.02, np.nan, 0.0, np.nan, 0.03],
        "n_seeds": [2, 2, 1, 2, None, 3],
    })
    assert_png(P.query_times(frame, tmp_path / "qt.png"))
    csv = pd.read_csv(tmp_path / "qt.csv")
    assert csv["arm"].tolist() == ["obcp"] * 3 + ["onebit"]
    assert csv["query_times"].tolist() == [1, 2, 4, 2]
    assert csv["top1"].tolist() == pytest.approx([0.61, 0.72, 0.80, 0.5])
    assert csv["n_seeds"].tolist() == [2, 1, 2, 3]


def test_every_arm_gets_its_own_look():
    default = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["arms"]
    styles = P.arm_styles(list(default))
    assert len({st.color for st in styles.values()}) == len(default)  # the default arms: distinct colours
    assert all(st.dash == "-" for st in styles.values())
    assert "#7f7f7f" not in {st.color for st in styles.values()}  # no grey arm
    for n in (25, 60):  # past the palette: the colours again, dashed; then a colormap
        many = P.arm_styles([f"arm{i}" for i in range(n)])
        assert len({(st.color, st.dash) for st in many.values()}) == n
    assert P.arm_styles(["a", "b"])["b"] == P.arm_styles(["a", "b", "c"])["b"]  # by position, stable


def test_accuracy_axes_stop_at_100():
    assert P.percent_limits([96.0], [99.5]) == (95.0, 100.0)  # 99.5 + margin would round up to 105
    assert P.percent_limits([0.5], [30.0]) == (0.0, 35.0)
    rows = [{"arm": "obcp", "seed": s, "method": "obcp", "strategy": "obcp", "cycle": c, "bits": 1.0 + c,
             "labeled_equiv_pct": 1.0 + c, "top1": [0.97, 0.99][c] - 0.02 * s, "yes": 0, "asked": 0}
            for s in (0, 1) for c in (0, 1)]
    frame = R.from_rows(rows)
    assert P.curve_limits(frame)[1] == 100.0 and P.bar_limits(frame)[1] == 100.0
    bottom, top = P.bar_limits(frame)
    low = 100 * (0.98 - np.std([0.99, 0.97], ddof=1))
    assert low - bottom >= 0.1 * (top - bottom)  # room for the value labels under the error bars


def test_bar_labels_clear_of_error_bars():
    """Drawn, then measured in pixels: no value label overlaps any error bar."""
    fig = P._figure(5.0, 4.0)
    ax = fig.add_subplot()
    means, stds = np.array([0.932, 0.969, 0.974, 0.50]), np.array([0.013, 0.013, 0.011, 0.02])
    styles = list(P.arm_styles(["a", "b", "c", "d"]).values())
    P._bars(ax, ["a", "b", "c", "d"], means, stds, styles, P.percent_limits([45.0], [99.0], margin=2.5))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text() in {"93.2", "96.9", "97.4", "50.0"}]
    assert len(labels) == 4
    boxes = [t.get_window_extent(renderer) for t in labels]
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    assert len(segments) == 4  # one vertical error bar per bar
    caps = [line for line in ax.lines]  # the cap markers
    for box in boxes:
        for seg in segments:
            (x0, y0), (x1, y1) = ax.transData.transform(seg)
            inside_x = box.x0 - 2 <= x0 <= box.x1 + 2
            assert not (inside_x and min(y0, y1) < box.y1 and max(y0, y1) > box.y0), "a label crosses an error bar"
        for cap in caps:
            for x, y in ax.transData.transform(cap.get_xydata()):
                assert not (box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1), "a label covers an error bar's cap"
    assert ax.get_ylim()[1] <= 100.0


def test_every_figure_is_a_dvc_plot():
    """dvc.yaml registers each figure of the report as an image plot (static: renders offline)."""
    import yaml

    plots = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["plots"]
    assert plots == [f"reports/figures/{name}.png" for name in P.FIGURES]


def test_figures_are_deterministic(two_arms, tmp_path):
    a = P.accuracy_vs_labels(two_arms, tmp_path / "a" / "acc.png").read_bytes()
    b = P.accuracy_vs_labels(two_arms, tmp_path / "b" / "acc.png").read_bytes()
    assert a == b


def test_write_report_index_links_every_figure(two_arms, tmp_path):
    arms = {"obcp": ArmParams(), "onebit": ArmParams(method="onebit")}
    ledgers = {"obcp": _ledger("obcp", 0, [0, 1], [0, 0]), "onebit": _ledger("onebit", 0, [1], [1])}
    index = P.write_report(two_arms, arms, ledgers, tmp_path / "reports", num_classes=2)
    assert index == tmp_path / "reports" / "index.md"
    text = index.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    names = set(P.FIGURES)  # one yes-rate figure: the selection-quality panel
    assert names == {"accuracy_vs_labels", "selection_strategies", "equal_bits", "ablations", "selection_quality",
                     "class_queries"}
    assert [Path(i).stem for i in images] == list(P.FIGURES)
    for rel in images:
        assert not Path(rel).is_absolute()
        assert_png(index.parent / rel)
        assert (index.parent / rel).with_suffix(".csv").is_file()
        assert f"({Path(rel).with_suffix('.csv').as_posix()})" in text
    pngs = {p.stem for p in (tmp_path / "reports" / "figures").glob("*.png")}
    assert pngs == names  # every figure written is on the page
    assert "| obcp | obcp | obcp | 2 | 332.1 | 6.96 | 72.0 ± 2.8 |" in text  # final summary
    back = R.read_results(tmp_path / "reports" / "results.csv")
    assert len(back) == len(two_arms) and back["top1"].tolist() == pytest.approx(two_arms["top1"].tolist())
    assert not (tmp_path / "reports" / "figures" / "curves").exists()


def _stage_project(root: Path, two_arms: pd.DataFrame) -> Path:
    """A project folder with params, fabricated metrics, ledgers and classes.json for `stages.figures`."""
    import yaml

    params = {"seeds": [0, 1], "arms": {"obcp": {"method": "obcp", "strategy": "obcp"},
                                         "onebit": {"method": "onebit", "strategy": "obcp"}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data" / "digits").mkdir(parents=True)
    (root / "data" / "digits" / "classes.json").write_text(json.dumps({
        "classes": [str(i) for i in range(10)], "num_classes": 10, "image_shape": [8, 8, 1], "dataset": "digits",
        "storage": "raw", "mean": [0.5], "std": [0.5]}))
    for (arm, seed), g in two_arms.groupby(["arm", "seed"]):
        points = [{k: (int(r[k]) if k in ("cycle", "yes", "asked") else float(r[k]))
                   for k in ("cycle", "bits", "labeled_equiv_pct", "top1", "yes", "asked")} for _, r in g.iterrows()]
        path = root / "reports" / "metrics" / f"seed{seed}" / f"{arm}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"arm": arm, "seed": int(seed), "method": g["method"].iloc[0],
                                    "strategy": "obcp", "points": points}))
        ledger.append(root / "reports" / "ledger" / f"seed{seed}" / f"{arm}.parquet", _ledger(arm, int(seed), [3, 4], [3, 5]))
    return root


def test_figures_stage_end_to_end(two_arms, tmp_path):
    import sys

    from tests.conftest import run

    root = _stage_project(tmp_path, two_arms)
    reports = root / "reports"
    (reports / "figures").mkdir()
    stale = [reports / ".results.csv.k2x_9abc.tmp", reports / "figures" / ".yes_rate.png.0a1b2c3d.tmp"]
    kept = [reports / "ledger" / ".obcp.parquet.0a1b2c3d.tmp",  # another stage's folder
            reports / ".notes.tmp", reports / "figures" / "draft.tmp"]  # not atomic_path's pattern
    for path in stale + kept:
        path.write_text("left by a killed write")
    out = run([sys.executable, "-m", "stages.figures"], root)
    assert "reports/index.md" in out.stdout
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert out.stdout.count("the temporary file of an interrupted write") == 2
    summary = json.loads((reports / "metrics.json").read_text())  # what `dvc exp show` shows, in percent
    assert summary == {"top1": {"obcp": 72.0, "onebit": 63.0}, "std": {"obcp": 2.8, "onebit": 4.2},
                       "bits": {"obcp": 332.1, "onebit": 332.1}, "n_seeds": 2}
    text = (root / "reports" / "index.md").read_text()
    head = text.split("## ")[0]  # the page opens with what produced it
    assert "- **Dataset:** digits (10 classes)" in head and "seeds 0, 1" in head
    from pipeline.reporting.provenance import params_file_hash

    assert f"hash {params_file_hash(root / 'params.yaml')}" in head
    assert re.search(r"- \*\*Machine:\*\* .+ \d+ CPU\(s\)", head)
    assert re.search(r"- \*\*Date:\*\* \d{4}-\d\d-\d\d \d\d:\d\d UTC", head)
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert_png(root / "reports" / rel)
    assert len(pd.read_csv(root / "reports" / "results.csv")) == 12
    cls = pd.read_csv(root / "reports" / "figures" / "class_queries.csv")
    assert len(cls) == 2 * 10 and cls.groupby("arm")["asked"].sum().tolist() == [4, 4]

    (root / "reports" / "metrics" / "seed1" / "onebit.json").unlink()
    failed = run([sys.executable, "-m", "stages.figures"], root, check=False)
    assert failed.returncode == 2
    assert "seed1/onebit.json" in failed.stderr and "dvc repro evaluate" in failed.stderr
