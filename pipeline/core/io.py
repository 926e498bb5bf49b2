"""Atomic writes: every artifact is written to a temporary sibling, then renamed.

A killed process therefore never leaves a half-written file that a later stage
would read: the target either holds the old content or the new one. What it can leave
is the temporary file itself (`.<name>.XXXXXXXX.tmp`); every stage removes those from
the folders it writes when it starts (`remove_stale_temps`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd


_TMP_PREFIX, _TMP_SUFFIX = ".", ".tmp"
# what `atomic_path` leaves behind when killed between creating and renaming its temporary
# file: `.<target name>.<8 random characters from tempfile.mkstemp>.tmp`
STALE_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{target.name}.", suffix=_TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; artifacts are ordinary files
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_stale_temps(*folders: str | os.PathLike, recursive: bool = True,
                       log: Callable[[str], None] | None = print) -> list[Path]:
    """Delete the temporary files of interrupted `atomic_path` writes under `folders`; return them.

    Only names of `atomic_path`'s pattern (`STALE_TMP`) are touched, only in the given folders
    (and their subfolders unless `recursive` is False); a missing folder is skipped. Stages
    call it when they start, for the folders they write, before anything writes there.
    """
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        pattern = f"{_TMP_PREFIX}*{_TMP_SUFFIX}"
        for path in sorted(folder.rglob(pattern) if recursive else folder.glob(pattern)):
            if STALE_TMP.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
                if log is not None:
                    log(f"removed {path}: the temporary file of an interrupted write")
    return removed


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode())


def write_json(target: str | os.PathLike, obj: Any, *, sort_keys: bool = True) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n")


def write_parquet(target: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(target: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)


def save_torch(target: str | os.PathLike, obj: Any) -> None:
    import torch

    # through a file handle: given a path, torch names the archive inside the zip after the
    # (random) temp file, so identical objects would give different bytes on every save
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def read_parquet(path: str | os.PathLike, *, what: str, fix: str, error: type[Exception]) -> pd.DataFrame:
    """Read a parquet artifact; a missing or unreadable file raises `error` naming
    `what` it is and the `fix` (e.g. which stage to rerun)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist. {fix}")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise error(
            f"{what} {path} is not readable parquet ({type(exc).__name__}: {exc}); it is truncated or "
            f"corrupt. Delete it and rerun: {fix}"
        ) from None


def file_kind(path: str | os.PathLike) -> str:
    """What `path` is, without following a symlink or opening it: ``a regular file``,
    ``a folder``, ``a symbolic link`` (``a broken symbolic link``), ``a FIFO (named pipe)``,
    ``a socket``, ``a character device``, ``a block device``, or ``missing``."""
    import stat

    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISLNK(mode):
        return "a symbolic link" if path.exists() else "a broken symbolic link"
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"
