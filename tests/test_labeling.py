"""Label your own images, end to end, the way docs/labeling.md walks through it: an unlabeled
folder (embedded digits, labels hidden), `obcp preset label`, `dvc repro`, the answer page in a
real headless Chromium driven by the keyboard (initial labels, then yes/no questions, until
the budget is spent), `dvc repro` after each round, then `obcp export`, `obcp predict` and
`obcp cost`. Plus the exported model's TorchScript contract for the encoders.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import env, make_project, run
from test_annotate import CHROMIUM, DRIVER, browser, serve_page

ROBOT_NOTE = "a robot answered: its seconds are the page's overhead, not a person's"


def answer_round(driver, project: Path, truth: dict[int, str]) -> tuple[int, str]:
    """Serve `obcp annotate` and answer every open question by keyboard; (answers given, kind)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, url = serve_page(project, "--seed", "0", timeout=90)
    try:
        driver.get(url)
        WebDriverWait(driver, 20).until(lambda d: re.match(r"0 of \d+ answered", d.find_element(By.ID, "progress").text))
        total = int(re.match(r"0 of (\d+)", driver.find_element(By.ID, "progress").text).group(1))
        kinds = set()
        for k in range(total):
            sid = int(re.search(r"img/(\d+)\.png", driver.find_element(By.ID, "img").get_attribute("src")).group(1))
            question = driver.find_element(By.ID, "question").text
            if question.startswith("Which class"):
                key, kinds = truth[sid], kinds | {"label"}  # digit classes: the key is the class name
            else:
                asked = re.match(r"Is this a (\S+)\?", question).group(1)
                key, kinds = ("y" if asked == truth[sid] else "n"), kinds | {"yes/no"}
            driver.find_element(By.TAG_NAME, "body").send_keys(key)
            WebDriverWait(driver, 20, poll_frequency=0.02).until(
                lambda d: d.find_element(By.ID, "progress").text == f"{k + 1} of {total} answered")
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "done").is_displayed())
        assert "Rerun `obcp repro`" in driver.find_element(By.ID, "done").text
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert len(kinds) == 1
    return total, kinds.pop()


