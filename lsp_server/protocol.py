"""The LSP protocol the server runs on: pygls's, with documents of the server's own and the
lifecycle enforced.

pygls keeps a copy of every open document and, to update it, rewrites each didChange range in
place before the server's handler sees it: on a last line with no line break, a column past its
end becomes the column before its last character, so "abc" with "X" inserted at (0, 10) became
"abXc" in the server and "abcX" in the editor. The server keeps its documents itself (lsp_server/syntax.py
`DocumentStore`, clamping as LSP says: a column past the end is the end), so didOpen, didChange
and didClose go to its handlers untouched, and pygls's second copy (memory per document and per
change) is never made.

The lifecycle, as LSP says: a request before `initialize` is answered with ServerNotInitialized
(-32002) and a notification then is dropped (`exit` aside); a second `initialize` is an invalid
request (the first session, its settings and its model stay); after `shutdown` every request is
an invalid request. `exit` ends the process with 0 after `shutdown` and 1 without (`parafill serve` returns it: pygls
sets it inside its event loop, where it was lost, so the process always ended with 0).

This overrides pygls 2's request and notification dispatch (`handle_message`, `_handle_request`,
`_handle_notification`: tested by tests/e2e/test_lsp_raw.py against the installed pygls).
"""

from __future__ import annotations

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidRequest, JsonRpcServerNotInitialized
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import RPCRequest
from pygls.protocol.language_server import lsp_method


class ParafillProtocol(LanguageServerProtocol):
    initialize_seen = False
    exit_code: int | None = None  # set by `exit`: 0 after shutdown, 1 without

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args):
        self.exit_code = 0 if self._shutdown else 1
        yield from super().lsp_exit(*args)

    def _handle_request(self, msg_id, method_name: str, params) -> None:
        error = None
        if not self.initialize_seen and method_name != types.INITIALIZE:
            error = JsonRpcServerNotInitialized("the server has not been initialized")
        elif self.initialize_seen and method_name == types.INITIALIZE:
            error = JsonRpcInvalidRequest("initialize was already called")
        if error is not None:
            self._send_response(msg_id, None, error.to_response_error())
            return
        if method_name == types.INITIALIZE:
            self.initialize_seen = True
        super()._handle_request(msg_id, method_name, params)

    def handle_message(self, message) -> None:
        # pygls drops every message after shutdown, leaving a request unanswered
        if self._shutdown and isinstance(message, RPCRequest) and message.method != types.EXIT:
            error = JsonRpcInvalidRequest(f"{message.method} after shutdown")
            self._send_response(message.id, None, error.to_response_error())
            return
        super().handle_message(message)

    def _handle_notification(self, method_name: str, params) -> None:
        if method_name != types.EXIT and not self.initialize_seen:
            return  # dropped, as LSP says
        super()._handle_notification(method_name, params)

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
