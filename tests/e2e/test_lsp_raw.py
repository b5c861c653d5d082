"""The real server process over raw stdio bytes, without an LSP client library: malformed JSON-RPC
and broken frames are answered or skipped, and the server keeps serving (issue #16 items 2-4;
lsp_server/protocol.py and lsp_server/framing.py). Synchronous: kept apart from the
asyncio-marked modules. One server (fake model) serves a whole table; a row that breaks it gets a
fresh one, so every row reports for itself."""

from __future__ import annotations

import json
import select
import subprocess
import time

import pytest
from lsp_helpers import fake_server_command, server_env

URI = "file:///t/raw.py"
TEXT = "# expect: go()\nx = \n"
PROBE_TIMEOUT = 5.0  # a valid request after a bad message or frame is answered within this


class Raw:
    """The real server (fake model) over raw stdio: write bytes, read answers by id."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            fake_server_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=server_env(),
        )
        self.buf = b""
        self.responses: list[dict] = []  # answers read and not yet taken
        self.next_id = 1000
        self.healthy = True

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, msg: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **msg}).encode()
        self.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def _read(self, wait: float) -> None:
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        if ready:
            data = self.proc.stdout.read1(65536)
            if not data:
                raise AssertionError(f"the server exited ({self.proc.wait()})")
            self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, rest = self.buf.split(b"\r\n\r\n", 1)
            n = int(head.split(b"Content-Length:")[1].split(b"\r\n")[0])
            if len(rest) < n:
                break
            msg, self.buf = json.loads(rest[:n]), rest[n:]
            if "method" not in msg:  # server-sent notifications and requests are skipped
                self.responses.append(msg)

    def wait_for(self, ids: list, timeout: float) -> None:
        """Until a response has come for each id (None: as many id-null answers as listed)."""
        deadline = time.time() + timeout
        while True:
            got = [r.get("id") for r in self.responses]
            if all(got.count(i) >= ids.count(i) for i in ids):
                return
            if time.time() > deadline:
                raise AssertionError(f"no answer to {ids} in {timeout} s (got {got})")
            self._read(0.1)

    def answer(self, msg_id, timeout: float = 20.0) -> dict:
        """The response with this id."""
        self.wait_for([msg_id], timeout)
        i = next(i for i, r in enumerate(self.responses) if r.get("id") == msg_id)
        return self.responses.pop(i)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def probe(self) -> None:
        """A valid request is answered, within PROBE_TIMEOUT."""
        msg_id = self.new_id()
        self.send({"id": msg_id, "method": "parafill/status", "params": {}})
        assert "state" in self.answer(msg_id, PROBE_TIMEOUT)["result"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _started() -> Raw:
    s = Raw()
    s.send({"id": 1, "method": "initialize", "params": {"capabilities": {}}})
    s.answer(1)
    s.send({"method": "initialized", "params": {}})
    s.send(
        {
            "method": "textDocument/didOpen",
            "params": {
                "textDocument": {"uri": URI, "languageId": "python", "version": 1, "text": TEXT}
            },
        }
    )
    s.probe()
    return s


@pytest.fixture(scope="module")
def shared():
    holder = {"server": _started()}
    yield holder
    holder["server"].close()


@pytest.fixture
def raw(shared):
    """The module's server, or a fresh one when the row before broke it."""
    s = shared["server"]
    if not s.healthy or s.proc.poll() is not None:
        s.close()
        s = shared["server"] = _started()
    s.healthy = False
    s.responses.clear()
    yield s
    s.healthy = True  # only reached when the row passed


def _codes(responses: list[dict]) -> list:
    """(id, error code or None for a result) of each response, in a comparable order."""
    out = [(r.get("id"), r["error"]["code"] if "error" in r else None) for r in responses]
    return sorted(out, key=repr)


# ---- malformed messages -------------------------------------------------------------------------

CONTEXT = {"triggerKind": 1}


def inline(msg_id, position=None, *, drop=(), **fields) -> dict:
    params = {
        "textDocument": {"uri": URI},
        "position": position or {"line": 1, "character": 4},
        "context": CONTEXT,
        **fields,
    }
    params = {k: v for k, v in params.items() if k not in drop}
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "textDocument/inlineCompletion",
        "params": params,
    }


def status(msg_id, **extra) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": "parafill/status", "params": {}, **extra}


def without(msg: dict, *keys: str) -> dict:
    return {k: v for k, v in msg.items() if k not in keys}


INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, NO_METHOD = -32602, -32600, -32700, -32601

