"""The protocol keeps nothing per message: pygls kept the future of every notification (and of
every step of a generator handler) in `_request_futures`, about 2 KB a didChange, forever."""

from __future__ import annotations

import gc
import tracemalloc

from fake_infiller import load
from lsprotocol import types as t

from lsp_server.server import create_server

URI = "file:///t/memory.py"


def _open(uri: str) -> t.DidOpenTextDocumentParams:
    return t.DidOpenTextDocumentParams(t.TextDocumentItem(uri, "python", 1, "x = 1\n"))


def _change(version: int) -> t.DidChangeTextDocumentParams:
    edit = t.TextDocumentContentChangePartial(t.Range(t.Position(0, 0), t.Position(0, 0)), "a")
    return t.DidChangeTextDocumentParams(
        t.VersionedTextDocumentIdentifier(version=version, uri=URI), [edit]
    )


def test_notifications_leave_nothing_behind():
    server = create_server(load)
    p = server.protocol
    p.initialize_seen = True  # as after `initialize`
    p._handle_notification(t.TEXT_DOCUMENT_DID_OPEN, _open(URI))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    n = 2000
    for i in range(n):
        p._handle_notification(t.TEXT_DOCUMENT_DID_CHANGE, _change(i + 2))
        uri = f"file:///t/other{i}.py"
        p._handle_notification(t.TEXT_DOCUMENT_DID_OPEN, _open(uri))
        p._handle_notification(
            t.TEXT_DOCUMENT_DID_CLOSE, t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(uri))
        )
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert len(p._request_futures) == 0
    assert server.docs.get(URI).text.startswith("a" * n)  # the edits were applied
    assert grown / n < 200, f"{grown / n:.0f} bytes kept per change + open + close"
