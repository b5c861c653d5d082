"""The pygls server object: its state (settings, documents, engine, completer, repository
context), the settings' application and the model's load and failure reports.

Its handlers (lsp_server/handlers.py) translate LSP to and from the domain and nothing more:
documents live in syntax.DocumentStore; a completion or a fill is asked of the one completion
path (lsp_server/completion.py, which the CLI calls too) and its answer turned into LSP shapes by
convert. Handlers that wait on the model are async: `$/cancelRequest` cancels them and the engine
stops the job between denoising steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from lsp_server.completion import Ask, Completer, Completion
from lsp_server.config import Settings, parse_settings
from lsp_server.context import RepoContext
from lsp_server.engine import (
    DEFAULT_MODEL,
    Engine,
    ModelUnavailable,
    builtin_loader,
    remote_loader,
)
from lsp_server.protocol import ParafillProtocol
from lsp_server.syntax import Document, DocumentStore

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
        self.context = RepoContext()  # the workspace beyond the file (lsp_server/context/)
        self.folders: list[str] = []  # the workspace folders' paths (initialize)
        self.completer = Completer(self.engine, settings, self.docs, self.context)
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
        if new.repo_context and (initial or not old.repo_context):
            self.context.set_folders(self.folders)
        if not initial and new.threads != old.threads and _model_key(new) == _model_key(old):
            self.engine.use_threads(new.threads)  # the same model: no reload
        if switched or _model_key(new) != _model_key(old):
            self.reported_load_error = False
            name = new.model_path or DEFAULT_MODEL
            self.engine.load(
                new.model_path,
                new.device,
                new.precision,
                self._on_loaded(name),
                family=new.model_family,
                cache=new.pass_cache,
            )
            self.log(f"parafill: loading model {name} on {new.device}")

    def set_workspace(self, paths: list[str]) -> None:
        """The workspace folders (initialize, didChangeWorkspaceFolders): indexed while the
        repoContext setting is on."""
        self.folders = paths
        if self.settings.repo_context:
            self.context.set_folders(paths)

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


def _model_key(s: Settings) -> tuple:
    """The settings whose change loads the model again."""
    return (s.model_path, s.device, s.precision, s.model_family, s.pass_cache)


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
    """The server with its handlers (lsp_server/handlers.py) registered."""
    from lsp_server import handlers

    server = ParafillServer(loader)
    for method, options, fn in handlers.FEATURES:
        server.feature(method, options)(fn) if options is not None else server.feature(method)(fn)
    for name, fn in handlers.COMMANDS:
        server.command(name)(fn)
    return server
