"""syntax.py: language detection, UTF-16 positions, CRLF, incremental re-parse equal to a full parse."""

from __future__ import annotations

import random

import pytest

from lsp_server.syntax import (
    MAX_PARSE_CHARS,
    Document,
    count_errors,
    detect_language,
    get_language,
    parse,
    utf16_len,
)


def test_detect_language():
    assert detect_language("file:///a/b.py", "python") == "python"
    assert detect_language("file:///a/b.tsx", None) == "tsx"
    assert detect_language("file:///a/b.rs", "plaintext") == "rust"
    assert detect_language("file:///a/b.xyz", "cobol") == "cobol"
    assert detect_language("file:///a/b", None) == "text"


@pytest.mark.parametrize("name", ["python", "javascript", "typescript", "tsx", "go", "rust"])
def test_grammars_installed(name):
    assert get_language(name) is not None
    assert parse("x", name) is not None


def test_unknown_language_has_no_tree():
    doc = Document.open("file:///x.foo", "some text (\n", "foo")
    assert doc.tree is None and get_language("foo") is None


def test_utf16_positions_round_trip():
    doc = Document.open("u", "a😀b\né\n", "text")
    assert doc.offset_at(0, 3) == 2  # 😀 is two UTF-16 units
    assert doc.position_at(2) == (0, 3)
    assert doc.offset_at(0, 99) == 3  # past the end of the line clamps to its end
    assert doc.offset_at(99, 0) == len(doc.text)  # past the end of the file
    assert doc.position_at(len(doc.text)) == (2, 0)


def test_crlf_is_normalised_and_remembered():
    doc = Document.open("c", "a\r\nb\r\n", "python")
    assert doc.text == "a\nb\n" and doc.eol == "\r\n"
    doc.apply_change("x\r\ny", (1, 0, 1, 1))
    assert doc.text == "a\nx\ny\n"


def test_incremental_edits_match_full_parse():
    rng = random.Random(7)
    text = "def f(x):\n    return x + 1\n\nclass A:\n    def m(self):\n        pass\n"
    doc = Document.open("f.py", text, "python")
    pieces = ["(", ")", "x", "\n", "    ", "é", "😀", "return ", ":", "def g(", ""]
    for _ in range(200):
        lines = doc.text.split("\n")
        l1 = rng.randrange(len(lines))
        c1 = rng.randrange(len(lines[l1]) + 1)
        l2 = rng.randrange(l1, min(len(lines), l1 + 2))
        c2 = rng.randrange(len(lines[l2]) + 1) if l2 > l1 else rng.randrange(c1, len(lines[l1]) + 1)
        new = rng.choice(pieces)
        # LSP characters are UTF-16 units
        u = lambda s: len(s.encode("utf-16-le")) // 2
        expected = (
            doc.text[: doc.offset_at(l1, u(lines[l1][:c1]))]
            + new
            + doc.text[doc.offset_at(l2, u(lines[l2][:c2])) :]
        )
        doc.apply_change(new, (l1, u(lines[l1][:c1]), l2, u(lines[l2][:c2])))
        assert doc.text == expected
        assert str(doc.tree.root_node) == str(parse(doc.text, "python").root_node)


def test_snapshot_with_an_insert_leaves_the_document_as_it_was():
    text = "def f(x):\n    return é\n\nclass A:\n    pass\n"
    doc = Document.open("f.py", text, "python")
    before = str(doc.tree.root_node)
    at = text.index("é") + 1
    snap = doc.snapshot_with(at, " + 1\n    y = (")
    assert snap.text == text[:at] + " + 1\n    y = (" + text[at:]
    assert str(snap.tree.root_node) == str(parse(snap.text, "python").root_node)
    assert doc.text == text and str(doc.tree.root_node) == before


def test_full_change_and_binary_and_huge():
    doc = Document.open("h.py", "x = 1\n", "python")
    doc.apply_change("y = 2\r\n", None)
    assert doc.text == "y = 2\n" and doc.eol == "\r\n" and doc.tree is not None
    doc.apply_change("\x00\x01", None)
    assert doc.binary and doc.tree is None
    big = Document.open("big.py", "x = 1\n" * (MAX_PARSE_CHARS // 6 + 10), "python")
    assert big.tree is None
    big.apply_change("y", (0, 0, 0, 0))
    assert big.text.startswith("yx = 1")


def test_count_errors():
    assert count_errors(parse("def f(:\n", "python")) > 0
    assert count_errors(parse("def f():\n    pass\n", "python")) == 0
    assert count_errors(None) == 0


def test_a_document_with_a_very_long_line_is_planned_without_a_tree():
    """Minified code or a 1 MB data literal: re-parsing its line took 0.1-2.4 s a keystroke."""
    from lsp_server.syntax import MAX_PARSE_LINE

    long_line = "x = [" + ", ".join(["1"] * (MAX_PARSE_LINE // 3)) + "]\n"
    doc = Document.open("file:///t/data.py", "import os\n" + long_line, "python")
    assert doc.tree is None
    doc.apply_change("y = 2\n", (0, 0, 0, 0))
    assert doc.tree is None and doc.text.startswith("y = 2\nimport os\n")
    doc.apply_change("", (2, 0, 3, 0))  # the long line removed: parsed again
    assert doc.tree is not None and doc.text == "y = 2\nimport os\n"


def test_utf16_len_counts_code_units():
    assert utf16_len("abc") == 3 and utf16_len("é") == 1 and utf16_len("a\U0001f600b") == 4
