"""reports/setup.json: how long set-up, `dvc repro` and `make test` take, and the disk `.venv` needs.

The README's install line is rendered from it (region ``install``). `.ci/setup` records its own
duration in ``.venv/.setup-seconds`` when it installs; after a run from a bare machine::

    python -m pipeline.tools.docs setup-report --repro-seconds 250 --test-seconds 840 \
        --machine "2-core AMD EPYC VM"

writes the report (the set-up time from that file unless ``--setup-seconds`` is given, the size
of ``.venv`` measured now), and ``python -m pipeline.tools.docs`` puts it into the README.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

from pipeline.core import io


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path` (following a symlinked root, not links inside; hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, files in os.walk(Path(path).resolve()):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(root: Path, *, setup_seconds: float | None, repro_seconds: float | None, test_seconds: float | None,
          machine: str | None, source: str | None, out: Path | None = None) -> dict:
    root = Path(root)
    venv = root / ".venv"
    if setup_seconds is None:
        stamp = venv / ".setup-seconds"
        if not stamp.is_file():
            raise SystemExit(f"no {stamp}: pass --setup-seconds, or run .ci/setup on a bare machine first")
        setup_seconds = float(stamp.read_text().strip())
    doc = {
        "setup_seconds": round(float(setup_seconds), 1),
        "repro_seconds": None if repro_seconds is None else round(float(repro_seconds), 1),
        "test_seconds": None if test_seconds is None else round(float(test_seconds), 1),
        "venv_bytes": tree_bytes(venv),
        "machine": machine or f"{cpu_name()}, {os.cpu_count()} cores",
        "source": source,
        "date": _dt.date.today().isoformat(),
    }
    io.write_json(out or root / "reports" / "setup.json", doc)
    return doc
