"""Reliability: every bad input stops with a clear message, exit code 2, and changes nothing.

Each case builds a tiny project (a copy: the session's converted digits and stage 1 are
never mutated), takes a sha256 of every file under it (symlinked shared data included),
applies ONE bad input, runs the entry point that reads it and asserts:

- exit code 2 (an ``ObcpError`` turned into ``error: …`` by ``pipeline.core.errors.reported``);
- stderr is one paragraph (no blank line) that names the problem and the fix (key words);
- no Python traceback;
- every checksum is unchanged, except the bad input file itself.

Entry points run in-process (``main(...)`` inside ``pytest.raises(SystemExit)``, stderr
from capsys) because FFCV's import costs seconds per process; the cases marked
``subprocess`` run the real command line (``python -m stages.X`` / ``python -m pipeline.cli``).

64 distinct cases (``CASES``; a test asserts at least 30):
- params (31): wrong types (5), out of ranges (4), unknown keys at top level, nested and in
  an arm (3), budgets larger than the pool (2, and 2 more through `obcp validate`), ``query_times: 0``, t > m, N ≥ K, unknown
  dataset / arch / strategy / method / oracle / backend (6), duplicate seeds, malformed
  YAML, missing params file, ``--arm`` not in params, ``--cycle`` 0 and beyond query_times;
- data (11): missing imagefolder root, cifar without download, imagefolder train/val class
  mismatch, truncated and garbage ``.beton`` (train and test), missing and corrupt
  ``index.parquet``, missing and corrupt ``classes.json``;
- human oracle answers (8): unknown ids, duplicates, ids not asked, values other than
  yes/no, missing rows, empty file, wrong header, a non-integer id;
- checkpoints and run artifacts (14): truncated (step and stage), missing and garbage
  stage-1 checkpoint; a checkpoint of another width (shape mismatch; step and stage), of
  another dataset, arch or seed; corrupt ``history.npz`` (step and stage); corrupt pool
  parquet (stage 1 and stage 2); a corrupt upstream checkpoint under finished cycles (the
  rerun refuses and keeps them).
"""
from __future__ import annotations

import contextlib
import importlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import copy_project, project_from, run, tree_checksums

ARM_DIR = "data/runs/seed0/arms/obcp"
CYCLE1 = f"{ARM_DIR}/cycle_001"
STAGE1 = "data/runs/seed0/stage1"
POOL0 = "data/runs/seed0/cycle_000/pool.parquet"


# --------------------------------------------------------------------------- harness


def checksums(root: Path) -> dict[str, str]:
    """Every file of the project, following its symlinked shared data."""
    return tree_checksums(root, follow_links=True)


def case_project(source: Path, dest: Path, overrides: dict | None = None, *, private: tuple[str, ...] = ()) -> Path:
    """`project_from(source)` with the seed-0 runs, and each path in `private`, copied (not linked)."""
    project = project_from(source, dest, overrides)
    runs = project / "data/runs/seed0"
    for name in ("cycle_000", "stage1"):
        link = runs / name
        if link.is_symlink():
            link.unlink()
            shutil.copytree(source / "data/runs/seed0" / name, link)
    for rel in private:
        link = project / rel
        if link.is_symlink():
            target = link.resolve()
            link.unlink()
            shutil.copytree(target, link)
    return project


