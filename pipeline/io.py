"""Atomic writes: every artifact is written to a temporary sibling, then renamed.

A killed process therefore never leaves a half-written file that a later stage
would read: the target either holds the old content or the new one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode())


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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
