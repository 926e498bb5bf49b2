"""Validation before anything is touched: what `obcp validate` and the `validate` stage check.

The `validate` stage is the first stage of dvc.yaml (`always_changed`: it runs on every
`dvc repro`, before DVC removes the outputs of any stage it is about to rerun). It checks

- params.yaml (`pipeline.core.config.load_params`: types, ranges, unknown keys at any level,
  the `plugins:` imported and the arms' strategy and method names checked against the
  registries), and, once the dataset is converted, the budgets against the size of its
  train pool (``data/<name>/index.parquet``, read here, not a DVC dependency);
- the answer files a person puts into cycle folders: each ``answers.csv`` must be a regular
  file (a symlink, FIFO, socket, device or folder is named as what it is; none is read).

On success it writes ``data/validated/stamp.json`` (constant content: `convert` and
`init_pool` depend on it only to run after this stage, so it never reruns anything) and
``data/validated/plugins.json``, the sha256 of every plugin file (`{}` without plugins):
the stages that run plugin code depend on it, so editing a plugin reruns them.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.core import io
from pipeline.core.config import Params, load_params
from pipeline.core.errors import ObcpError
from pipeline.core.layout import Layout

VALIDATED_DIR = Path("data") / "validated"
STAMP = VALIDATED_DIR / "stamp.json"
PLUGINS = VALIDATED_DIR / "plugins.json"
STAMP_CONTENT = {"validated": "params.yaml was valid when the pipeline last ran (written by the validate stage; "
                              "constant, so that it reruns nothing)"}
CYCLES_GLOB = "data/runs/seed*/arms/*/cycle_*"  # the cycle folders, where a person may write answers.csv


class AnswerFileError(ObcpError):
    """A file named answers.csv in a cycle folder is not a regular file."""


def _lock_dataset_params(root: Path) -> dict | None:
    """The `dataset` params the last `convert` ran with, from dvc.lock (None if unknown)."""
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
        return lock["stages"]["convert"]["params"]["params.yaml"]["dataset"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def converted_pool_size(params: Params, raw: dict, root: Path = Path(".")) -> tuple[int | None, str]:
    """(number of train samples, "") of the converted dataset, or (None, why it is unknown).

    The size is used only when the conversion on disk is of the current `dataset` params
    (dvc.lock's record of the last `convert`, when there is one); otherwise `convert` reruns
    first and `init_pool` checks the budgets against the new pool.
    """
    from pipeline.data.index import read_index  # pandas only, no FFCV

    layout = Layout(params.dataset.name, root)
    if not layout.index.is_file():
        return None, f"{layout.index} does not exist yet: the budgets are checked against the train pool once it does"
    recorded = _lock_dataset_params(root)
    if recorded is not None and recorded != raw.get("dataset"):
        return None, ("the dataset params changed since the last conversion: convert reruns first, then "
                      "init_pool checks the budgets against the new pool")
    try:
        index = read_index(layout.data_dir)
    except ObcpError:
        return None, f"{layout.index} is unreadable: convert rebuilds it, then init_pool checks the budgets"
    return int((index["split"] == "train").sum()), ""


def check_answer_files(root: Path = Path(".")) -> None:
    """Raise `AnswerFileError` naming every ``answers.csv`` of a cycle folder that is not a
    regular file (nothing is opened or read)."""
    bad = []
    for cycle in sorted(Path(root).glob(CYCLES_GLOB)):  # (a glob of the file itself skips broken symlinks)
        path = cycle / "answers.csv"
        kind = io.file_kind(path)
        if kind == "missing":
            continue
        if kind != "a regular file":
            bad.append(f"{path.relative_to(root)} is {kind}")
    if bad:
        raise AnswerFileError(
            f"{'; '.join(bad)}. An answers file must be a regular CSV file in the cycle folder; nothing was "
            "read from it. Replace it with a regular file (or move it away) and rerun."
        )


def check_project(params_path: str | Path = "params.yaml", root: Path = Path(".")) -> tuple[Params, int | None, str]:
    """Validate params.yaml (against the converted pool when it is known) and the answer files;
    returns (params, pool size or None, why the pool size is unknown). Raises `ObcpError`."""
    params = load_params(params_path)
    raw = yaml.safe_load(Path(params_path).read_text()) or {}
    pool, why = converted_pool_size(params, raw, Path(root))
    if pool is not None:
        params = load_params(params_path, pool_size=pool)
    check_answer_files(Path(root))
    return params, pool, why


def write_validated(params: Params, params_path: str | Path = "params.yaml", root: Path = Path(".")) -> dict:
    """Write the stamp and the plugins' fingerprint (atomically, only when they change)."""
    from pipeline.core import plugins

    prints = plugins.fingerprint(params.plugins, Path(params_path).parent)
    for path, doc in ((Path(root) / STAMP, STAMP_CONTENT), (Path(root) / PLUGINS, prints)):
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        if not path.is_file() or path.read_text() != text:
            io.write_text(path, text)
    return prints


def describe(params_path: str | Path, pool: int | None, why: str) -> str:
    if pool is not None:
        return f"{params_path}: ok (budgets checked against the train pool of {pool} samples)"
    return f"{params_path}: ok; {why}"
