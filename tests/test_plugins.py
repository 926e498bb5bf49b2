"""A project's own strategy in one file (the docs' example), end to end through `dvc repro`."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import ROOT, make_project, run, with_stage1
from pipeline.core.config import ParamsError, parse_params
from pipeline.core.plugins import PluginError, fingerprint, load

EXAMPLE = re.search(r"```python\n(.*?)```", (ROOT / "docs/extending.md").read_text(), re.S).group(1)


def test_plugin_files_register_and_are_fingerprinted(tmp_path):
    (tmp_path / "lc_a.py").write_text(EXAMPLE.replace('"least_confidence"', '"lc_a"'))
    raw = {"plugins": ["lc_a.py"], "arms": {"a": {"method": "obcp", "strategy": "lc_a"}}}
    with pytest.raises(ParamsError, match="arms.a.strategy: unknown value 'lc_a'"):
        parse_params({"arms": raw["arms"]}, root=tmp_path)
    params = parse_params(raw, root=tmp_path)
    assert params.plugins == ("lc_a.py",)
    assert list(fingerprint(params.plugins, tmp_path)) == ["lc_a.py"]
    with pytest.raises(ParamsError, match="plugins: 'nope.py' is not a file"):
        parse_params({"plugins": ["nope.py"]}, root=tmp_path)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="broken.py failed to import \\(RuntimeError: boom\\)"):
        load(["broken.py"], tmp_path)


@pytest.mark.slow
def test_plugin_strategy_runs_through_dvc_repro(stage1_data, tmp_path):
    """The docs' least-confidence plugin picks exactly what the built-in `max` picks. The
    session's conversion and stage 1 are recorded as done (neither loads plugins); `init_pool`,
    which imports the plugin-loading code, runs here."""
    project = make_project(tmp_path / "p", {
        "plugins": ["least_confidence.py"],
        "arms": {"least_confidence": {"method": "obcp", "strategy": "least_confidence"},
                 "max": {"method": "obcp", "strategy": "max"}},
    })
    (project / "least_confidence.py").write_text(EXAMPLE)
    with_stage1(project, stage1_data, ("convert", "pretrain@0"))
    out = run(["dvc", "repro"], project).stdout
    assert "Running stage 'init_pool@0'" in out and "Running stage 'active@0'" in out
    assert "Running stage 'convert'" not in out and "Running stage 'pretrain@0'" not in out
    ledgers = {arm: pd.read_parquet(project / f"reports/ledger/seed0/{arm}.parquet") for arm in ("least_confidence", "max")}
    assert set(ledgers["least_confidence"]["strategy"]) == {"least_confidence"}
    first = {arm: sorted(l.loc[l["cycle"] == 1, "sample_id"]) for arm, l in ledgers.items()}
    assert first["least_confidence"] == first["max"] and len(first["max"]) == 30
