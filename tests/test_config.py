"""params.yaml validation: every problem reported at once with its key path, exit code 2."""
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import ParamsError, load_params, parse_params, resolve_size

ROOT = Path(__file__).resolve().parents[1]


def problems(raw, pool_size=1000):
    with pytest.raises(ParamsError) as info:
        parse_params(raw, pool_size=pool_size)
    assert info.value.exit_code == 2
    return info.value.problems


def test_repository_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.query_times >= 1 and "obcp" in p.arms
    assert p.dataset.name == "digits"


def test_defaults_are_valid():
    p = parse_params({})
    assert p.query_times == 4 and p.arms["obcp"].method == "obcp"


@pytest.mark.parametrize(
    "raw, key, words",
    [
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"train": {"lrr": 0.1}}, "train.lrr", "unknown key"),
        ({"train": {"lr": "fast"}}, "train.lr", "expected a number"),
        ({"train": {"batch_size": 3.5}}, "train.batch_size", "expected an integer"),
        ({"train": {"amp": "yes"}}, "train.amp", "true/false"),
        ({"query_times": 0}, "query_times", "≥ 1"),
        ({"query_times": True}, "query_times", "expected an integer"),
        ({"budget": {"initial": 5000}}, "budget.initial", "larger than the train pool"),
        ({"budget": {"initial": 1.5}}, "budget.initial", "(0, 1]"),
        ({"budget": {"initial": 0.0}}, "budget.initial", "(0, 1]"),
        ({"budget": {"one_bit": -3}}, "budget.one_bit", "≥ 1"),
        ({"budget": {"initial": 100, "one_bit": 4000}, "query_times": 1}, "budget.one_bit", "exceed"),
        ({"budget": {"initial": 1000}}, "budget.initial", "no unlabeled"),
        ({"selection": {"m": 3, "t": 5}}, "selection.t", "≤ m"),
        ({"selection": {"window": "sliding"}}, "selection.window", "unknown value"),
        ({"contrastive": {"queue_size": 0}}, "contrastive.queue_size", "≥ 1"),
        ({"contrastive": {"temperature": 0}}, "contrastive.temperature", "> 0"),
        ({"contrastive": {"queue_size": 64, "hard_negatives": 64}}, "contrastive.hard_negatives", "< K"),
        ({"contrastive": {"momentum": 1.0}}, "contrastive.momentum", "[0, 1)"),
        ({"dataset": {"name": "mnist"}}, "dataset.name", "unknown value"),
        ({"model": {"arch": "vit"}}, "model.arch", "unknown value"),
        ({"oracle": {"kind": "crowd"}}, "oracle.kind", "unknown value"),
        ({"arms": {"x": {"strategy": "kcenter"}}}, "arms.x.strategy", "unknown value"),
        ({"arms": {"x": {"method": "semi"}}}, "arms.x.method", "unknown value"),
        ({"arms": {"x": {"neg_los": False}}}, "arms.x.neg_los", "unknown key"),
        ({"arms": {}}, "arms", "non-empty"),
        ({"seeds": 3}, "seeds", "list"),
        ({"seeds": [1, 1]}, "seeds", "duplicates"),
        ({"ddp": {"nproc": 0}}, "ddp.nproc", "≥ 1"),
        ({"ddp": {"backend": "mpi"}}, "ddp.backend", "unknown value"),
        ({"train": {"view_backend": "cuda"}}, "train.view_backend", "unknown value"),
        ({"train": {"cpu_amp": "bf16"}}, "train.cpu_amp", "true/false"),
        ({"dataset": {"jpeg_quality": 101}}, "dataset.jpeg_quality", "[1, 100]"),
        ({"train": "fast"}, "train", "mapping"),
        ({"selection": {"history_view": "eval"}}, "selection.history_view", "unknown value"),
        ({"train": {"sup_view": "clean"}}, "train.sup_view", "unknown value"),
        ({"onebit": {"consistency": -1}}, "onebit.consistency", "≥ 0"),
        ({"onebit": {"rampup_epochs": -2}}, "onebit.rampup_epochs", "≥ 0"),
        ({"onebit": {"ema_decay": 1.0}}, "onebit.ema_decay", "[0, 1)"),
    ],
)
def test_each_bad_value_is_reported_with_its_key(raw, key, words):
    found = problems(raw)
    assert any(p.startswith(f"{key}:") and words in p for p in found), found


def test_all_problems_reported_at_once():
    found = problems({"query_times": 0, "train": {"lr": "x", "nope": 1}, "selection": {"m": 1, "t": 2}})
    keys = {p.split(":")[0] for p in found}
    assert {"query_times", "train.lr", "train.nope", "selection.t"} <= keys


def test_fraction_budgets_resolve_against_the_pool():
    p = parse_params({"budget": {"initial": 0.1, "one_bit": 0.5}}, pool_size=1000)
    assert resolve_size(p.budget.initial, 1000) == 100
    assert resolve_size(p.budget.one_bit, 1000) == 500


def test_params_are_frozen():
    p = parse_params({})
    with pytest.raises(Exception):
        p.train.lr = 1.0  # type: ignore[misc]


def test_load_params_file_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"query_times": 2}))
    assert load_params(ok).query_times == 2


def test_cli_validate_exit_code(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump({"query_times": 0, "train": {"lr": "x"}}))
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", "--params", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "query_times" in out.stderr and "train.lr" in out.stderr and "Traceback" not in out.stderr


def test_validating_params_imports_no_torch(digits_data):
    """The `validate` stage runs on every `dvc repro`, and `obcp repro` checks params.yaml once more
    before DVC starts: with every built-in strategy, method and oracle loaded and the budgets
    checked against the converted pool, neither imports torch, FFCV or matplotlib (each costs
    seconds per process; the strategies that train networks import them when they select)."""
    import subprocess
    import sys

    from conftest import env

    probe = ("import sys; from pathlib import Path; import pipeline.cli, stages.validate; "
             "from pipeline.core.registry import METHODS, ORACLES, STRATEGIES; "
             "from pipeline.tools.validate import check_project; "
             "_, pool, _ = check_project(Path('params.yaml')); "
             "print(pool, len(STRATEGIES.names()), len(METHODS.names()), len(ORACLES.names()), "
             "[m for m in ('torch', 'ffcv', 'numba', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=digits_data, env=env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pool, strategies, methods, oracles, heavy = out.stdout.split(maxsplit=4)
    assert int(pool) == 1437 and int(strategies) >= 17 and int(methods) >= 4 and int(oracles) >= 2, out.stdout
    assert heavy.strip() == "[]", out.stdout
