"""`obcp`, the command line: the conventions of pipeline/cli.py's docstring, checked over the
whole command tree, and its answers to bad input (exit 2, the valid range, `unknown arm`).

The audit cases read a real ledger parquet written with `pipeline.pool.ledger` and the
dataset facts that `convert` leaves; no pipeline run is needed."""
from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from conftest import ROOT, TINY_PARAMS, dataset_facts, env, merge
from pipeline.cli import app
from pipeline.pool import ledger

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NUM_TRAIN = 40
RUN_OPTIONS = ("cycle", "arm", "seed")


def is_group(cmd) -> bool:
    return hasattr(cmd, "commands")  # typer vendors click: its classes are not `click`'s


def commands(group=None, path: tuple[str, ...] = ()):
    """(path, command) for every command and group of the app, the root included."""
    group = group or typer.main.get_command(app)
    if not path:
        yield (), group
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if is_group(cmd):
            yield from commands(cmd, (*path, name))


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, prog_name="obcp")


# --------------------------------------------------------------------------- help and spelling


def test_version_matches_the_package():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert invoke(["--version"]).output == f"obcp {version}\n"
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "--version"], env=env(), capture_output=True,
                         text=True, timeout=60)  # the real command line, with the installed name
    assert out.returncode == 0 and out.stdout == f"obcp {version}\n", out.stderr


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in commands()])
def test_dash_h_is_help_everywhere(path):
    args = path.split()
    short, long = invoke([*args, "-h"]), invoke([*args, "--help"])
    assert short.exit_code == 0, short.output
    assert short.output == long.output and f"Usage: obcp {path}".rstrip() in short.output


def test_every_command_and_option_has_help_and_every_command_an_example():
    missing, bad_examples = [], []
    for path, cmd in commands():
        name = " ".join(("obcp", *path))
        if is_group(cmd) and path:
            assert len(cmd.commands) >= 2, f"{name} is a group with one command: make it a command"
        help_text = cmd.help or ""
        summary = help_text.strip().split("\n")[0]
        if not summary:
            missing.append(f"{name}: no docstring")
        for param in cmd.params:
            if not getattr(param, "hidden", False) and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{name} {param.opts[0]}: no help")
        examples = re.findall(r"Example: `([^`]+)`", help_text)
        if len(examples) != 1 or not (examples[0] + " ").startswith(f"{name} "):
            bad_examples.append(f"{name}: {examples}")
            continue
        # the example's options and arguments exist: parse them (then -h, eager, stops before running)
        args = shlex.split(examples[0])[1:]
        out = invoke([*args, "-h"])
        if out.exit_code != 0:
            bad_examples.append(f"{name}: `{examples[0]}` does not parse:\n{out.output}")
    assert not missing, "\n".join(missing)
    assert not bad_examples, "\n".join(bad_examples)


def test_run_options_are_spelled_the_same_everywhere():
    """--cycle, --arm and --seed are options with exactly that spelling wherever a command takes them."""
    seen = {k: 0 for k in RUN_OPTIONS}
    for path, cmd in commands():
        for param in cmd.params:
            if param.name in RUN_OPTIONS:
                seen[param.name] += 1
                assert param.param_type_name == "option", f"obcp {' '.join(path)}: {param.name} is positional"
                assert param.opts == [f"--{param.name}"], (path, param.opts)
    assert seen["cycle"] >= 5 and seen["arm"] >= 7 and seen["seed"] >= 7, seen  # audit, steps, annotate


def test_table1_prints_plain_numbers():
    out = invoke(["table1"])
    assert out.exit_code == 0
    assert not re.search(r"\de[+-]\d", out.output), out.output
    assert "33219.3" in out.output and "1146065" in out.output  # CIFAR-10's full-label bits, ImageNet's |T^O|
    rows = pd.read_csv(io.StringIO(invoke(["table1", "--csv"]).output))
    assert rows.loc[0, "labeled_pool_bits"] == pytest.approx(10_000 * np.log2(10))  # full precision


# --------------------------------------------------------------------------- a project with a ledger


def _write_ledger(root: Path, arm: str, seed: int, cycles: int) -> pd.DataFrame:
    """`cycles` cycles of 6 one-bit questions each about samples of a 40-sample train split."""
    truth = np.arange(NUM_TRAIN) % len(CLASSES)
    for k in range(1, cycles + 1):
        ids = np.arange(6) + 6 * (k - 1)
        asked = (ids + (ids % 2)) % len(CLASSES)  # even ids asked their true class (yes), odd ids not
        queries = pd.DataFrame({"sample_id": ids, "asked_class": asked, "answer": asked == truth[ids],
                                "score": np.linspace(0.9, 1e-4, len(ids)), "rank": np.arange(1, len(ids) + 1)})
        rows = ledger.ledger_rows(queries, cycle=k, epoch=10 * k, strategy="obcp", oracle="simulated", arm=arm,
                                  seed=seed, true_labels=truth)
        led = ledger.append(root / f"reports/ledger/seed{seed}/{arm}.parquet", rows)
    return led


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    """params.yaml (4 query cycles, seeds 0 and 1, arms obcp and random), the dataset facts, and the
    ledgers: obcp/seed 0 with all 4 cycles, random/seed 0 with cycles 1..2 (the rest not run yet)."""
    root = tmp_path_factory.mktemp("audit")
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = merge(base, merge(TINY_PARAMS, {"query_times": 4, "seeds": [0, 1], "arms": {
        "obcp": {"method": "obcp", "strategy": "obcp"}, "random": {"method": "obcp", "strategy": "random"}}}))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dataset_facts(root / "data/digits", CLASSES, NUM_TRAIN)
    _write_ledger(root, "obcp", 0, 4)
    _write_ledger(root, "random", 0, 2)
    return root


