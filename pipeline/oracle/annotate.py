"""`obcp annotate`: answer the human oracle's open questions, and correct any stored answer, on a
local web page.

The page shows one question at a time (the image enlarged, "Is this a {class}?"), takes
`y` / `n` (a class's digit on a full-label sheet), has undo, a progress bar and the list of
questions already answered (click one to change its answer). Every answer goes into the
answer store (pipeline.oracle.answers) the moment it is given, through the same validation as an
``answers.csv`` (`sheets.check_rows`), with an atomic write: closing the browser loses
nothing, and reopening the page resumes where it stopped. When every question is answered
the page says to rerun the pipeline.

Below, "All answers in the store" lists every answered question of the dataset, whichever
cycle asked it and whether or not that cycle still has a sheet, newest first and searchable
by sample id; each can be corrected there (pipeline.oracle.corrections; a new row, the old
one stays as history). Without an open sheet the page shows only that list.

The page also measures the annotation cost: each answer carries the seconds the person
spent on it, from the question shown to the key pressed (or button clicked). Gaps between
two signs of activity (a key, the mouse, focus) longer than the idle threshold
(``--idle``, 30 s by default) count as the threshold only, and time with the page hidden
(another tab, a minimised window) does not count. The seconds go into the answer store's
``seconds`` column; `obcp cost` reports them.

Besides a cycle's sheet, the page serves the sheet of the initial labeled set I^S when a
person labels it (``data/runs/seed<S>/initial/``, pipeline.oracle.initial) and its pool is
not written yet.

The server is the standard library's: it binds 127.0.0.1 by default and serves only the
page, its state, the store list and answers (JSON), and the images of the sheet's questions
and of answered samples; requests naming another host or coming from another origin are
refused (403), a bad ``Content-Length`` or a body that is not a JSON object gets 400, and
every request has a read timeout.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

from pipeline.oracle import answers, corrections, sheets
from pipeline.core.errors import ObcpError
from pipeline.core.layout import Layout

MAX_BODY = 1 << 16  # bytes of a request body (an answer is a few dozen)
READ_TIMEOUT = 10.0  # seconds a request may take to arrive (request line, headers, body)
STORE_ROWS = 100  # rows of the store list shown without a search


IDLE_SECONDS = 30.0  # default idle threshold of the page's timing
MAX_SECONDS = 86_400.0  # a longer time per answer is not a measurement


class AnnotateError(ObcpError):
    """No open question sheet to annotate, or a bad request to the answer page."""


@dataclass(frozen=True)
class Sheet:
    """The open question sheet of one arm and seed: the questions a cycle waits for."""

    cycle_dir: Path
    questions: pd.DataFrame  # [n] sample_id, image, asked_class, asked_class_name
    class_names: tuple[str, ...]
    arm: str
    seed: int

    @property
    def cycle(self) -> int:
        """The query cycle; 0 for the sheet of the initial labels."""
        name = self.cycle_dir.name
        return int(name.split("_")[1]) if name.startswith("cycle_") else 0

    @property
    def labels(self) -> bool:
        """A full-label sheet ("which class is this?", the `fullbit` arm)."""
        return sheets.is_label_sheet(self.questions["asked_class"])

    def text(self, asked_class: int) -> str:
        return sheets.question_text(asked_class, self.class_names)

    def image(self, sample_id: int) -> Path:
        return self.cycle_dir / sheets.QUESTIONS_DIR / f"{int(sample_id)}.png"


INITIAL = "initial labels"  # the Sheet.arm of the initial labels' sheet


def open_initial_sheet(layout: Layout, seed: int, class_names: Sequence[str]) -> Sheet | None:
    """The sheet of the initial labels of `seed` while its pool waits for them, else None."""
    folder = layout.initial_sheet_dir(seed)
    if not (folder / sheets.QUESTIONS_CSV).is_file() or layout.initial_pool(seed).exists():
        return None
    return Sheet(folder, sheets.read_sheet(folder), tuple(class_names), INITIAL, seed)


def find_sheet(layout: Layout, arm: str, seed: int, class_names: Sequence[str]) -> Sheet | None:
    """The open sheet of `seed`: the initial labels' while they are awaited, else the latest
    question sheet of `arm` whose cycle is not finished, or None."""
    initial = open_initial_sheet(layout, seed, class_names)
    if initial is not None:
        return initial
    arm_dir = layout.arm_dir(seed, arm)
    cycles = sorted(arm_dir.glob("cycle_*")) if arm_dir.is_dir() else []
    waiting = [d for d in cycles if (d / sheets.QUESTIONS_CSV).is_file() and not (d / "manifest.json").exists()]
    if not waiting:
        return None
    return Sheet(waiting[-1], sheets.read_sheet(waiting[-1]), tuple(class_names), arm, seed)


def open_sheet(layout: Layout, arm: str, seed: int, class_names: Sequence[str]) -> Sheet:
    """`find_sheet`, or `AnnotateError` when no cycle of `arm` and `seed` waits for answers."""
    sheet = find_sheet(layout, arm, seed, class_names)
    if sheet is None:
        raise AnnotateError(
            f"arm {arm!r} of seed {seed} has no open question sheet under {layout.arm_dir(seed, arm)} (no cycle "
            "waits for answers). With `oracle.kind: human` in params.yaml, run `obcp repro`: when it stops with "
            "'waiting for answers' (exit 3), run this command again. Stored answers can be corrected any time "
            "with `obcp answers fix` or on the page (`obcp annotate`)."
        )
    return sheet


class StoreImages:
    """PNG of an answered sample for the store list: a question sheet's image from any cycle
    folder that still has one, else the sample's pixels from the converted train set
    (``train.beton``, read through FFCV on first use; upscaled like a sheet's images)."""

    def __init__(self, layout: Layout, min_size: int = 64):
        self.layout = layout
        self.min_size = min_size
        self._cache: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, sample_id: int) -> bytes | None:
        sample_id = int(sample_id)
        with self._lock:
            if sample_id in self._cache:
                return self._cache[sample_id]
            found = sorted(self.layout.root.glob(f"data/runs/seed*/arms/*/cycle_*/{sheets.QUESTIONS_DIR}/"
                                                 f"{sample_id}.png"))
            data = next((p.read_bytes() for p in found if p.is_file() and not p.is_symlink()), None)
            if data is None and self.layout.beton("train").is_file():
                data = self._render(sample_id)
            if data is not None:
                self._cache[sample_id] = data
            return data

    def _render(self, sample_id: int) -> bytes | None:
        from pipeline.data.loaders import make_loader

        try:
            loader = make_loader(self.layout.beton("train"), batch_size=1, views=["raw"],
                                 indices=np.array([sample_id]), order="sequential", seed=0)
            batch = next(iter(loader))
        except (ObcpError, StopIteration):
            return None
        pixels = batch.views[0].permute(0, 2, 3, 1).numpy()[0]
        return sheets.upscale_png(pixels, self.min_size)


