"""Every number a page quotes must come from a committed file that the page names.

Generated regions (:mod:`pipeline.tools.docs.blocks`) are checked by re-rendering them. For
prose, a block (a paragraph, a list or a table: lines up to the next blank line) that quotes a
result names its sources in an HTML comment, invisible on GitHub and on the site::

    On the fresh seeds ObCP is 0.4 to 1.1 points behind margin selection.
    <!-- numbers: reports/study/paired.csv -->

:func:`check_page` finds every *quoted number* in prose — a decimal (``96.9``, ``−0.8``), a
percentage (``10 %``), a duration (``3 min 53 s``), a count with thousands separators
(``11 221``) or with a unit (``498 bits``, ``1.6 GiB``) — and reports each one that is either in
a block without sources, or that no number in the named sources rounds to (as written, as a
percentage of a fraction, or in GiB of MiB or bytes). Plain integers (``4 cycles``, ``Eq. 7``)
are not quoted numbers. Text in code spans and code blocks is exempt: commands and params.

``<!-- numbers: cited -->`` marks numbers quoted from another work (a paper, another code base),
which no report of ours can hold; use it only for those.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipeline.tools.docs.blocks import regions

MARKER = re.compile(r"<!--\s*numbers:\s*(?P<sources>.*?)\s*-->")
CITED = "cited"
_MINUS = str.maketrans({"−": "-", "\u2009": " ", "\u202f": " ", "\u00a0": " "})

_DURATION = re.compile(r"(?<![\w.])(?:(?P<h>\d+) h (?P<hm>\d+) min|(?P<m>\d+) min(?: (?P<ms>\d+) s)?"
                       r"|(?P<s>\d+(?:\.\d+)?) s)(?![\w])")
_DECIMAL = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.]*\d)")
_THOUSANDS = re.compile(r"(?<![\w.])\d{1,3}(?: \d{3})+(?![\d.])")
_UNIT = re.compile(r"(?<![\w.])(?P<n>\d+) ?(?:%|GiB|GB|MiB|MB|images/s|img/s|bits\b)")
_SOURCE_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SCALES = (1.0, 100.0, 1 / 1024, 1 / 2**30, 1e-9)


@dataclass(frozen=True)
class Quote:
    """A number as a page writes it."""

    text: str
    value: float
    decimals: int
    seconds: bool = False  # a duration, in seconds


def _prose(line: str) -> str:
    """`line` without code spans, HTML comments and link targets."""
    line = re.sub(r"<!--.*?-->", " ", line)
    line = re.sub(r"`[^`]*`", " ", line)
    line = re.sub(r"\]\([^)]*\)", "]", line)
    line = re.sub(r"https?://\S+", " ", line)
    return line.translate(_MINUS)


def quotes(text: str) -> list[Quote]:
    """The quoted numbers of a piece of prose (see the module's docstring)."""
    text = _prose(text)
    out: list[Quote] = []

    def take(span: tuple[int, int]) -> None:
        nonlocal text
        text = text[: span[0]] + " " * (span[1] - span[0]) + text[span[1]:]

    for m in list(_DURATION.finditer(text)):
        if m.group("h"):
            secs = int(m.group("h")) * 3600 + int(m.group("hm")) * 60
        elif m.group("m"):
            secs = int(m.group("m")) * 60 + int(m.group("ms") or 0)
        else:
            secs = float(m.group("s"))
        out.append(Quote(m.group(0), float(secs), 0, seconds=True))
        take(m.span())
    for m in list(_THOUSANDS.finditer(text)):
        out.append(Quote(m.group(0), float(m.group(0).replace(" ", "")), 0))
        take(m.span())
    for m in list(_DECIMAL.finditer(text)):
        digits = m.group(0).lstrip("+-")
        out.append(Quote(m.group(0), float(digits), len(digits.split(".")[1])))
        take(m.span())
    for m in list(_UNIT.finditer(text)):
        out.append(Quote(m.group(0), float(m.group("n")), 0))
        take(m.span())
    return out


def source_values(path: Path) -> tuple[float, ...]:
    """Every number written in a file (thousands separators and unicode minus understood)."""
    st = path.stat()
    return _values(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _values(path: str, mtime_ns: int, size: int) -> tuple[float, ...]:
    text = Path(path).read_text(errors="replace").translate(_MINUS)
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(" ", ""), text)
    return tuple(float(m.group(0)) for m in _SOURCE_NUMBER.finditer(text))


def supported(quote: Quote, values: tuple[float, ...]) -> bool:
    """Whether some source value, rounded as the quote is written, gives the quote."""
    want = f"{abs(quote.value):.{quote.decimals}f}"
    for v in values:
        if quote.seconds:
            if abs(abs(v) - quote.value) < 1 or (quote.value % 60 == 0 and round(abs(v) / 60) * 60 == quote.value):
                return True
            continue
        for scale in _SCALES:
            if f"{abs(v) * scale:.{quote.decimals}f}" == want:
                return True
    return False


@dataclass(frozen=True)
class Block:
    start: int  # 1-based line number of its first line
    lines: tuple[str, ...]


def blocks(text: str) -> list[Block]:
    """Paragraphs, lists and tables of prose: runs of lines outside code fences and generated regions."""
    skip: set[int] = set()
    for a, b in regions(text):
        skip.update(range(a, b + 1))
    out: list[Block] = []
    current: list[str] = []
    start = 0
    fence: str | None = None
    for no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is None and (stripped.startswith("```") or stripped.startswith("~~~")):
            fence = stripped[:3]
            skip.add(no)
        elif fence is not None:
            skip.add(no)
            if stripped.startswith(fence):
                fence = None
        if no in skip or not stripped:
            if current:
                out.append(Block(start, tuple(current)))
                current = []
            continue
        if not current:
            start = no
        current.append(line)
    if current:
        out.append(Block(start, tuple(current)))
    return out


def check_text(text: str, name: str, root: Path) -> list[str]:
    """Problems with the quoted numbers of page `name` (its text `text`); sources are relative to `root`."""
    problems: list[str] = []
    for block in blocks(text):
        joined = "\n".join(block.lines)
        sources = [s for m in MARKER.finditer(re.sub(r"`[^`]*`", " ", joined)) for s in m.group("sources").split()]
        found: list[tuple[int, Quote]] = []
        for offset, line in enumerate(block.lines):
            found += [(block.start + offset, q) for q in quotes(line)]
        if not found:
            continue
        if not sources:
            first_line, first = found[0]
            problems.append(
                f"{name}:{first_line}: quotes {', '.join(q.text.strip() for _, q in found)} without naming a "
                "source; add <!-- numbers: FILE ... --> naming the committed report(s) they come from"
            )
            continue
        if CITED in sources:
            continue
        values: tuple[float, ...] = ()
        for src in sources:
            path = root / src
            if not path.is_file():
                problems.append(f"{name}:{block.start}: names the source {src}, which does not exist")
                continue
            values += source_values(path.resolve())
        for line_no, q in found:
            if not supported(q, values):
                problems.append(f"{name}:{line_no}: {q.text.strip()} is in none of {', '.join(sources)}")
    return problems


def check_page(path: Path, root: Path) -> list[str]:
    """:func:`check_text` of the file at `path`."""
    return check_text(path.read_text(), path.relative_to(root).as_posix(), root)