def edit_params(project: Path, edit: Callable[[dict], None]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _entry(name: str, arm: str = "obcp", seed: int = 0, cycle: int = 1) -> Callable[[], None]:
    """The in-process entry point `name` with the project's params.yaml (cwd = project)."""
    params = Path("params.yaml")
    if name in ("validate", "score", "oracle"):
        from pipeline import cli

        if name == "validate":
            return lambda: cli.validate(params=params)
        return lambda: getattr(cli, name)(cycle=cycle, arm=arm, seed=seed, params=params)
    kwargs = {"convert": {}, "init_pool": {"seed": seed}, "pretrain": {"seed": seed},
              "active": {"arm": [arm], "seed": seed, "workers": None}}[name]
    main = importlib.import_module(f"stages.{name}").main
    return lambda: main(params=params, **kwargs)


def _command(name: str, arm: str = "obcp", seed: int = 0, cycle: int = 1) -> list[str]:
    """The same entry point as a real command line."""
    py = [sys.executable, "-m"]
    return {
        "validate": [*py, "pipeline.cli", "validate"],
        "score": [*py, "pipeline.cli", "score", "--cycle", str(cycle), "--arm", arm, "--seed", str(seed)],
        "oracle": [*py, "pipeline.cli", "oracle", "--cycle", str(cycle), "--arm", arm, "--seed", str(seed)],
        "convert": [*py, "stages.convert"],
        "init_pool": [*py, "stages.init_pool", "--seed", str(seed)],
        "pretrain": [*py, "stages.pretrain", "--seed", str(seed)],
        "active": [*py, "stages.active", "--arm", arm, "--seed", str(seed)],
    }[name]


@dataclass(frozen=True)
class Entry:
    """Which entry point a case runs, and how."""

    name: str
    subprocess: bool = False
    arm: str = "obcp"
    seed: int = 0
    cycle: int = 1


def invoke(entry: Entry, project: Path, capsys, monkeypatch) -> tuple[int, str]:
    """Run `entry` in `project`; return (exit code, stderr)."""
    if entry.subprocess:
        out = run(_command(entry.name, entry.arm, entry.seed, entry.cycle), project, check=False, timeout=300)
        return out.returncode, out.stderr
    monkeypatch.chdir(project)
    fn = _entry(entry.name, entry.arm, entry.seed, entry.cycle)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        fn()
    return exc.value.code, capsys.readouterr().err


def assert_rejected(code: int, err: str, words: tuple[str, ...], before: dict, after: dict,
                    bad: tuple[str, ...] = ()) -> None:
    assert code == 2, f"exit code {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    message = err.strip()
    assert message.startswith("error: "), err
    assert "\n\n" not in message, f"not one paragraph:\n{err}"
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in:\n{err}"
    skip = set(bad)
    assert {k: v for k, v in after.items() if k not in skip} == {k: v for k, v in before.items() if k not in skip}


def reject(project: Path, entry: Entry, words: tuple[str, ...], capsys, monkeypatch, *,
           apply: Callable[[Path], None], bad: tuple[str, ...] = ()) -> str:
    """Checksum, apply the bad input, run the entry point, assert it was rejected cleanly."""
    before = checksums(project)
    apply(project)
    code, err = invoke(entry, project, capsys, monkeypatch)
    assert_rejected(code, err, words, before, checksums(project), bad)
    return err


# --------------------------------------------------------------------------- params


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(params: dict) -> None:
        *parents, leaf = path.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return edit


PARAM_CASES: dict[str, tuple[Callable[[dict], None], Entry, tuple[str, ...]]] = {
    "type-lr-string": (_set("train.lr", "fast"), Entry("validate"), ("train.lr", "expected a number", "'fast'", "fix")),
    "type-query-times-string": (_set("query_times", "two"), Entry("active"), ("query_times", "expected an integer", "fix")),
    "type-batch-size-bool": (_set("train.batch_size", True), Entry("pretrain"), ("train.batch_size", "expected an integer")),
    "type-seeds-scalar": (_set("seeds", 0), Entry("validate", subprocess=True), ("seeds", "non-empty list")),
    "type-section-not-mapping": (_set("model", "smallcnn"), Entry("pretrain"), ("model", "expected a mapping")),
    "range-batch-size-zero": (_set("train.batch_size", 0), Entry("pretrain"), ("train.batch_size", "must be ≥ 1", "fix")),
    "range-lr-negative": (_set("train.lr", -0.1), Entry("validate"), ("train.lr", "must be > 0")),
    "range-momentum": (_set("contrastive.momentum", 1.5), Entry("active"), ("contrastive.momentum", "[0, 1)")),
    "range-jpeg-quality": (_set("dataset.jpeg_quality", 0), Entry("convert"), ("dataset.jpeg_quality", "[1, 100]")),
    "unknown-key-top": (_set("querytimes", 3), Entry("validate"), ("querytimes", "unknown key", "query_times")),
    "unknown-key-nested": (_set("train.epochs", 3), Entry("pretrain"), ("train.epochs", "unknown key", "stage1_epochs")),
    "unknown-key-arm": (_set("arms.obcp.stratgy", "max"), Entry("active"),
                        ("arms.obcp.stratgy", "unknown key", "strategy")),
    "budget-initial-over-pool": (_set("budget.initial", 5000), Entry("init_pool"),
                                 ("budget.initial", "larger than the train pool", "1437")),
    "budget-one-bit-over-pool": (_set("budget.one_bit", 3000), Entry("active"),
                                 ("budget.one_bit", "exceed", "lower it or raise query_times")),
    # `obcp validate` checks the budgets against the converted train pool too
    "budget-initial-over-pool-validate": (_set("budget.initial", 5000), Entry("validate"),
                                          ("budget.initial", "larger than the train pool", "1437")),
    "budget-one-bit-over-pool-validate": (_set("budget.one_bit", 100000), Entry("validate", subprocess=True),
                                          ("budget.one_bit", "exceed", "lower it or raise query_times")),
    "query-times-zero": (_set("query_times", 0), Entry("active"), ("query_times", "must be ≥ 1")),
    "t-greater-than-m": (_set("selection.t", 5), Entry("pretrain"), ("selection.t", "must be ≤ m")),
    "negatives-not-below-queue": (_set("contrastive.hard_negatives", 64), Entry("pretrain"),
                                  ("contrastive.hard_negatives", "N must be < K")),
    "unknown-dataset": (_set("dataset.name", "mnist"), Entry("convert"), ("dataset.name", "'mnist'", "choose one of")),
    "unknown-arch": (_set("model.arch", "resnet9"), Entry("pretrain"), ("model.arch", "'resnet9'", "choose one of")),
    "unknown-strategy": (_set("arms.obcp.strategy", "margin"), Entry("active"),
                         ("arms.obcp.strategy", "'margin'", "choose one of")),
    "unknown-method": (_set("arms.obcp.method", "twobit"), Entry("active"), ("arms.obcp.method", "'twobit'", "choose one of")),
    "unknown-oracle": (_set("oracle.kind", "crowd"), Entry("score"), ("oracle.kind", "'crowd'", "choose one of")),
    "unknown-backend": (_set("ddp.backend", "mpi"), Entry("pretrain"), ("ddp.backend", "'mpi'", "choose one of")),
    "duplicate-seeds": (_set("seeds", [0, 0]), Entry("validate"), ("seeds", "duplicates")),
}


@pytest.mark.parametrize("case", list(PARAM_CASES))
def test_bad_params_are_rejected(case, stage1_data, tmp_path, capsys, monkeypatch):
    edit, entry, words = PARAM_CASES[case]
    project = case_project(stage1_data, tmp_path / "p")
    reject(project, entry, words, capsys, monkeypatch, apply=lambda p: edit_params(p, edit), bad=("params.yaml",))


def test_malformed_yaml(stage1_data, tmp_path, capsys, monkeypatch):
    project = case_project(stage1_data, tmp_path / "p")
    reject(project, Entry("active", subprocess=True), ("not valid YAML", "line", "fix"), capsys, monkeypatch,
           apply=lambda p: (p / "params.yaml").write_text("query_times: 2\ntrain: {lr: 0.1\n"), bad=("params.yaml",))


def test_missing_params_file(stage1_data, tmp_path, capsys, monkeypatch):
    project = case_project(stage1_data, tmp_path / "p")
    reject(project, Entry("pretrain"), ("params.yaml", "file not found", "--params"), capsys, monkeypatch,
           apply=lambda p: (p / "params.yaml").unlink(), bad=("params.yaml",))


def test_arm_not_in_params(stage1_data, tmp_path, capsys, monkeypatch):
    project = case_project(stage1_data, tmp_path / "p")
    reject(project, Entry("active", arm="nosuch"), ("unknown arm 'nosuch'", "known: obcp", "fix"),
           capsys, monkeypatch, apply=lambda p: None)


@pytest.mark.parametrize("cycle", [0, 3])
def test_cycle_outside_query_times(cycle, stage1_data, tmp_path, capsys, monkeypatch):
    project = case_project(stage1_data, tmp_path / "p")
    reject(project, Entry("score", cycle=cycle), (f"--cycle {cycle}", "1..query_times (2)"),
           capsys, monkeypatch, apply=lambda p: None)


# --------------------------------------------------------------------------- data


def _image_folder(root: Path, classes: dict[str, tuple[str, ...]]) -> None:
    """root/<split>/<class>/k.png, 4x4 RGB."""
    from PIL import Image

    for split, names in classes.items():
        for name in names:
            for k in range(2):
                path = root / split / name / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((4, 4, 3), 40 * k, np.uint8)).save(path)


