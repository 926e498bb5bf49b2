"""The answer page over HTTP, without a browser: the store list and its corrections, and hostile
requests (a bad Content-Length, a body that is not a JSON object, a client that stops sending).
tests/test_annotate.py drives the same page in a real browser."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from pipeline.core.layout import Layout
from pipeline.oracle import answers
from pipeline.oracle.annotate import AnnotateError, AnswerPage, find_sheet, make_server
from test_answers import CLASSES, one_bit, sheet_dir

TIMEOUT = 1.0  # the server's read timeout in these tests


@pytest.fixture
def served(tmp_path):
    """A page on a free port: the sheet of cycle 2 (samples 4, 7, 9) is open; the store holds an
    answer cycle 1 used (sample 30, its sheet's image still on disk) and a full label (sample 31)."""
    sheet_dir(tmp_path, ids=(30,), asked=(5,), cycle=1)
    (Layout("digits", tmp_path).cycle_dir(0, "obcp", 1) / "manifest.json").write_text("{}")  # cycle 1 is done
    sheet_dir(tmp_path, cycle=2)
    layout = Layout("digits", tmp_path)
    answers.append(layout.answer_store, one_bit([30], [5], [True], source="answers.csv cycle 1"))
    answers.append(layout.answer_store, answers.rows([31], [-1], label=[8], source="page"))
    images = {30: (layout.cycle_dir(0, "obcp", 1) / "questions/30.png").read_bytes()}
    page = AnswerPage(find_sheet(layout, "obcp", 0, CLASSES), layout.answer_store, class_names=CLASSES,
                      images=images.get)
    server = make_server(page, read_timeout=TIMEOUT)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], layout
    server.shutdown()
    server.server_close()


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None,
            *, raw_head: str | None = None) -> tuple[int, dict, float]:
    """(status, JSON reply, seconds) of one request; `raw_head` replaces the generated head."""
    head = raw_head
    if head is None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
                 *(f"{k}: {v}" for k, v in (headers or {"Content-Length": str(len(body))}).items())]
        head = "\r\n".join(lines) + "\r\n\r\n"
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        reply = b""
        while chunk := sock.recv(1 << 16):
            reply += chunk
    seconds = time.monotonic() - t0
    if not reply:
        return 0, {}, seconds
    status = int(reply.split(b" ", 2)[1])
    payload = reply.split(b"\r\n\r\n", 1)[1]
    return status, json.loads(payload) if payload.startswith(b"{") else {}, seconds


def stored(layout: Layout) -> int:
    return len(answers.read(layout.answer_store))


GOOD = json.dumps({"sample_id": 4, "answer": "yes"}).encode()


@pytest.mark.parametrize("headers,body,says", [
    ({"Content-Length": "-1"}, GOOD, "Content-Length '-1' is not a byte count"),
    ({"Content-Length": "abc"}, GOOD, "is not a byte count"),
    ({"Content-Length": "+31"}, GOOD, "is not a byte count"),
    ({"Content-Length": "99999999"}, GOOD, "at most 65536 are accepted"),
    ({"Content-Length": str(len(GOOD)), "content-length": str(len(GOOD))}, GOOD, "more than one Content-Length"),
    ({"Transfer-Encoding": "chunked"}, b"1f\r\n" + GOOD + b"\r\n0\r\n\r\n", "Transfer-Encoding is not accepted"),
])
def test_bad_content_length_is_refused_at_once(served, headers, body, says):
    port, layout = served
    status, reply, seconds = request(port, "POST", "/answer", body, headers)
    assert status == 400 and says in reply["error"], reply
    assert seconds < TIMEOUT + 2  # answered, not waiting for the client to close
    assert stored(layout) == 2  # nothing recorded


