"""A project's own strategies, methods or oracles: the modules listed under `plugins:`.

Each entry of `plugins:` in params.yaml is a Python file of the project (a path relative
to the project root, e.g. `my_strategies.py`) or an importable module name. Importing it
registers its objects (`pipeline.core.registry`); params are validated after that, so an
arm may name a plugin's strategy. `fingerprint` hashes the plugin files: the `validate`
stage writes it, and every stage that runs plugin code depends on that file, so editing a
plugin reruns those stages.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from pipeline.core.errors import ObcpError


class PluginError(ObcpError):
    """A plugin listed in params.yaml cannot be found or fails to import."""


def _is_file(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry


def _module_name(path: Path) -> str:
    return "obcp_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12] + "_" + path.stem


def load(entries: Sequence[str], root: Path = Path(".")) -> list[str]:
    """Import every plugin once (files by path, others by module name); returns the module names."""
    names = []
    for entry in entries:
        if _is_file(entry):
            path = (Path(root) / entry).resolve()
            if not path.is_file():
                raise PluginError(f"plugins: {entry!r} is not a file under {Path(root).resolve()}; list a Python "
                                  "file of the project (e.g. my_strategies.py) or an importable module.")
            name = _module_name(path)
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except ObcpError:
                    del sys.modules[name]
                    raise
                except Exception as exc:
                    del sys.modules[name]
                    raise PluginError(f"plugins: {entry} failed to import ({type(exc).__name__}: {exc}).") from exc
        else:
            name = entry
            try:
                importlib.import_module(entry)
            except ImportError as exc:
                raise PluginError(f"plugins: cannot import module {entry!r} ({exc}).") from exc
        names.append(name)
    return names


def fingerprint(entries: Sequence[str], root: Path = Path(".")) -> dict[str, str]:
    """{entry: sha256 of its file} for file plugins; module plugins map to their module file's hash."""
    out = {}
    for entry in entries:
        if _is_file(entry):
            path = Path(root) / entry
        else:
            spec = importlib.util.find_spec(entry)
            if spec is None or spec.origin is None:
                raise PluginError(f"plugins: cannot find module {entry!r}.")
            path = Path(spec.origin)
        if not path.is_file():
            raise PluginError(f"plugins: {entry!r} is not a file.")
        out[entry] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
