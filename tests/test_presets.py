"""The paper's settings ship as validated presets with Table 1's budgets."""
from pathlib import Path

import pytest

from pipeline.core.config import load_params
from pipeline.pool.budget import one_bit_budget

PRESETS = Path(__file__).resolve().parents[1] / "pipeline" / "presets"


@pytest.mark.parametrize(
    "name, classes, labeled_pool, arch",
    [("cifar10", 10, 10_000, "resnet18_cifar"), ("cifar100", 100, 10_000, "resnet18_cifar"),
     ("imagenet", 1000, 128_000, "vgg16")],
)
def test_preset_matches_the_paper(name, classes, labeled_pool, arch):
    p = load_params(PRESETS / f"{name}.yaml")
    assert p.model.arch == arch and p.query_times == 4
    assert p.selection.m == 30 and p.selection.t == 5
    assert p.contrastive.hard_negatives == p.contrastive.queue_size // 2
    assert p.budget.one_bit == one_bit_budget(labeled_pool, p.budget.initial, classes)


def test_cli_preset_writes_params(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    out = tmp_path / "params.yaml"
    result = CliRunner().invoke(app, ["preset", "cifar100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_params(out).dataset.name == "cifar100"
    bad = CliRunner().invoke(app, ["preset", "mnist", "--out", str(out)])
    assert bad.exit_code == 2