@pytest.mark.parametrize("body,says", [
    (b"[4, \"yes\"]", "must be a JSON object"),
    (b"\"yes\"", "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b"42", "must be a JSON object"),
    (b"{oops", "the body is not JSON"),
    (b"{\"sample_id\": 4, \"answer\": \"\xff\"}", "the body is not JSON"),
])
def test_a_body_that_is_not_a_json_object_is_refused(served, body, says):
    port, layout = served
    for path in ("/answer", "/undo", "/fix"):
        status, reply, _ = request(port, "POST", path, body)
        assert status == 400 and says in reply["error"], reply
        assert "object has no attribute" not in reply["error"] and "Traceback" not in reply["error"]
    assert stored(layout) == 2


def test_every_request_has_a_read_timeout(served):
    port, layout = served
    # a body shorter than its Content-Length, the connection left open: 400 after the timeout
    head = (f"POST /answer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(GOOD) + 20}\r\n\r\n")
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + GOOD)
        reply = b""
        while chunk := sock.recv(1 << 16):
            reply += chunk
    assert b" 400 " in reply.split(b"\r\n")[0] and b"did not arrive within" in reply
    assert TIMEOUT - 0.2 < time.monotonic() - t0 < TIMEOUT + 3
    assert stored(layout) == 2
    # a client that connects and never sends its request: closed after the timeout
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /answer HTTP/1.1\r\nHost: 127.0.0.1")
        assert sock.recv(1 << 16) == b""
    assert time.monotonic() - t0 < TIMEOUT + 3
    # the page still answers
    status, reply, _ = request(port, "POST", "/answer", GOOD)
    assert status == 200 and reply["answered"] == 1 and stored(layout) == 3


def test_store_list_and_corrections_over_http(served):
    port, layout = served
    status, reply, _ = request(port, "GET", "/store", headers={})
    assert status == 200 and reply["total"] == 2
    assert [(r["sample_id"], r["question"], r["answer"]) for r in reply["rows"]] == [
        (31, "Which class is this?", "8"), (30, "Is this a 5?", "yes")]  # newest first
    status, reply, _ = request(port, "GET", "/store?sample_id=30", headers={})
    assert status == 200 and [r["sample_id"] for r in reply["rows"]] == [30]
    assert request(port, "GET", "/store?sample_id=x1", headers={})[0] == 400
    # an answer of a finished cycle (not on the open sheet) is corrected; its image is served
    status, reply, _ = request(port, "POST", "/fix", json.dumps({"sample_id": 30, "asked_class": 5,
                                                                  "answer": "no"}).encode())
    assert status == 200 and "yes -> no" in reply["fixed"], reply
    status, reply, _ = request(port, "POST", "/fix", json.dumps({"sample_id": 31, "asked_class": -1,
                                                                  "answer": "3"}).encode())
    assert status == 200 and "8 -> 3" in reply["fixed"]
    status, reply, _ = request(port, "POST", "/fix", json.dumps({"sample_id": 30, "asked_class": 6,
                                                                  "answer": "no"}).encode())
    assert status == 400 and "nothing to correct" in reply["error"] and "asked_class 5 (no)" in reply["error"]
    status, reply, _ = request(port, "POST", "/fix", json.dumps({"sample_id": True, "asked_class": 5,
                                                                  "answer": "no"}).encode())
    assert status == 400 and "sample_id must be an integer" in reply["error"]
    store = answers.read(layout.answer_store)
    assert len(store) == 4 and store["source"].tolist()[-2:] == ["page fix", "page fix"]  # history kept
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /img/30.png HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert b"200 OK" in sock.recv(1 << 16)
    assert request(port, "GET", "/img/32.png", headers={})[0] == 404  # never answered: not served


def test_page_without_an_open_sheet_lists_the_store(tmp_path):
    layout = Layout("digits", tmp_path)
    answers.append(layout.answer_store, one_bit([4, 7], [1, 2], [True, False]))
    page = AnswerPage(None, layout.answer_store, class_names=CLASSES)
    state = page.state()
    assert state["sheet"] is None and state["total"] == 0 and "can be corrected" in state["message"]
    with pytest.raises(AnnotateError, match="no question sheet is open"):
        page.answer(4, "yes")
    assert page.fix(7, 2, "Yes")["fixed"].endswith("the old answer stays as history.")
    assert [r["answer"] for r in page.store_rows(7)["rows"]] == ["yes"]
    assert page.image(4) is None  # no image source given
