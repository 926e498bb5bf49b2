"""`dataset.name: folder`: unlabeled images, the class list, a val folder, an initial-labels CSV,
I^S from the CSV or from a person (init_pool waits with exit code 3), and every bad input
stopping with exit code 2 before anything is written."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.core.config import ParamsError, parse_params
from pipeline.core.layout import Layout
from pipeline.data.conversion import convert
from pipeline.data.folder import FolderSource, fit_square
from pipeline.data.index import read_classes, read_files, read_index
from pipeline.data.sources import digits_source
from pipeline.oracle import answers, sheets

CLASSES = [str(c) for c in range(10)]


def digit_folder(root: Path, n: int = 24, *, nested: bool = True) -> dict[str, str]:
    """`n` real digits as PNGs under `root` (two subfolders); returns file name → true class."""
    source = digits_source()
    truth = {}
    for i in range(n):
        image, label = source.load("train", i)
        rel = Path(f"part{i % 2}" if nested else ".") / f"img{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / rel)
        truth[rel.name] = CLASSES[label]
    return truth


def classes_file(path: Path, names=CLASSES) -> Path:
    path.write_text("# the digits\n" + "\n".join(names) + "\n\n")
    return path


def folder_params(root: Path, classes: Path, **dataset) -> dict:
    return {"dataset": {"name": "folder", "root": str(root), "classes": str(classes), "image_size": 8, **dataset},
            "oracle": {"kind": "human"}, "budget": {"initial": 6, "one_bit": 8, "class_balanced": False},
            "query_times": 2, "arms": {"label": {"method": "obcp", "strategy": "max"}}, "seeds": [0]}


def test_folder_source_reads_nested_images_without_labels(tmp_path):
    truth = digit_folder(tmp_path / "img")
    (tmp_path / "img" / ".hidden.png").write_bytes(b"not an image")  # hidden: skipped
    (tmp_path / "img" / "notes.txt").write_text("not an image either")  # no image extension: skipped
    source = FolderSource(tmp_path / "img", classes_file(tmp_path / "classes.txt"), image_size=8)
    assert source.classes == CLASSES and source.num_samples("train") == len(truth)
    assert (source.labels("train") == -1).all()
    paths = source.extra_columns("train")["path"].tolist()
    assert paths == sorted(paths) and paths[0] == "part0/img000.png"
    image, label = source.load("train", 0)
    assert image.shape == (8, 8, 3) and label == -1
    assert np.array_equal(image, digits_source().load("train", 0)[0])  # 8x8 stays pixel-exact
    # no val folder: one placeholder test sample, label -1, never scored
    assert source.num_samples("test") == 1 and source.labels("test").tolist() == [-1]
    out = tmp_path / "data"
    convert(source, out)
    index, files, info = read_index(out), read_files(out), read_classes(out)
    assert (index["label"] == -1).all() and files["path"].iloc[0] == "part0/img000.png"
    assert info["files_sha256"] == source.fingerprint and info["test_labels"] is False
    assert (files["initial_label"] == -1).all()


def test_fit_square_crops_the_centre_and_resizes(tmp_path):
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # the central square is white
    out = fit_square(Image.fromarray(wide), 5)
    assert out.shape == (5, 5, 3) and out[:, 1:4].min() == 255 and out.mean() > 230  # the black sides are gone
    # a photo stored sideways with an EXIF orientation (6: rotate 90° clockwise) is turned upright
    import io

    side = np.zeros((4, 8, 3), np.uint8)
    side[:, :4] = 255  # left half white: upright, the top half is white
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(side).save(buf, "PNG", exif=exif.tobytes())
    upright = fit_square(Image.open(io.BytesIO(buf.getvalue())), 4)[:, :, 0]
    assert (upright[:2] == 255).all() and (upright[2:] == 0).all()


def test_val_folder_and_initial_labels_csv(tmp_path):
    truth = digit_folder(tmp_path / "img")
    names = sorted(truth)
    val = tmp_path / "img" / "val"  # inside the image folder: not unlabeled
    for cls in ("3", "7"):
        (val / cls).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), int(cls) * 20, np.uint8)).save(val / cls / f"v{cls}.png")
    csv = tmp_path / "init.csv"
    csv.write_text(f"file,class\n{names[0]},{truth[names[0]]}\npart1/{names[1]},{truth[names[1]]}\n")
    source = FolderSource(tmp_path / "img", CLASSES, val=val, initial_labels=csv, image_size=8)
    assert source.num_samples("train") == len(truth)  # val/ left out of the train images
    assert source.labels("test").tolist() == [3, 7] and source.has_val
    initial = source.extra_columns("train")["initial_label"]
    assert (initial >= 0).sum() == 2 and initial[0] == int(truth[names[0]])
    assert source.extra_columns("test")["path"].tolist() == ["val/3/v3.png", "val/7/v7.png"]


BAD = {
    "undecodable": "cannot be decoded",
    "duplicate names": "occur in more than one subfolder",
    "empty folder": "holds no images",
    "duplicate classes": "more than once",
    "csv unknown file": "is not an image under",
    "csv unknown class": "is not in the class list",
}


def bad_input(tmp_path: Path, case: str) -> tuple[Path, Path, Path | None]:
    img, classes, csv = tmp_path / "img", classes_file(tmp_path / "classes.txt"), None
    if case == "empty folder":
        img.mkdir()
        return img, classes, None
    truth = digit_folder(img)
    if case == "undecodable":
        (img / "part0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif case == "duplicate names":
        (img / "part1" / "img000.png").write_bytes((img / "part0" / "img000.png").read_bytes())
    elif case == "duplicate classes":
        classes_file(classes, CLASSES + ["3"])
    elif case.startswith("csv"):
        csv = tmp_path / "init.csv"
        first = sorted(truth)[0]
        csv.write_text("path,label\n" + ("nowhere.png,3\n" if case == "csv unknown file" else f"{first},eleven\n"))
    return img, classes, csv


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_stops_with_exit_2_and_writes_nothing(tmp_path, case, monkeypatch):
    """Through the real commands: `obcp preset label` and the convert stage."""
    from pipeline.cli import app
    from stages import convert as convert_stage

    img, classes, csv = bad_input(tmp_path, case)
    out = tmp_path / "params.yaml"
    args = ["preset", "label", "--images", str(img), "--classes", str(classes), "--out", str(out),
            "--image-size", "8", "--initial", "4", "--questions", "4", "--query-times", "1"]
    result = CliRunner().invoke(app, args + (["--initial-labels", str(csv)] if csv else []))
    assert result.exit_code == 2, result.output
    assert BAD[case] in result.output and not out.exists()
    # the convert stage of a project whose params name the same inputs (params written by hand)
    project = tmp_path / "proj"
    project.mkdir()
    extra = {"initial_labels": str(csv)} if csv else {}
    (project / "params.yaml").write_text(yaml.safe_dump(folder_params(img, classes, **extra)))
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as stop:
        convert_stage.main(Path("params.yaml"))
    assert stop.value.code == 2 and not (project / "data").exists()
    if case == "undecodable":  # named, and skipped only when asked
        assert "broken.png" in result.output
        source = FolderSource(img, classes, image_size=8, skip_unreadable=True)
        assert source.skipped == ["part0/broken.png"] and source.num_samples("train") == 24


def test_params_refuse_the_simulated_oracle_and_folder_keys_elsewhere(tmp_path):
    raw = folder_params(tmp_path, tmp_path / "c.txt")
    raw["oracle"]["kind"] = "simulated"
    with pytest.raises(ParamsError, match="oracle.kind: the simulated oracle answers from ground-truth labels"):
        parse_params(raw)
    raw = folder_params(tmp_path, tmp_path / "c.txt")
    raw["dataset"]["classes"] = ["cat", "dog", "cat"]
    with pytest.raises(ParamsError, match="duplicate class names"):
        parse_params(raw)
    with pytest.raises(ParamsError, match="only apply to dataset.name: folder"):
        parse_params({"dataset": {"name": "digits", "val": "somewhere"}})
    with pytest.raises(ParamsError, match="audit.size"):
        parse_params({**folder_params(tmp_path, tmp_path / "c.txt"), "audit": {"size": 5}})  # > 8 // 2
    # and the oracle itself refuses to answer without ground truth
    with pytest.raises(sheets.OracleError, match="oracle.kind: human"):
        sheets.simulated_answers(pd.DataFrame({"sample_id": [0], "asked_class": [1]}), np.array([-1, -1]))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A project folder with a converted folder dataset of 24 digits (no labels)."""
    root = tmp_path_factory.mktemp("folderproj")
    truth = digit_folder(root / "img")
    classes_file(root / "classes.txt")
    (root / "params.yaml").write_text(yaml.safe_dump(folder_params(root / "img", root / "classes.txt")))
    source = FolderSource(root / "img", root / "classes.txt", image_size=8)
    convert(source, Layout("folder", root).data_dir)
    return root, truth