def _shown(sheet: Sheet, answer, label: int) -> str | None:
    if sheet.labels:
        return sheet.class_names[label] if label >= 0 else None
    return None if pd.isna(answer) else ("yes" if answer else "no")


def _int(value, name: str) -> int:
    """A request's integer field: a JSON integer or a string of digits (not a bool or a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or \
            not re.fullmatch(r"-?\d{1,18}", str(value).strip()):
        raise AnnotateError(f"{name} must be an integer, got {value!r}")
    return int(str(value).strip())


class AnswerPage:
    """The page's logic, independent of HTTP: state, answer, undo, the store list, corrections, images.

    `sheet` is the open question sheet, or None (then only the store list is shown);
    `class_names` is needed without a sheet; `images` gives the PNG of an answered sample
    that is not on the sheet (e.g. `StoreImages`)."""

    def __init__(self, sheet: Sheet | None, store: Path, *, class_names: Sequence[str] | None = None,
                 images: Callable[[int], bytes | None] | None = None,
                 on_complete: Callable[[str], None] | None = None,
                 idle_seconds: float = IDLE_SECONDS):
        if sheet is None and class_names is None:
            raise ValueError("an AnswerPage without a sheet needs class_names")
        if not (isinstance(idle_seconds, (int, float)) and 1 <= idle_seconds <= 3600):
            raise AnnotateError(f"the idle threshold must lie in [1, 3600] seconds, got {idle_seconds!r}")
        self.sheet = sheet
        self.class_names = tuple(class_names) if class_names is not None else sheet.class_names
        self.store = Path(store)
        self.images = images
        self.on_complete = on_complete
        self.idle_seconds = float(idle_seconds)
        self._lock = threading.Lock()
        self._announced = False

    def _lookup(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        store = answers.read(self.store)
        q = self.sheet.questions
        got = answers.lookup(store, q)
        rows = answers.current(store).set_index(answers.KEY)["row"]
        got["order"] = [rows.get((s, c)) for s, c in zip(q["sample_id"], q["asked_class"])]
        return q, got

    def state(self) -> dict:
        if self.sheet is None:
            return {
                "arm": None, "seed": None, "cycle": None, "labels": False, "classes": list(self.class_names),
                "sheet": None, "store": str(self.store), "questions": [], "answered": 0, "total": 0,
                "complete": False,
                "message": "No cycle waits for answers. Every answer in the store is listed below and can be "
                           "corrected there; after a correction, run `obcp repro` (it replays from the first "
                           "cycle that used the answer).",
            }
        q, got = self._lookup()
        items = [
            {"sample_id": int(sid), "question": self.sheet.text(int(asked)),
             "answer": _shown(self.sheet, ans, int(lab)) if done else None, "order": int(order) if done else None}
            for sid, asked, done, ans, lab, order in zip(q["sample_id"], q["asked_class"], got["answered"],
                                                        got["answer"], got["label"], got["order"])
        ]
        done = int(got["answered"].sum())
        complete = done == len(items)
        message = (f"All {len(items)} questions are answered and saved in {self.store}. Rerun `obcp repro` "
                   "(or `dvc repro`) to continue the run.") if complete else ""
        if complete and not self._announced and self.on_complete is not None:
            self._announced = True
            self.on_complete(message)
        return {
            "arm": self.sheet.arm, "seed": self.sheet.seed, "cycle": self.sheet.cycle,
            "labels": self.sheet.labels, "classes": list(self.sheet.class_names),
            "sheet": str(self.sheet.cycle_dir / sheets.QUESTIONS_CSV), "store": str(self.store),
            "questions": items, "answered": done, "total": len(items), "complete": complete, "message": message,
            "idle_seconds": self.idle_seconds,
        }

    def answer(self, sample_id, value, seconds=None) -> dict:
        """Record one answer (validated like a line of answers.csv) and the seconds the person
        spent on it (None: not measured); returns the new state."""
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not 0 <= seconds <= MAX_SECONDS):
            raise AnnotateError(f"seconds must be a number in [0, {MAX_SECONDS}] or absent, got {seconds!r}")
        if self.sheet is None:
            raise AnnotateError("no question sheet is open; correct a stored answer with /fix")
        q = self.sheet.questions
        got, problems = sheets.check_rows(
            [("1", str(sample_id), str(value))], q["sample_id"].to_numpy(),
            class_names=self.sheet.class_names if self.sheet.labels else None, complete=False, unit="answer",
        )
        if problems:
            raise AnnotateError("; ".join(problems))
        sid = next(iter(got))
        asked = int(q.loc[q["sample_id"] == sid, "asked_class"].iloc[0])
        if self.sheet.labels:
            row = answers.rows([sid], [asked], source="page", label=[got[sid]], seconds=[seconds])
        else:
            row = answers.rows([sid], [asked], source="page", answer=[got[sid]], seconds=[seconds])
        with self._lock:
            answers.append(self.store, row)
        return self.state()

    def undo(self) -> dict:
        """Withdraw the sheet's most recent answer; its question is open again."""
        if self.sheet is None:
            raise AnnotateError("nothing to undo: no question sheet is open")
        with self._lock:
            q, got = self._lookup()
            answered = got[got["answered"]]
            if answered.empty:
                raise AnnotateError("nothing to undo: no question of this sheet is answered")
            last = answered.loc[answered["order"].astype(int).idxmax()]
            answers.append(self.store, answers.withdrawal(int(last["sample_id"]), int(last["asked_class"])))
        state = self.state()
        state["undone"] = int(last["sample_id"])
        return state

    def store_rows(self, sample_id=None, limit: int = STORE_ROWS) -> dict:
        """Every answer in force in the store (of one sample: `sample_id`), newest first: at most
        `limit` rows without a search. {"rows": [{sample_id, asked_class, question, answer,
        answered_at, source, labels}], "shown", "total"}."""
        sid = None if sample_id in (None, "") else _int(sample_id, "sample_id")
        table = corrections.table(answers.read(self.store), self.class_names, sample_id=sid)
        total = len(table)
        if sid is None:
            table = table.head(limit)
        rows = [{"sample_id": int(r.sample_id), "asked_class": int(r.asked_class), "question": r.question,
                 "answer": r.answer, "answered_at": r.answered_at, "source": r.source,
                 "labels": int(r.asked_class) == answers.LABEL_QUESTION} for r in table.itertuples(index=False)]
        return {"rows": rows, "shown": len(rows), "total": total, "classes": list(self.class_names)}

    def fix(self, sample_id, asked_class, value) -> dict:
        """Correct a stored answer (any question in the store); returns the new state with
        `fixed`, what changed."""
        with self._lock:
            done = corrections.fix(self.store, _int(sample_id, "sample_id"), _int(asked_class, "asked_class"),
                                   value, class_names=self.class_names, source="page fix")
        state = self.state()
        state["fixed"] = done.describe(self.store)
        return state

    def image(self, sample_id: int) -> bytes | None:
        """A question's PNG: the sheet's, else (an answered sample) `images`; None otherwise."""
        if self.sheet is not None and sample_id in set(self.sheet.questions["sample_id"].tolist()):
            path = self.sheet.image(sample_id)
            return path.read_bytes() if path.is_file() else None
        if self.images is None or not (answers.read(self.store)["sample_id"] == sample_id).any():
            return None
        return self.images(sample_id)


