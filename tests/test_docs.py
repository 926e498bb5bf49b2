"""The README and the docs site: generated pages and regions are current, every quoted number
comes from the committed report it names, and `mkdocs build --strict` builds the site offline."""
from __future__ import annotations

import difflib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
import yaml

from pipeline.core.registry import STRATEGIES
from pipeline.tools import docs
from pipeline.tools.docs import blocks, cli_page, numbers, params_page, setup_report

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REGEN = "run `python -m pipeline.tools.docs` (make docs) and commit the result"


def _diff(want: str, have: str, name: str) -> str:
    lines = difflib.unified_diff(have.splitlines(), want.splitlines(), f"{name} (committed)", f"{name} (generated)",
                                 lineterm="", n=1)
    return "\n".join(list(lines)[:60])


# --------------------------------------------------------------------------- generated pages and regions


@pytest.mark.parametrize("rel", sorted(docs.GENERATED_PAGES))
def test_generated_page_is_current(rel):
    want = docs.GENERATED_PAGES[rel](ROOT)
    have = (ROOT / rel).read_text()
    assert have == want, f"{rel} is stale; {REGEN}:\n{_diff(want, have, rel)}"


def test_generated_regions_match_the_committed_reports():
    pages = [p for p in docs.pages(ROOT) if blocks.REGION.search(p.read_text())]
    assert {p.relative_to(ROOT).as_posix() for p in pages} >= {"README.md", "docs/results.md"}
    for page in pages:
        rel = page.relative_to(ROOT)
        have = page.read_text()
        want = blocks.fill(have, blocks.Page(ROOT, rel))
        assert have == want, f"{rel}: a generated region is stale; {REGEN}:\n{_diff(want, have, str(rel))}"


