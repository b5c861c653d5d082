"""The pygls server object and its handlers: LSP <-> domain translation only.

Documents live in syntax.DocumentStore; a completion or a fill is asked of the one completion
path (lsp_server/completion.py, which the CLI calls too) and its answer turned into LSP shapes by
convert. Handlers that wait on the model are async: `$/cancelRequest` cancels them and the engine
stops the job between denoising steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import time
from dataclasses import replace
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from lsp_server import convert
from lsp_server.acceptance import ACCEPTED_COMMAND
from lsp_server.completion import Ask, Completer, Completion
from lsp_server.config import Settings, parse_settings, to_json
from lsp_server.engine import (
    DEFAULT_MODEL,
    Engine,
    ModelUnavailable,
    builtin_loader,
    remote_loader,
)
from lsp_server.postprocess import Candidate
from lsp_server.protocol import ParafillProtocol
from lsp_server.steps import STEPS_METHOD
from lsp_server.syntax import Document, DocumentStore
from model.interface import InfillCancelled

NAME, VERSION = "parafill", "0.1.0"
STATUS_METHOD = "parafill/status"
FILL_COMMAND = "parafill.fill"
log = logging.getLogger("parafill")


class ParafillServer(LanguageServer):
    def __init__(self, loader=builtin_loader):
        settings = Settings()  # the client's arrive with initialize (apply_settings)
        super().__init__(
            NAME,
            VERSION,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=ParafillProtocol,  # documents are ours: pygls never rewrites a change
        )
        self.settings = settings
        self.docs = DocumentStore()
        self.base_loader = loader  # the built-in model, or `parafill serve --backend`'s
        self.engine = Engine(loader, settings.cache_size, settings.threads)
        self.completer = Completer(self.engine, settings, self.docs)
        self.reported_load_error = False
        self.started = time.time()

    # ---- messages --------------------------------------------------------------------------
    def log(self, message: str, kind: types.MessageType = types.MessageType.Log) -> None:
        log.info(message)
        with contextlib.suppress(Exception):  # no transport yet, or closing
            self.window_log_message(types.LogMessageParams(type=kind, message=message))

    def show(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        self.log(message, kind)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def apply_settings(self, raw: Any, initial: bool = False) -> None:
        """Settings from the client: all of a change or none of it. Everything is checked before
        anything is applied (values, and that a new logFile can be written); a new model loads
        in the background, the old one answering until it has (Engine.load), and a model that
        fails to load is reported at once (model_failed)."""
        new, problems = parse_settings(raw, self.settings)
        handler = None
        if not problems and (initial or new.log_file != self.settings.log_file):
            try:
                handler = _open_log_file(new.log_file)
            except OSError as exc:
                why = exc.strerror or str(exc)
                problems = [f"parafill.logFile cannot be written: {why} (got {new.log_file!r})"]
        if problems:
            self.show(
                "parafill: invalid settings, keeping the previous ones: " + "; ".join(problems)
            )
            if not initial:
                return
            new = self.settings  # still start, with the defaults
        old, self.settings = self.settings, new
        self.completer.settings = new
        self.engine.cache_size = new.cache_size
        self.engine.threads = new.threads
        if initial or new.log_file != old.log_file:
            _configure_log_file(handler)
        switched = initial or _backend_key(new) != _backend_key(old)
        if switched:  # backend: builtin | remote (the model server, falling back to the built-in)
            self.engine.loader = self._loader_for(new)
        if switched or (new.model_path, new.device, new.precision, new.threads) != (
            old.model_path,
            old.device,
            old.precision,
            old.threads,
        ):
            self.reported_load_error = False
            name = new.model_path or DEFAULT_MODEL
            self.engine.load(new.model_path, new.device, new.precision, self._on_loaded(name))
            self.log(f"parafill: loading model {name} on {new.device}")

    def _loader_for(self, settings: Settings):
        """The engine's loader for `settings.backend`: the server's own (the built-in model, or
        `parafill serve --backend`), or remote_loader with the server's own as its fallback;
        the fallback and a server that cannot be reached are shown once."""
        base = self.base_loader
        if settings.backend != "remote":
            return base
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a test calling apply_settings directly)
            loop = None

        def notify(message: str) -> None:  # from the loader or the worker thread
            if loop is None:
                self.show(message)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(self.show, message)

        return remote_loader(settings, base, notify)

    def _on_loaded(self, name: str):
        """Engine.load's `on_done` (called on the loader thread): the outcome is reported on
        the event loop, at once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a test calling apply_settings directly)
            loop = None

        def on_done(error: str | None, kept: bool) -> None:
            def report() -> None:
                if error is None:
                    self.log(f"parafill: model {name} loaded")
                elif kept:
                    self.show(
                        f"parafill: could not load model {name}, keeping "
                        f"{self.engine.model_path or DEFAULT_MODEL}: {error}",
                        types.MessageType.Error,
                    )
                else:
                    self.model_failed(ModelUnavailable(error))

            if loop is None:
                report()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(report)

        return on_done

    def model_failed(self, exc: Exception) -> None:
        """No model can answer (the first load failed): shown once, as soon as it is known."""
        if not self.reported_load_error:
            self.reported_load_error = True
            with contextlib.suppress(Exception):  # no transport (closing)
                self.show(f"parafill: model unavailable: {exc}", types.MessageType.Error)

    def report(self, exc: Exception) -> None:
        """A model that cannot answer: shown once while it is unavailable, logged otherwise."""
        if isinstance(exc, ModelUnavailable):
            self.model_failed(exc)
            return
        log.error("backend failed: %s: %s", type(exc).__name__, exc)
        self.log(f"parafill: backend error: {type(exc).__name__}: {exc}", types.MessageType.Error)

    def document(self, uri: str) -> Document:
        doc = self.docs.get(uri)
        if doc is None:
            raise JsonRpcInvalidParams.of(ValueError(f"unknown document {uri}; send didOpen first"))
        return doc

    async def complete_at(
        self, doc: Document, pos: types.Position, invoked: bool, selected=None
    ) -> Completion:
        """An explicit request gets several candidates of at least one token and no debounce;
        automatic ones get one, which may be empty."""
        n = self.settings.candidates if invoked else 1
        cursor = doc.offset_at(pos.line, pos.character)
        ask = Ask(invoked, n, selected, want_trajectory=True)  # kept for parafill/steps
        done = await self.completer.complete(doc, cursor, ask)
        if done.error is not None:
            self.report(done.error)
        return done


