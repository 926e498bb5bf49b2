"""The two entry points a newcomer runs: `make repro` sets up only what the pipeline needs,
`make test` adds the tests' own system packages, and CI runs exactly `make test`."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(target: str) -> list[str]:
    """The commands `make TARGET` would run (`make -n`), in order."""
    out = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.strip() for line in out.stdout.splitlines() if line.strip() and not line.startswith("make")]


def test_repro_installs_only_the_main_job():
    steps = dry_run("repro")
    assert steps[0] == "bash .ci/setup" and "bash .ci/setup-test" not in steps, steps
    setup = (ROOT / ".ci/setup").read_text()
    assert not re.search(r"apt-get install[^\n]*chromium", setup)  # the browser is a test-only need


def test_test_adds_the_test_setup_and_ci_runs_make_test():
    steps = dry_run("test")
    assert steps[:2] == ["bash .ci/setup", "bash .ci/setup-test"] and "pytest" in steps[-1], steps
    assert re.search(r"apt-get install[^\n]*chromium chromium-driver", (ROOT / ".ci/setup-test").read_text())
    commands = [line for line in (ROOT / ".ci/run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "export "))]
    assert commands == ["make test </dev/null"]


def test_make_lets_python_write_its_bytecode_caches(tmp_path):
    """With PYTHONDONTWRITEBYTECODE set (some CI images set it) and a venv installed with
    `--no-compile`, every process would compile torch, DVC and pandas from source again: what make
    runs does not see the variable."""
    import os

    probe = tmp_path / "probe.mk"
    probe.write_text(f"include {ROOT / 'Makefile'}\nprobe:\n"
                     "\t@python3 -c \"import os; print(os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset'))\"\n")
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "-f", str(probe), "probe"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "unset"