def _truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def apply(project: Path) -> None:
        path = project / rel
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return apply


def _garbage(rel: str) -> Callable[[Path], None]:
    def apply(project: Path) -> None:
        path = project / rel
        size = path.stat().st_size if path.exists() else 4096
        path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())

    return apply


def _delete(rel: str) -> Callable[[Path], None]:
    return lambda project: (project / rel).unlink()


def test_imagefolder_root_missing(stage1_data, tmp_path, capsys, monkeypatch):
    project = case_project(stage1_data, tmp_path / "p", {"dataset": {"name": "imagefolder", "root": "data/nowhere"}})
    reject(project, Entry("convert", subprocess=True), ("Missing folder", "data/nowhere/train", "point `root`"),
           capsys, monkeypatch, apply=lambda p: None, bad=("params.yaml",))


def test_cifar_without_download(stage1_data, tmp_path, capsys, monkeypatch):
    project = case_project(stage1_data, tmp_path / "p", {"dataset": {"name": "cifar10", "download": False}})
    reject(project, Entry("convert"), ("cifar10 was not found", "download", "place the extracted"),
           capsys, monkeypatch, apply=lambda p: None)


def test_imagefolder_class_mismatch(stage1_data, tmp_path, capsys, monkeypatch):
    project = case_project(stage1_data, tmp_path / "p", {"dataset": {"name": "imagefolder", "root": "folder"}})
    _image_folder(project / "folder", {"train": ("cat", "dog", "emu"), "val": ("cat", "dog")})
    reject(project, Entry("convert"), ("train/ has 3 class folders and val/ has 2", "emu", "Arrange val/"),
           capsys, monkeypatch, apply=lambda p: None)


