"""Generated regions of README.md and docs/*.md, rendered from the committed reports.

A page marks a region with two HTML comments (invisible on GitHub and on the site)::

    <!-- generated: results -->
    ...whatever the renderer `results` writes...
    <!-- /generated -->

`fill` re-renders every region of a text; `python -m pipeline.tools.docs` does it for every
page, and `tests/test_docs.py` fails while a committed page differs from its re-rendering.
So a number in a generated region is the committed report's number, whatever machine made
the report: after `dvc repro` the README's table is one command away.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from pipeline.reporting.results import final_summary, pct, read_results, signed_pct, strategy_arms
from pipeline.tools.study.fig4 import verdict  # the studies' rule for a claim on a paired difference

REGION = re.compile(
    r"(?P<open><!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /generated -->)", re.S
)


@dataclass(frozen=True)
class Page:
    """Where a region is rendered: the repository root and the page's path under it."""

    root: Path
    path: Path  # relative to root, e.g. README.md or docs/results.md

    def link(self, target: str) -> str:
        """`target` (a path from the root) as a link from this page.

        Pages under docs/ reach reports/ through the ``docs/reports`` link, which the site includes.
        """
        if self.path.parts[0] == "docs" and target.startswith("reports/"):
            target = "docs/" + target
        return Path(os.path.relpath(self.root / target, (self.root / self.path).parent)).as_posix()


Renderer = Callable[[Page], str]
RENDERERS: dict[str, Renderer] = {}


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    def register(fn: Renderer) -> Renderer:
        RENDERERS[name] = fn
        return fn
    return register


class RegionError(ValueError):
    """A page names a region nobody renders, or a renderer's report is missing."""


def fill(text: str, page: Page) -> str:
    """`text` with every generated region re-rendered."""
    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise RegionError(f"{page.path}: unknown generated region {name!r} (known: {', '.join(RENDERERS)})")
        body = RENDERERS[name](page).rstrip("\n") + "\n"
        return m.group("open") + body + m.group("close")
    return REGION.sub(one, text)


def regions(text: str) -> list[tuple[int, int]]:
    """(start, end) line numbers (1-based, inclusive) of every generated region in `text`."""
    out = []
    for m in REGION.finditer(text):
        start = text.count("\n", 0, m.start()) + 1
        out.append((start, start + m.group(0).count("\n")))
    return out


# --------------------------------------------------------------------------- helpers

METHOD_TEXT = {
    "obcp": "ObCP",
    "onebit": "Hu et al.'s one-bit supervision",
    "fullbit": "full labels at equal bits",
}
STRATEGY_TEXT = {
    "obcp": "Eq. 7",
    "eig": "ALPF's question choice (`eig`)",
    "expected_gain": "the answers' measured worth (`expected_gain`)",
    "random": "random",
    "max": "least confidence (`max`)",
    "diff2": "margin (`diff2`)",
    "entropy": "entropy",
}
SWITCH_TEXT = {
    "yes_in_sup": "*yes* not in L_sup",
    "yes_in_ctr": "*yes* not in the contrastive terms",
    "neg_ctr": "no hard negatives (L_c.n)",
    "neg_loss": "no L_neg",
}


def _arm_text(row: pd.Series) -> str:
    """One line on what an arm is, from its settings in results.csv."""
    off = [text for key, text in SWITCH_TEXT.items() if key in row.index and not _true(row[key])]
    method = METHOD_TEXT.get(row["method"], f"`{row['method']}`")
    strategy = STRATEGY_TEXT.get(row["strategy"], f"`{row['strategy']}`")
    if off:
        return f"{method} with " + ", ".join(off)
    return f"{method}, {strategy} selection"


