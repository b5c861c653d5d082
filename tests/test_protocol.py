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


def test_only_the_tested_pygls_is_accepted(monkeypatch):
    """protocol.py overrides pygls's private dispatch: the installed pygls is the tested minor
    version (pyproject.toml pins it), and another version, or one whose private methods take
    other parameters, is refused when the protocol is built, saying what to install."""
    import pytest
    from pygls.protocol import LanguageServerProtocol

    from lsp_server.protocol import TESTED_PYGLS, check_pygls

    check_pygls()  # the installed one
    for version in ("2.0.3", "2.2.0", "3.0.0"):
        with pytest.raises(RuntimeError, match=f"pygls=={TESTED_PYGLS}"):
            check_pygls(version)

    def changed(self, msg_id, method_name, params, extra=None): ...

    monkeypatch.setattr(LanguageServerProtocol, "_handle_request", changed)
    with pytest.raises(RuntimeError, match="_handle_request"):
        create_server(load)