@pytest.fixture
def cli(audited, monkeypatch):
    monkeypatch.chdir(audited)
    return invoke


def rejected(out, *words: str) -> str:
    """Exit 2, one `error:` line(s) on stderr naming every word, no traceback, no usage box."""
    assert out.exit_code == 2, (out.exit_code, out.output)
    err = out.stderr
    assert err.startswith("error: ") and "Traceback" not in err and "Usage:" not in err, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    return err


def test_audit_cycle_out_of_range_names_the_range(cli):
    assert cli(["audit", "cycle", "--cycle", "4"]).exit_code == 0
    rejected(cli(["audit", "cycle", "--cycle", "5"]), "--cycle 5 is outside 1..query_times (4)")
    rejected(cli(["audit", "cycle", "--cycle", "0"]), "--cycle 0 is outside 1..query_times (4)")
    err = rejected(cli(["audit", "cycle", "--cycle", "3", "--arm", "random"]), "--cycle 3", "cycles 1..2")
    assert "query_times: 4" in err and "dvc repro" in err
    positional = cli(["audit", "cycle", "2"])  # the old spelling: a usage error, exit 2 as well
    assert positional.exit_code == 2


def test_unknown_arm_says_unknown_arm(cli):
    for args in (["audit", "summary", "--arm", "OBCP"], ["audit", "cycle", "--cycle", "1", "--arm", "OBCP"],
                 ["audit", "sample", "3", "--arm", "OBCP"], ["score", "--cycle", "1", "--arm", "OBCP"]):
        err = rejected(cli(args), "unknown arm 'OBCP'", "known: obcp, random", "Did you mean 'obcp'?")
        assert "params.yaml is invalid" not in err


def test_other_out_of_range_values(cli):
    rejected(cli(["audit", "summary", "--seed", "7"]), "--seed 7 is not one of the seeds in params.yaml (0, 1)")
    rejected(cli(["audit", "sample", "3", "--seed", "0", "--seed", "5"]), "--seed 5", "(0, 1)")
    rejected(cli(["audit", "sample", str(NUM_TRAIN)]), f"sample {NUM_TRAIN} is outside 0..{NUM_TRAIN - 1}")
    rejected(cli(["audit", "summary", "--csv", "--json"]), "choose one")
    # the step commands check before opening data or torch (this project has no converted data)
    rejected(cli(["score", "--cycle", "5", "--arm", "obcp"]), "--cycle 5 is outside 1..query_times (4)")
    rejected(cli(["retrain", "--cycle", "1", "--seed", "3"]), "--seed 3 is not one of")
    rejected(cli(["annotate", "--port", "70000", "--no-open"]), "--port 70000 is outside 0..65535")
    # a seed of params.yaml whose ledger is not written yet: exit 2, and how to get it
    rejected(cli(["audit", "summary", "--seed", "1"]), "dvc repro")


def test_audit_shows_class_names_beside_indices(cli, audited):
    led = ledger.read(audited / "reports/ledger/seed0/obcp.parquet")
    table = cli(["audit", "cycle", "--cycle", "1"])
    assert table.exit_code == 0, table.output
    header = table.output.splitlines()[0].split()
    for column in ("true_label", "asked_class", "label_given"):
        assert header[header.index(column) + 1] == f"{column}_name"
    first = led[led["cycle"] == 1].iloc[1]  # sample 1 (true "one") was asked "two": no
    line = next(l for l in table.output.splitlines()[1:] if l.split()[2] == "1")
    assert "one" in line.split() and "two" in line.split() and " no " in f" {line} "
    rows = pd.read_csv(io.StringIO(cli(["audit", "cycle", "--cycle", "1", "--csv"]).output))
    assert (rows["asked_class_name"] == [CLASSES[c] for c in rows["asked_class"]]).all()
    assert rows.loc[rows["sample_id"] == first["sample_id"], "label_given_name"].isna().all()  # a "no": none given
    sample = json.loads(cli(["audit", "sample", "0", "--json"]).output)
    assert [(r["arm"], r["true_label_name"]) for r in sample] == [("obcp", "zero"), ("random", "zero")]
    summary = json.loads(cli(["audit", "summary", "--json"]).output)
    per_class = pd.DataFrame(summary["per_class"])
    assert (per_class["class_name"] == [CLASSES[c] for c in per_class["class"]]).all()
    assert pd.DataFrame(summary["per_cycle"])["asked"].tolist() == [6, 6, 6, 6]


def test_audit_tables_print_plain_numbers(cli):
    out = cli(["audit", "summary"])
    assert out.exit_code == 0, out.output
    assert "yes_rate" in out.output and "0.5000" in out.output  # 3 of 6 asked their true class
    assert "class_name" in out.output
    cycle = cli(["audit", "cycle", "--cycle", "1"]).output
    assert not re.search(r"\de[+-]\d", cycle), cycle  # the smallest score is 1e-4
    assert "0.000100" in cycle