DATA_CASES: dict[str, tuple[Callable[[Path], None], str, Entry, tuple[str, ...]]] = {
    "beton-train-truncated": (_truncate("data/digits/train.beton"), "data/digits/train.beton", Entry("pretrain"),
                              ("train.beton", "not a valid obcp .beton", "truncated", "dvc repro convert")),
    "beton-train-garbage": (_garbage("data/digits/train.beton"), "data/digits/train.beton", Entry("score"),
                            ("train.beton", "not a valid obcp .beton", "dvc repro convert")),
    "beton-test-truncated": (_truncate("data/digits/test.beton", 0.9), "data/digits/test.beton", Entry("pretrain"),
                             ("test.beton", "not a valid obcp .beton", "dvc repro convert")),
    "beton-test-garbage": (_garbage("data/digits/test.beton"), "data/digits/test.beton", Entry("active"),
                           ("test.beton", "not a valid obcp .beton", "dvc repro convert")),
    "index-missing": (_delete("data/digits/index.parquet"), "data/digits/index.parquet",
                      Entry("init_pool", subprocess=True), ("index.parquet", "Missing dataset index", "dvc repro convert")),
    "index-corrupt": (_garbage("data/digits/index.parquet"), "data/digits/index.parquet", Entry("active"),
                      ("index.parquet", "Cannot read", "dvc repro convert")),
    "classes-missing": (_delete("data/digits/classes.json"), "data/digits/classes.json", Entry("pretrain"),
                        ("classes.json", "Missing class list", "dvc repro convert")),
    "classes-corrupt": (lambda p: (p / "data/digits/classes.json").write_text('{"classes": ['), "data/digits/classes.json",
                        Entry("init_pool"), ("classes.json", "Cannot parse", "dvc repro convert")),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_converted_data_is_rejected(case, stage1_data, tmp_path, capsys, monkeypatch):
    apply, bad, entry, words = DATA_CASES[case]
    project = case_project(stage1_data, tmp_path / "p", private=("data/digits",))
    reject(project, entry, words, capsys, monkeypatch, apply=apply, bad=(bad,))


# --------------------------------------------------------------------------- human oracle answers


@pytest.fixture(scope="module")
def asked(stage1_data, tmp_path_factory) -> Path:
    """A human-oracle project stopped at cycle 1's question sheet (answers.csv not written)."""
    project = case_project(stage1_data, tmp_path_factory.mktemp("human") / "p", {"oracle": {"kind": "human"}})
    with contextlib.chdir(project), pytest.raises(SystemExit) as exc:
        _entry("active")()
    assert exc.value.code == 3 and (project / CYCLE1 / "questions.csv").exists()  # waiting: its own code
    return project


def _answers(rows: list[tuple], header: str = "sample_id,answer") -> str:
    return "\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n"


def _truthful(project: Path) -> list[tuple[int, str]]:
    questions = pd.read_csv(project / CYCLE1 / "questions.csv")
    truth = pd.read_parquet(project / "data/digits/index.parquet").query("split == 'train'")["label"].to_numpy()
    return [(int(s), "yes" if truth[s] == c else "no") for s, c in zip(questions["sample_id"], questions["asked_class"])]


def _not_asked(project: Path) -> int:
    questions = set(pd.read_csv(project / CYCLE1 / "questions.csv")["sample_id"])
    pool = pd.read_parquet(project / POOL0)
    return int(next(s for s in pool.loc[pool["status"] == "unlabeled", "sample_id"] if s not in questions))


ANSWER_CASES: dict[str, tuple[Callable[[Path], str], Entry, tuple[str, ...]]] = {
    "answers-unknown-id": (lambda p: _answers([*_truthful(p), (999999, "yes")]), Entry("oracle"),
                           ("999999", "is not a sample of the train split", "no answer was applied", "sample_id,answer")),
    "answers-duplicate": (lambda p: _answers([*_truthful(p), _truthful(p)[0]]), Entry("active"),
                          ("appears on 2 lines", "no answer was applied", "exactly one row per question")),
    "answers-not-asked": (lambda p: _answers([*_truthful(p)[1:], (_not_asked(p), "no")]), Entry("oracle"),
                          ("was not asked this cycle", "have no row", "questions.csv")),
    "answers-maybe": (lambda p: _answers([(s, "maybe" if i == 0 else a) for i, (s, a) in enumerate(_truthful(p))]),
                      Entry("oracle", subprocess=True), ("'maybe'", "is not yes or no", "`yes` or `no`")),
    "answers-missing-rows": (lambda p: _answers(_truthful(p)[:-3]), Entry("oracle"),
                             ("3 asked sample(s) have no row", "exactly one row per question")),
    "answers-empty": (lambda p: "", Entry("active"), ("answers.csv is empty", "header `sample_id,answer`")),
    "answers-wrong-header": (lambda p: _answers(_truthful(p), header="id,reply"), Entry("oracle"),
                             ("lacks column(s) ['sample_id', 'answer']", "header `sample_id,answer`")),
    "answers-non-integer-id": (lambda p: _answers([("seven", "yes"), *_truthful(p)[1:]]), Entry("oracle"),
                               ("'seven' is not an integer", "have no row", "sample_id,answer")),
}


@pytest.mark.parametrize("case", list(ANSWER_CASES))
def test_bad_human_answers_are_rejected(case, asked, tmp_path, capsys, monkeypatch):
    make, entry, words = ANSWER_CASES[case]
    project = tmp_path / "p"
    shutil.copytree(asked, project, symlinks=True)
    answers = f"{CYCLE1}/answers.csv"
    reject(project, entry, words, capsys, monkeypatch,
           apply=lambda p: (p / answers).write_text(make(p)), bad=(answers,))
    assert not (project / CYCLE1 / "queries.parquet").exists()
    assert not (project / "reports/ledger/seed0/obcp.parquet").exists()


# --------------------------------------------------------------------------- checkpoints and run artifacts


def _rewrite_meta(key: str, value) -> Callable[[Path], None]:
    """Stage 1's checkpoint as if written by another run (`meta[key] = value`)."""

    def apply(project: Path) -> None:
        path = project / STAGE1 / "checkpoint.pt"
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        ckpt["meta"][key] = value
        torch.save(ckpt, path)

    return apply


def _reseed(project: Path) -> None:
    """Seed 0's stage 1 and initial pool copied under seed 1 (a checkpoint of another seed)."""
    for name in ("cycle_000", "stage1"):
        shutil.copytree(project / "data/runs/seed0" / name, project / "data/runs/seed1" / name)


def _width(project: Path) -> None:
    edit_params(project, _set("model.width", 16))


def _arch(project: Path) -> None:
    edit_params(project, _set("model.arch", "resnet18_cifar"))


CKPT = f"{STAGE1}/checkpoint.pt"
ARTIFACT_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...], Entry, tuple[str, ...]]] = {
    "checkpoint-truncated": (_truncate(CKPT), (CKPT,), Entry("score"),
                             ("checkpoint.pt", "truncated or corrupt", "rerun the stage")),
    "checkpoint-truncated-stage": (_truncate(CKPT, 0.8), (CKPT,), Entry("active", subprocess=True),
                                   ("checkpoint.pt", "truncated or corrupt", "rerun the stage")),
    "checkpoint-missing": (_delete(CKPT), (CKPT,), Entry("active"), ("checkpoint.pt", "does not exist", "dvc repro")),
    "checkpoint-garbage": (_garbage(CKPT), (CKPT,), Entry("score"), ("checkpoint.pt", "cannot be read", "rerun")),
    "checkpoint-other-width": (_width, ("params.yaml",), Entry("score"),
                               ("checkpoint.pt", "model", "width", "rerun")),
    "checkpoint-other-width-stage": (_width, ("params.yaml",), Entry("active"),
                                     ("checkpoint.pt", "model", "width", "rerun")),
    "checkpoint-other-dataset": (_rewrite_meta("dataset", "cifar10"), (CKPT,), Entry("active"),
                                 ("belongs to another run", "dataset: checkpoint has 'cifar10', expected 'digits'", "rerun")),
    "checkpoint-other-arch": (_arch, ("params.yaml",), Entry("score"),
                              ("belongs to another run", "arch: checkpoint has 'smallcnn'", "rerun")),
    "checkpoint-other-seed": (_reseed, (), Entry("active", seed=1), ("belongs to another run", "seed", "rerun")),
    "history-corrupt": (_garbage(f"{STAGE1}/history.npz"), (f"{STAGE1}/history.npz",), Entry("score"),
                        ("history.npz", "unreadable", "rerun the training stage")),
    "history-corrupt-stage": (_truncate(f"{STAGE1}/history.npz"), (f"{STAGE1}/history.npz",), Entry("active"),
                              ("history.npz", "unreadable", "rerun the training stage")),
    "pool-corrupt": (_garbage(POOL0), (POOL0,), Entry("pretrain"), ("pool.parquet", "not readable parquet", "rerun")),
    "pool-corrupt-stage": (_truncate(POOL0), (POOL0,), Entry("active"), ("pool.parquet", "not readable parquet", "rerun")),
}


