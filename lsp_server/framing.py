"""Reading LSP messages from stdio: the base protocol's frames, read forgivingly and within bounds.

pygls's reader (pygls/io_.py `run_async`) reads a header only when it is exactly
`Content-Length: N\\r\\n`, then waits for exactly N bytes: a length of 10^12 ended the process
(MemoryError), 2^31 hung it, and a wrong or missing length, a lower-case name, no space after the
colon or LF-only lines left it alive but deaf to every later message. `parafill serve` reads with
`start_io` here instead, by these rules:

1. A frame is header lines, an empty line, then the body. A line ends with CRLF or LF alone. Header
   names are matched regardless of case, with or without spaces around the colon; only
   `Content-Length` is read (`Content-Type` and other headers are skipped, before or after it). A
   header block with no empty line after it ends at the first line that is not a header (the body).
2. `Content-Length` is decimal digits and at most `MAX_MESSAGE_BYTES` (64 MiB). A value that is not a
   number (negative, empty, `abc`), a larger one (the message is never buffered) and 0 (an empty
   message) are logged as errors and the header is dropped; the body it announced is then garbage
   (rule 3). A header line longer than `MAX_HEADER_BYTES` is dropped too.
3. Bytes that are not a frame (garbage) are skipped up to the next `Content-Length` header, found
   anywhere, even mid-line; their count is logged when it is found. While no header is in sight
   only the last incomplete line (at most `MAX_HEADER_BYTES`) is kept, so garbage never grows the
   buffer.
4. A body is the declared number of bytes, with one exception. A JSON body never holds
   `Content-Length: N` followed by a raw line break (JSON strings escape line breaks, and the
   words are not JSON outside a string), so such a header inside the declared bytes proves the
   length was too large: the body ends where the header starts, is handed on as it is (served if it
   is JSON), and reading resumes at that header; the same when a complete body is not JSON and
   holds `Content-Length` or ends in the start of it (a header cut by the declared end). A message
   sent after a frame whose length was too large is therefore never swallowed by it.
5. A declared body still incomplete after `STALL_SECONDS` without a new byte is handed on if the
   bytes so far are one whole JSON value (the length was too large and nothing followed); otherwise
   it is awaited further. A body whose end is merely slow is never cut: a JSON value is whole only
   once its last byte has come.
6. A body that is not JSON is answered by the protocol (lsp_server/protocol.py) with -32700 and id
   null, as JSON-RPC says; an envelope or params it cannot take, with -32600 / -32602.

`FrameReader` is the pure part (bytes in, `Frame` and `Problem` out; tests/test_framing.py);
`start_io` runs it over stdin in place of pygls's `JsonRPCServer.start_io`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import BinaryIO

from lsprotocol import types

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the largest body read; a larger Content-Length is dropped
MAX_HEADER_BYTES = 8192  # the longest header line (and header block) kept while it is incomplete
STALL_SECONDS = 1.0  # a declared body this long without a new byte is tried as a whole (rule 5)
READ_CHUNK = 1 << 16

log = logging.getLogger("parafill.framing")

_NAME = b"content-length"
_NAME_RE = re.compile(rb"content-length[ \t]*:", re.IGNORECASE)  # a header's start, anywhere
# a complete header line: what proves a body's declared length wrong (rule 4)
_HEADER_RE = re.compile(rb"content-length[ \t]*:[ \t]*[0-9]+[ \t]*\r?\n", re.IGNORECASE)
_TCHARS = rb"!#$%&'*+.^_`|~0-9A-Za-z-"
_HEADER_LINE_RE = re.compile(rb"[" + _TCHARS + rb"]+[ \t]*:")  # any header, at a line start
_PARTIAL_NAME_RE = re.compile(rb"[" + _TCHARS + rb" \t]*\Z")  # a header name still coming
_HEADER_LINES_RE = re.compile(rb"(?:[" + _TCHARS + rb"]+[ \t]*:[^\n]*\n|\r?\n)*")


@dataclass(frozen=True)
class Frame:
    """A message body to hand to the JSON-RPC layer; `note` says what was irregular about it."""

    body: bytes
    note: str | None = None


@dataclass(frozen=True)
class Problem:
    """Something skipped or dropped, to be logged as an error."""

    text: str


Event = Frame | Problem


class FrameReader:
    """Frames from a byte stream, by the rules of the module docstring: `feed` the bytes as they
    come, call `stalled` when none came for `STALL_SECONDS`; both return what is now complete."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.length: int | None = None  # the declared body length, once its headers are read
        self.scanned = 0  # body bytes already searched for a header (rule 4)
        self.skipped = 0  # garbage bytes skipped since the last header
        self.tried = -1  # the body size last tried as a whole by `stalled`
        self.note: str | None = None  # what was irregular about the headers of the body being read

    @property
    def in_body(self) -> bool:
        """True while a declared body is incomplete (the caller then times `stalled`)."""
        return self.length is not None

    def feed(self, data: bytes) -> list[Event]:
        self.buf += data
        return self._drain()

    def stalled(self) -> list[Event]:
        """No byte came for a while: an incomplete body that is already a whole JSON value is the
        message (rule 5). Tried once for each body size."""
        if self.length is None or not self.buf or len(self.buf) == self.tried:
            return []
        self.tried = len(self.buf)
        try:
            json.loads(self.buf)
        except ValueError:
            return []
        body = bytes(self.buf)
        note = f"Content-Length {self.length} but only {len(body)} bytes came, a whole message"
        self._end_body(len(body))
        return [Frame(body, note)]

    # ---- the state machine -------------------------------------------------------------------
    def _drain(self) -> list[Event]:
        events: list[Event] = []
        while self.buf and (self._headers(events) if self.length is None else self._body(events)):
            pass
        return events

    def _skip(self, n: int) -> None:
        """Drop n bytes of the buffer; what is not header lines counts as garbage."""
        if n <= 0:
            return
        chunk = bytes(self.buf[:n])
        if _HEADER_LINES_RE.fullmatch(chunk) is None:
            self.skipped += n
        del self.buf[:n]

    def _report_skipped(self, events: list[Event]) -> None:
        if self.skipped:
            events.append(Problem(f"skipped {self.skipped} bytes that were not a message"))
            self.skipped = 0

    def _headers(self, events: list[Event]) -> bool:
        """Find and read a header block; True when the state moved on."""
        m = _NAME_RE.search(self.buf)
        if m is None:
            # keep the last incomplete line (a header may be coming), within bounds
            keep = len(self.buf) - (self.buf.rfind(b"\n") + 1)
            if keep > MAX_HEADER_BYTES:
                keep = len(_NAME) + 16
            self._skip(len(self.buf) - keep)
            return False
        self._skip(m.start())
        name_end = m.end() - m.start()
        eol = self.buf.find(b"\n", name_end)
        if eol < 0:
            if len(self.buf) > MAX_HEADER_BYTES:
                self._report_skipped(events)
                events.append(
                    Problem(f"a Content-Length line longer than {MAX_HEADER_BYTES} bytes")
                )
                del self.buf[:name_end]
                return True
            return False  # the value is still coming
        value = bytes(self.buf[name_end:eol]).strip(b" \t\r")
        length = self._length(value)
        if isinstance(length, str):
            self._report_skipped(events)
            events.append(Problem(length))
            del self.buf[: eol + 1]
            return True
        # the rest of the header block: more header lines, then an empty line
        pos = eol + 1
        note = None
        while True:
            if pos >= len(self.buf) or (pos == len(self.buf) - 1 and self.buf[pos] == 13):
                if len(self.buf) > MAX_HEADER_BYTES:  # no end to the headers: drop this one
                    self._report_skipped(events)
                    events.append(Problem("a header block with no end, dropped"))
                    del self.buf[: eol + 1]
                    return True
                return False
            if self.buf.startswith(b"\r\n", pos):
                body_start = pos + 2
                break
            if self.buf.startswith(b"\n", pos):
                body_start = pos + 1
                break
            h = _HEADER_LINE_RE.match(self.buf, pos)
            if h is not None:
                if _NAME_RE.match(self.buf, pos):  # a second Content-Length: the first was alone
                    self._report_skipped(events)
                    events.append(Problem("a Content-Length header with no message after it"))
                    del self.buf[:pos]
                    return True
                nl = self.buf.find(b"\n", pos)
                if nl < 0:
                    if len(self.buf) > MAX_HEADER_BYTES:
                        body_start = pos  # not a header after all
                        break
                    return False
                pos = nl + 1
                continue
            if _PARTIAL_NAME_RE.match(self.buf, pos) and len(self.buf) - pos < MAX_HEADER_BYTES:
                return False  # a header name still coming
            body_start = pos  # the body came with no empty line before it
            note = "no empty line after the headers"
            break
        self._report_skipped(events)
        if length == 0:
            events.append(Problem("Content-Length 0: an empty message, dropped"))
            del self.buf[:body_start]
            return True
        del self.buf[:body_start]
        self.length, self.scanned, self.tried = length, 0, -1
        self.note = note
        return True

    def _length(self, value: bytes) -> int | str:
        """The declared length, or why it cannot be read."""
        shown = value[:40].decode("ascii", "replace")
        if not value.isdigit():
            return f"Content-Length {shown!r} is not a length, header dropped"
        if len(value) > 18 or int(value) > self.max_bytes:
            return (
                f"Content-Length {shown} is more than the {self.max_bytes} bytes a message may "
                "have, header dropped and the message skipped"
            )
        return int(value)

    def _body(self, events: list[Event]) -> bool:
        """Read the declared body; True when it is complete (or cut, rule 4)."""
        n = self.length
        assert n is not None
        # a whole header inside the declared bytes (it may run past them)
        h = _HEADER_RE.search(self.buf, max(0, self.scanned - 64))
        if h is not None and h.start() < n:
            self._cut(events, h.start(), n)
            return True
        self.scanned = min(len(self.buf), n)
        if len(self.buf) < n:
            return False
        body = bytes(self.buf[:n])
        k = self._cut_point(body)
        if k is not None:
            self._cut(events, k, n)
            return True
        note = self.note
        self._end_body(n)
        events.append(Frame(body, note))
        return True

    def _cut_point(self, body: bytes) -> int | None:
        """Where a complete body that is not JSON holds the start of the next header."""
        lower = body[-len(_NAME) :].lower()
        tail = next((i for i in range(len(lower)) if _NAME.startswith(lower[i:])), None)
        m = _NAME_RE.search(body)
        if m is None and tail is None:
            return None
        try:
            json.loads(body)
            return None
        except ValueError:
            pass
        if m is not None:
            return m.start()
        assert tail is not None
        return len(body) - len(lower) + tail

    def _cut(self, events: list[Event], k: int, n: int) -> None:
        body = bytes(self.buf[:k])
        self._end_body(k)
        note = f"Content-Length {n} but another header came after {k} bytes"
        events.append(Frame(body, note) if body.strip() else Problem(note))

    def _end_body(self, n: int) -> None:
        del self.buf[:n]
        self.length, self.scanned, self.tried, self.note = None, 0, -1, None


