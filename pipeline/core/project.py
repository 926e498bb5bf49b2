"""The project checkout as a unit: its code, its pipeline definition, and the inputs no stage writes.

Whatever runs the real pipeline in a copy of the project (the study's cells, gpu-check's
throw-away project, the tests' tiny projects) copies `CODE` and gives the copy the
`shared_inputs` that dvc.yaml's stages read but no stage writes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pipeline.core.errors import ObcpError

CODE: tuple[str, ...] = ("dvc.yaml", ".dvcignore", "stages", "pipeline")  # what a copy of the pipeline needs


class ProjectError(ObcpError):
    """The project's pipeline definition cannot be read."""


def shared_inputs(root: Path) -> list[str]:
    """Inputs of the pipeline that are neither code nor any stage's output (relative paths).

    They are the project's data, the same for every copy: the answer store (``reports/answers``)
    today. Read from dvc.yaml: every dependency not under `CODE`, not templated, and not an output.
    """
    try:
        doc = yaml.safe_load((Path(root) / "dvc.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProjectError(f"{Path(root) / 'dvc.yaml'} cannot be read ({exc}); restore it.") from None
    deps, outs = [], set()
    for stage in (doc.get("stages") or {}).values():
        body = stage.get("do", stage) if isinstance(stage, dict) else {}
        deps += [d for d in body.get("deps") or [] if isinstance(d, str)]
        for kind in ("outs", "metrics", "plots"):
            outs |= {o if isinstance(o, str) else next(iter(o)) for o in body.get(kind) or []}
    prefixes = [o.split("${")[0] for o in outs]  # a templated output covers everything under its fixed part

    def derived(dep: str) -> bool:
        return any(dep == p or p.startswith(dep.rstrip("/") + "/") or (p.endswith("/") and dep.startswith(p))
                   for p in prefixes)

    return [d for d in dict.fromkeys(deps) if "${" not in d and d.split("/")[0] not in CODE and not derived(d)]


def copy_code(root: Path, dest: Path) -> None:
    """`CODE` of the checkout `root` into `dest` (no caches), and each shared input as a fresh
    one: a shared folder comes with only its README (what keeps it in git, so that `dvc exp
    run --temp` finds it), a shared file as it is. A fresh copy starts with no human answers."""
    root, dest = Path(root), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy(src, dest / name)
    for rel in shared_inputs(root):
        src, out = root / rel, dest / rel
        if src.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, out)
        else:
            out.mkdir(parents=True, exist_ok=True)
            if (src / "README.md").is_file():
                shutil.copy(src / "README.md", out / "README.md")
