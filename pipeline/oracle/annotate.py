"""`obcp annotate`: answer the human oracle's open questions on a local web page.

The page shows one question at a time (the image enlarged, "Is this a {class}?"), takes
`y` / `n` (a class's digit on a full-label sheet), has undo, a progress bar and the list of
questions already answered (click one to change its answer). Every answer goes into the
answer store (pipeline.oracle.answers) the moment it is given, through the same validation as an
``answers.csv`` (`sheets.check_rows`), with an atomic write: closing the browser loses
nothing, and reopening the page resumes where it stopped. When every question is answered
the page says to rerun `dvc repro`.

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
page, its state and answers (JSON), and the sheet's question images; requests naming
another host or coming from another origin are refused.
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

import pandas as pd

from pipeline.oracle import answers, sheets
from pipeline.core.errors import ObcpError
from pipeline.core.layout import Layout


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


def open_sheet(layout: Layout, arm: str, seed: int, class_names: Sequence[str]) -> Sheet:
    """The open sheet of `seed`: the initial labels' while they are awaited, else the latest
    question sheet of `arm` whose cycle is not finished."""
    initial = open_initial_sheet(layout, seed, class_names)
    if initial is not None:
        return initial
    arm_dir = layout.arm_dir(seed, arm)
    cycles = sorted(arm_dir.glob("cycle_*")) if arm_dir.is_dir() else []
    waiting = [d for d in cycles if (d / sheets.QUESTIONS_CSV).is_file() and not (d / "manifest.json").exists()]
    if not waiting:
        raise AnnotateError(
            f"arm {arm!r} of seed {seed} has no open question sheet under {arm_dir} (no cycle waits for "
            "answers). With `oracle.kind: human` in params.yaml, run `dvc repro`: when it stops with "
            "'waiting for answers', run this command again."
        )
    sheet = sheets.read_sheet(waiting[-1])
    return Sheet(waiting[-1], sheet, tuple(class_names), arm, seed)


def _shown(sheet: Sheet, answer, label: int) -> str | None:
    if sheet.labels:
        return sheet.class_names[label] if label >= 0 else None
    return None if pd.isna(answer) else ("yes" if answer else "no")


class AnswerPage:
    """The page's logic, independent of HTTP: state, answer, undo, images."""

    def __init__(self, sheet: Sheet, store: Path, *, on_complete: Callable[[str], None] | None = None,
                 idle_seconds: float = IDLE_SECONDS):
        if not (isinstance(idle_seconds, (int, float)) and 1 <= idle_seconds <= 3600):
            raise AnnotateError(f"the idle threshold must lie in [1, 3600] seconds, got {idle_seconds!r}")
        self.sheet = sheet
        self.store = Path(store)
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
        q, got = self._lookup()
        items = [
            {"sample_id": int(sid), "question": self.sheet.text(int(asked)),
             "answer": _shown(self.sheet, ans, int(lab)) if done else None, "order": int(order) if done else None}
            for sid, asked, done, ans, lab, order in zip(q["sample_id"], q["asked_class"], got["answered"],
                                                        got["answer"], got["label"], got["order"])
        ]
        done = int(got["answered"].sum())
        complete = done == len(items)
        message = (f"All {len(items)} questions are answered and saved in {self.store}. Rerun `dvc repro` "
                   "to continue the run.") if complete else ""
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

    def image(self, sample_id: int) -> bytes | None:
        if sample_id not in set(self.sheet.questions["sample_id"].tolist()):
            return None
        path = self.sheet.image(sample_id)
        return path.read_bytes() if path.is_file() else None


_IMAGE = re.compile(r"^/img/(\d+)\.png$")


def make_server(page: AnswerPage, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for `page` (not started: call serve_forever, e.g. in a thread)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "obcp-annotate"

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

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if not self._allowed():
                return self._json(HTTPStatus.FORBIDDEN, {"error": "wrong host or origin"})
            path = self.path.split("?", 1)[0]
            if path == "/":
                return self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            if path == "/state":
                return self._json(HTTPStatus.OK, page.state())
            match = _IMAGE.match(path)
            data = page.image(int(match.group(1))) if match else None
            if data is None:
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return self._send(HTTPStatus.OK, data, "image/png")

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            if not self._allowed() or self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                return self._json(HTTPStatus.FORBIDDEN, {"error": "wrong host, origin or content type"})
            try:
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 16)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/answer":
                    return self._json(HTTPStatus.OK, page.answer(body.get("sample_id"), body.get("answer"),
                                                                 body.get("seconds")))
                if self.path == "/undo":
                    return self._json(HTTPStatus.OK, page.undo())
            except (ObcpError, ValueError, AttributeError) as exc:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

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
</style></head>
<body>
<header id="title">obcp</header>
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
<script>
let S = null, cur = null, timer = null;
const $ = id => document.getElementById(id);
async function load() { const r = await fetch('state'); S = await r.json(); render(); }
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
  $('title').textContent = `obcp · arm ${S.arm} · seed ${S.seed} · cycle ${S.cycle} · ${S.sheet}`;
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
document.addEventListener('keydown', e => {
  if (!S || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  if (k === 'u' || k === 'backspace') { e.preventDefault(); undo(); return; }
  for (const [value, key] of choices()) if (key && k === key) { e.preventDefault(); answer(value); return; }
});
load();
</script></body></html>
"""
