"""The server's copy of a document is always the editor's (issue #16 item 1): syntax.Document
driven with random edits, in every line-ending style and with every Unicode line separator,
against a reference implementation of LSP text edits; offset/position round trips; the line
ending given to inserted text; one document per URI however it is spelled.

The reference (`LspReference`) is LSP's own definition, as vscode-languageserver-textdocument
implements it (`TextDocument.update`, `offsetAt`, `positionAt`):
- the text is a sequence of UTF-16 code units, and a position's character counts them;
- a line ends after each "\\n", each "\\r\\n" and each "\\r" that no "\\n" follows, and after
  nothing else (not "\\f", "\\v", "\\x1c"-"\\x1e", U+0085, U+2028, U+2029);
- a position before the first line is the start, one past the last line the end, and a
  character past a line's end is that end (before its line break);
- a range whose end comes before its start is the same range with the two swapped;
- an edit replaces the code units between its two offsets with its text, exactly, so it may join
  a "\\r" and a "\\n" into one line break, or a "\\r\\n" may lose a half.
One rule of our own, since Python strings cannot hold half a character: a position inside a
surrogate pair (no editor sends one) is the one after the pair.
"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsp_server.convert import inline_items, workspace_edit
from lsp_server.postprocess import Candidate
from lsp_server.syntax import Document, DocumentStore, normalize_uri, parse

# Characters that end a line somewhere (Unicode, str.splitlines) but not in LSP.
SEPARATORS = ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
BREAKS = {"lf": ["\n"], "crlf": ["\r\n"], "cr": ["\r"], "mixed": ["\n", "\r\n", "\r", "\n\r"]}
STYLES = sorted(BREAKS)
WORDS = ["a", "bc", "x = 1", "def f(x):", "    ", "(", ")", "é", "😀", "𝒳", "\t", "# c"]


def to_units(text: str) -> str:
    """`text` as UTF-16 code units, one character each (astral characters become two)."""
    data = text.encode("utf-16-le", "surrogatepass")
    return "".join(chr(int.from_bytes(data[i : i + 2], "little")) for i in range(0, len(data), 2))


def from_units(units: str) -> str:
    return units.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def lsp_normalize(text: str) -> str:
    """Every LSP line break as "\\n": the model's view of a text."""
    return re.sub("\r\n|\r", "\n", text)


class LspReference:
    """A document as LSP defines its edits (see the module docstring)."""

    def __init__(self, text: str):
        self.units = to_units(text)

    @property
    def text(self) -> str:
        return from_units(self.units)

    def line_starts(self) -> list[int]:
        u, starts, i = self.units, [0], 0
        while i < len(u):
            if u[i] in "\r\n":
                if u[i] == "\r" and i + 1 < len(u) and u[i + 1] == "\n":
                    i += 1
                starts.append(i + 1)
            i += 1
        return starts

    def line_units(self, line: int) -> int:
        """The UTF-16 length of a line's content (without its break)."""
        starts = self.line_starts()
        end = starts[line + 1] if line + 1 < len(starts) else len(self.units)
        while end > starts[line] and self.units[end - 1] in "\r\n":
            end -= 1
        return end - starts[line]

    def line_break(self, line: int) -> str:
        starts = self.line_starts()
        content_end = starts[line] + self.line_units(line)
        return self.units[content_end : starts[line + 1]]

    def offset_at(self, line: int, character: int) -> int:
        u, starts = self.units, self.line_starts()
        if line >= len(starts):
            return len(u)
        if line < 0:
            return 0
        start = starts[line]
        if character <= 0:
            return start
        nxt = starts[line + 1] if line + 1 < len(starts) else len(u)
        off = min(start + character, nxt)
        while off > start and u[off - 1] in "\r\n":
            off -= 1
        if (
            0 < off < len(u)
            and "\ud800" <= u[off - 1] <= "\udbff"
            and "\udc00" <= u[off] <= "\udfff"
        ):
            off += 1  # our rule: inside a surrogate pair is after it
        return off

    def position_at(self, offset: int) -> tuple[int, int]:
        starts = self.line_starts()
        line = max(i for i, s in enumerate(starts) if s <= offset)
        return line, offset - starts[line]

    def apply(self, text: str, rng: tuple[int, int, int, int] | None) -> None:
        if rng is None:
            self.units = to_units(text)
            return
        l0, c0, l1, c1 = rng
        if (l1, c1) < (l0, c0):
            l0, c0, l1, c1 = l1, c1, l0, c0
        s, e = self.offset_at(l0, c0), self.offset_at(l1, c1)
        self.units = self.units[:s] + to_units(text) + self.units[e:]


