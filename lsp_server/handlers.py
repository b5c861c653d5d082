"""The LSP handlers, thin: LSP params to the domain's calls, their answers to LSP shapes.

Each handler reads its params, calls the server (lsp_server/server.py), the completion path
(lsp_server/completion.py) or the repository context (lsp_server/context/), and turns the answer
into LSP types with lsp_server/convert.py; `create_server` registers FEATURES and COMMANDS.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from lsp_server import convert
from lsp_server.acceptance import ACCEPTED_COMMAND
from lsp_server.config import to_json
from lsp_server.context.files import SOURCE_LANGUAGES, uri_to_path
from lsp_server.engine import ModelUnavailable
from lsp_server.server import (
    FILL_COMMAND,
    NAME,
    STATUS_METHOD,
    VERSION,
    ParafillServer,
    backend_status,
)
from lsp_server.steps import STEPS_METHOD
from model.interface import InfillCancelled

WATCH_ID = "parafill-watched-files"
WATCH_GLOB = "**/{*" + ",*".join(SOURCE_LANGUAGES) + ",.gitignore}"


# ---- lifecycle and settings -----------------------------------------------------------------
def initialize(ls: ParafillServer, params: types.InitializeParams) -> None:
    ls.folders = workspace_paths(params)  # indexed once the settings say so (repoContext)
    ls.apply_settings(params.initialization_options, initial=True)


def workspace_paths(params: types.InitializeParams) -> list[str]:
    """The workspace folders' local paths (workspaceFolders, else rootUri, else rootPath)."""
    if params.workspace_folders:
        uris = [f.uri for f in params.workspace_folders]
    elif params.root_uri:
        uris = [params.root_uri]
    else:
        return [params.root_path] if params.root_path else []
    return [p for p in (uri_to_path(u) for u in uris) if p]


async def initialized(ls: ParafillServer, params: types.InitializedParams) -> None:
    """Ask the client to report the workspace's source files' changes on disk, where it can
    register that dynamically (the index reads them again), when the repository context is on
    (turned on later, saves alone update the index)."""
    ws = ls.client_capabilities.workspace
    watched = ws.did_change_watched_files if ws is not None else None
    if not ls.settings.repo_context or watched is None or not watched.dynamic_registration:
        return
    options = types.DidChangeWatchedFilesRegistrationOptions(
        watchers=[types.FileSystemWatcher(glob_pattern=WATCH_GLOB)]
    )
    reg = types.Registration(WATCH_ID, types.WORKSPACE_DID_CHANGE_WATCHED_FILES, options)
    try:
        await ls.client_register_capability_async(types.RegistrationParams([reg]))
    except Exception as exc:  # noqa: BLE001 - a client that refuses: saves still update the index
        ls.log(f"parafill: could not watch files: {exc}")


async def did_change_configuration(ls: ParafillServer, params: types.DidChangeConfigurationParams):
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


def did_change_workspace_folders(
    ls: ParafillServer, params: types.DidChangeWorkspaceFoldersParams
) -> None:
    gone = {uri_to_path(f.uri) for f in params.event.removed}
    added = [p for p in (uri_to_path(f.uri) for f in params.event.added) if p]
    ls.set_workspace([p for p in ls.folders if p not in gone] + added)


def did_change_watched_files(ls: ParafillServer, params: types.DidChangeWatchedFilesParams):
    for change in params.changes:
        path = uri_to_path(change.uri)
        if path is None:
            continue
        if change.type == types.FileChangeType.Deleted:
            ls.context.index.file_deleted(path)
        else:
            ls.context.index.file_changed(path)


# ---- documents --------------------------------------------------------------------------------
def did_open(ls: ParafillServer, params: types.DidOpenTextDocumentParams) -> None:
    d = params.text_document
    ls.context.opened(ls.docs.open(d.uri, d.text, d.language_id, d.version))


def did_change(ls: ParafillServer, params: types.DidChangeTextDocumentParams) -> None:
    doc = ls.docs.get(params.text_document.uri)
    if doc is None:
        ls.log(
            f"didChange for unknown document {params.text_document.uri}",
            types.MessageType.Warning,
        )
        return
    lines = []
    for change in params.content_changes:
        rng = getattr(change, "range", None)
        r = (
            None
            if rng is None
            else (rng.start.line, rng.start.character, rng.end.line, rng.end.character)
        )
        doc.apply_change(change.text, r)
        if rng is not None:
            lines.append(rng.start.line)
    doc.version = params.text_document.version
    ls.context.changed(doc, lines)


