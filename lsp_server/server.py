"""The pygls server object and its handlers: LSP <-> domain translation only.

Documents live in syntax.DocumentStore, regions come from planner, inference from engine, cleaning
from postprocess, the next line to prefetch from prefetch, and LSP shapes from convert. Handlers
that wait on the model are async: they await the engine's future, so `$/cancelRequest` cancels
them and the engine stops the job between denoising steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import replace
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from lsp_server import convert, pipeline
from lsp_server.config import Settings, parse_settings, to_json
from lsp_server.engine import Engine, ModelUnavailable, TypingThrough, builtin_loader
from lsp_server.planner import plan_completion
from lsp_server.postprocess import Candidate
from lsp_server.prefetch import after_enter
from lsp_server.protocol import ParafillProtocol
from lsp_server.syntax import Document, DocumentStore, Snapshot
from model.interface import InfillCancelled

NAME, VERSION = "parafill", "0.1.0"
STATUS_METHOD = "parafill/status"
FILL_COMMAND = "parafill.fill"
PREFETCH_IDLE_S = 0.1  # a next-line prefetch starts once the user paused this long
log = logging.getLogger("parafill")


class ParafillServer(LanguageServer):
    def __init__(self, loader=builtin_loader, settings: Settings | None = None):
        settings = settings or Settings()
        super().__init__(
            NAME,
            VERSION,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=ParafillProtocol,  # documents are ours: pygls never rewrites a change
        )
        self.settings = settings
        self.docs = DocumentStore()
        self.engine = Engine(loader, settings.cache_size, settings.threads)
        self.typing = TypingThrough()
        self.pending: dict[str, int] = {}  # uri -> newest request ticket (debounce/supersede)
        self.last_automatic: dict[str, float] = {}  # uri -> when its last automatic request came
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
        new, problems = parse_settings(raw, self.settings)
        if problems:
            self.show(
                "parafill: invalid settings, keeping the previous ones: " + "; ".join(problems)
            )
            if not initial:
                return
            new = self.settings  # still start, with the defaults
        old, self.settings = self.settings, new
        self.engine.cache_size = new.cache_size
        self.engine.threads = new.threads
        self.engine.context_reuse = new.context_reuse
        _configure_log_file(new.log_file)
        if initial or (new.model_path, new.device, new.precision, new.threads) != (
            old.model_path,
            old.device,
            old.precision,
            old.threads,
        ):
            self.reported_load_error = False
            self.engine.load(new.model_path, new.device, new.precision)
            self.log(f"parafill: loading model {new.model_path or '(shipped)'} on {new.device}")

    def model_failed(self, exc: Exception) -> None:
        if not self.reported_load_error:
            self.reported_load_error = True
            self.show(f"parafill: model unavailable: {exc}", types.MessageType.Error)

    async def run_model(self, uri: str, req, label: str):
        """The results for `req`, or None when it was cancelled or failed (logged)."""
        job = self.engine.submit(uri, req, label)
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.cancel()
            raise
        except InfillCancelled:
            return None
        except ModelUnavailable as exc:
            self.model_failed(exc)
            return None
        except Exception as exc:  # a backend failure is logged, not fatal
            log.exception("backend failed")
            self.log(
                f"parafill: backend error: {type(exc).__name__}: {exc}", types.MessageType.Error
            )
            return None

    def document(self, uri: str) -> Document:
        doc = self.docs.get(uri)
        if doc is None:
            raise JsonRpcInvalidParams.of(ValueError(f"unknown document {uri}; send didOpen first"))
        return doc

    # ---- completion core -------------------------------------------------------------------
    def in_burst(self, uri: str) -> bool:
        """Whether an automatic request for `uri` comes within `debounceMs` of the one before
        (a burst of keystrokes): it then waits that long for more typing. The first request of a
        burst runs at once (a leading-edge debounce): after a pause the wait would only add its
        length to the answer, and if more typing follows, the newer request supersedes it."""
        now = time.monotonic()
        last, self.last_automatic[uri] = self.last_automatic.get(uri), now
        wait = self.settings.debounce_ms / 1000
        return wait > 0 and last is not None and now - last < wait

    async def complete_at(
        self, doc: Document, pos: types.Position, invoked: bool, selected=None
    ) -> tuple[int, int, list]:
        """An explicit request gets several candidates of at least one token and no debounce;
        automatic ones get one, which may be empty."""
        n = self.settings.candidates if invoked else 1
        return await self.complete(doc, pos.line, pos.character, n, invoked, selected)

    async def complete(
        self,
        doc: Document,
        line: int,
        character: int,
        candidates: int,
        invoked: bool,
        selected: tuple[int, int, str] | None = None,
    ) -> tuple[int, int, list]:
        """(insert start, cursor, candidates) for a cursor; empty when superseded or unusable."""
        uri = doc.uri
        burst = not invoked and self.in_burst(uri)
        ticket = self.pending.get(uri, 0) + 1
        self.pending[uri] = ticket
        text, version = doc.text, doc.version
        cursor = doc.offset_at(line, character)
        start = cursor
        if selected is not None:  # complete as if the selected suggest item were inserted
            s, e, sel_text = selected
            text = text[:s] + sel_text + text[e:]
            start, cursor = s, s + len(sel_text)
        if doc.binary or not self.settings.language_enabled(doc.language):
            return start, cursor, []
        if selected is None:
            through = self.typing.rest(uri, text, cursor)
            if through:  # (a suggestion typed or taken in full leaves nothing more to suggest)
                self.engine.count("typed_through")
                return start, cursor, [_with_text(c, rest) for c, rest in through if rest]
        if burst:
            await asyncio.sleep(self.settings.debounce_ms / 1000)
            if self.pending.get(uri) != ticket or doc.version != version:
                self.engine.count("superseded")
                return start, cursor, []
        tree = doc.tree if selected is None else None
        deadline = 0 if invoked else self.settings.multiline_deadline_ms
        plan, req = self.plan_request(
            Snapshot(text, tree, doc.language), cursor, candidates, invoked, deadline
        )
        t0 = time.perf_counter()
        cands = None
        while req is not None:
            results = await self.run_model(uri, req, plan.kind)
            if results is None or doc.version != version:  # failed, cancelled or stale
                return start, cursor, []
            cands = pipeline.merge_candidates(
                cands, pipeline.region_candidates(plan, text, results)
            )
            if pipeline.deadline_cut(results):
                self.engine.count("deadline_cuts")
            req = pipeline.fallback_request(req, cands)
            if req is not None:
                self.engine.count("fallbacks")
        self.log(
            f"completion {plan.kind} {(time.perf_counter() - t0) * 1000:.0f} ms, {len(cands)} item(s)"
        )
        if selected is None:
            self.typing.remember(uri, text, cursor, cands)
            if not invoked and self.settings.prefetch:
                self.prefetch(doc, ticket, text, cursor, cands[0].text if cands else "")
        return start, cursor, cands

    def plan_request(
        self, snapshot: Snapshot, cursor: int, candidates: int, invoked: bool, deadline_ms: int
    ):
        """(plan, model request) at a cursor: one path for requests and prefetches, so that a
        prefetch asks exactly what the request it anticipates will ask (the engine's key)."""
        text, language = snapshot.text, snapshot.language
        plan = plan_completion(text, cursor, language, snapshot, self.settings.budgets())
        req = pipeline.build_request(plan, text, self.settings, candidates, invoked, deadline_ms)
        return plan, req

    def prefetch(self, doc: Document, ticket: int, text: str, cursor: int, suggestion: str) -> None:
        """Fill, in the background, the line after this one as the editor will show it once
        `suggestion` is taken and Enter pressed (lsp_server/prefetch.py): started once the user
        has paused PREFETCH_IDLE_S after this answer (request `ticket`), so that typing on pays
        nothing for it. It has no deadline until a request takes it over (pipeline.py)."""
        inserted = after_enter(text, cursor, suggestion, doc.language)
        if inserted is None or doc.binary:
            return
        version = doc.version

        def start() -> None:
            if self.pending.get(doc.uri) != ticket or self.docs.get(doc.uri) is not doc:
                return  # another request came, or the document was closed
            if doc.version != version:
                return  # the text changed
            snap = doc.snapshot_with(cursor, inserted)
            plan, req = self.plan_request(snap, cursor + len(inserted), 1, False, 0)
            self.engine.submit(doc.uri, req, plan.kind, speculative=True)

        asyncio.get_running_loop().call_later(PREFETCH_IDLE_S, start)


def _with_text(cand: Candidate, text: str) -> Candidate:
    return replace(cand, text=text)


def _configure_log_file(path: str | None) -> None:
    for h in list(log.handlers):
        if isinstance(h, logging.FileHandler):
            log.removeHandler(h)
            h.close()
    if path:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
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
        ls.docs.close(params.text_document.uri)
        ls.typing.forget(params.text_document.uri)
        ls.pending.pop(params.text_document.uri, None)
        ls.last_automatic.pop(params.text_document.uri, None)

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
        start, _, cands = await ls.complete_at(doc, params.position, invoked, selected)
        if not cands:
            return types.InlineCompletionList(items=[])
        if selected is not None:  # items must extend the selected item's text
            s, e, sel_text = selected
            cands = [_with_text(c, sel_text + c.text) for c in cands]
            items = convert.inline_items(doc, s, cands)
            for item, c in zip(items, cands):
                item.range = convert.lsp_range(doc, s, e + c.extend)
            return types.InlineCompletionList(items=items)
        return types.InlineCompletionList(items=convert.inline_items(doc, start, cands))

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
        start, _, cands = await ls.complete_at(doc, params.position, invoked)
        return types.CompletionList(
            is_incomplete=True, items=convert.completion_items(doc, start, cands)
        )

    @server.command(FILL_COMMAND)
    async def fill(ls: ParafillServer, *args: Any):
        """Arguments: {"uri": str, "range"?: Range} or [uri, range?]. Fills the range, or every
        <|fill|> marker in the document, and applies it with workspace/applyEdit."""
        uri, rng = _fill_args(args)
        doc = ls.document(uri)
        text, version = doc.text, doc.version
        snapshot = Snapshot(text, doc.tree, doc.language)
        try:
            if rng is not None:
                s = doc.offset_at(rng["start"]["line"], rng["start"]["character"])
                e = doc.offset_at(rng["end"]["line"], rng["end"]["character"])
                plan = plan_completion(
                    text, e, doc.language, snapshot, ls.settings.budgets(), selection=(s, e)
                )
            else:
                plan = pipeline.plan_markers(text, doc.language, ls.settings, snapshot)
        except ValueError as exc:
            raise JsonRpcInvalidParams.of(exc) from exc
        job = ls.engine.submit(uri + "#fill", pipeline.build_request(plan, text, ls.settings))
        try:
            results = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.cancel()
            raise
        except ModelUnavailable as exc:
            ls.model_failed(exc)
            raise JsonRpcInvalidParams.of(exc) from exc
        if doc.version != version:
            return {"applied": False, "reason": "document changed while filling", "fills": []}
        fills = pipeline.hole_fills(plan, text, results)
        edits = [(r.start, r.end, f) for r, f in zip(plan.regions, fills)]
        dc = ls.client_capabilities.workspace
        versioned = bool(dc and dc.workspace_edit and dc.workspace_edit.document_changes)
        resp = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(
                edit=convert.workspace_edit(doc, edits, versioned), label="parafill fill"
            )
        )
        return {"applied": bool(resp.applied), "fills": fills, "reason": resp.failure_reason}

    @server.feature(STATUS_METHOD)
    def status(ls: ParafillServer, params: Any = None) -> dict:
        out = ls.engine.status()
        out.update(
            server=f"{NAME} {VERSION}",
            documents=len(ls.docs),
            uptimeSeconds=round(time.time() - ls.started, 1),
            settings=to_json(ls.settings),
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


def _is_range(r: Any) -> bool:
    try:
        return all(
            isinstance(r[k][f], int) for k in ("start", "end") for f in ("line", "character")
        )
    except (TypeError, KeyError):
        return False