def _true(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


def _read(page: Page, rel: str) -> Path:
    path = page.root / rel
    if not path.is_file():
        raise RegionError(f"{page.path}: its generated region needs {rel}, which does not exist")
    return path


def _duration(seconds: float) -> str:
    """``155`` → ``2 min 35 s``; under a minute ``42 s``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def _thousands(n: float) -> str:
    """``11221.09`` → ``11 221`` (the reports' style: a space between thousands)."""
    return f"{n:,.0f}".replace(",", " ")


def _interval(row: pd.Series) -> str:
    return f"{signed_pct(row['diff_mean'])} [{signed_pct(row['lo'])}, {signed_pct(row['hi'])}]"


# --------------------------------------------------------------------------- results of the default run


@renderer("results")
def render_results(page: Page) -> str:
    """The default run's final accuracy per arm (reports/results.csv)."""
    results = read_results(_read(page, "reports/results.csv"))
    summary = final_summary(results)
    info = results.drop_duplicates("arm").set_index("arm")
    seeds = sorted(int(s) for s in results["seed"].unique())
    params = yaml.safe_load(_read(page, "params.yaml").read_text())
    dataset = (params.get("dataset") or {}).get("name", "?")
    cycles = int(summary["cycle"].max())
    obcp = summary[summary["arm"] == "obcp"]
    ref = obcp.iloc[0] if len(obcp) else summary.iloc[0]
    lines = [
        "| arm | what it is | top-1 % |",
        "|---|---|---|",
    ]
    for row in summary.itertuples(index=False):
        lines.append(f"| `{row.arm}` | {_arm_text(info.loc[row.arm])} | {pct(row.top1_mean, row.top1_std)} |")
    lines += [
        "",
        f"Test top-1 after {cycles} query cycles on `{dataset}`, mean ± std over {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}); every arm spends the same bits ({ref.bits:.0f}, "
        f"{ref.labeled_equiv_pct:.1f} % of the train set's labels' worth). "
        f"From [`reports/results.csv`]({page.link('reports/results.csv')}); "
        f"figures and tables in [`reports/index.md`]({page.link('reports/index.md')}).",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the paper's claims (study, block confirm)

# (claim, block, arm whose paired difference answers it, kind): kind ">" holds when the 95 %
# interval of obcp − arm lies above 0; "≥" holds when the mean is ≥ 0 and fails when the
# interval lies below 0 (the study's pre-registered criteria, pipeline/tools/study/study.yaml).
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("obcp ≥ random (Fig. 5)", "confirm", "random", "≥"),
    ("obcp ≥ max (Fig. 5)", "confirm", "max", "≥"),
    ("obcp ≥ diff2 (Fig. 5)", "confirm", "diff2", "≥"),
    ("obcp ≥ entropy (Fig. 5)", "confirm", "entropy", "≥"),
    ("obcp > onebit (Table 3)", "confirm", "onebit", ">"),
    ("obcp ≥ fullbit at equal bits (Table 3)", "confirm", "fullbit", "≥"),
    ("obcp > no_nctr (Table 4)", "confirm", "no_nctr", ">"),
    ("obcp > no_nloss (Table 4)", "confirm", "no_nloss", ">"),
    ("obcp > no_ysup (Table 4)", "confirm", "no_ysup", ">"),
    ("4 query times ≥ 1 (Fig. 6)", "fig6", "qt4", "≥"),
)




def _paired(page: Page) -> pd.DataFrame:
    return pd.read_csv(_read(page, "reports/study/paired.csv"))


def _claim_row(paired: pd.DataFrame, dataset: str, block: str, who: str) -> pd.Series | None:
    rows = paired[(paired["dataset"] == dataset) & (paired["block"] == block)]
    rows = rows[rows["arm"] == who] if block == "confirm" else rows[rows["variant"] == who]
    return rows.iloc[0] if len(rows) else None


@renderer("claims")
def render_claims(page: Page) -> str:
    """The paper's claims judged on the study's fresh seeds (reports/study/paired.csv)."""
    paired = _paired(page)
    datasets = list(dict.fromkeys(paired.loc[paired["block"] == "confirm", "dataset"]))
    head = "| claim (paper) | " + " | ".join(f"{d} | verdict" for d in datasets) + " |"
    lines = [head, "|---" * (1 + 2 * len(datasets)) + "|"]
    for claim, block, who, kind in CLAIMS:
        cells = []
        for d in datasets:
            row = _claim_row(paired, d, block, who)
            if row is None:
                cells += ["—", "not run"]
            else:
                cells += [_interval(row), verdict(kind, row["diff_mean"], row["lo"], row["hi"])]
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    n = sorted(set(paired.loc[paired["block"] == "confirm", "n"]))
    lines += ["", f"`obcp` − arm, percentage points, paired by seed (n = {', '.join(map(str, n))} seeds), "
              f"with its 95 % t-interval; from [`reports/study/paired.csv`]"
              f"({page.link('reports/study/paired.csv')}) (block `confirm`; Fig. 6: block `fig6`, "
              "4 query cycles − 1)."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- which strategy


@renderer("strategies")
def render_strategies(page: Page) -> str:
    """Every selection strategy of ObCP: the default run, and the one-bit-aware study's fresh seeds
    (per dataset, and the strategy minus Eq. 7 pooled over its datasets and seeds)."""
    results = read_results(_read(page, "reports/results.csv"))
    summary = final_summary(results).set_index("arm")
    default_strategy = str(summary.loc["obcp", "strategy"]) if "obcp" in summary.index else None
    found = _onebit_aware(page)
    if found is None:
        raise RegionError(f"{page.path}: the strategies table needs {ONEBIT_AWARE}/rule.csv and pick.json")
    rank, chosen = found
    datasets = [c for c in rank.columns if c not in RANKING_STATS]
    spec = yaml.safe_load(_read(page, "pipeline/tools/study/onebit_aware.yaml").read_text())
    study = {name: (a["strategy"], int(a.get("rounds", 1))) for name, a in spec["arms"].items()}
    rows: dict[tuple[str, int], dict] = {}
    for arm in strategy_arms(results):
        rows.setdefault((str(summary.loc[arm, "strategy"]), 1), {})["default"] = arm
    for r in rank.to_dict("records"):
        rows.setdefault(study[r["arm"]], {})["study"] = r
    head = ("| strategy | default run | " + " | ".join(f"{d}, fresh seeds" for d in datasets)
            + f" | it − Eq. 7, pooled |")
    lines = [head, "|---" * (3 + len(datasets)) + "|"]
    for (strategy, rounds), got in rows.items():
        name = STRATEGY_TEXT.get(strategy, f"`{strategy}`") + (f", {rounds} rounds (follow-ups)" if rounds > 1 else "")
        if strategy == default_strategy and rounds == 1:
            name = f"**{name}: the default**"
        arm = got.get("default")
        cells = [name, pct(summary.loc[arm, "top1_mean"], summary.loc[arm, "top1_std"]) if arm else "—"]
        r = got.get("study")
        cells += [pct(r[d]) if r else "—" for d in datasets]
        cells.append("—" if r is None or r["role"] == "reference" else f"{_interval(pd.Series(r))}")
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted(int(s) for s in results["seed"].unique())
    lines += ["", f"Final test top-1 %: the default run, mean ± std over seeds {', '.join(map(str, seeds))} "
                  f"([`reports/results.csv`]({page.link('reports/results.csv')})); the one-bit-aware study, mean over "
                  f"seeds {', '.join(map(str, spec['seeds']))} per dataset, and the strategy minus Eq. 7 in "
                  "percentage points, paired by dataset and seed and pooled, with its 95 % t-interval "
                  f"([`reports/onebit_aware/study.md`]({page.link('reports/onebit_aware/study.md')})). "
                  f"Its pre-registered rule: {chosen['reason']}."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- install and run times


@renderer("install")
def render_install(page: Page) -> str:
    """Set-up time, disk, repro and test times (reports/setup.json)."""
    doc = json.loads(_read(page, "reports/setup.json").read_text())
    gib = doc["venv_bytes"] / 2**30
    parts = [f"The first `make` sets up `.venv` in {_duration(doc['setup_seconds'])} ({gib:.1f} GiB of disk)"]
    if doc.get("repro_seconds"):
        parts.append(f"`dvc repro` then takes {_duration(doc['repro_seconds'])}")
    if doc.get("test_seconds"):
        parts.append(f"`make test` took {_duration(doc['test_seconds'])}")
    where = doc.get("machine", "")
    src = f" ({doc['source']})" if doc.get("source") else ""
    return ("; ".join(parts) + f", measured on {where}{src}: "
            f"[`reports/setup.json`]({page.link('reports/setup.json')}).")


# --------------------------------------------------------------------------- benchmarks


@renderer("bench")
def render_bench(page: Page) -> str:
    """The headline ratios of `obcp bench` (reports/bench.json)."""
    doc = json.loads(_read(page, "reports/bench.json").read_text())
    rows: list[tuple[str, str]] = []
    if "convert" in doc:
        c = doc["convert"]
        rows.append((f"conversion, {_thousands(c['n'])} × {c['size']}×{c['size']}×3 ({c['storage']})",
                     f"{_thousands(c['images_per_second'])} images/s"))
    if "loader" in doc:
        ld = doc["loader"]
        rows.append((f"FFCV loader ÷ `DataLoader`, same views ({len(ld['views'])} {ld['views'][0]} views)",
                     f"{ld['ratio_vs_batched']:.2f}×"))
        rows.append(("FFCV loader ÷ `DataLoader` with per-sample torchvision MoCo v2 transforms",
                     f"{ld['ratio_vs_torchvision']:.2f}×"))
    if "train" in doc:
        t = doc["train"]
        rows.append((f"training loop ÷ pure forward+backward, same model, batches and threads ({t['model']}, "
                     f"{t['batch']}, {t['threads']} torch thread; median of {len(t.get('ratios', []))} epochs)",
                     f"{t['ratio']}"))
    if "train_cifar" in doc:
        t = doc["train_cifar"]
        rows.append((f"the same with ResNet-18 on CIFAR-shaped images ({t.get('device', '?')})",
                     f"{t['ratio']} ({t['loop_images_per_s']} images/s)"))
    if "cycle" in doc:
        cyc = doc["cycle"]
        ratios = ", ".join(f"{c['query_over_retrain']:.2f}" for c in cyc["cycles"])
        rows.append(("(score + oracle + update) ÷ retrain, per cycle (digits)", ratios))
    if "ddp" in doc:
        rows.append((f"DDP 2 processes ÷ 1 process (gloo, CPU, {doc['ddp'].get('cores', '?')} cores)",
                     f"{doc['ddp']['ratio']}"))
    if "memory" in doc and doc["memory"].get("by_N"):
        by_n = doc["memory"]["by_N"]
        first = by_n[0]
        ns = " / ".join(_thousands(r["N"]) for r in by_n)
        gibs = " / ".join(f"{r['peak_rss_mib'] / 1024:.1f}" for r in by_n)
        rows.append((f"Eq. 7 history + scoring peak RSS, C = {first['C']}, m = {first['m']}, N = {ns}",
                     f"{gibs} GiB"))
    if "retest" in doc:
        r = doc["retest"]
        views = r["views"]
        names = " / ".join(views)
        rows.append((f"Eq. 7 test–retest ({r['dataset']}, {len(r['loop_seed_pairs'])} pairs of trainings from the "
                     f"same weights): Spearman of the scores (top-{r['k']} overlap), `history_view` {names}",
                     " / ".join(f"{v['spearman_mean']:.2f}" for v in views.values())
                     + " (" + " / ".join(f"{v['top_k_overlap_mean']:.2f}" for v in views.values()) + ")"))
    machine = doc.get("machine", {})
    where = f"{machine.get('cpu_count', '?')} CPU cores" + (f", {machine['cuda']}" if machine.get("cuda") else
                                                            ", no GPU")
    lines = ["| benchmark | measured |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), "",
             f"From [`reports/bench.json`]({page.link('reports/bench.json')}) ({where}); each figure is a ratio "
             "of two measurements taken in the same run."]
    return "\n".join(lines)


@renderer("fig4-claims")
def render_fig4_claims(page: Page) -> str:
    """The claims of the fig4 study (reports/fig4/study/claims.csv: obcp against each conventional learner,
    and Fig. 6 left), judged by its pre-registered rule; not yet there: says how to make it."""
    path = page.root / "reports/fig4/study/claims.csv"
    if not path.is_file():
        return ("Not run yet: `obcp study run --spec pipeline/tools/study/fig4.yaml` then `obcp study report "
                "--spec pipeline/tools/study/fig4.yaml` write `reports/fig4/study.md` and `reports/fig4/study/claims.csv`.")
    claims = pd.read_csv(path)
    datasets = list(dict.fromkeys(claims["dataset"]))
    head = "| claim (paper) | " + " | ".join(f"{d} | verdict" for d in datasets) + " |"
    lines = [head, "|---" * (1 + 2 * len(datasets)) + "|"]
    for claim in dict.fromkeys(claims["claim"]):
        cells = []
        for d in datasets:
            r = claims[(claims["claim"] == claim) & (claims["dataset"] == d)]
            cells += ["—", "not run"] if r.empty else [_interval(r.iloc[0]), str(r.iloc[0]["verdict"])]
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    n = sorted(set(int(v) for v in claims["n"]))
    lines += ["", f"A − B in percentage points, paired by seed (n = {', '.join(map(str, n))} seeds), with its 95 % "
                  f"t-interval, judged by the rule written before the runs (`pipeline/tools/study/fig4.yaml`); from "
                  f"[`reports/fig4/study/claims.csv`]({page.link('reports/fig4/study/claims.csv')})."]
    return "\n".join(lines)


def _verdict_counts(rows: pd.DataFrame) -> str:
    """``holds 3, fails 1, not shown 6`` (in the rule's order of verdicts)."""
    counts = rows["verdict"].value_counts()
    return ", ".join(f"{v} {int(counts[v])}" for v in ("holds", "fails", "not shown", "cannot tell", "not run")
                     if v in counts)


@renderer("fig4-summary")
def render_fig4_summary(page: Page) -> str:
    """The fig4 study's claims in a few words per dataset, for the README (reports/fig4/study/claims.csv)."""
    path = page.root / "reports/fig4/study/claims.csv"
    if not path.is_file():
        return "Not run yet: `obcp study run --spec pipeline/tools/study/fig4.yaml` (docs/baselines.md)."
    claims = pd.read_csv(path)
    parts = []
    for dataset, d in claims.groupby("dataset", sort=False):
        low = d[d["claim"].str.endswith("(Fig. 4)") & (d["kind"] == ">")]
        same = d[d["claim"].str.endswith("(Fig. 4)") & (d["kind"] == "≥")]
        fig6 = d[d["claim"].str.endswith("(Fig. 6 left)")]
        text = (f"on {dataset}, \"obcp at 25 % > X at 40 %\" against the {len(low)} conventional learners: "
                f"{_verdict_counts(low)}; \"obcp ≥ X at the same budget\": {_verdict_counts(same)}")
        if len(fig6):
            text += f"; \"a larger I^S does not help\" (Fig. 6 left): {fig6.iloc[0]['verdict']}"
        parts.append(text)
    return ("Against the conventional active learners (Fig. 4; ObCP with Eq. 7, seeds 10–14): " + "; ".join(parts)
            + f" ([the claims]({page.link('docs/results.md')}), "
              f"[`reports/fig4/study.md`]({page.link('reports/fig4/study.md')})).")


ONEBIT_AWARE = "reports/onebit_aware/study"
RANKING_STATS = ("arm", "role", "mean", "diff_mean", "lo", "hi", "n", "seeds")


def _onebit_aware(page: Page) -> tuple[pd.DataFrame, dict] | None:
    folder = page.root / ONEBIT_AWARE
    if not (folder / "rule.csv").is_file() or not (folder / "pick.json").is_file():
        return None
    return pd.read_csv(folder / "rule.csv"), json.loads((folder / "pick.json").read_text())


NOT_RUN_ONEBIT_AWARE = ("Not run yet: `obcp study run --spec pipeline/tools/study/onebit_aware.yaml` then `obcp study "
                        "report --spec pipeline/tools/study/onebit_aware.yaml` write `reports/onebit_aware/study.md`.")


@renderer("onebit-aware-claims")
def render_onebit_aware_claims(page: Page) -> str:
    """The one-bit-aware study (issue 25): each arm against Eq. 7 at equal bits, pooled over datasets and
    seeds, with the verdict of "arm > obcp" and the rule's pick (reports/onebit_aware/study/)."""
    found = _onebit_aware(page)
    if found is None:
        return NOT_RUN_ONEBIT_AWARE
    rank, chosen = found
    ref = chosen["reference"]
    datasets = [c for c in rank.columns if c not in RANKING_STATS]
    lines = ["| claim | role | " + " | ".join(f"{d} %" for d in datasets) + f" | arm − {ref}, pooled | verdict |",
             "|---" * (4 + len(datasets)) + "|"]
    for row in rank.to_dict("records"):
        means = [pct(row[d]) for d in datasets]
        if row["role"] == "reference":
            lines.append(f"| `{ref}` (Eq. 7), the reference | reference | " + " | ".join(means) + " | — | — |")
            continue
        diff = _interval(pd.Series(row))
        lines.append(f"| `{row['arm']}` > `{ref}` | {row['role']} | " + " | ".join(means)
                     + f" | {diff} (n = {int(row['n'])}) | {verdict('>', row['diff_mean'], row['lo'], row['hi'])} |")
    lines += ["", f"Final test top-1 % (mean over seeds) per dataset; arm − `{ref}` in percentage points, paired by "
                  "dataset and seed and pooled, with its 95 % t-interval; seeds 10–14, judged by the rule written "
                  "before the runs (`pipeline/tools/study/onebit_aware.yaml`). "
                  f"**The rule's pick: {chosen['reason']}.** From "
                  f"[`{ONEBIT_AWARE}/rule.csv`]({page.link(ONEBIT_AWARE + '/rule.csv')})."]
    return "\n".join(lines)


@renderer("selection-bench")
def render_selection_bench(page: Page) -> str:
    """Each strategy's selection time and peak memory (`obcp bench --only selection`, reports/bench.json)."""
    doc = json.loads(_read(page, "reports/bench.json").read_text())
    sel = doc.get("selection")
    if not sel:
        return "Not measured yet: `obcp bench --only selection` adds it to `reports/bench.json`."
    rows = pd.DataFrame(sel["rows"])
    configs = list(dict.fromkeys(zip(rows["N"], rows["C"])))
    head = "| strategy | " + " | ".join(f"N = {_thousands(n)}, C = {c}" for n, c in configs) + " |"
    lines = [head, "|---" * (1 + len(configs)) + "|"]
    for strategy in dict.fromkeys(rows["strategy"]):
        cells = []
        for n, c in configs:
            r = rows[(rows["strategy"] == strategy) & (rows["N"] == n) & (rows["C"] == c)]
            if r.empty:
                cells.append("—")
                continue
            r = r.iloc[0]
            same = " (reads no probabilities: the C = 10 run)" if r.get("same_as_C") == 10 else ""
            cells.append(f"{r['seconds']:.2f} s, {r['peak_rss_mib'] / 1024:.2f} GiB (k = {int(r['k'])}){same}")
        lines.append(f"| `{strategy}` | " + " | ".join(cells) + " |")
    machine = doc.get("machine", {})
    lines += ["", f"Seconds of selection (scoring and picking k) and peak resident memory of the process "
                  f"(a fresh interpreter with torch imported, inputs included), on synthetic inputs: "
                  f"{sel['features']} features, T = {sel['mc_samples']} dropout samples, E = {sel['ensemble']} "
                  f"ensemble members, per-sample strategies in chunks of {_thousands(sel['chunk'])} (on at most "
                  f"{_thousands(sel.get('sampled', 0))} candidates, their seconds scaled to N: a chunk costs the same "
                  f"whatever N) "
                  f"({machine.get('cpu_count', '?')} CPU cores, {sel.get('threads', 1)} BLAS thread); from "
                  f"[`reports/bench.json`]({page.link('reports/bench.json')})."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the study's pick


@renderer("study-main")
def render_study_main(page: Page) -> str:
    """obcp's final top-1 per variant of block main (reports/study/summary.csv)."""
    summ = pd.read_csv(_read(page, "reports/study/summary.csv"))
    main = summ[(summ["block"] == "main") & (summ["arm"] == "obcp")]
    lines = ["| dataset | variant (history view − window − classification view) | obcp top-1 % | seeds |",
             "|---|---|---|---|"]
    best = main.loc[main.groupby("dataset")["top1_mean"].idxmax()] if len(main) else main
    for row in main.itertuples(index=False):
        mark = "**" if ((best["dataset"] == row.dataset) & (best["variant"] == row.variant)).any() else ""
        lines.append(f"| {row.dataset} | `{row.variant}` | {mark}{pct(row.top1_mean, row.top1_std)}{mark} | {row.n} |")
    lines += ["", f"Mean ± std over seeds; the best in bold. From [`reports/study/summary.csv`]"
              f"({page.link('reports/study/summary.csv')})."]
    return "\n".join(lines)
