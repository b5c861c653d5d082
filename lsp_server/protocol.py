"""The LSP protocol the server runs on: pygls's, with documents of the server's own, the
lifecycle enforced and malformed messages answered.

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

Malformed messages are answered as JSON-RPC 2.0 says and the server goes on (`handle_body`, which
the stdio reader of lsp_server/framing.py calls with each body):
- a body that is not JSON (or not UTF-8, or nested too deeply): -32700, id null (it cannot be read);
- a batch (an array; LSP never sends one): -32600 for each request in it, by its id (one -32600 with
  id null when none has one); anything but an object, an id that is not an integer or a string
  (answered with id null), `jsonrpc` missing or not "2.0", a method that is not a string, params
  that are not an object or an array, neither method nor result/error: -32600;
- params the method's types do not take (a string or a negative or out-of-range position, 10^20, a
  line of 2^31: uinteger ends at 2^31 - 1, missing or array params, no context, triggerKind 7):
  -32602 for a request; a notification is logged and dropped (it has no id to answer). Values are
  checked strictly: pygls's converter would read "3" as 3, 1.5 as 1 and true as 1.
Only the message itself is structured into a pygls message: pygls's reader made every nested object
with a "jsonrpc" key (in a command's arguments, say) a message of its own, and the request was
lost. A position past a document's end is not an error (LSP clamps it; lsp_server/syntax.py).
`parafill serve --tcp` reads its frames with the same reader (lsp_server/framing.py `start_tcp`).

This overrides pygls 2's request and notification dispatch (`handle_message`, `_handle_request`,
`_handle_notification`, `_execute_handler`: private methods, tested by tests/e2e/test_lsp_raw.py
against the installed pygls). pyproject.toml pins the minor version they were tested with
(`TESTED_PYGLS`), and `check_pygls` refuses, when the protocol is built, any other version or
one whose private methods no longer take the arguments these overrides pass.
"""

from __future__ import annotations

import inspect
import json
import logging
from importlib import metadata
from typing import Any

import cattrs
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcParseError,
    JsonRpcServerNotInitialized,
)
from pygls.protocol import JsonRPCNotification, JsonRPCRequestMessage, LanguageServerProtocol
from pygls.protocol.json_rpc import JsonRPCResponseMessage, RPCRequest
from pygls.protocol.language_server import lsp_method

log = logging.getLogger("parafill.protocol")

TESTED_PYGLS = "2.1"  # the minor version the overrides below were tested with (pyproject.toml)
# the private pygls methods overridden here, with the parameters the overrides pass on
OVERRIDDEN = {
    "_handle_request": ["msg_id", "method_name", "params"],
    "_handle_notification": ["method_name", "params"],
    "_execute_handler": ["msg_id", "handler", "callback", "args", "kwargs"],
    "_send_response": ["msg_id", "result", "error"],
    "_handle_response": ["msg_id", "result", "error"],
}


def check_pygls(version: str | None = None) -> None:
    """Refuse a pygls whose minor version is not TESTED_PYGLS, or whose overridden private
    methods take other parameters (RuntimeError, saying what to install)."""
    version = version or metadata.version("pygls")
    fix = f"install the tested version: pip install 'pygls=={TESTED_PYGLS}.*'"
    if ".".join(version.split(".")[:2]) != TESTED_PYGLS:
        raise RuntimeError(
            f"parafill's language server runs on pygls {TESTED_PYGLS}.x (it overrides private "
            f"parts of it), not {version}: {fix}"
        )
    for name, params in OVERRIDDEN.items():
        method = getattr(LanguageServerProtocol, name, None)
        got = list(inspect.signature(method).parameters)[1:] if callable(method) else None
        if got != params:
            raise RuntimeError(f"pygls {version}'s {name} is not the one tested ({got}): {fix}")