# (name, the message (an object, or the raw body), the answers expected: (id, code or None))
MALFORMED = [
    ("string line", inline(10, {"line": "1", "character": 4}), [(10, INVALID_PARAMS)]),
    ("string character", inline(11, {"line": 1, "character": "4"}), [(11, INVALID_PARAMS)]),
    ("negative line", inline(12, {"line": -1, "character": 0}), [(12, INVALID_PARAMS)]),
    ("negative character", inline(13, {"line": 1, "character": -4}), [(13, INVALID_PARAMS)]),
    ("fractional line", inline(14, {"line": 1.5, "character": 4}), [(14, INVALID_PARAMS)]),
    ("boolean line", inline(15, {"line": True, "character": 4}), [(15, INVALID_PARAMS)]),
    ("line 2^31", inline(16, {"line": 2**31, "character": 0}), [(16, INVALID_PARAMS)]),
    ("character 10^20", inline(17, {"line": 1, "character": 10**20}), [(17, INVALID_PARAMS)]),
    ("line 2^31-1 clamps", inline(18, {"line": 2**31 - 1, "character": 0}), [(18, None)]),
    ("past the end clamps", inline(19, {"line": 99, "character": 99}), [(19, None)]),
    ("missing params", without(inline(20), "params"), [(20, INVALID_PARAMS)]),
    ("array params", {**inline(21), "params": [URI, 1, 4]}, [(21, INVALID_PARAMS)]),
    ("null params", {**inline(22), "params": None}, [(22, INVALID_PARAMS)]),
    ("string params", {**inline(23), "params": "x"}, [(23, INVALID_REQUEST)]),
    ("missing context", inline(24, drop=("context",)), [(24, INVALID_PARAMS)]),
    ("triggerKind 7", inline(25, context={"triggerKind": 7}), [(25, INVALID_PARAMS)]),
    ("numeric uri", inline(26, textDocument={"uri": 5}), [(26, INVALID_PARAMS)]),
    (
        "invalid JSON with an id",
        b'{"jsonrpc": "2.0", "id": 30, "method": "x", "params": {',
        [(None, PARSE_ERROR)],
    ),
    ("not UTF-8", b'{"jsonrpc": "2.0", "id": 31, "method": "\xff\xfe"}', [(None, PARSE_ERROR)]),
    ("a batch", [status(32), status(33)], [(32, INVALID_REQUEST), (33, INVALID_REQUEST)]),
    ("an empty batch", [], [(None, INVALID_REQUEST)]),
    ("no jsonrpc", without(status(34), "jsonrpc"), [(34, INVALID_REQUEST)]),
    ('"jsonrpc": "1.0"', status(35, jsonrpc="1.0"), [(35, INVALID_REQUEST)]),
    ("an object id", status({"a": 1}), [(None, INVALID_REQUEST)]),
    ("a null id", status(None), [(None, INVALID_REQUEST)]),
    ("a boolean id", status(True), [(None, INVALID_REQUEST)]),
    ("a float id", status(1.5), [(None, INVALID_REQUEST)]),
    (
        "a 20 MB body that is not JSON",
        b'{"jsonrpc": "2.0", "id": 43, "method": "x", "params": "' + b"a" * (20 << 20),
        [(None, PARSE_ERROR)],
    ),
    ("a numeric method", status(39, method=5), [(39, INVALID_REQUEST)]),
    ("not an object", b"5", [(None, INVALID_REQUEST)]),
    ("nothing to do", {"jsonrpc": "2.0", "id": 40}, [(40, INVALID_REQUEST)]),
    (
        "nested jsonrpc in params",
        inline(41, textDocument={"uri": URI, "jsonrpc": "2.0", "id": 9, "method": "x"}),
        [(41, None)],
    ),
    (
        "nested jsonrpc in untyped params",
        {**status(42), "params": {"x": {"jsonrpc": "2.0", "method": "initialized"}}},
        [(42, None)],
    ),
    ("unknown method", status(43, method="no/such"), [(43, NO_METHOD)]),
    (
        "a notification's method with an id",
        {**status(44), "method": "initialized"},
        [(44, INVALID_REQUEST)],
    ),
    (
        "a notification with bad params (dropped)",
        {
            "jsonrpc": "2.0",
            "method": "textDocument/didChange",
            "params": {"textDocument": {"uri": URI, "version": "x"}, "contentChanges": []},
        },
        [],
    ),
    ("a request without its id (dropped)", without(inline(45), "id"), []),
    (
        "an invalid notification",
        {"jsonrpc": "1.0", "method": "initialized"},
        [(None, INVALID_REQUEST)],
    ),
    ("a response to nothing (dropped)", {"jsonrpc": "2.0", "id": 46, "result": None}, []),
]


@pytest.mark.parametrize(
    ("message", "expected"),
    [row[1:] for row in MALFORMED],
    ids=[row[0] for row in MALFORMED],
)
def test_malformed_message_is_answered(raw: Raw, message, expected):
    """Each malformed message gets the JSON-RPC error its id can carry (none for a notification),
    nothing else, and the next valid request is answered."""
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    raw.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    raw.wait_for([i for i, _ in expected], PROBE_TIMEOUT)
    raw.probe()
    assert _codes(raw.responses) == sorted(expected, key=repr)


def test_still_serving_after_the_table(raw: Raw):
    raw.send(inline(50))
    assert raw.answer(50)["result"]["items"][0]["insertText"] == "go()"