# ---- the stdio loop ---------------------------------------------------------------------------


def start_io(server, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """Serve `server` (a pygls JsonRPCServer with lsp_server.protocol's protocol) over stdio with
    `FrameReader`, in place of pygls's `server.start_io()` (same writer, stop event and shutdown)."""
    from pygls.io_ import StdoutWriter

    server._stop_event = stop = threading.Event()
    server.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
    try:
        asyncio.run(_serve(stop, stdin or sys.stdin.buffer, server.protocol, _reporter(server)))
    except BrokenPipeError:
        log.error("Connection to the client is lost! Shutting down the server.")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()


def _reporter(server):
    def report(text: str) -> None:
        text = f"parafill: bad input from the client: {text}"
        say = getattr(server, "log", None)
        if say is None:
            log.error(text)
            return
        say(text, types.MessageType.Error)

    return report


def start_tcp(server, host: str, port: int) -> None:
    """Serve `server` on host:port with `FrameReader`, in place of pygls's `server.start_tcp()`
    (the same reader as over stdio: malformed frames never deafen it). One client at a time, as
    pygls does; the server shuts down when its client leaves."""
    server._stop_event = stop = threading.Event()
    report = _reporter(server)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.protocol.set_writer(writer)
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)

        async def pump() -> None:
            while True:
                try:
                    data = await reader.read(READ_CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                await queue.put(data)
                if not data:
                    return

        task = asyncio.ensure_future(pump())
        try:
            await _dispatch(stop, queue, server.protocol, report)
        finally:
            task.cancel()
            writer.close()
            stop.set()

    async def main() -> None:
        listener = await asyncio.start_server(connection, host, port)
        async with listener:
            while not stop.is_set():
                await asyncio.sleep(0.1)

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()


async def _serve(stop: threading.Event, stdin: BinaryIO, protocol, report) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)  # at most 1 MiB read ahead
    threading.Thread(
        target=_pump, args=(stdin, loop, queue), name="parafill-stdin", daemon=True
    ).start()
    await _dispatch(stop, queue, protocol, report)