@pytest.mark.parametrize("case", list(ARTIFACT_CASES))
def test_bad_run_artifacts_are_rejected(case, stage1_data, tmp_path, capsys, monkeypatch):
    apply, bad, entry, words = ARTIFACT_CASES[case]
    project = case_project(stage1_data, tmp_path / "p")
    if case == "checkpoint-other-seed":
        apply(project)  # the bad input is a whole copied run under seed1/: checksum after it
        before = checksums(project)
        code, err = invoke(entry, project, capsys, monkeypatch)
        assert_rejected(code, err, words, before, checksums(project))
        return
    reject(project, entry, words, capsys, monkeypatch, apply=apply, bad=bad)


def test_completed_cycles_survive_a_corrupt_upstream_checkpoint(active_data, tmp_path, capsys, monkeypatch):
    """A finished arm whose stage-1 checkpoint is then corrupted: the rerun refuses and
    keeps every finished cycle (it does not discard them before finding out)."""
    project = copy_project(active_data[0], tmp_path / "p")  # the arm finished (the shared run)
    for name in ("cycle_000", "stage1"):  # this project's own stage 1, to corrupt
        link = project / "data/runs/seed0" / name
        target = link.resolve()
        link.unlink()
        shutil.copytree(target, link)
    reject(project, Entry("active"), ("checkpoint.pt", "truncated or corrupt"), capsys, monkeypatch,
           apply=_truncate(CKPT), bad=(CKPT,))
    assert (project / f"{ARM_DIR}/cycle_002/manifest.json").exists()


# --------------------------------------------------------------------------- the count


CASES = [
    *PARAM_CASES,
    "malformed-yaml",
    "missing-params-file",
    "arm-not-in-params",
    "cycle-zero",
    "cycle-beyond-query-times",
    "imagefolder-root-missing",
    "cifar-without-download",
    "imagefolder-class-mismatch",
    *DATA_CASES,
    *ANSWER_CASES,
    *ARTIFACT_CASES,
    "corrupt-upstream-after-finished-cycles",
]


def test_at_least_thirty_distinct_cases():
    assert len(CASES) == len(set(CASES))
    assert len(CASES) >= 30
