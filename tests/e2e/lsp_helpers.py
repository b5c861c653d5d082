"""Shared helpers for the language-server end-to-end tests (real server process over stdio)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lsprotocol import types

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
WEIGHTS = ROOT / "model" / "weights"


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def fake_server_command() -> list[str]:
    return [sys.executable, "-m", "lsp_server.cli", "serve", "--backend", "fake_infiller:load"]


def real_server_command() -> list[str]:
    return [sys.executable, "-m", "lsp_server.cli", "serve"]


def open_doc(client, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id=language, version=version, text=text
            )
        )
    )


def change_doc(
    client, uri: str, version: int, line: int, char: int, end_line: int, end_char: int, text: str
) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(
                        types.Position(line, char), types.Position(end_line, end_char)
                    ),
                    text=text,
                )
            ],
        )
    )


def inline_params(
    uri: str, line: int, char: int, invoked: bool = True, selected=None
) -> types.InlineCompletionParams:
    kind = (
        types.InlineCompletionTriggerKind.Invoked
        if invoked
        else types.InlineCompletionTriggerKind.Automatic
    )
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line, char),
        context=types.InlineCompletionContext(trigger_kind=kind, selected_completion_info=selected),
    )


def cursor_of(text: str, marker: str = "|") -> tuple[str, int, int]:
    """Text without the marker and the marker's (line, UTF-16 character)."""
    i = text.index(marker)
    before = text[:i]
    line = before.count("\n")
    col = before[before.rfind("\n") + 1 :]
    return text[:i] + text[i + len(marker) :], line, len(col.encode("utf-16-le")) // 2


def apply_item(text: str, item: types.InlineCompletionItem) -> str:
    """Apply an inline item (same-line range) to LF text."""
    lines = text.split("\n")

    def off(p):
        head = "\n".join(lines[: p.line])
        line = lines[p.line]
        units, col = 0, 0
        while units < p.character and col < len(line):
            units += 2 if ord(line[col]) > 0xFFFF else 1
            col += 1
        return (len(head) + 1 if p.line else 0) + col

    s, e = off(item.range.start), off(item.range.end)
    return text[:s] + item.insert_text + text[e:]


def as_dict(obj):
    """pygls returns untyped JSON objects as namedtuples: turn them back into dicts."""
    if hasattr(obj, "_asdict"):
        return {k: as_dict(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj


TWO_HOLES = "def add(a, b):\n    return <|fill|>\n\n\ndef double(x):\n    return <|fill:8|>\n"


async def fill_two_holes(client, uri: str) -> tuple[dict, list[tuple[int, int]]]:
    """`parafill.fill` over TWO_HOLES opened as `uri` (the client's `applied_edits` records
    workspace/applyEdit): the command's answer and where each applied edit starts."""
    open_doc(client, uri, TWO_HOLES)
    client.applied_edits.clear()
    res = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="parafill.fill", arguments=[{"uri": uri}])
    )
    (edit,) = client.applied_edits
    edits = edit.document_changes[0].edits
    return res, [(e.range.start.line, e.range.start.character) for e in edits]


async def start_session(client, options: dict | None = None, editor: str = "visual-studio-code"):
    """initialize + initialized as `editor` would send them, with no debounce (unless `options`
    say otherwise): the InitializeResult."""
    from pytest_lsp import client_capabilities

    return await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(editor),
            initialization_options={"debounceMs": 0, **(options or {})},
        )
    )