def random_text(rnd: random.Random, style: str, pieces: int) -> str:
    out = []
    for _ in range(pieces):
        r = rnd.random()
        if r < 0.3:
            out.append(rnd.choice(BREAKS[style]))
        elif r < 0.4:
            out.append(rnd.choice(SEPARATORS))
        elif r < 0.45:  # any character but a lone surrogate
            out.append(chr(rnd.choice([rnd.randrange(0xD800), rnd.randrange(0xE000, 0x110000)])))
        else:
            out.append(rnd.choice(WORDS))
    return "".join(out)


def random_change(
    rnd: random.Random, ref: LspReference, style: str, negative: bool = True
) -> tuple[str, tuple[int, int, int, int] | None]:
    """One content change as an editor (or a fuzzer) might send it: mostly valid ranges, some
    past a line's or the document's end (or, with `negative`, before the first line), about half
    with the end before the start."""
    if rnd.random() < 0.05:
        return random_text(rnd, style, rnd.randrange(8)), None
    nlines = len(ref.line_starts())

    def position() -> tuple[int, int]:
        line = rnd.randrange(nlines) if rnd.random() < 0.9 else rnd.randrange(-negative, nlines + 2)
        width = ref.line_units(line) if 0 <= line < nlines else 0
        char = rnd.randrange(width + 1) if rnd.random() < 0.85 else width + rnd.randrange(1, 5)
        return line, char

    (l0, c0), (l1, c1) = position(), position()
    if rnd.random() < 0.4:  # most edits are short: keep the span on one line
        l1 = l0
    text = "" if rnd.random() < 0.25 else random_text(rnd, style, rnd.randrange(1, 5))
    return text, (l0, c0, l1, c1)


def check_document(doc: Document, ref: LspReference) -> None:
    """The Document is the editor's text exactly, and its positions refer to it."""
    assert doc.editor_text == ref.text
    assert doc.text == lsp_normalize(ref.text)
    starts = ref.line_starts()
    assert doc.line_count == len(starts)
    for line in range(min(len(starts), 40)):
        width = ref.line_units(line)
        for char in {0, 1, width // 2, width, width + 3}:
            r = ref.offset_at(line, char)
            m = doc.offset_at(line, char)
            # the model-text offset is the same place in the editor's text
            assert doc.text[:m] == lsp_normalize(from_units(ref.units[:r])), (line, char)
            assert doc.position_at(m) == ref.position_at(r)
            assert doc.offset_at(*doc.position_at(m)) == m
            assert doc.editor_offset(m) == len(from_units(ref.units[:r]))
        expected = ref.line_break(min(line, len(starts) - 2)) if len(starts) > 1 else "\n"
        assert doc.eol_at(doc.offset_at(line, 0)) == expected


def check_tree(doc: Document) -> None:
    if doc.tree is not None:
        assert str(doc.tree.root_node) == str(parse(doc.text, doc.language).root_node)


# ---- the examples of issue #16 --------------------------------------------------------------


@pytest.mark.parametrize("sep", SEPARATORS)
def test_only_cr_and_lf_end_a_line(sep):
    doc = Document.open("u", f"a{sep}bcdef\n", "text")
    doc.apply_change("X", (0, 5, 0, 5))
    assert doc.editor_text == f"a{sep}bcdXef\n" and doc.line_count == 2


def test_a_break_completed_by_an_edit_is_one_break():
    doc = Document.open("u", "a\rb", "python")
    doc.apply_change("\n", (1, 0, 1, 0))  # the editor: "a\r" "\n" "b", so "a\r\nb": two lines
    assert doc.editor_text == "a\r\nb" and doc.text == "a\nb" and doc.line_count == 2
    doc.apply_change("Y", (1, 0, 1, 0))
    assert doc.editor_text == "a\r\nYb" and doc.text == "a\nYb"
    check_tree(doc)


def test_an_edit_joining_a_cr_and_a_lf_merges_their_lines():
    doc = Document.open("u", "a\rb\nc", "text")
    doc.apply_change("", (1, 0, 1, 1))  # deletes "b": "\r" and "\n" become one break
    assert doc.editor_text == "a\r\nc" and doc.text == "a\nc" and doc.line_count == 2
    doc.apply_change("\r", (0, 1, 0, 1))  # "a" "\r" "\r\n" "c": three lines
    assert doc.editor_text == "a\r\r\nc" and doc.text == "a\n\nc"


def test_mixed_endings_stay_mixed_and_pasted_crlf_keeps_its_cr():
    doc = Document.open("u", "a\r\nb\nc", "text")
    doc.apply_change("Z", (2, 1, 2, 1))
    assert doc.editor_text == "a\r\nb\ncZ"
    lf = Document.open("v", "x\ny\n", "text")
    lf.apply_change("p\r\nq", (1, 0, 1, 0))
    assert lf.editor_text == "x\np\r\nqy\n" and lf.text == "x\np\nqy\n"


def test_reversed_range_is_swapped_and_columns_clamp():
    doc = Document.open("u", "abc\ndef", "text")
    doc.apply_change("X", (1, 1, 0, 1))
    assert doc.editor_text == "aXef"
    doc = Document.open("u", "abc", "text")
    doc.apply_change("X", (0, 10, 0, 10))
    assert doc.editor_text == "abcX"
    doc.apply_change("", (0, 99, 0, 1))
    assert doc.editor_text == "a"


def test_lone_surrogates_are_kept_and_the_model_sees_a_replacement():
    doc = Document.open("u.py", "x = '\ud800'\n", "python")
    assert doc.editor_text == "x = '\ud800'\n" and doc.text == "x = '\ufffd'\n"
    assert doc.tree is not None
    doc.apply_change("\udc00", (0, 6, 0, 6))
    assert doc.text == "x = '\ufffd\ufffd'\n" and doc.offset_at(0, 7) == 7


# ---- line endings of inserted text ----------------------------------------------------------


def test_inserted_text_gets_the_line_ending_of_its_line():
    doc = Document.open("file:///m.py", "a\r\nb\nc\rd", "python")
    at = {line: doc.offset_at(line, 1) for line in range(4)}
    assert [doc.eol_at(at[line]) for line in range(4)] == ["\r\n", "\n", "\r", "\r"]
    (item,) = inline_items(doc, at[0], [Candidate("1\n2")])
    assert item.insert_text == "1\r\n2"
    (item,) = inline_items(doc, at[2], [Candidate("1\n2")])
    assert item.insert_text == "1\r2"
    edit = workspace_edit(doc, [(at[1], at[1], "x\ny"), (at[3], at[3], "z\n")], versioned=False)
    assert [e.new_text for e in edit.changes["file:///m.py"]] == ["x\ny", "z\r"]
    assert Document.open("u", "one line", "text").eol_at(3) == "\n"
    assert Document.open("u", "a\rb", "text").eol == "\r"


# ---- URIs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b",
    [
        ("file:///t/a%41.py", "file:///t/aA.py"),
        ("file:///t/a%7e.py", "file:///t/a~.py"),
        ("FILE:///t/x.py", "file:///t/x.py"),
        ("file:///c%3A/src/x.py", "file:///C:/src/x.py"),
        ("file://localhost/t/x%20y.py", "file:///t/x y.py"),
        ("untitled:Untitled-%31", "untitled:Untitled-1"),
        ("untitled:a%2fb", "untitled:a%2Fb"),
    ],
)
def test_spellings_of_one_uri_are_one_document(a, b):
    assert normalize_uri(a) == normalize_uri(b)
    store = DocumentStore()
    store.open(a, "x", "python")
    assert store.get(b) is store.get(a) and store.get(b).uri == a  # answers keep the editor's URI
    store.close(b)
    assert store.get(a) is None and len(store) == 0