_IMAGE = re.compile(r"^/img/(\d{1,18})\.png$")


class BadRequest(Exception):
    """A request the page refuses with 400 (its message is the reply's `error`)."""


def make_server(page: AnswerPage, host: str = "127.0.0.1", port: int = 0, *,
                read_timeout: float = READ_TIMEOUT) -> ThreadingHTTPServer:
    """An HTTP server for `page` (not started: call serve_forever, e.g. in a thread). Every
    request must arrive within `read_timeout` seconds per read (request line, headers, body)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "obcp-annotate"
        timeout = read_timeout  # StreamRequestHandler: the socket's timeout for every read

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
            pass

        def _allowed(self) -> bool:
            port_ = self.server.server_address[1]
            hosts = {f"{h}:{port_}" for h in (host, "127.0.0.1", "localhost", "[::1]")}
            origin = self.headers.get("Origin")
            return self.headers.get("Host") in hosts and (origin is None or origin in {f"http://{h}" for h in hosts})

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _body(self) -> dict:
            """The request's JSON object body ({} when there is none); `BadRequest` otherwise."""
            if self.headers.get("Transfer-Encoding"):
                raise BadRequest("Transfer-Encoding is not accepted: send the body with a Content-Length")
            lengths = self.headers.get_all("Content-Length") or []
            if len(lengths) > 1:
                raise BadRequest("more than one Content-Length header")
            raw = lengths[0].strip() if lengths else "0"
            if not re.fullmatch(r"[0-9]{1,9}", raw):
                raise BadRequest(f"Content-Length {raw[:20]!r} is not a byte count")
            length = int(raw)
            if length > MAX_BODY:
                raise BadRequest(f"the body is {length} bytes; at most {MAX_BODY} are accepted")
            try:
                data = self.rfile.read(length)
            except TimeoutError:
                raise BadRequest(f"the body did not arrive within {read_timeout:g} s") from None
            if len(data) < length:
                raise BadRequest(f"the body ended after {len(data)} of the {length} bytes of its Content-Length")
            if not data.strip():
                return {}
            try:
                body = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise BadRequest("the body is not JSON") from None
            if not isinstance(body, dict):
                raise BadRequest(f"the body must be a JSON object like {{\"sample_id\": 4, \"answer\": \"yes\"}}, "
                                 f"not a JSON {type(body).__name__}")
            return body

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if not self._allowed():
                return self._json(HTTPStatus.FORBIDDEN, {"error": "wrong host or origin"})
            url = urlsplit(self.path)
            if url.path == "/":
                return self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            if url.path == "/state":
                return self._json(HTTPStatus.OK, page.state())
            if url.path == "/store":
                query = parse_qs(url.query)
                try:
                    return self._json(HTTPStatus.OK, page.store_rows((query.get("sample_id") or [None])[0]))
                except ObcpError as exc:
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            match = _IMAGE.match(url.path)
            data = page.image(int(match.group(1))) if match else None
            if data is None:
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return self._send(HTTPStatus.OK, data, "image/png")

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            self.close_connection = True  # one request per connection: a refused body leaves nothing behind
            if not self._allowed() or self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                return self._json(HTTPStatus.FORBIDDEN, {"error": "wrong host, origin or content type"})
            if self.path not in ("/answer", "/undo", "/fix"):
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            try:
                body = self._body()
                if self.path == "/answer":
                    return self._json(HTTPStatus.OK, page.answer(body.get("sample_id"), body.get("answer"),
                                                                 body.get("seconds")))
                if self.path == "/undo":
                    return self._json(HTTPStatus.OK, page.undo())
                return self._json(HTTPStatus.OK, page.fix(body.get("sample_id"), body.get("asked_class"),
                                                          body.get("answer")))
            except (BadRequest, ObcpError) as exc:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

    return ThreadingHTTPServer((host, port), Handler)


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>obcp: answer the questions</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2733}
header{padding:12px 24px;background:#1d2733;color:#fff;font-size:15px}
main{display:flex;gap:28px;padding:24px;align-items:flex-start}
#card{background:#fff;border-radius:10px;padding:24px 32px;box-shadow:0 1px 4px #0002;text-align:center;width:440px}
#bar{height:14px;background:#dde1e6;border-radius:7px;overflow:hidden}
#fill{height:100%;width:0;background:#2e7d32;transition:width .15s}
#progress{margin:8px 0 16px;color:#555}
#img{width:288px;height:288px;image-rendering:pixelated;border:1px solid #ccd;background:#000}
#question{font-size:30px;margin:18px 0}
#buttons button{font-size:20px;padding:10px 26px;margin:4px;border-radius:6px;border:1px solid #889;cursor:pointer}
#buttons .yes{background:#e8f5e9}#buttons .no{background:#ffebee}
.keys{color:#666;font-size:14px}#error{color:#c62828;min-height:1em}
#done{display:none;font-size:20px;background:#e8f5e9;border-radius:8px;padding:20px;margin-top:12px}
aside{background:#fff;border-radius:10px;padding:16px 20px;box-shadow:0 1px 4px #0002;min-width:260px}
aside h2{font-size:17px;margin:0 0 8px}
#answered{list-style:none;margin:0;padding:0;max-height:560px;overflow:auto}
#answered li{display:flex;align-items:center;gap:10px;padding:3px 0;cursor:pointer}
#answered img{width:36px;height:36px;image-rendering:pixelated}
.a-yes{color:#2e7d32;font-weight:600}.a-no{color:#c62828;font-weight:600}
#storebox{background:#fff;border-radius:10px;padding:16px 20px;box-shadow:0 1px 4px #0002;margin:0 24px 24px}
#storebox h2{font-size:17px;margin:0 0 8px}
#search{font-size:16px;padding:4px 8px;width:200px}
#store{list-style:none;margin:8px 0 0;padding:0}
#store li{display:flex;align-items:center;gap:12px;padding:4px 0;border-top:1px solid #eee}
#store img{width:36px;height:36px;image-rendering:pixelated;background:#000}
#store .meta{color:#777;font-size:13px}
#store button{font-size:14px;padding:3px 12px;border-radius:5px;border:1px solid #889;cursor:pointer}
#store button:disabled{opacity:.4;cursor:default}
#fixed{color:#2e7d32;min-height:1em}
</style></head>
<body>
<header id="title">obcp</header>
<p id="nostore" style="display:none;margin:24px;font-size:18px"></p>
<main>
<section id="card">
  <div id="bar"><div id="fill"></div></div>
  <div id="progress"></div>
  <div id="ask"><img id="img" alt="the image asked about"><div id="question"></div>
  <div id="buttons"></div>
  <p class="keys" id="keys"></p></div>
  <p id="error"></p>
  <div id="done"></div>
</section>
<aside><h2>Answered (<span id="nans">0</span>) &mdash; click to change</h2><ol id="answered"></ol></aside>
</main>
<section id="storebox">
  <h2>All answers in the store (<span id="nstore">0</span>) &mdash; correct any of them</h2>
  <label>Sample id: <input id="search" type="search" inputmode="numeric" placeholder="e.g. 412"></label>
  <span class="meta" id="storenote"></span>
  <p id="fixed"></p>
  <ul id="store"></ul>
</section>
<script>
let S = null, cur = null, timer = null;
const $ = id => document.getElementById(id);
function el(tag, cls, text) { const e = document.createElement(tag); e.className = cls; e.textContent = text; return e; }
async function load() { const r = await fetch('state'); S = await r.json(); render(); loadStore(); }
async function loadStore() {
  const q = $('search').value.trim();
  const r = await fetch('store' + (q ? '?sample_id=' + encodeURIComponent(q) : ''));
  const j = await r.json();
  if (!r.ok) { $('storenote').textContent = j.error; $('store').innerHTML = ''; return; }
  $('nstore').textContent = j.total;
  $('storenote').textContent = q ? `${j.shown} answer(s) about sample ${q}` :
    (j.shown < j.total ? `the newest ${j.shown}; search a sample id for the others` : '');
  $('store').innerHTML = '';
  for (const row of j.rows) {
    const li = document.createElement('li');
    li.dataset.sampleId = row.sample_id; li.dataset.askedClass = row.asked_class;
    const img = document.createElement('img'); img.src = `img/${row.sample_id}.png`; img.alt = '';
    li.appendChild(img);
    li.appendChild(el('span', '', `#${row.sample_id} ${row.question}`));
    li.appendChild(el('span', 'answer a-' + row.answer, row.answer));
    li.appendChild(el('span', 'meta', `${row.answered_at} · ${row.source}`));
    const values = row.labels ? j.classes : ['yes', 'no'];
    if (row.labels) {
      const sel = document.createElement('select'); sel.className = 'label';
      values.forEach((c, i) => { const o = document.createElement('option'); o.value = String(i); o.textContent = c;
                                 o.selected = c === row.answer; sel.appendChild(o); });
      const b = document.createElement('button'); b.textContent = 'set'; b.className = 'fix';
      b.onclick = () => fix(row, sel.value); li.appendChild(sel); li.appendChild(b);
    } else {
      for (const v of values) {
        const b = document.createElement('button'); b.textContent = v; b.className = 'fix fix-' + v;
        b.disabled = v === row.answer; b.onclick = () => fix(row, v); li.appendChild(b);
      }
    }
    $('store').appendChild(li);
  }
}
async function fix(row, value) {
  const j = await post('fix', {sample_id: row.sample_id, asked_class: row.asked_class, answer: value});
  if (j) { $('fixed').textContent = j.fixed; render(); loadStore(); }
}
async function post(path, body) {
  const r = await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'},
                               body: JSON.stringify(body || {})});
  const j = await r.json();
  if (!r.ok) { $('error').textContent = j.error; return null; }
  $('error').textContent = ''; S = j; return j;
}
function choices() {
  if (!S.labels) return [['yes', 'y', 'yes'], ['no', 'n', 'no']];
  return S.classes.map((c, i) => [c, i < 10 ? String(i) : '', '']);
}
// annotation cost: active seconds from the question shown to the answer; a gap between two signs
// of activity counts at most idle_seconds, time with the page hidden not at all
const idle = () => 1000 * (S && S.idle_seconds ? S.idle_seconds : 30);
function tick() { if (!timer || timer.paused) return; const now = performance.now();
  timer.active += Math.min(now - timer.last, idle()); timer.last = now; }
for (const ev of ['keydown', 'mousemove', 'mousedown', 'wheel', 'touchstart', 'focus'])
  window.addEventListener(ev, tick, {capture: true, passive: true});
document.addEventListener('visibilitychange', () => {
  if (!timer) return;
  if (document.hidden) { tick(); timer.paused = true; } else { timer.paused = false; timer.last = performance.now(); }
});
function answer(value) { if (cur === null) return; const sid = S.questions[cur].sample_id;
  tick(); const seconds = timer && timer.sid === sid ? Math.round(timer.active) / 1000 : null;
  post('answer', {sample_id: sid, answer: value, seconds: seconds}).then(j => { if (j) { cur = null; render(); } }); }
function undo() {
  post('undo').then(j => { if (j) { cur = S.questions.findIndex(q => q.sample_id === j.undone); render(); } });
}
function render() {
  const qs = S.questions;
  $('title').textContent = S.sheet === null ? `obcp · answer store ${S.store}` :
    `obcp · arm ${S.arm} · seed ${S.seed} · cycle ${S.cycle} · ${S.sheet}`;
  if (S.sheet === null) {
    $('card').style.display = 'none'; document.querySelector('aside').style.display = 'none';
    $('nostore').textContent = S.message; $('nostore').style.display = 'block'; return;
  }
  $('fill').style.width = (100 * S.answered / Math.max(1, S.total)) + '%';
  $('progress').textContent = `${S.answered} of ${S.total} answered`;
  if (cur === null || cur < 0) cur = qs.findIndex(q => q.answer === null);
  if (cur < 0) cur = null;
  const list = qs.map((q, i) => [q, i]).filter(([q]) => q.answer !== null).sort((a, b) => b[0].order - a[0].order);
  $('nans').textContent = list.length;
  $('answered').innerHTML = '';
  for (const [q, i] of list) {
    const li = document.createElement('li'); li.dataset.sampleId = q.sample_id;
    li.innerHTML = `<img src="img/${q.sample_id}.png" alt=""><span>#${q.sample_id} ${q.question}</span>` +
                   `<span class="a-${q.answer}">${q.answer}</span>`;
    li.onclick = () => { cur = i; render(); };
    $('answered').appendChild(li);
  }
  $('done').style.display = S.complete && cur === null ? 'block' : 'none';
  $('done').textContent = S.message;
  $('ask').style.display = cur === null ? 'none' : 'block';
  if (cur === null) { timer = null; return; }
  const q = qs[cur];
  if (!timer || timer.sid !== q.sample_id)
    timer = {sid: q.sample_id, active: 0, last: performance.now(), paused: document.hidden};
  $('img').src = `img/${q.sample_id}.png`;
  $('question').textContent = q.question + (q.answer !== null ? ` (now: ${q.answer})` : '');
  $('buttons').innerHTML = '';
  for (const [value, key, cls] of choices()) {
    const b = document.createElement('button'); b.className = cls;
    b.textContent = key ? `${value} (${key})` : value; b.onclick = () => answer(value);
    $('buttons').appendChild(b);
  }
  $('keys').textContent = (S.labels ? 'Keys: 0-9 = class, ' : 'Keys: y = yes, n = no, ') + 'u or Backspace = undo';
}
let searchTimer = null;
$('search').addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadStore, 200); });
document.addEventListener('keydown', e => {
  if (!S || e.ctrlKey || e.metaKey || e.altKey || e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT') return;
  const k = e.key.toLowerCase();
  if (k === 'u' || k === 'backspace') { e.preventDefault(); undo(); return; }
  for (const [value, key] of choices()) if (key && k === key) { e.preventDefault(); answer(value); return; }
});
load();
</script></body></html>
"""
