"""The LSP protocol the server runs on: pygls's, except that documents are the server's own.

pygls keeps a copy of every open document and, to update it, rewrites each didChange range in
place before the server's handler sees it: on a last line with no line break, a column past its
end becomes the column before its last character, so "abc" with "X" inserted at (0, 10) became
"abXc" in the server and "abcX" in the editor. The server keeps its documents itself (lsp_server/syntax.py
`DocumentStore`, clamping as LSP says: a column past the end is the end), so didOpen, didChange
and didClose go to its handlers untouched, and pygls's second copy (memory per document and per
change) is never made.
"""

from __future__ import annotations

from lsprotocol import types
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method


class ParafillProtocol(LanguageServerProtocol):
    def _user_handler(self, method: str, params):
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CLOSE, params)