def did_save(ls: ParafillServer, params: types.DidSaveTextDocumentParams) -> None:
    path = uri_to_path(params.text_document.uri)
    if path is not None:
        ls.context.index.file_changed(path)  # its copy on disk (the open text still wins)


def did_close(ls: ParafillServer, params: types.DidCloseTextDocumentParams) -> None:
    doc = ls.docs.get(params.text_document.uri)  # (under any spelling of its URI)
    if doc is not None:
        ls.completer.forget(doc.uri)
        ls.context.closed(doc)
    ls.docs.close(params.text_document.uri)


# ---- completions ------------------------------------------------------------------------------
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
        cands = [replace(c, text=sel_text + c.text) for c in cands]
        items = convert.inline_items(doc, s, cands, done.suggestion)
        for item, c in zip(items, cands):
            item.range = convert.lsp_range(doc, s, e + c.extend)
        return types.InlineCompletionList(items=items)
    items = convert.inline_items(doc, start, cands, done.suggestion)
    return types.InlineCompletionList(items=items)


async def completion(ls: ParafillServer, params: types.CompletionParams):
    doc = ls.document(params.text_document.uri)
    td = ls.client_capabilities.text_document
    if td is not None and getattr(td, "inline_completion", None) is not None:
        return types.CompletionList(is_incomplete=True, items=[])  # it gets inline items instead
    invoked = (
        params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
    )
    done = await ls.complete_at(doc, params.position, invoked)
    items = convert.completion_items(doc, done.start, done.candidates, done.suggestion)
    return types.CompletionList(is_incomplete=True, items=items)


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


def accepted(ls: ParafillServer, *args: Any) -> dict:
    """Arguments: [id, index?] of a suggestion (its items carry them): the editor accepted
    it in full. Counted once (lsp_server/acceptance.py); nothing is sent anywhere."""
    sid = args[0] if args else None
    index = args[1] if len(args) > 1 else 0
    if not _is_int(sid) or not _is_int(index):
        raise JsonRpcInvalidParams.of(ValueError(f"{ACCEPTED_COMMAND} expects [id, index?]"))
    return {"counted": ls.completer.acceptance.accepted(sid, index)}


# ---- what the server shows ----------------------------------------------------------------------
def _uri_param(params: Any) -> Any:
    return params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)


def steps(ls: ParafillServer, params: Any = None) -> dict | None:
    """{"uri"}: how the document's last suggestion was denoised (lsp_server/steps.py), or
    null when it has none (none made since it opened, or it is not open)."""
    uri = _uri_param(params)
    if not isinstance(uri, str):
        raise JsonRpcInvalidParams.of(ValueError(f'{STEPS_METHOD} expects {{"uri": ...}}'))
    doc = ls.docs.get(uri)
    made = ls.completer.denoising.get(doc.uri) if doc is not None else None
    if made is None:
        return None
    start = min(made.start, len(doc.text))  # (the text may have changed since)
    return {"uri": uri, **made.as_json(*doc.position_at(start))}


def status(ls: ParafillServer, params: Any = None) -> dict:
    out = ls.engine.status()
    out.update(
        server=f"{NAME} {VERSION}",
        documents=len(ls.docs),
        uptimeSeconds=round(time.time() - ls.started, 1),
        settings=to_json(ls.settings),
        backend=backend_status(ls),
        acceptance=ls.completer.acceptance.summary(),  # lsp_server/acceptance.py
        # the index, and the chunks the last completion read (path, lines, text)
        context={"enabled": ls.settings.repo_context, **ls.context.status()},
    )
    uri = _uri_param(params)
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


FEATURES = [  # (method, options or None, handler)
    (types.INITIALIZE, None, initialize),
    (types.INITIALIZED, None, initialized),
    (types.WORKSPACE_DID_CHANGE_CONFIGURATION, None, did_change_configuration),
    (types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS, None, did_change_workspace_folders),
    (types.WORKSPACE_DID_CHANGE_WATCHED_FILES, None, did_change_watched_files),
    (types.TEXT_DOCUMENT_DID_OPEN, None, did_open),
    (types.TEXT_DOCUMENT_DID_CHANGE, None, did_change),
    (types.TEXT_DOCUMENT_DID_SAVE, None, did_save),
    (types.TEXT_DOCUMENT_DID_CLOSE, None, did_close),
    (types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions(), inline_completion),
    (
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=[".", "("]),
        completion,
    ),
    (STEPS_METHOD, None, steps),
    (STATUS_METHOD, None, status),
]
COMMANDS = [(FILL_COMMAND, fill), (ACCEPTED_COMMAND, accepted)]


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