def test_every_quoted_number_is_in_its_named_report():
    problems = docs.number_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_check_entry_point_passes_on_the_repository():
    out = subprocess.run([sys.executable, "-m", "pipeline.tools.docs", "--check"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_readme_is_short_and_has_the_newcomer_sections():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    for heading in ("## Install and run", "## Results", "## Your own images", "## Answer the questions yourself",
                    "## Which strategy to use", "## Documentation", "## Citation and licence"):
        assert heading in text
    assert "openaccess.thecvf.com" in text  # the paper's link
    for rel in re.findall(r"\]\(((?:docs|reports)/[^)#]+)", text):
        assert (ROOT / rel).exists(), f"README links to {rel}, which does not exist"


def test_citation_and_licence():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["authors"] and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["title"] == "One-bit Active Query with Contrastive Pairs" and paper["year"] == 2022
    assert [a["family-names"] for a in paper["authors"]] == ["Zhang", "Zhang", "Xie", "Li", "Qiu", "Hu", "Tian"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_design_references_in_the_code_point_at_sections_that_exist():
    design = (ROOT / "docs/design.md").read_text()
    sections = set(re.findall(r"^## §(\d+) ", design, flags=re.M))
    refs = []
    for folder in ("pipeline", "stages", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for m in re.finditer(r"(?:docs/design\.md|DESIGN) (§\d+(?:, §\d+)*)", path.read_text()):
                refs += [(path.relative_to(ROOT), n) for n in re.findall(r"§(\d+)", m.group(1))]
    assert refs, "the code points at design sections"
    missing = [f"{p}: §{n}" for p, n in refs if n not in sections]
    assert not missing, f"docs/design.md has no such section: {missing}"


# --------------------------------------------------------------------------- the generators follow their inputs


def _copy_inputs(dest: Path) -> Path:
    shutil.copy(ROOT / "params.yaml", dest / "params.yaml")
    shutil.copytree(ROOT / "reports", dest / "reports",
                    ignore=shutil.ignore_patterns("ledger", "metrics", "answers", "exps", "figures"))
    spec = dest / "pipeline/tools/study/onebit_aware.yaml"  # the strategies table names its arms' strategies
    spec.parent.mkdir(parents=True)
    shutil.copy(ROOT / spec.relative_to(dest), spec)
    return dest


def test_results_region_is_rendered_from_results_csv_not_fixed(tmp_path):
    root = _copy_inputs(tmp_path)
    frame = pd.read_csv(root / "reports/results.csv")
    last = frame.groupby(["arm", "seed"])["cycle"].transform("max") == frame["cycle"]
    frame.loc[last & (frame["arm"] == "obcp"), "top1"] = 0.5  # every seed: 50.0 ± 0.0
    frame.to_csv(root / "reports/results.csv", index=False)
    text = blocks.render_results(blocks.Page(root, Path("README.md")))
    assert "| `obcp` | ObCP, ALPF's question choice (`eig`) selection | 50.0 ± 0.0 |" in text
    readme = (ROOT / "README.md").read_text()
    filled = blocks.fill(readme, blocks.Page(root, Path("README.md")))
    assert "50.0 ± 0.0" in filled and filled != readme


def test_claims_follow_the_study_rule():
    assert blocks.verdict(">", 0.02, 0.005, 0.04) == "holds"
    assert blocks.verdict(">", 0.02, -0.001, 0.05) == "not shown"
    assert blocks.verdict(">", -0.02, -0.03, -0.01) == "fails"
    assert blocks.verdict("≥", 0.0, -0.01, 0.01) == "holds"
    assert blocks.verdict("≥", -0.004, -0.017, 0.008) == "cannot tell"
    assert blocks.verdict("≥", -0.02, -0.03, -0.001) == "fails"
    text = blocks.render_claims(blocks.Page(ROOT, Path("docs/results.md")))
    paired = pd.read_csv(ROOT / "reports/study/paired.csv")
    row = paired[(paired["dataset"] == "digits") & (paired["block"] == "confirm") & (paired["arm"] == "no_ysup")]
    lo = row["lo"].iloc[0]
    assert f"| obcp > no_ysup (Table 4) | " in text
    assert ("holds" if lo > 0 else "not shown") in text.split("obcp > no_ysup")[1].splitlines()[0]


def test_install_region_reads_setup_json(tmp_path):
    root = _copy_inputs(tmp_path)
    (root / "reports/setup.json").write_text(json.dumps(
        {"setup_seconds": 61, "repro_seconds": 3599, "test_seconds": 42, "venv_bytes": 3 * 2**30,
         "machine": "a test box", "source": None}))
    text = blocks.render_install(blocks.Page(root, Path("README.md")))
    assert "1 min 1 s (3.0 GiB of disk)" in text and "59 min 59 s" in text and "42 s" in text
    assert "a test box" in text


def test_setup_report_measures_the_venv(tmp_path):
    venv = tmp_path / ".venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "blob").write_bytes(b"x" * 100_000)
    (venv / ".setup-seconds").write_text("154\n")
    doc = setup_report.write(tmp_path, setup_seconds=None, repro_seconds=300.0, test_seconds=None,
                             machine=None, source="test")
    assert doc["setup_seconds"] == 154.0 and doc["repro_seconds"] == 300.0 and doc["test_seconds"] is None
    assert doc["venv_bytes"] >= 100_000
    assert json.loads((tmp_path / "reports/setup.json").read_text()) == doc


def test_parameters_page_follows_the_schema_and_params_comments(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    text = text.replace("  lr: 0.03\n", "  lr: 0.05            # a comment written for this test\n")
    (tmp_path / "params.yaml").write_text(text)
    page = params_page.render(tmp_path)
    row = next(line for line in page.splitlines() if line.startswith("| `train.lr` |"))
    assert "`0.05`" in row and "a comment written for this test" in row and "must be > 0" in row
    choices = params_page.choices()
    assert choices["arms.*.strategy"] == tuple(STRATEGIES.names())
    assert choices["selection.history_view"] == ("strong", "weak", "clean")
    # every field of every section of the schema has a row
    import dataclasses
    import typing

    from pipeline.core import config

    for name, tp in typing.get_type_hints(config.Params).items():
        if dataclasses.is_dataclass(tp):
            for f in dataclasses.fields(tp):
                assert f"| `{name}.{f.name}` |" in page, f"{name}.{f.name} has no row"


def test_params_comments_are_attached_to_their_keys():
    notes = params_page.read_notes(
        "# header\n\nsection:\n  a: 1      # first line\n            # continued\n  # above b\n  b: 2\n"
        "# a note on the section\n\nother: 3\n")
    assert notes.header == ["header"]
    assert notes.keys["section.a"].text == "first line continued"
    assert notes.keys["section.b"].text == "above b"
    assert notes.trailing["section"] == ["a note on the section"]
    assert notes.keys["other"].text == ""


def test_cli_page_lists_every_command():
    page = (ROOT / "docs/cli.md").read_text()
    from typer.main import get_command

    from pipeline.cli import app

    def names(cmd, prefix="obcp"):
        yield prefix
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from names(sub, f"{prefix} {name}")

    for name in names(get_command(app)):
        if name != "obcp":
            assert f"`{name}`" in page, f"docs/cli.md lacks {name}; {REGEN}"


# --------------------------------------------------------------------------- the number check itself


def _check(tmp_path: Path, page: str, sources: dict[str, str]) -> list[str]:
    for rel, text in sources.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return numbers.check_text(page, "page.md", tmp_path)


def test_number_check_accepts_rounded_percentages_and_durations(tmp_path):
    src = {"r.json": '{"obcp": 0.969, "seconds": 233.4, "n": 11221.09, "rss_mib": 1638.4, "d": -0.0084}'}
    page = ("ObCP reached 96.9 % after 3 min 53 s, 11 221 images/s, 1.6 GiB, −0.8 points.\n"
            "<!-- numbers: r.json -->\n\n"
            "Code is exempt: `lr: 0.03`, and so are plain integers: 4 cycles, Eq. 7.\n\n"
            "```\n0.123 in a code block\n```\n")
    assert _check(tmp_path, page, src) == []


def test_number_check_rejects_drift_and_missing_sources(tmp_path):
    src = {"r.json": '{"obcp": 0.969}'}
    drift = _check(tmp_path, "ObCP reached 96.8 %.\n<!-- numbers: r.json -->\n", src)
    assert len(drift) == 1 and "96.8" in drift[0] and "r.json" in drift[0]
    unsourced = _check(tmp_path, "First paragraph.\n\nObCP reached 96.9 %.\n", src)
    assert len(unsourced) == 1 and "page.md:3" in unsourced[0] and "without naming a source" in unsourced[0]
    gone = _check(tmp_path, "96.9 %\n<!-- numbers: nowhere.json -->\n", src)
    assert any("does not exist" in p for p in gone)
    assert _check(tmp_path, "Their lr 0.2 and EMA 0.97.\n<!-- numbers: cited -->\n", src) == []


def test_number_check_skips_generated_regions(tmp_path):
    page = "<!-- generated: results -->\n| 12.3 |\n<!-- /generated -->\n"
    assert _check(tmp_path, page, {}) == []


# --------------------------------------------------------------------------- the site


def _nav_files(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_files(value) if isinstance(value, list) else [value]
    return out


def test_every_docs_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_files(config["nav"]))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in docs.pages(ROOT) if p.parent != ROOT}
    assert pages <= nav, f"pages missing from nav: in mkdocs.yml add {sorted(pages - nav)}"
    assert config["theme"]["font"] is False  # no Google Fonts


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "-d", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_mkdocs_build_strict_makes_every_page(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    for page in _nav_files(config["nav"]):
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        if page.endswith("/index.md"):
            built = site / page.removesuffix("index.md") / "index.html"
        assert built.is_file(), f"{page} was not built"
    assert (site / "reports/figures/accuracy_vs_labels.png").is_file()  # the baseline's figures are in the site
    results = (site / "results/index.html").read_text()
    assert "<table>" in results and "holds" in results


def test_site_references_nothing_on_another_host(site):
    external = re.compile(r"""<(?:script|img|iframe)[^>]+src=["']https?://|<link[^>]+href=["']https?://[^"']+["'][^>]*"""
                          r"""rel=["'](?:stylesheet|preconnect|preload|icon)|<link[^>]+rel=["'](?:stylesheet|preconnect|"""
                          r"""preload|icon)["'][^>]+href=["']https?://""")
    for path in list(site.rglob("*.html")) + list(site.rglob("*.css")):
        text = path.read_text(errors="replace")
        assert not external.search(text), f"{path.relative_to(site)} loads something from another host"
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, path


CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (.ci/setup)")
def test_site_pages_request_only_the_local_server(site):
    """Open pages of the built site in a real headless browser: every request goes to the site."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,900",
                f"--user-data-dir={tempfile.mkdtemp(prefix='obcp-chromium-')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        hosts = set()
        for page in ("", "results/", "parameters/", "reports/"):
            driver.get(f"{base}/{page}")
            assert "obcp" in driver.title
            for entry in driver.get_log("performance"):
                msg = json.loads(entry["message"])["message"]
                if msg["method"] == "Network.requestWillBeSent":
                    url = msg["params"]["request"]["url"]
                    if url.startswith(("http://", "https://")):
                        hosts.add(urlparse(url).netloc)
        assert hosts == {f"127.0.0.1:{server.server_address[1]}"}, hosts
    finally:
        driver.quit()
        server.shutdown()
