"""What produced a report: the dataset, the params (as a hash), the machine and the date.

`header` gives the (label, value) lines that open ``reports/index.md``, so that a page read
on its own says where its numbers come from.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml


def params_hash(values: Any) -> str:
    """The first 12 hex digits of the SHA-256 of `values` (params.yaml as loaded) as canonical
    JSON: comments, key order and formatting do not change it; any value does."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def params_file_hash(path: str | os.PathLike) -> str:
    """`params_hash` of a params file."""
    return params_hash(yaml.safe_load(Path(path).read_text()))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _gpus() -> list[str]:
    """GPU names, from torch when it is already imported, else from nvidia-smi (none if absent)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def machine() -> str:
    """This machine in one line: CPU model and count, GPUs if any, OS."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    text = f"{_cpu_model()}, {cpus} CPU(s)"
    gpus = _gpus()
    if gpus:
        names = sorted(set(gpus))
        text += ", " + ", ".join(f"{gpus.count(n)}× {n}" for n in names)
    return f"{text}; {platform.system()} {platform.release()}"


def header(*, dataset: str, num_classes: int, num_train: int | None, params: str | os.PathLike,
           seeds: list[int], when: datetime | None = None, machine_text: str | None = None) -> list[tuple[str, str]]:
    """The (label, value) lines that open the report page."""
    when = when or datetime.now(timezone.utc)
    train = f", {num_train} training images" if num_train else ""
    return [
        ("Dataset", f"{dataset} ({num_classes} classes{train})"),
        ("Params", f"`{Path(params).name}` hash {params_file_hash(params)} (sha256 of its values as canonical "
                   f"JSON); seeds {', '.join(map(str, seeds))}"),
        ("Machine", machine_text or machine()),
        ("Date", when.strftime("%Y-%m-%d %H:%M UTC")),
    ]
