"""convert.py: LSP items with UTF-16 ranges and the document's own line endings."""

from __future__ import annotations

from lsprotocol import types

from lsp_server.convert import completion_items, inline_items, workspace_edit
from lsp_server.postprocess import Candidate
from lsp_server.syntax import Document


def test_inline_item_utf16_range_and_extend():
    doc = Document.open("file:///a.py", 'print("😀", |)\n'.replace("|", ""), "python")
    cursor = doc.text.index(")")
    (item,) = inline_items(doc, cursor, [Candidate("x)", extend=1)])
    # 'print("😀", ' is 11 characters but 12 UTF-16 units
    assert item.range.start == types.Position(0, 12)
    assert item.range.end == types.Position(0, 13)
    assert item.insert_text == "x)"


def test_crlf_documents_get_crlf_text():
    doc = Document.open("file:///b.py", "def f():\r\n    \r\n", "python")
    cursor = doc.offset_at(1, 4)
    (item,) = inline_items(doc, cursor, [Candidate("a = 1\n    return a")])
    assert item.insert_text == "a = 1\r\n    return a"
    assert item.range.start == types.Position(1, 4)


def test_completion_items():
    doc = Document.open("file:///c.py", "x = \n", "python")
    items = completion_items(doc, 4, [Candidate("compute(1,\n 2)"), Candidate("0")])
    assert items[0].label == "compute(1," and items[0].text_edit.new_text == "compute(1,\n 2)"
    assert (
        items[0].kind == types.CompletionItemKind.Snippet
        and items[1].kind == types.CompletionItemKind.Text
    )
    assert items[0].sort_text < items[1].sort_text and items[0].preselect
    assert items[0].text_edit.range == types.Range(types.Position(0, 4), types.Position(0, 4))


def test_workspace_edit_versioned_and_plain():
    doc = Document.open("file:///d.py", "a = <|fill|>\r\nb = 2\r\n", "python", version=7)
    s = doc.text.index("<|fill|>")
    edit = workspace_edit(doc, [(s, s + 8, "1\n")])
    (tde,) = edit.document_changes
    assert tde.text_document.version == 7 and tde.text_document.uri == "file:///d.py"
    assert tde.edits[0].new_text == "1\r\n"
    assert tde.edits[0].range == types.Range(types.Position(0, 4), types.Position(0, 12))
    plain = workspace_edit(doc, [(s, s + 8, "1")], versioned=False)
    assert plain.changes["file:///d.py"][0].new_text == "1"
