"""Which files each DVC stage runs, from the import graph, against its `deps:` in dvc.yaml.

A stage runs its script (`stages/<name>.py`, or the module after `pipeline.core.launch`),
every `pipeline` module that script imports, transitively (imports inside functions
included: the closure over-approximates, which is the safe side), and the package
`__init__` of each. The registries (`pipeline.core.registry`) import their built-in
strategies, methods and oracles by name when names are checked: that happens in a stage
whose script calls `load_params`/`open_run` without `names=False`, or that imports a
module other than `pipeline.core.config` that looks a registry up (registering does not).

`missing_deps(root)` lists, per stage, the files it runs that no `deps:` path covers;
tests/test_deps.py fails on any. Changing any file a stage runs must rerun that stage.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from pipeline.core.registry import METHODS, ORACLES, STRATEGIES

_REGISTRY = "pipeline.core.registry"
_CONFIG = "pipeline.core.config"
_NAMED_CALLS = {"load_params", "open_run"}


def module_file(root: Path, module: str) -> Path | None:
    """The file of a `pipeline`/`stages` module under `root` (package → its __init__.py)."""
    base = root / Path(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(root: Path, module: str, path: Path) -> set[str]:
    """Modules `path` imports (only `pipeline.*`/`stages.*` that exist under `root`)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    out = set()
    for name in found:
        if name.split(".")[0] in ("pipeline", "stages") and module_file(root, name) is not None:
            out.add(name)
    return out


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(root: Path, entries: list[str]) -> set[str]:
    """Every module the `entries` import, transitively, with their parent packages."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(root, module)
        if path is None:
            continue
        todo.extend(_imports(root, module, path))
        todo.extend(_parents(module))
    return {m for m in seen if module_file(root, m) is not None}


def checks_names(root: Path, script: Path, modules: set[str]) -> bool:
    """Whether a stage loads the registries' built-ins (see the module docstring)."""
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in _NAMED_CALLS:
            off = any(k.arg == "names" and isinstance(k.value, ast.Constant) and k.value.value is False
                      for k in node.keywords)
            if not off:
                return True
    for module in modules - {_CONFIG, _REGISTRY}:
        path = module_file(root, module)
        if _REGISTRY in _imports(root, module, path) and _looks_up(path):
            return True
    return False


_REGISTRIES = {"STRATEGIES", "METHODS", "ORACLES"}


def _looks_up(path: Path) -> bool:
    """Whether a module looks a registry up (`.get`, `.names`, `in`, iteration), which imports
    the built-ins; registering an entry (`.register`) does not."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in _REGISTRIES
                and node.attr in ("get", "names")):
            return True
        if isinstance(node, ast.Compare) and any(isinstance(c, ast.Name) and c.id in _REGISTRIES
                                                 for c in node.comparators):
            return True
        if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.iter, ast.Name) \
                and node.iter.id in _REGISTRIES:
            return True
    return False


def stage_entries(cmd: str) -> list[str]:
    """The modules a stage command runs: `python -m A [B …]` (launch runs module B)."""
    found = re.findall(r"-m\s+([\w.]+)", cmd)
    return found + re.findall(r"-m\s+[\w.]*\blaunch\s+\S+\s+([\w.]+)", cmd)


def stage_files(root: Path, cmd: str) -> set[Path]:
    """Every file a stage command runs (relative to `root`)."""
    entries = stage_entries(cmd)
    modules = closure(root, entries)
    scripts = [module_file(root, e) for e in entries if e.startswith("stages.")]
    if any(checks_names(root, s, modules) for s in scripts if s is not None):
        builtins = [m for reg in (STRATEGIES, METHODS, ORACLES) for m in reg._builtins]
        modules |= closure(root, builtins)
    return {module_file(root, m).relative_to(root) for m in modules}


def dvc_stages(root: Path) -> dict[str, dict]:
    """dvc.yaml's stages, `foreach` templates resolved for their first item."""
    doc = yaml.safe_load((root / "dvc.yaml").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())
    out = {}
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        text = yaml.safe_dump(body)
        item = (params.get(stage["foreach"].strip("${}")) or [0])[0] if "foreach" in stage else None

        def sub(m: re.Match) -> str:
            key = m.group(1)
            if key == "item":
                return str(item)
            value = params
            for part in key.split("."):
                value = value[part]
            return str(value)

        out[name] = yaml.safe_load(re.sub(r"\$\{([\w.]+)\}", sub, text))
    return out


def inert(path: Path) -> bool:
    """A module that runs no code a result could depend on: only a docstring and dunder
    constants (`__version__ = "…"`), e.g. an empty package `__init__`."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and all(isinstance(t, ast.Name) and t.id.startswith("__") for t in node.targets)):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        return False
    return True


def _covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def plugin_stages(root: Path) -> dict[str, bool]:
    """{stage: whether it runs plugin code (it checks names, so it imports `plugins:`)}."""
    out = {}
    for name, stage in dvc_stages(root).items():
        entries = stage_entries(stage["cmd"])
        modules = closure(root, entries)
        scripts = [module_file(root, e) for e in entries if e.startswith("stages.")]
        out[name] = any(checks_names(root, s, modules) for s in scripts if s is not None)
    return out


def missing_deps(root: Path) -> dict[str, list[str]]:
    """{stage: [files it runs that its deps do not cover]} (empty lists left out)."""
    out = {}
    for name, stage in dvc_stages(root).items():
        if stage.get("always_changed"):
            continue  # runs on every `dvc repro` whatever its deps
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
        missing = sorted(str(f) for f in stage_files(root, stage["cmd"])
                         if not _covered(f, deps) and not inert(root / f))
        if missing:
            out[name] = missing
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(missing_deps(Path(sys.argv[1] if len(sys.argv) > 1 else ".")), indent=1))
