"""The docs site (docs/, mkdocs.yml) and the README: what is generated, and the checks.

``python -m pipeline.tools.docs`` (= ``make docs``) regenerates, from the code and the committed
reports:

- ``docs/parameters.md`` from the config schema and params.yaml (:mod:`.params_page`);
- ``docs/cli.md`` from the typer app (:mod:`.cli_page`);
- every ``<!-- generated: NAME -->`` region of README.md and docs/*.md (:mod:`.blocks`).

``--check`` changes nothing and exits 1 listing what is stale, and every quoted number that no
named report holds (:mod:`.numbers`). ``tests/test_docs.py`` runs the same checks and
``mkdocs build --strict``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.tools.docs import blocks, cli_page, numbers, params_page

# Whole pages rendered from code: path under the root → renderer(root) → text.
GENERATED_PAGES: dict[str, Callable[[Path], str]] = {
    "docs/parameters.md": params_page.render,
    "docs/cli.md": cli_page.render,
}


def pages(root: Path) -> list[Path]:
    """The README and every docs page written in this repository (not the linked reports)."""
    root = Path(root)
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    docs = root / "docs"
    if docs.is_dir():
        found += sorted(p for p in docs.rglob("*.md") if not p.relative_to(docs).parts[0] == "reports"
                        and not (docs / p.relative_to(docs).parts[0]).is_symlink())
    return found


def rendered(root: Path) -> dict[Path, str]:
    """What every generated page and every page with generated regions should contain."""
    root = Path(root)
    out: dict[Path, str] = {}
    for rel, render in GENERATED_PAGES.items():
        out[root / rel] = render(root)
    for page in pages(root):
        if page.relative_to(root).as_posix() in GENERATED_PAGES:
            continue
        text = page.read_text()
        if blocks.REGION.search(text):
            out[page] = blocks.fill(text, blocks.Page(root, page.relative_to(root)))
    return out


def stale(root: Path) -> list[Path]:
    """Pages whose committed text differs from what `rendered` gives."""
    return [p for p, text in rendered(root).items() if not p.is_file() or p.read_text() != text]


def regenerate(root: Path) -> list[Path]:
    """Write every page that `stale` lists; return them."""
    from pipeline.core import io

    changed = []
    for path, text in rendered(root).items():
        if not path.is_file() or path.read_text() != text:
            io.write_text(path, text)
            changed.append(path)
    return changed


def number_problems(root: Path) -> list[str]:
    """Quoted numbers without a source, or not in their named sources, over README and docs."""
    root = Path(root)
    problems: list[str] = []
    for page in pages(root):
        if page.relative_to(root).as_posix() in GENERATED_PAGES:
            continue
        problems += numbers.check_page(page, root)
    return problems