def _backend_key(s: Settings) -> tuple:
    remote = (s.remote_url, s.remote_api, s.remote_model, s.remote_api_key_env, s.remote_timeout_ms)
    return (s.backend, remote if s.backend == "remote" else None)


def backend_status(ls: ParafillServer) -> dict[str, Any]:
    """`parafill/status`'s backend: builtin, or the model server with its round-trip latency,
    errors and whether the built-in model is answering in its place."""
    if ls.settings.backend != "remote":
        return {"kind": "builtin"}
    status = getattr(ls.engine.infiller, "status", None)
    if callable(status):
        return status()
    return {"kind": "remote", "url": ls.settings.remote_url, "error": ls.engine.error}


def _with_text(cand: Candidate, text: str) -> Candidate:
    return replace(cand, text=text)


def _open_log_file(path: str | None) -> logging.FileHandler | None:
    """A handler writing to `path` (None: none); OSError when it cannot be opened for writing
    (a directory, a missing folder, no permission)."""
    if not path:
        return None
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "it is a directory", path)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    return handler


def _configure_log_file(handler: logging.FileHandler | None) -> None:
    """Log to `handler` (from _open_log_file) instead of any log file before."""
    for h in list(log.handlers):
        if isinstance(h, logging.FileHandler):
            log.removeHandler(h)
            h.close()
    if handler is not None:
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def create_server(loader=builtin_loader) -> ParafillServer:
    server = ParafillServer(loader)

    @server.feature(types.INITIALIZE)
    def initialize(ls: ParafillServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options, initial=True)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(
        ls: ParafillServer, params: types.DidChangeConfigurationParams
    ):
        raw = params.settings
        if not (isinstance(raw, dict) and raw.get("parafill") is not None):
            caps = ls.client_capabilities.workspace
            if caps is not None and caps.configuration:
                pulled = await ls.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="parafill")])
                )
                raw = pulled[0] if pulled else None
        if raw is not None:
            ls.apply_settings(raw)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: ParafillServer, params: types.DidOpenTextDocumentParams) -> None:
        d = params.text_document
        ls.docs.open(d.uri, d.text, d.language_id, d.version)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: ParafillServer, params: types.DidChangeTextDocumentParams) -> None:
        doc = ls.docs.get(params.text_document.uri)
        if doc is None:
            ls.log(
                f"didChange for unknown document {params.text_document.uri}",
                types.MessageType.Warning,
            )
            return
        for change in params.content_changes:
            rng = getattr(change, "range", None)
            r = (
                None
                if rng is None
                else (rng.start.line, rng.start.character, rng.end.line, rng.end.character)
            )
            doc.apply_change(change.text, r)
        doc.version = params.text_document.version

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: ParafillServer, params: types.DidCloseTextDocumentParams) -> None:
        doc = ls.docs.get(params.text_document.uri)  # (under any spelling of its URI)
        if doc is not None:
            ls.completer.forget(doc.uri)
        ls.docs.close(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: ParafillServer, params: types.InlineCompletionParams):
        doc = ls.document(params.text_document.uri)
        ctx = params.context
        invoked = ctx is not None and ctx.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        selected = None
        info = ctx.selected_completion_info if ctx is not None else None
        if info is not None:
            s = doc.offset_at(info.range.start.line, info.range.start.character)
            e = doc.offset_at(info.range.end.line, info.range.end.character)
            selected = (s, e, info.text)
        done = await ls.complete_at(doc, params.position, invoked, selected)
        start, cands = done.start, done.candidates
        if not cands:
            return types.InlineCompletionList(items=[])
        if selected is not None:  # items must extend the selected item's text
            s, e, sel_text = selected
            cands = [_with_text(c, sel_text + c.text) for c in cands]
            items = convert.inline_items(doc, s, cands, done.suggestion)
            for item, c in zip(items, cands):
                item.range = convert.lsp_range(doc, s, e + c.extend)
            return types.InlineCompletionList(items=items)
        items = convert.inline_items(doc, start, cands, done.suggestion)
        return types.InlineCompletionList(items=items)

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "("])
    )
    async def completion(ls: ParafillServer, params: types.CompletionParams):
        doc = ls.document(params.text_document.uri)
        td = ls.client_capabilities.text_document
        if td is not None and getattr(td, "inline_completion", None) is not None:
            return types.CompletionList(
                is_incomplete=True, items=[]
            )  # it gets inline items instead
        invoked = (
            params.context is None
            or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        )
        done = await ls.complete_at(doc, params.position, invoked)
        items = convert.completion_items(doc, done.start, done.candidates, done.suggestion)
        return types.CompletionList(is_incomplete=True, items=items)

    @server.command(FILL_COMMAND)
    async def fill(ls: ParafillServer, *args: Any):
        """Arguments: {"uri": str, "range"?: Range} or [uri, range?]. Fills the range, or every
        <|fill|> marker in the document, and applies it with workspace/applyEdit."""
        uri, rng = _fill_args(args)
        doc = ls.document(uri)
        selection = None
        if rng is not None:
            s = doc.offset_at(rng["start"]["line"], rng["start"]["character"])
            e = doc.offset_at(rng["end"]["line"], rng["end"]["character"])
            selection = (s, e)
        try:
            filled = await ls.completer.fill(doc, selection)
        except ValueError as exc:  # nothing to fill
            raise JsonRpcInvalidParams.of(exc) from exc
        if isinstance(filled.error, ModelUnavailable):
            ls.model_failed(filled.error)
            raise JsonRpcInvalidParams.of(filled.error)
        if isinstance(filled.error, InfillCancelled):
            return {"applied": False, "reason": "superseded by a newer fill", "fills": []}
        if filled.error is not None:
            raise filled.error
        if filled.stale:
            return {"applied": False, "reason": "document changed while filling", "fills": []}
        edits, fills = filled.edits, [f for _, _, f in filled.edits]
        dc = ls.client_capabilities.workspace
        versioned = bool(dc and dc.workspace_edit and dc.workspace_edit.document_changes)
        resp = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(
                edit=convert.workspace_edit(doc, edits, versioned), label="parafill fill"
            )
        )
        return {"applied": bool(resp.applied), "fills": fills, "reason": resp.failure_reason}

    @server.command(ACCEPTED_COMMAND)
    def accepted(ls: ParafillServer, *args: Any) -> dict:
        """Arguments: [id, index?] of a suggestion (its items carry them): the editor accepted
        it in full. Counted once (lsp_server/acceptance.py); nothing is sent anywhere."""
        sid = args[0] if args else None
        index = args[1] if len(args) > 1 else 0
        if not _is_int(sid) or not _is_int(index):
            raise JsonRpcInvalidParams.of(ValueError(f"{ACCEPTED_COMMAND} expects [id, index?]"))
        return {"counted": ls.completer.acceptance.accepted(sid, index)}

    @server.feature(STEPS_METHOD)
    def steps(ls: ParafillServer, params: Any = None) -> dict | None:
        """{"uri"}: how the document's last suggestion was denoised (lsp_server/steps.py), or
        null when it has none (none made since it opened, or it is not open)."""
        uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
        if not isinstance(uri, str):
            raise JsonRpcInvalidParams.of(ValueError(f'{STEPS_METHOD} expects {{"uri": ...}}'))
        doc = ls.docs.get(uri)
        made = ls.completer.denoising.get(doc.uri) if doc is not None else None
        if made is None:
            return None
        start = min(made.start, len(doc.text))  # (the text may have changed since)
        return {"uri": uri, **made.as_json(*doc.position_at(start))}

    @server.feature(STATUS_METHOD)
    def status(ls: ParafillServer, params: Any = None) -> dict:
        out = ls.engine.status()
        out.update(
            server=f"{NAME} {VERSION}",
            documents=len(ls.docs),
            uptimeSeconds=round(time.time() - ls.started, 1),
            settings=to_json(ls.settings),
            backend=backend_status(ls),
            acceptance=ls.completer.acceptance.summary(),  # lsp_server/acceptance.py
        )
        uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
        if uri and (doc := ls.docs.get(uri)) is not None:  # lets clients verify the server's copy
            text = doc.editor_text  # exactly as the editor has it
            out["document"] = {
                "uri": uri,
                "version": doc.version,
                "language": doc.language,
                "length": len(text),
                "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
                "parsed": doc.tree is not None,
            }
        return out

    return server


def _fill_args(args: tuple) -> tuple[str, dict | None]:
    if len(args) == 1 and isinstance(args[0], dict):
        a = args[0]
        uri, rng = a.get("uri"), a.get("range")
    elif args and isinstance(args[0], str):
        uri, rng = args[0], args[1] if len(args) > 1 else None
    else:
        raise JsonRpcInvalidParams.of(
            ValueError('parafill.fill expects {"uri": ..., "range"?: ...}')
        )
    if not isinstance(uri, str) or (rng is not None and not _is_range(rng)):
        raise JsonRpcInvalidParams.of(ValueError("parafill.fill: bad uri or range"))
    return uri, rng


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_range(r: Any) -> bool:
    try:
        return all(
            isinstance(r[k][f], int) for k in ("start", "end") for f in ("line", "character")
        )
    except (TypeError, KeyError):
        return False