def init_pool(project: Path) -> int:
    from stages import init_pool as stage

    cwd = os.getcwd()
    os.chdir(project)
    try:
        stage.main(seed=0, params=Path("params.yaml"))
        return 0
    except SystemExit as stop:
        return int(stop.code)
    finally:
        os.chdir(cwd)


def test_init_pool_waits_for_a_person_then_takes_their_labels(converted, tmp_path):
    import shutil

    from pipeline.pool.pools import read_pool

    project = tmp_path / "p"
    shutil.copytree(converted[0], project)
    truth = converted[1]
    layout = Layout("folder", project)
    assert init_pool(project) == 3  # waiting, like `active`
    sheet = sheets.read_sheet(layout.initial_sheet_dir(0))
    assert len(sheet) == 6 and (sheet["asked_class"] == answers.LABEL_QUESTION).all()
    assert not layout.initial_pool(0).exists()
    assert len(list((layout.initial_sheet_dir(0) / "questions").glob("*.png"))) == 6
    # the page finds this sheet first (no arm needed), and takes labels by class name
    from pipeline.oracle.annotate import AnswerPage, open_sheet

    page = AnswerPage(open_sheet(layout, "label", 0, CLASSES), layout.answer_store)
    assert page.sheet.cycle == 0 and page.sheet.labels
    files = read_files(layout.data_dir).query("split == 'train'")
    name = dict(zip(files["sample_id"], files["path"].map(lambda p: Path(p).name)))
    ids = sheet["sample_id"].tolist()
    for sid in ids[:4]:
        page.answer(sid, truth[name[sid]], seconds=2.5)
    assert init_pool(project) == 3  # still two open: still waiting, the answers kept
    (layout.initial_sheet_dir(0) / "answers.csv").write_text(  # the rest as a CSV beside the sheet
        "sample_id,answer\n" + "".join(f"{sid},{truth[name[sid]]}\n" for sid in ids))
    assert init_pool(project) == 0
    pool = read_pool(layout.initial_pool(0))
    initial = pool[pool["status"] == "initial"]
    assert initial["sample_id"].tolist() == ids
    assert [CLASSES[lab] for lab in initial["label"]] == [truth[name[s]] for s in ids]
    store = answers.read(layout.answer_store)
    assert store["seconds"].notna().sum() == 4  # the page's timings; the CSV has none
    assert json.loads(layout.answer_store_images.read_text())["files_sha256"] == read_classes(layout.data_dir)[
        "files_sha256"]
    # answers about another list of images are never applied to these
    info = read_classes(layout.data_dir)
    info["files_sha256"] = "0" * 64
    (layout.data_dir / "classes.json").write_text(json.dumps(info))
    layout.initial_pool(0).unlink()
    assert init_pool(project) == 2


def test_init_pool_from_the_csv(converted, tmp_path):
    import shutil

    from pipeline.pool.pools import read_pool

    project = tmp_path / "p"
    shutil.copytree(converted[0], project)
    truth = converted[1]
    names = sorted(truth)[:5]
    csv = project / "init.csv"
    csv.write_text("path,label\n" + "".join(f"{n},{truth[n]}\n" for n in names))
    params = folder_params(project / "img", project / "classes.txt", initial_labels=str(csv))
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    source = FolderSource(project / "img", project / "classes.txt", initial_labels=csv, image_size=8)
    convert(source, Layout("folder", project).data_dir)
    assert init_pool(project) == 2  # budget.initial (6) differs from the CSV's 5 rows
    params["budget"]["initial"] = 5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert init_pool(project) == 0
    pool = read_pool(Layout("folder", project).initial_pool(0))
    assert sorted(CLASSES[lab] for lab in pool.loc[pool["status"] == "initial", "label"]) == \
        sorted(truth[n] for n in names)
    assert not Layout("folder", project).initial_sheet_dir(0).exists()  # nobody was asked