def _valid_id(msg_id: Any) -> bool:
    """LSP's request id: an integer or a string (a bool is not an integer here)."""
    return isinstance(msg_id, str) or (isinstance(msg_id, int) and not isinstance(msg_id, bool))


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    names.update({int: "a number", float: "a number", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def envelope_problem(raw: Any) -> tuple[Any, str] | None:
    """Why a parsed message is not a JSON-RPC 2.0 request, notification or response, with the id
    to answer it with (None: null), or None when it is one."""
    if not isinstance(raw, dict):
        return None, f"a message is a JSON object, not {_json_type(raw)}"
    has_id, msg_id = "id" in raw, raw.get("id")
    if has_id and not _valid_id(msg_id):
        return None, f"an id is an integer or a string, not {_json_type(msg_id)}"
    answer_id = msg_id if has_id else None
    if raw.get("jsonrpc") != "2.0":
        return answer_id, 'a message needs "jsonrpc": "2.0"'
    if "method" in raw:
        if not isinstance(raw["method"], str):
            return answer_id, f"a method is a string, not {_json_type(raw['method'])}"
        params = raw.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            return answer_id, f"params are an object or an array, not {_json_type(params)}"
        return None
    if has_id and ("result" in raw or "error" in raw):
        return None
    return answer_id, "a message needs a method (a request), or a result or an error (a response)"


def _strict(kind: type, name: str):
    def structure(value: Any, target: Any) -> Any:
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value if target is kind else target(value)  # an enum checks its values
        raise TypeError(f"expected {name}, not {_json_type(value)}")

    return structure


class ParafillProtocol(LanguageServerProtocol):
    initialize_seen = False
    exit_code: int | None = None  # set by `exit`: 0 after shutdown, 1 without

    def __init__(self, server, converter) -> None:
        check_pygls()
        super().__init__(server, converter)
        # pygls's converter casts ("3" -> 3, 1.5 -> 1, true -> 1, 5 -> "5"): params must be typed
        converter.register_structure_hook(bool, _strict(bool, "a boolean"))
        converter.register_structure_hook(int, _strict(int, "an integer"))
        converter.register_structure_hook(str, _strict(str, "a string"))

    # ---- receiving: JSON-RPC checks before pygls sees a message --------------------------------
    def handle_body(self, body: bytes) -> None:
        """One message body from the reader: parsed, checked, and answered when malformed."""
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            self._reject(None, JsonRpcParseError, f"the message is not JSON: {exc}")
            return
        if isinstance(raw, list):
            self._reject_batch(raw)
            return
        self.handle_raw(raw)

    def handle_raw(self, raw: Any) -> None:
        """A parsed message: checked as JSON-RPC, structured (itself only, not the objects inside
        it) and handed to pygls's dispatch."""
        problem = envelope_problem(raw)
        if problem is not None:
            response = isinstance(raw, dict) and "method" not in raw
            if response and ("result" in raw or "error" in raw):  # never answer a response
                log.warning("dropped a response: %s", problem[1])
                return
            self._reject(problem[0], JsonRpcInvalidRequest, problem[1])
            return
        method, msg_id = raw.get("method"), raw.get("id")
        is_request = method is not None and "id" in raw
        if is_request and (error := self._lifecycle_error(method)) is not None:
            self._send_response(msg_id, None, error.to_response_error())
            return
        try:
            message = self._structure(raw)
        except Exception as exc:  # noqa: BLE001 - params (or a result) not of the method's types
            text = "; ".join(_errors(exc))
            if is_request:
                self._reject(msg_id, JsonRpcInvalidParams, f"invalid params for {method}: {text}")
            elif method is not None:
                self._say(f"dropped the notification {method}: invalid params: {text}")
            else:  # a response the server waits for: fail it rather than wait forever
                self._say(f"a response to request {msg_id} could not be read: {text}")
                error = types.ResponseError(code=JsonRpcInvalidParams.CODE, message=text)
                self._handle_response(msg_id, None, error)
            return
        if is_request and not isinstance(message, RPCRequest):
            self._reject(
                msg_id, JsonRpcInvalidRequest, f"{method} is a notification, not a request"
            )
            return
        self.handle_message(message)

    def _structure(self, raw: dict) -> Any:
        method = raw.get("method")
        if method is not None:
            fallback = JsonRPCRequestMessage if "id" in raw else JsonRPCNotification
            kind = self.get_message_type(method) or fallback
        elif "error" in raw:
            kind = types.ResponseErrorMessage
        else:
            kind = self._result_types.pop(raw["id"], None) or JsonRPCResponseMessage
        return self._converter.structure(raw, kind)

    def _reject_batch(self, batch: list) -> None:
        text = "a batch (an array of messages) is not supported: LSP does not use them"
        ids = [
            m["id"]
            for m in batch
            if isinstance(m, dict) and "method" in m and "id" in m and _valid_id(m["id"])
        ]
        for msg_id in ids or [None]:
            self._reject(msg_id, JsonRpcInvalidRequest, text)

    def _reject(self, msg_id: Any, error: type[JsonRpcException], text: str) -> None:
        self._say(f"{text} (answered {error.CODE})")
        if msg_id is None:  # lsprotocol would leave the id out; JSON-RPC wants "id": null
            answer = {"jsonrpc": "2.0", "id": None, "error": {"code": error.CODE, "message": text}}
            self._send_data(answer)
        else:
            self._send_response(msg_id, None, error(text).to_response_error())

    def _say(self, text: str) -> None:
        say = getattr(self._server, "log", None)
        if say is None:
            log.warning(text)
        else:
            say(f"parafill: bad message from the client: {text}", types.MessageType.Warning)

    def _lifecycle_error(self, method: str) -> JsonRpcException | None:
        if self._shutdown and method != types.EXIT:
            return JsonRpcInvalidRequest(f"{method} after shutdown")
        if not self.initialize_seen and method != types.INITIALIZE:
            return JsonRpcServerNotInitialized("the server has not been initialized")
        if self.initialize_seen and method == types.INITIALIZE:
            return JsonRpcInvalidRequest("initialize was already called")
        return None

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args):
        self.exit_code = 0 if self._shutdown else 1
        yield from super().lsp_exit(*args)

    def _handle_request(self, msg_id, method_name: str, params) -> None:
        if (error := self._lifecycle_error(method_name)) is not None:
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

    def _execute_handler(self, msg_id, handler, callback, args=None, kwargs=None):
        """pygls keeps every handler's future in `_request_futures` by id, and only a request's
        answer removes it: each notification (and each step of a generator handler, under an id
        of its own) left one behind, 1.8 KB a didChange and 3.7 KB an open and close. Every
        future is removed once it is done."""

        def done(future, callback=callback):
            self._request_futures.pop(msg_id, None)
            callback(future)

        super()._execute_handler(msg_id, handler, done, args, kwargs)

    @lsp_method(types.WORKSPACE_EXECUTE_COMMAND)
    async def lsp_workspace__execute_command(self, params: types.ExecuteCommandParams):
        """A command runs as the request itself: pygls ran it as a step of a generator under an
        id of its own, so `$/cancelRequest` cancelled the answer and not the command (a
        parafill.fill went on filling). Awaited here, under the request's id, it is cancelled."""
        gen = super().lsp_workspace__execute_command(params)
        handler, args, kwargs = next(gen)  # an unknown command or bad arguments raise here
        result = handler(*args, **(kwargs or {}))
        return await result if inspect.isawaitable(result) else result

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CLOSE, params)


def _errors(exc: BaseException) -> list[str]:
    """cattrs's structuring errors as short lines (`... @ $.params.position.line`)."""
    try:
        return list(cattrs.transform_error(exc))[:5]
    except Exception:  # noqa: BLE001 - not a cattrs error: its text will do
        return [str(exc) or type(exc).__name__]
