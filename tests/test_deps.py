"""dvc.yaml's deps cover every file each stage runs (the import closure), so no edit goes unnoticed."""
from __future__ import annotations

from pathlib import Path

import yaml

from conftest import ROOT
from pipeline.tools.deps import dvc_stages, inert, missing_deps, plugin_stages, stage_files


def test_every_stage_depends_on_every_file_it_runs():
    assert missing_deps(ROOT) == {}


def test_registry_builtins_count_only_where_names_are_checked():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    active = stage_files(ROOT, stages["active"]["do"]["cmd"].replace("${item}", "0").replace("${ddp.nproc}", "1"))
    convert = stage_files(ROOT, stages["convert"]["cmd"])
    assert Path("pipeline/selection/strategies.py") in active and Path("pipeline/method/methods.py") in active
    assert Path("pipeline/oracle/oracles.py") in active and Path("pipeline/loop/cycle.py") in active
    assert not any(str(f).startswith(("pipeline/selection", "pipeline/method", "pipeline/loop")) for f in convert)


def _tree(root: Path, files: dict[str, str], deps: list[str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "params.yaml").write_text("seeds: [0]\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "python -m stages.s", "deps": deps}}}))
    return root


def test_a_missing_module_is_named(tmp_path):
    files = {
        "stages/__init__.py": "",
        "stages/s.py": "from pipeline.a import f\n",
        "pipeline/__init__.py": '"""doc"""\n__version__ = "1"\n',
        "pipeline/a.py": "def f():\n    from pipeline.sub import b\n",
        "pipeline/sub/__init__.py": "X = 1\n",
        "pipeline/sub/b.py": "Y = 2\n",
    }
    root = _tree(tmp_path, files, ["stages/s.py", "pipeline/a.py"])
    # an import inside a function counts; a package __init__ with code counts; an inert one does not
    assert missing_deps(root) == {"s": ["pipeline/sub/__init__.py", "pipeline/sub/b.py"]}
    _tree(root, {}, ["stages/s.py", "pipeline/a.py", "pipeline/sub"])
    assert missing_deps(root) == {}
    assert inert(root / "pipeline/__init__.py") and not inert(root / "pipeline/sub/__init__.py")


def test_stages_that_run_plugins_depend_on_their_fingerprint():
    """`plugins:` files cannot be listed in dvc.yaml (a list param); the validate stage hashes them into
    data/validated/plugins.json, a dep of exactly the stages that import plugins."""
    stages = dvc_stages(ROOT)
    runs = plugin_stages(ROOT)
    assert runs["active"] and not runs["convert"] and not runs["pretrain"]
    for name, stage in stages.items():
        if stage.get("always_changed"):
            continue
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
        assert ("data/validated/plugins.json" in deps) == runs[name], name
