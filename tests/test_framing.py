"""The stdio frame reader (lsp_server/framing.py): each bad frame is skipped or served, and the
next valid message is always read."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from lsp_server import framing
from lsp_server.framing import MAX_MESSAGE_BYTES, Frame, FrameReader, Problem

BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "parafill/status", "params": {}}).encode()
NEXT = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}).encode()


def frame(body: bytes, length: int | str | None = None) -> bytes:
    n = len(body) if length is None else length
    return b"Content-Length: %s\r\n\r\n" % str(n).encode() + body


def bodies(events) -> list[bytes]:
    return [e.body for e in events if isinstance(e, Frame)]


def problems(events) -> list[str]:
    return [e.text for e in events if isinstance(e, Problem)]


def test_the_cap_is_64_mib():
    assert MAX_MESSAGE_BYTES == 64 * 1024 * 1024


def test_frames_in_one_chunk_or_byte_by_byte():
    data = frame(BODY) + frame(NEXT)
    events = FrameReader().feed(data)
    assert bodies(events) == [BODY, NEXT] and not problems(events)
    assert all(e.note is None for e in events)
    reader, events = FrameReader(), []
    for i in range(len(data)):
        events += reader.feed(data[i : i + 1])
    assert bodies(events) == [BODY, NEXT] and not problems(events)


@pytest.mark.parametrize(
    "header",
    [
        b"content-length: %d\r\n\r\n",
        b"CONTENT-LENGTH: %d\r\n\r\n",
        b"Content-Length:%d\r\n\r\n",
        b"Content-Length  :  %d  \r\n\r\n",
        b"Content-Length: %d\n\n",
        b"Content-Length: %d\r\n\n",
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: %d\r\n\r\n",
        b"Content-Length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n",
        b"Content-Length: %d\nX-Other:1\n\n",
    ],
)
def test_header_variants_are_read(header):
    events = FrameReader().feed(header % len(BODY) + BODY + frame(NEXT))
    assert bodies(events) == [BODY, NEXT]
    assert not problems(events)


def test_no_empty_line_after_the_headers():
    events = FrameReader().feed(b"Content-Length: %d\r\n" % len(BODY) + BODY + frame(NEXT))
    assert bodies(events) == [BODY, NEXT]
    assert "no empty line" in events[0].note


@pytest.mark.parametrize(
    "bad",
    [
        frame(BODY, "abc"),
        frame(BODY, -5),
        frame(BODY, ""),
        frame(BODY, "1e3"),
        frame(BODY, 0),
        frame(BODY, 10**12),
        frame(BODY, 2**31),
        frame(BODY, MAX_MESSAGE_BYTES + 1),
        frame(BODY, 10**40),
        b"\r\n\r\n" + BODY,  # no Content-Length
        b"Content-Type: application/vscode-jsonrpc\r\n\r\n" + BODY,
        b"hello\r\n",
        bytes(range(256)) * 4,
    ],
    ids=[
        "not-a-number",
        "negative",
        "empty",
        "exponent",
        "zero",
        "1e12",
        "2^31",
        "cap+1",
        "1e40",
        "missing",
        "content-type-only",
        "garbage-line",
        "binary",
    ],
)
def test_a_bad_frame_is_skipped_and_the_next_is_read(bad):
    events = FrameReader().feed(bad + frame(NEXT))
    assert bodies(events) == [NEXT]
    assert problems(events)  # logged


def test_over_the_cap_is_never_buffered():
    reader = FrameReader()
    assert problems(reader.feed(frame(b"", 10**12)))
    for _ in range(64):  # 4 MiB of the announced body: skipped as it comes
        assert not bodies(reader.feed(b'{"x": "' + b"a" * 65536 + b'"}'))
        assert len(reader.buf) <= framing.MAX_HEADER_BYTES
    assert bodies(reader.feed(frame(NEXT))) == [NEXT]


def test_a_smaller_cap():
    assert bodies(FrameReader(max_bytes=len(BODY)).feed(frame(BODY))) == [BODY]
    events = FrameReader(max_bytes=len(BODY) - 1).feed(frame(BODY) + frame(NEXT[:20], 20))
    assert bodies(events) == [NEXT[:20]] and "more than" in problems(events)[0]


def test_too_small_a_length():
    """The cut body is handed on (the protocol answers -32700), the rest skipped as garbage."""
    events = FrameReader().feed(frame(BODY, len(BODY) - 5) + frame(NEXT))
    assert bodies(events) == [BODY[:-5], NEXT]
    assert problems(events) == ["skipped 5 bytes that were not a message"]


def test_too_large_a_length_does_not_swallow_the_next_message():
    events = FrameReader().feed(frame(BODY, len(BODY) + 1000) + frame(NEXT))
    assert bodies(events) == [BODY, NEXT]
    assert "another header" in events[0].note


def test_too_large_a_length_cut_inside_the_next_header():
    for extra in (1, 3, 14, 16):  # the declared end falls inside "Content-Length: N\r\n"
        events = FrameReader().feed(frame(BODY, len(BODY) + extra) + frame(NEXT))
        assert bodies(events) == [BODY, NEXT], extra


def test_too_large_a_length_and_nothing_after_it():
    """Nothing follows: once the sender stalls, a whole JSON value is the message; the next frame
    is read as usual."""
    reader = FrameReader()
    assert reader.feed(frame(BODY, len(BODY) + 1000)) == []
    assert reader.in_body
    events = reader.stalled()
    assert bodies(events) == [BODY] and "only" in events[0].note
    assert not reader.in_body and reader.stalled() == []
    assert bodies(reader.feed(frame(NEXT))) == [NEXT]


def test_a_slow_body_is_not_cut():
    reader = FrameReader()
    assert reader.feed(frame(BODY)[:-10]) == []
    assert reader.stalled() == [] and reader.stalled() == []  # not a whole JSON value yet
    assert bodies(reader.feed(BODY[-10:])) == [BODY]


def test_header_text_inside_a_json_string_is_body():
    body = json.dumps({"jsonrpc": "2.0", "method": "x", "params": {"t": "Content-Length: 5\r\n"}})
    body = body.encode()
    events = FrameReader().feed(frame(body) + frame(NEXT))
    assert bodies(events) == [body, NEXT] and not problems(events)
    pretty = json.dumps({"a": "Content-Length: 12"}, indent=2).encode()  # raw line breaks
    assert bodies(FrameReader().feed(frame(pretty))) == [pretty]


def test_garbage_is_bounded_and_found_mid_line():
    reader = FrameReader()
    for _ in range(32):
        reader.feed(b"A" * 65536)
        assert len(reader.buf) <= framing.MAX_HEADER_BYTES
    events = reader.feed(b"}}}" + frame(NEXT))
    assert bodies(events) == [NEXT]
    assert problems(events) == [f"skipped {32 * 65536 + 3} bytes that were not a message"]


def test_a_content_length_with_no_message_after_it():
    events = FrameReader().feed(b"Content-Length: 5\r\n" + frame(NEXT))
    assert bodies(events) == [NEXT]
    assert problems(events) == ["a Content-Length header with no message after it"]


def test_a_large_body_in_small_chunks():
    body = json.dumps({"jsonrpc": "2.0", "method": "x", "params": {"t": "x" * 3_000_000}}).encode()
    data = frame(body) + frame(NEXT)
    reader, events = FrameReader(), []
    start = time.perf_counter()
    for i in range(0, len(data), 4096):
        events += reader.feed(data[i : i + 4096])
    assert bodies(events) == [body, NEXT]
    assert time.perf_counter() - start < 5


class _Protocol:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def set_writer(self, writer) -> None:
        self.writer = writer

    def handle_body(self, body: bytes) -> None:
        self.bodies.append(body)


class _Server:
    def __init__(self) -> None:
        self.protocol = _Protocol()
        self.logged: list[str] = []
        self.stopped = False

    def log(self, text: str, kind=None) -> None:
        self.logged.append(text)

    def shutdown(self) -> None:
        self.stopped = True


def test_start_io_over_a_pipe(monkeypatch):
    """The stdio loop: bodies handed to the protocol, a too-long frame served after a stall,
    problems logged, the end of input ends it."""
    monkeypatch.setattr(framing, "STALL_SECONDS", 0.2)
    server = _Server()
    r, w = os.pipe()
    out_r, out_w = os.pipe()

    def client() -> None:
        os.write(w, frame(BODY, len(BODY) + 50))
        time.sleep(0.6)
        os.write(w, frame(b"{", "x") + frame(NEXT))
        os.close(w)

    t = threading.Thread(target=client)
    t.start()
    with os.fdopen(r, "rb") as stdin, os.fdopen(out_w, "wb") as stdout:
        framing.start_io(server, stdin, stdout)
    t.join()
    os.close(out_r)
    assert server.protocol.bodies == [BODY, NEXT]
    assert server.stopped
    assert any("only" in text for text in server.logged)
    assert any("not a length" in text for text in server.logged)