@pytest.mark.parametrize(
    "a, b",
    [
        ("file:///t/a.py", "file:///t/A.py"),
        ("file:///t/a%2Fb.py", "file:///t/a/c.py"),
        ("file:///t/a.py", "untitled:/t/a.py"),
        ("untitled:a%2Fb", "untitled:a/b"),  # a reserved character's escape is not the character
        ("file:///t/a%3Fb", "file:///t/a?b"),
    ],
)
def test_different_uris_stay_different(a, b):
    assert normalize_uri(a) != normalize_uri(b)


# ---- properties -----------------------------------------------------------------------------

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.sampled_from(STYLES), st.randoms(use_true_random=False), st.integers(1, 15))
def test_random_edits_keep_the_editors_text(style, rnd, n):
    ref = LspReference(random_text(rnd, style, rnd.randrange(12)))
    doc = Document.open("file:///p.txt", ref.text, "text")
    check_document(doc, ref)
    for _ in range(n):
        text, rng = random_change(rnd, ref, style)
        ref.apply(text, rng)
        doc.apply_change(text, rng)
        check_document(doc, ref)


@PROPERTY
@given(st.sampled_from(STYLES), st.randoms(use_true_random=False), st.integers(1, 10))
def test_incremental_parse_follows_random_edits(style, rnd, n):
    ref = LspReference("def f(x):" + BREAKS[style][0] + "    return x" + BREAKS[style][-1])
    doc = Document.open("file:///p.py", ref.text, "python")
    for _ in range(n):
        text, rng = random_change(rnd, ref, style)
        ref.apply(text, rng)
        doc.apply_change(text, rng)
        assert doc.editor_text == ref.text
        check_tree(doc)


@PROPERTY
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["\n", "\r", "\r\n", *SEPARATORS, "😀"]),
            st.text(st.characters(exclude_categories=("Cs",)), max_size=4),
        ),
        max_size=12,
    ).map("".join)
)
def test_offsets_and_positions_round_trip(text):
    doc, ref = Document.open("u", text, "text"), LspReference(text)
    check_document(doc, ref)
    for offset in range(len(doc.text) + 1):
        line, char = doc.position_at(offset)
        assert doc.offset_at(line, char) == offset
        assert 0 <= line < doc.line_count and char <= ref.line_units(line)