def obcp(*args: str) -> str:
    """Run an `obcp` command in this process (the cwd is the project); its output, exit code 0 asserted."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (.ci/setup)")
def test_label_your_own_images_end_to_end(tmp_path, monkeypatch):
    started = time.perf_counter()
    demo, project = tmp_path / "demo", make_project(tmp_path / "proj")
    monkeypatch.chdir(project)
    obcp("demo-images", "--out", str(demo), "--count", "90", "--new", "8")
    out = obcp("preset", "label", "--images", str(demo / "images"), "--classes", str(demo / "classes.txt"),
               "--image-size", "8", "--initial", "10", "--questions", "12", "--query-times", "1", "--audit", "2")
    assert "a person gives 10 full labels, then answers 12 yes/no questions over 1 cycle," in out
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["oracle"]["kind"] == "human" and params["seeds"] == [0]
    assert params["arms"] == {"label": {"method": "obcp", "strategy": "max"}}
    params["train"].update(stage1_epochs=2, stage2_epochs=1, batch_size=8)  # tiny, for the test's speed
    params["model"]["width"] = 8
    params["contrastive"].update(queue_size=32, hard_negatives=8)
    params["selection"].update(m=2, t=1)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    key = pd.read_csv(demo / "answer_key.csv", dtype=str)
    by_file = dict(zip(key["file"].str.removeprefix("images/"), key["label"]))
    truth: dict[int, str] = {}
    rounds, phases = [], []
    driver = browser()
    try:
        for _ in range(5):
            t0 = time.perf_counter()
            repro = run(["dvc", "repro"], project, check=False)
            phases.append(("dvc repro", round(time.perf_counter() - t0, 1)))
            if repro.returncode == 0:
                break
            assert "waiting for" in repro.stdout + repro.stderr and "exited with 3" in repro.stdout + repro.stderr, \
                repro.stdout + repro.stderr
            if not truth:  # sample ids of the converted folder → the hidden labels
                files = pd.read_parquet(project / "data/folder/index.parquet").query("split == 'train'")
                truth = {int(s): by_file[p] for s, p in zip(files["sample_id"], files["path"])}
            t0 = time.perf_counter()
            rounds.append(answer_round(driver, project, truth))
            phases.append(("page", round(time.perf_counter() - t0, 1)))
    finally:
        driver.quit()
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert rounds == [(10, "label"), (12, "yes/no")]  # I^S, then the whole one-bit budget

    export = tmp_path / "export"
    out = obcp("export", "--out", str(export))
    assert "after cycle 1" in out
    labels = pd.read_csv(export / "labels.csv", dtype={"label": str, "predicted": str, "denied": str},
                         keep_default_na=False)
    assert list(labels.columns) == ["sample_id", "path", "label", "source", "predicted", "confidence", "denied"]
    assert len(labels) == 90 and labels["sample_id"].tolist() == list(range(90))
    store = pd.read_parquet(project / "reports/answers/folder.parquet")
    row = labels.set_index("sample_id")
    yes = store[store["answer"].fillna(False).astype(bool)]
    no = store[store["answer"].notna() & ~store["answer"].fillna(True).astype(bool)]
    full = store[store["asked_class"] == -1]
    assert len(yes) + len(no) == 12 and len(full) == 10
    for sid, asked in zip(yes["sample_id"], yes["asked_class"]):  # every yes, with the right class
        assert (row.at[sid, "label"], row.at[sid, "source"]) == (str(asked), "yes") and truth[sid] == str(asked)
    for sid, asked in zip(no["sample_id"], no["asked_class"]):  # every no, as a denied class
        assert str(asked) in row.at[sid, "denied"].split(";") and truth[sid] != str(asked)
    for sid, lab in zip(full["sample_id"], full["label"]):
        assert (row.at[sid, "label"], row.at[sid, "source"]) == (str(lab), "initial") and truth[sid] == str(lab)
    unknown = labels[labels["source"] == ""]
    assert len(unknown) == 90 - 10 - len(yes) and (unknown["predicted"] != "").all()
    assert unknown["confidence"].astype(float).between(0, 1).all()
    assert all(p not in d.split(";") for p, d in zip(unknown["predicted"], unknown["denied"]))  # never a denied class

    # the model loads and predicts without this project's code: the loader docs/labeling.md documents
    doc = (Path(__file__).resolve().parents[1] / "docs" / "labeling.md").read_text()
    loader = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    probe = tmp_path / "outside"
    probe.mkdir()
    (probe / "export").symlink_to(export)
    (probe / "demo").symlink_to(demo)
    (probe / "loader.py").write_text(loader + "assert not any(k == 'pipeline' or k.startswith('pipeline.') "
                                              "for k in __import__('sys').modules)\n")
    clean = {k: v for k, v in env().items() if k != "PYTHONPATH"}
    got = subprocess.run([sys.executable, "loader.py"], cwd=probe, env=clean, capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 0, got.stderr
    printed = [line.split() for line in got.stdout.strip().splitlines()]
    assert [p[0] for p in printed] == ["demo/new/new0000.png", "demo/new/new0001.png"]

    # `obcp predict` on new images, and on the labeled folder: the same guesses as labels.csv
    obcp("predict", str(demo / "new"), "--model", str(export), "--out", str(tmp_path / "new.csv"))
    new = pd.read_csv(tmp_path / "new.csv", dtype={"predicted": str})
    assert len(new) == 8 and new["path"].iloc[0] == "new0000.png"
    for (_, cls, conf), row in zip(printed, new.itertuples()):  # the documented loader agrees with `obcp predict`
        assert cls == row.predicted and abs(float(conf) - row.confidence) < 1e-5
    obcp("predict", str(demo / "images"), "--model", str(export), "--out", str(tmp_path / "all.csv"))
    again = pd.read_csv(tmp_path / "all.csv", dtype={"predicted": str}).set_index("path")
    plain = unknown[unknown["denied"] == ""]
    assert len(plain) and (again.loc[plain["path"], "predicted"].to_numpy() == plain["predicted"].to_numpy()).all()

    # the cost report has the page's timings for both kinds of answer
    cost = obcp("cost")
    doc = json.loads((project / "reports/cost.json").read_text())
    assert doc["yes_no"]["timed"] == doc["yes_no"]["answers"] == 12
    assert doc["full_label"]["timed"] == doc["full_label"]["answers"] == 10
    assert doc["yes_no"]["median_seconds"] > 0 and doc["full_label"]["median_seconds"] > 0
    assert "| yes/no question | 12 | 12 |" in cost
    print("\n" + cost)
    size = sum(f.stat().st_size for f in export.iterdir())
    print(f"\nlabeling end to end: {time.perf_counter() - started:.0f} s; export {size} bytes; cost "
          f"(robot) yes/no median {doc['yes_no']['median_seconds']} s, full label "
          f"{doc['full_label']['median_seconds']} s ({ROBOT_NOTE}); phases {phases}")


@pytest.mark.parametrize("arch", ["smallcnn", "resnet18_cifar"])
def test_exported_classifier_traces_like_the_encoder(arch, tmp_path):
    """The TorchScript export of each encoder gives the eager model's probabilities, at any batch size."""
    from pipeline.method.models import build_encoder
    from pipeline.tools.labeling.export import ExportedClassifier, quiet_jit

    torch.manual_seed(0)
    encoder = build_encoder(arch, 5, width=4, proj_dim=8).eval()
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)
    module = ExportedClassifier(encoder.backbone, encoder.classifier, mean, std).eval()
    with torch.no_grad(), quiet_jit():
        traced = torch.jit.trace(module, torch.zeros((2, 16, 16, 3), dtype=torch.uint8))
        torch.jit.save(traced, str(tmp_path / "m.pt"))
        loaded = torch.jit.load(str(tmp_path / "m.pt"))
    images = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)
    x = (images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1)
    with torch.no_grad():
        expect = torch.softmax(encoder(x)[0], dim=1)
        assert torch.allclose(loaded(images), expect, atol=1e-5)