def test_invalid_json_then_initialize():
    """A body that is not JSON before anything else: -32700 with id null, then initialize works."""
    s = Raw()
    try:
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {'
        s.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        error = s.answer(None)["error"]
        assert error["code"] == PARSE_ERROR and "not JSON" in error["message"]
        s.send({"id": 2, "method": "initialize", "params": {"capabilities": {}}})
        assert "capabilities" in s.answer(2)["result"]
    finally:
        s.close()


# ---- frames -------------------------------------------------------------------------------------


def _body(msg_id: int) -> bytes:
    return json.dumps(status(msg_id)).encode()


def _frame(msg_id: int, header: bytes = b"Content-Length: %d\r\n\r\n", delta: int = 0) -> bytes:
    body = _body(msg_id)
    return (header % (len(body) + delta) if b"%d" in header else header) + body


# (name, bytes with the request of the given id in a bad frame, whether that request is answered
# (True: with a result; "parse": -32700 id null; False: not at all), wait for that answer before
# the probe (the frame is complete only when the sender stalls))
FRAMES = [
    ("length 10^12", 60, _frame(60, b"Content-Length: 1000000000000\r\n\r\n"), False),
    ("length 2^31", 61, _frame(61, b"Content-Length: 2147483648\r\n\r\n"), False),
    ("length over the 64 MiB cap", 62, _frame(62, b"Content-Length: 67108865\r\n\r\n"), False),
    ("too small", 63, _frame(63, delta=-5), "parse"),
    ("too large, a message after it", 64, _frame(64, delta=500), True),
    ("too large, nothing after it", 65, _frame(65, delta=500), "stall"),
    ("zero", 66, _frame(66, b"Content-Length: 0\r\n\r\n"), False),
    ("negative", 67, _frame(67, b"Content-Length: -5\r\n\r\n"), False),
    ("not a number", 68, _frame(68, b"Content-Length: abc\r\n\r\n"), False),
    ("missing", 69, _frame(69, b"\r\n\r\n"), False),
    ("Content-Type only", 70, _frame(70, b"Content-Type: application/json\r\n\r\n"), False),
    ("lower-case name", 71, _frame(71, b"content-length: %d\r\n\r\n"), True),
    ("no space after the colon", 72, _frame(72, b"Content-Length:%d\r\n\r\n"), True),
    ("LF-only lines", 73, _frame(73, b"Content-Length: %d\n\n"), True),
    ("Content-Type first", 74, _frame(74, b"Content-Type: x\r\nContent-Length: %d\r\n\r\n"), True),
    ("no empty line", 75, _frame(75, b"Content-Length: %d\r\n"), True),
    ("garbage before", 76, b"hello\r\n}}" + _frame(76), True),
    ("binary garbage before", 77, bytes(range(256)) + _frame(77), True),
    ("a long line of garbage", 78, b"A" * 200_000 + _frame(78), True),
    ("a header and no body", 79, b"Content-Length: 40\r\n\r\n", False),
]


@pytest.mark.parametrize(
    ("msg_id", "data", "answered"), [row[1:] for row in FRAMES], ids=[row[0] for row in FRAMES]
)
def test_bad_frame_then_next_message(raw: Raw, msg_id, data, answered):
    """Each bad frame is served, answered -32700 or skipped (and logged), never kills, hangs or
    deafens the server: a valid request after it is answered within a few seconds."""
    raw.write(data)
    if answered == "stall":  # only the sender's pause shows that the frame is complete
        assert "result" in raw.answer(msg_id, PROBE_TIMEOUT)
    raw.probe()
    expected = {True: [(msg_id, None)], "parse": [(None, PARSE_ERROR)], False: [], "stall": []}
    raw.wait_for([i for i, _ in expected[answered]], PROBE_TIMEOUT)
    assert _codes(raw.responses) == expected[answered]


# ---- lifecycle ----------------------------------------------------------------------------------


def test_lifecycle_is_enforced():
    """LSP's lifecycle: a request before initialize is -32002 (ServerNotInitialized); a second
    initialize is an invalid request and keeps the first session; after shutdown requests are
    invalid; exit without shutdown exits 1, after shutdown 0."""
    init = {"method": "initialize", "params": {"capabilities": {}}}
    status_ = {"method": "parafill/status", "params": {}}
    s = Raw()
    try:
        s.send({"id": 1, **status_})
        assert s.answer(1)["error"]["code"] == -32002
        s.send({"id": 2, **init})
        assert "capabilities" in s.answer(2)["result"]
        s.send({"method": "initialized", "params": {}})
        s.send({"id": 3, **init})
        assert s.answer(3)["error"]["code"] == -32600
        s.send({"id": 4, **status_})
        assert s.answer(4)["result"]["state"] in ("loading", "ready")
        s.send({"id": 5, "method": "shutdown"})
        assert s.answer(5)["result"] is None
        s.send({"id": 6, **status_})
        assert s.answer(6)["error"]["code"] == -32600
        s.send({"method": "exit"})
        assert s.proc.wait(timeout=20) == 0
    finally:
        s.close()
    s = Raw()
    try:
        s.send({"id": 1, **init})
        s.answer(1)
        s.send({"method": "exit"})  # no shutdown first
        assert s.proc.wait(timeout=20) == 1
    finally:
        s.close()
