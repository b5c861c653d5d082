"""Conversion from planned, post-processed fills to LSP types (UTF-16 ranges, the editor's EOL).

Owns: InlineCompletionItem, CompletionItem and WorkspaceEdit construction. Offsets are character
offsets into the model's view of a document (`syntax.Document.text`, breaks as "\\n"); ranges are
converted to the editor's positions (UTF-16 code units) here, and inserted text gets the line
ending of the line it goes into as the editor has it (a mixed document: the cursor line's).
"""

from __future__ import annotations

from lsprotocol import types

from lsp_server.acceptance import ACCEPTED_COMMAND
from lsp_server.postprocess import Candidate
from lsp_server.syntax import Document

LABEL_CHARS = 60  # completion item labels show the first line, cut to this length


def lsp_range(doc: Document, start: int, end: int) -> types.Range:
    sl, sc = doc.position_at(start)
    el, ec = doc.position_at(end)
    return types.Range(types.Position(sl, sc), types.Position(el, ec))


def with_eol(doc: Document, text: str, offset: int | None = None) -> str:
    """`text` (breaks as "\\n") with the editor's line break at `offset` (the document's first
    without one)."""
    return doc.to_editor(text, offset)


def accepted_command(suggestion: int | None, index: int) -> types.Command | None:
    """The command an editor runs when it accepts candidate `index` of a suggestion (its id
    for the acceptance statistics, lsp_server/acceptance.py); None without an id."""
    if suggestion is None:
        return None
    return types.Command(
        title="Parafill: suggestion accepted",
        command=ACCEPTED_COMMAND,
        arguments=[suggestion, index],
    )


def inline_items(
    doc: Document, start: int, cands: list[Candidate], suggestion: int | None = None
) -> list[types.InlineCompletionItem]:
    """Inline completion items inserting each candidate at `start` (the cursor); each carries
    the command that counts it accepted when `suggestion` (its id) is given."""
    items = []
    for i, c in enumerate(cands):
        rng = lsp_range(doc, start, start + c.extend)
        items.append(
            types.InlineCompletionItem(
                insert_text=with_eol(doc, c.text, start),
                range=rng,
                command=accepted_command(suggestion, i),
            )
        )
    return items


def completion_items(
    doc: Document, start: int, cands: list[Candidate], suggestion: int | None = None
) -> list[types.CompletionItem]:
    """The fills as completion items for clients without inline completion (with the command
    that counts one accepted, as inline items)."""
    items = []
    for i, c in enumerate(cands):
        first = c.text.strip().split("\n", 1)[0]
        label = first if len(first) <= LABEL_CHARS else first[: LABEL_CHARS - 1] + "…"
        items.append(
            types.CompletionItem(
                label=label or c.text.strip()[:LABEL_CHARS],
                kind=types.CompletionItemKind.Snippet
                if "\n" in c.text
                else types.CompletionItemKind.Text,
                detail="parafill",
                documentation=types.MarkupContent(
                    kind=types.MarkupKind.Markdown, value=f"```\n{c.text}\n```"
                ),
                text_edit=types.TextEdit(
                    range=lsp_range(doc, start, start + c.extend),
                    new_text=with_eol(doc, c.text, start),
                ),
                insert_text_format=types.InsertTextFormat.PlainText,
                sort_text=f"{i:04d}",
                filter_text=c.text,
                preselect=i == 0,
                command=accepted_command(suggestion, i),
            )
        )
    return items


def workspace_edit(
    doc: Document, edits: list[tuple[int, int, str]], versioned: bool = True
) -> types.WorkspaceEdit:
    """One WorkspaceEdit replacing each (start, end) with its text, in the given document."""
    text_edits = [
        types.TextEdit(range=lsp_range(doc, s, e), new_text=with_eol(doc, t, s))
        for s, e, t in edits
    ]
    if versioned:
        ident = types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version)
        return types.WorkspaceEdit(
            document_changes=[types.TextDocumentEdit(text_document=ident, edits=text_edits)]
        )
    return types.WorkspaceEdit(changes={doc.uri: text_edits})