async def _dispatch(stop: threading.Event, queue: asyncio.Queue, protocol, report) -> None:
    """Frames from the chunks in `queue` (b"": the end of input) to the protocol, in order."""
    reader = FrameReader()
    while not stop.is_set():
        try:
            timeout = STALL_SECONDS if reader.in_body else None
            data = await asyncio.wait_for(queue.get(), timeout)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            events = reader.stalled()
        else:
            if not data:
                break  # end of input
            events = reader.feed(data)
        for event in events:
            if isinstance(event, Problem):
                report(event.text)
                continue
            if event.note:
                report(event.note)
            try:
                protocol.handle_body(event.body)
            except Exception:  # never let one message end the loop (SystemExit still does)
                log.exception("Unable to handle message")
            # let what the message started (an async handler's first step) run before the next
            # message is read, as after each read of pygls's reader: a didChangeConfiguration
            # handler applies the settings before a request sent right after it is handled
            await asyncio.sleep(0)


def _pump(stdin: BinaryIO, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    """Read stdin on its own thread (a daemon: a blocked read never holds up the exit). From the
    file descriptor when there is one: a daemon thread blocked inside a BufferedReader holds its
    lock, and the interpreter aborts when it closes stdin at exit."""
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        read = getattr(stdin, "read1", stdin.read)
    else:

        def read(n: int) -> bytes:
            return os.read(fd, n)

    while True:
        try:
            data = read(READ_CHUNK)
        except (OSError, ValueError):
            data = b""
        try:
            asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
        except Exception:  # noqa: BLE001 - the loop has closed: nobody reads any more
            return
        if not data:
            return