def test_preset_label_defaults_follow_the_task(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.core.config import load_params

    runner = CliRunner()
    assert runner.invoke(app, ["demo-images", "--out", str(tmp_path / "demo"), "--count", "300"]).exit_code == 0
    out = tmp_path / "params.yaml"
    result = runner.invoke(app, ["preset", "label", "--images", str(tmp_path / "demo/images"),
                                 "--classes", str(tmp_path / "demo/classes.txt"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    p = load_params(out)
    assert p.dataset.name == "folder" and p.oracle.kind == "human" and list(p.arms) == ["label"]
    assert (p.budget.initial, p.budget.one_bit, p.query_times, p.audit.size) == (50, 332, 4, 16)
    assert "a person gives 50 full labels, then answers 332 yes/no questions" in result.output
    assert "(382 answers in all)" in result.output
    with_val = runner.invoke(app, ["preset", "label", "--images", str(tmp_path / "demo/images"), "--classes",
                                   str(tmp_path / "demo/classes.txt"), "--val", str(tmp_path / "demo/images"),
                                   "--out", str(tmp_path / "v.yaml")])
    assert with_val.exit_code == 2 and "not in the class list" in with_val.output  # part1/, part2/ are no classes
    missing = runner.invoke(app, ["preset", "label", "--images", str(tmp_path / "demo/images"),
                                  "--out", str(tmp_path / "m.yaml")])
    assert missing.exit_code == 2 and "--classes" in missing.output and not (tmp_path / "m.yaml").exists()
