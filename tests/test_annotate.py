"""`obcp annotate`: the answer page in a real headless browser (Debian's chromium and
chromium-driver, driven by selenium; `.ci/setup-test` installs them for `make test`).

The real command serves a question sheet of real digits on 127.0.0.1. A first browser
answers half of the sheet with the keyboard and is closed; a second one (a fresh profile)
finds those answers, undoes the last one, answers the rest, and sees the page tell it to
rerun `obcp repro`. Every answer is in the answer store the moment it is given. Without an
open sheet, the page lists the store's answers; one is found by its sample id and corrected.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import dataset_facts, env, free_port, make_project
from pipeline.oracle import answers, sheets
from pipeline.data.sources import digits_source
from pipeline.core.layout import Layout

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver: `apt-get install chromium chromium-driver` (.ci/setup-test)",
)
N = 12


def serve_page(project: Path, *args: str, timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """Start `obcp annotate ARGS --no-open` in `project` on a free port; (server, its URL) once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "annotate", *args, "--no-open", "--port", str(port)],
                              cwd=project, env=env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while get(url + "state") != 200:
        if server.poll() is not None or time.time() >= deadline:
            server.kill()
            raise AssertionError(server.communicate())
        time.sleep(0.1)
    return server, url


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1100,900",
                f"--user-data-dir={tempfile.mkdtemp(prefix='obcp-chromium-')}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(DRIVER))


def sheet_project(dest: Path) -> tuple[Path, dict[int, bool]]:
    """A project waiting at cycle 1 of arm obcp: N real digits asked about, half of them
    about their true class. Returns the project and the truthful answer per sample."""
    project = make_project(dest, git=False)
    source = digits_source()
    images, labels = source.images("train")[:N], source.labels("train")[:N]
    asked = np.where(np.arange(N) % 2 == 0, labels, (labels + 3) % 10)
    layout = Layout("digits", project)
    sheets.write_question_sheet(layout.cycle_dir(0, "obcp", 1),
                                pd.DataFrame({"sample_id": np.arange(N), "asked_class": asked}),
                                source.classes, images)
    dataset_facts(layout.data_dir, list(source.classes), source.num_samples("train"))
    return project, {i: bool(labels[i] == asked[i]) for i in range(N)}


def get(url: str, **headers) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0  # not listening yet


def test_answer_page_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    project, truth = sheet_project(tmp_path / "p")
    store = Layout("digits", project).answer_store
    server, url = serve_page(project, "--arm", "obcp", "--seed", "0")
    try:
        # only the page, its state and the sheet's images are served, only to this host
        assert get(url + "questions.csv") == 404 and get(url + "img/99.png") == 404
        assert get(url + "../params.yaml") == 404 and get(url + "img/0.png") == 200
        port = url.rstrip("/").rsplit(":", 1)[1]
        assert get(url, Host=f"evil.example:{port}") == 403

        def current(driver) -> tuple[int, bool]:
            sid = int(re.search(r"img/(\d+)\.png", driver.find_element(By.ID, "img").get_attribute("src")).group(1))
            return sid, truth[sid]

        def press(driver, key: str, answered: int) -> None:
            driver.find_element(By.TAG_NAME, "body").send_keys(key)
            WebDriverWait(driver, 10).until(
                lambda d: d.find_element(By.ID, "progress").text == f"{answered} of {N} answered")

        def stored() -> dict[int, bool]:
            now = answers.current(answers.read(store))
            return {int(s): bool(a) for s, a in zip(now["sample_id"], now["answer"])}

        given: dict[int, bool] = {}
        first = browser()
        try:
            first.get(url)
            WebDriverWait(first, 10).until(lambda d: d.find_element(By.ID, "progress").text == f"0 of {N} answered")
            assert first.find_element(By.ID, "question").text.startswith("Is this a ")
            for k in range(N // 2):
                sid, yes = current(first)
                press(first, "y" if yes else "n", k + 1)
                given[sid] = yes
                assert stored() == given  # saved the moment it is given
        finally:
            first.quit()  # closed half-way
        second = browser()
        try:
            second.get(url)
            WebDriverWait(second, 10).until(
                lambda d: d.find_element(By.ID, "progress").text == f"{N // 2} of {N} answered")
            assert len(second.find_elements(By.CSS_SELECTOR, "#answered li")) == N // 2
            last = list(given)[-1]
            press(second, "u", N // 2 - 1)  # undo: the last answer is withdrawn and asked again
            assert current(second)[0] == last and last not in stored()
            for k in range(N // 2 - 1, N):
                sid, yes = current(second)
                if k == N - 2:
                    second.save_screenshot(str(tmp_path / "answer-page.png"))
                press(second, "y" if yes else "n", k + 1)
                given[sid] = yes
            done = second.find_element(By.ID, "done")
            WebDriverWait(second, 10).until(lambda d: done.is_displayed())
            assert "Rerun `obcp repro`" in done.text and f"All {N} questions are answered" in done.text
        finally:
            second.quit()
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert given == truth and stored() == truth
    rows = answers.read(store)
    assert len(rows) == N + 2 and rows["source"].tolist().count("page undo") == 1  # history kept
    assert "Rerun `obcp repro`" in out
    assert (tmp_path / "answer-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_store_list_corrects_an_answer_of_a_finished_cycle_in_a_real_browser(tmp_path):
    """No cycle waits (cycle 1 is finished): the page lists every answer in the store, a search by
    sample id finds one, a click corrects it; the store keeps the old answer as history."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    project, truth = sheet_project(tmp_path / "p")
    layout = Layout("digits", project)
    (layout.cycle_dir(0, "obcp", 1) / "manifest.json").write_text("{}")  # cycle 1 is done: no open sheet
    sheet = pd.read_csv(layout.cycle_dir(0, "obcp", 1) / "questions.csv")
    answers.append(layout.answer_store, answers.rows(sheet["sample_id"], sheet["asked_class"],
                                                     answer=[truth[int(s)] for s in sheet["sample_id"]],
                                                     source="answers.csv cycle_001"))
    server, url = serve_page(project, "--arm", "obcp", "--seed", "0")
    try:
        driver = browser()
        try:
            driver.get(url)
            WebDriverWait(driver, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#store li")) == N)
            assert "can be corrected" in driver.find_element(By.ID, "nostore").text
            assert not driver.find_element(By.ID, "card").is_displayed()
            driver.find_element(By.ID, "search").send_keys("5")
            WebDriverWait(driver, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#store li")) == 1)
            row = driver.find_element(By.CSS_SELECTOR, "#store li")
            assert row.get_attribute("data-sample-id") == "5"
            was = "yes" if truth[5] else "no"
            assert row.find_element(By.CSS_SELECTOR, ".answer").text == was
            row.find_element(By.CSS_SELECTOR, ".fix-" + ("no" if truth[5] else "yes")).click()
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, "#store li .answer").text
                                            == ("no" if truth[5] else "yes"))
            assert f"{was} -> {'no' if truth[5] else 'yes'}" in driver.find_element(By.ID, "fixed").text
            WebDriverWait(driver, 10).until(  # the image of a finished cycle's question is shown
                lambda d: d.execute_script("return document.querySelector('#store li img').naturalWidth") > 0)
        finally:
            driver.quit()
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert "no open question sheet: the answers in the store, to correct" in out
    store = answers.read(layout.answer_store)
    assert len(store) == N + 1 and store["source"].tolist()[-1] == "page fix"
    now = answers.current(store).set_index("sample_id")
    assert bool(now.loc[5, "answer"]) is (not truth[5])
