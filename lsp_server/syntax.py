"""Documents and syntax: language detection, LSP position maths, one tree-sitter tree per document.

Owns the server's copy of every open document. Each document keeps the editor's text exactly as
the editor has it (`Document.editor_text`: every edit applied by LSP's rules, line breaks as sent,
mixed or not) and the model's view of it (`Document.text`: every line break as "\\n", which the
model was trained on); both have the same lines, so line/character positions are the client's own
in either, and offsets everywhere else are offsets into `text`. Only "\\n", "\\r\\n" and "\\r" end
a line (not the other Unicode separators); columns are UTF-16 code units. Each change is applied
incrementally and the tree is re-parsed with `tree.edit` + `parser.parse(new, old_tree)`.
Languages without a grammar, binary documents and huge documents get no tree; the planner then
falls back to indentation rules. Documents are stored under a normalised URI (`normalize_uri`),
so two spellings of one URI are one document.
"""

from __future__ import annotations

import os
import re
import string
from functools import cache
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

MAX_PARSE_CHARS = 2_000_000  # larger documents are planned without a tree
# so is a document with a line this long (minified code, a data literal): tree-sitter took
# 0.1-2.4 s to re-parse one 1 MB line on each keystroke, on the event loop
MAX_PARSE_LINE = 20_000
BINARY_MARKER = "\x00"

# LSP languageId -> grammar name
LANGUAGE_IDS = {
    "python": "python",
    "javascript": "javascript",
    "javascriptreact": "javascript",
    "typescript": "typescript",
    "typescriptreact": "tsx",
    "go": "go",
    "rust": "rust",
}
EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
}


def detect_language(uri_or_path: str, language_id: str | None = None) -> str:
    """Grammar name for a document ("python", "javascript", ...), or its languageId / "text"."""
    if language_id and language_id in LANGUAGE_IDS:
        return LANGUAGE_IDS[language_id]
    ext = os.path.splitext(uri_or_path)[1].lower()
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    return language_id or "text"


LANGUAGES = ("python", "javascript", "typescript", "tsx", "go", "rust")  # grammar names
GRAMMARS = frozenset(LANGUAGES)
assert GRAMMARS == set(LANGUAGE_IDS.values()) == set(EXTENSIONS.values())


def get_language(name: str) -> Any | None:
    """The tree-sitter Language for a grammar name, or None when no grammar is installed."""
    return _load_language(name) if name in GRAMMARS else None  # a cache entry per grammar only


@cache
def _load_language(name: str) -> Any | None:
    try:
        from tree_sitter import Language

        if name == "python":
            import tree_sitter_python as mod

            return Language(mod.language())
        if name == "javascript":
            import tree_sitter_javascript as mod

            return Language(mod.language())
        if name in ("typescript", "tsx"):
            import tree_sitter_typescript as mod

            fn = mod.language_tsx if name == "tsx" else mod.language_typescript
            return Language(fn())
        if name == "go":
            import tree_sitter_go as mod

            return Language(mod.language())
        if name == "rust":
            import tree_sitter_rust as mod

            return Language(mod.language())
    except Exception:  # noqa: BLE001 - a missing or broken grammar wheel: plan without a tree
        return None
    return None


def make_parser(language: str) -> Any | None:
    lang = get_language(language)
    if lang is None:
        return None
    from tree_sitter import Parser

    return Parser(lang)


def parse(text: str, language: str) -> Any | None:
    """A fresh tree for `text`, or None (no grammar, binary, too large)."""
    if len(text) > MAX_PARSE_CHARS or BINARY_MARKER in text:
        return None
    parser = make_parser(language)
    return parser.parse(text.encode("utf-8")) if parser is not None else None


def count_errors(tree: Any | None) -> int:
    """Number of ERROR and MISSING nodes in a tree (0 without a tree)."""
    if tree is None or not tree.root_node.has_error:
        return 0
    n = 0
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            n += 1
        if node.has_error:
            stack.extend(node.children)
    return n


def normalize_eol(text: str) -> str:
    """Every LSP line break ("\\r\\n", "\\r", "\\n") as "\\n"."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def model_text(raw: str) -> str:
    """The model's view of an editor's text: line breaks as "\\n" and lone surrogates (which
    JSON can carry and UTF-8 cannot) as U+FFFD. Both keep every line's UTF-16 length."""
    text = normalize_eol(raw)
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")
_EMPTY = np.zeros(0, dtype=np.int64)


def _breaks(raw: str) -> tuple[np.ndarray, np.ndarray]:
    """The end offset of every LSP line break in `raw` and, per break, 1 where it is "\\r\\n"."""
    if "\n" not in raw and "\r" not in raw:
        return _EMPTY, _EMPTY
    if raw.isascii():
        c = np.frombuffer(raw.encode("ascii"), dtype=np.uint8)
    else:
        c = np.frombuffer(raw.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    at = np.flatnonzero((c == 10) | (c == 13))  # every "\r" and "\n"
    if not len(at):
        return _EMPTY, _EMPTY
    cr = c[at] == 13
    # the "\r" of a "\r\n" ends no line: the "\n" right after it ends the "\r\n"
    joined = np.zeros(len(at), dtype=bool)
    joined[:-1] = cr[:-1] & (at[1:] == at[:-1] + 1) & ~cr[1:]
    keep = ~joined
    crlf = np.zeros(len(at), dtype=np.int64)
    crlf[1:] = joined[:-1]
    return at[keep].astype(np.int64) + 1, crlf[keep]


def utf16_len(s: str) -> int:
    """Length in UTF-16 code units (LSP's columns)."""
    if s.isascii():
        return len(s)
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def utf16_to_col(line: str, units: int) -> int:
    """Python index in `line` of a UTF-16 column (clamped to the line's end; inside a surrogate
    pair: after it)."""
    if units <= 0:
        return 0
    if line.isascii():
        return min(units, len(line))
    count = 0
    for i, c in enumerate(line):
        if count >= units:
            return i
        count += 2 if ord(c) > 0xFFFF else 1
    return len(line)


class Document:
    """One open document: the editor's text exactly as it sent it (`editor_text`), the model's
    view of it (`text`: every line break as "\\n", so one character per break), its language,
    version and (maybe) tree.

    Both texts have the same lines with the same contents, so an LSP position names the same line
    and column in each; offsets (`offset_at`, `position_at`, everything the planner and server
    use) are offsets into `text`. Line starts of both are kept (numpy arrays, updated per edit).
    An edit is applied to the editor's text by LSP's rules (a position past a line's end or the
    last line clamps; a reversed range is swapped) and `text` follows it: the span re-derived from
    the editor's text is widened by a lone "\\r" before the edit and a lone "\\n" after it, since
    an edit may join them with its own text into one "\\r\\n" break (or split one).
    """

    def __init__(self, uri: str, raw_text: str, language: str, version: int = 0):
        self.uri = uri
        self.language = language
        self.version = version
        self.tree: Any | None = None
        self._parser: Any | None = None
        self._set(raw_text)
        self.reparse(full=True)

    @classmethod
    def open(cls, uri: str, raw_text: str, language: str, version: int = 0) -> Document:
        return cls(uri, raw_text, language, version)

    def __repr__(self) -> str:
        return f"Document({self.uri!r}, {self.language}, v{self.version}, {len(self.text)} chars)"

    def _set(self, raw: str) -> None:
        self.editor_text = raw
        self.text = model_text(raw)
        ends, crlf = _breaks(raw)
        self._raw_starts = np.concatenate(([0], ends)).astype(np.int64)
        self._starts = self._raw_starts - np.concatenate(([0], np.cumsum(crlf))).astype(np.int64)

    @property
    def binary(self) -> bool:
        return BINARY_MARKER in self.text

    # ---- positions -------------------------------------------------------------------------
    @property
    def line_starts(self) -> list[int]:
        """Offset in `text` of every line's start."""
        return self._starts.tolist()

    @property
    def line_count(self) -> int:
        return len(self._starts)

    def _line_len(self, line: int) -> int:
        starts = self._starts
        end = int(starts[line + 1]) - 1 if line + 1 < len(starts) else len(self.text)
        return end - int(starts[line])

    def line_text(self, line: int) -> str:
        start = int(self._starts[line])
        return self.text[start : start + self._line_len(line)]

    def _locate(self, line: int, character: int) -> tuple[int, int]:
        """(line, column in characters) of an LSP position, clamped as LSP says: before the first
        line is the start, past the last line the end, past a line's end its end."""
        if line < 0:
            return 0, 0
        if line >= len(self._starts):
            last = len(self._starts) - 1
            return last, self._line_len(last)
        return line, utf16_to_col(self.line_text(line), character)

    def offset_at(self, line: int, character: int) -> int:
        """Offset in `text` of an LSP position (UTF-16 column); past the end of a line or file
        clamps."""
        line, col = self._locate(line, character)
        return int(self._starts[line]) + col

    def position_at(self, offset: int) -> tuple[int, int]:
        """LSP (line, UTF-16 character) of an offset in `text`: the editor's position."""
        offset = max(0, min(offset, len(self.text)))
        line = int(np.searchsorted(self._starts, offset, side="right")) - 1
        return line, utf16_len(self.text[int(self._starts[line]) : offset])

    def editor_offset(self, offset: int) -> int:
        """The offset in `editor_text` (code points) of an offset in `text`."""
        offset = max(0, min(offset, len(self.text)))
        line = int(np.searchsorted(self._starts, offset, side="right")) - 1
        return int(self._raw_starts[line]) + offset - int(self._starts[line])

    def _break_of(self, line: int) -> str:
        """The editor's line break ending `line` (not the last line)."""
        end = int(self._raw_starts[line]) + self._line_len(line)
        return self.editor_text[end : int(self._raw_starts[line + 1])]

    @property
    def eol(self) -> str:
        """The document's first line break as the editor has it ("\\n" without any)."""
        return self._break_of(0) if len(self._starts) > 1 else "\n"

    def eol_at(self, offset: int) -> str:
        """The line break of the line holding `offset` (in `text`) as the editor has it: the one
        the editor expects in text inserted there. The last line, which has none, takes the line
        before's; a document of one line takes "\\n"."""
        n = len(self._starts)
        if n == 1:
            return "\n"
        offset = max(0, min(offset, len(self.text)))
        line = int(np.searchsorted(self._starts, offset, side="right")) - 1
        return self._break_of(min(line, n - 2))

    def to_editor(self, text: str, offset: int | None = None) -> str:
        """Model text (breaks as "\\n") for insertion at `offset`, with the editor's line break
        there (the document's first one without an offset)."""
        eol = self.eol if offset is None else self.eol_at(offset)
        return text.replace("\n", eol) if eol != "\n" and "\n" in text else text

    # ---- edits -----------------------------------------------------------------------------
    def apply_change(self, raw_text: str, rng: tuple[int, int, int, int] | None) -> None:
        """Apply one LSP content change: `rng` is (line, char, end line, end char) or None (full)."""
        if rng is None:
            self._set(raw_text)
            self.reparse(full=True)
            return
        l0, c0 = self._locate(rng[0], rng[1])
        l1, c1 = self._locate(rng[2], rng[3])
        if (l1, c1) < (l0, c0):  # a reversed range is the same range
            l0, c0, l1, c1 = l1, c1, l0, c0
        raw, old, rstarts, starts = self.editor_text, self.text, self._raw_starts, self._starts
        rs, re_ = int(rstarts[l0]) + c0, int(rstarts[l1]) + c1
        ms, me = int(starts[l0]) + c0, int(starts[l1]) + c1
        # widen the span to where old and new text break lines alike (see the class docstring)
        a, na = (rs - 1, ms - 1) if rs and raw[rs - 1] == "\r" else (rs, ms)
        b, nb = (re_ + 1, me + 1) if re_ < len(raw) and raw[re_] == "\n" else (re_, me)
        seg = raw[a:rs] + raw_text + raw[re_:b]
        mseg = model_text(seg)
        self.editor_text = raw[:a] + seg + raw[b:]
        ends, crlf = _breaks(seg)
        i0 = int(np.searchsorted(rstarts, a, side="right"))
        i1 = int(np.searchsorted(rstarts, b, side="right"))
        self._raw_starts = np.concatenate(
            (rstarts[:i0], a + ends, rstarts[i1:] + (len(seg) - (b - a)))
        )
        self._starts = np.concatenate(
            (starts[:i0], na + ends - np.cumsum(crlf), starts[i1:] + (len(mseg) - (nb - na)))
        )
        if old[na:nb] == mseg:  # the model's text is unchanged (a "\r" became "\r\n", ...)
            return
        self.text = old[:na] + mseg + old[nb:]
        if self.tree is not None and len(self.text) <= MAX_PARSE_CHARS and not self.binary:
            sb, sp = _byte_point(old, na)
            ob, op = _byte_point(old, nb)
            nb_, np_ = _byte_point(self.text, na + len(mseg))
            self.tree.edit(sb, ob, nb_, sp, op, np_)
            self.reparse(full=False)
        else:
            self.reparse(full=True)

    def snapshot_with(self, offset: int, inserted: str) -> Snapshot:
        """This document with `inserted` put at `offset`, as a Snapshot; the document itself is
        unchanged. The tree is a copy of its tree, edited and re-parsed incrementally."""
        text = self.text[:offset] + inserted + self.text[offset:]
        tree = None
        if self.tree is not None and self._parser is not None and len(text) <= MAX_PARSE_CHARS:
            tree = self.tree.copy()
            sb, sp = _byte_point(self.text, offset)
            nb, np_ = _byte_point(text, offset + len(inserted))
            tree.edit(sb, sb, nb, sp, sp, np_)
            tree = self._parser.parse(text.encode("utf-8"), tree)
        return Snapshot(text, tree, self.language)

    def longest_line(self) -> int:
        """Characters in the document's longest line (line break included)."""
        ends = np.append(self._starts[1:], len(self.text) + 1)
        return int((ends - self._starts).max())

    def reparse(self, full: bool) -> None:
        if len(self.text) > MAX_PARSE_CHARS or self.binary or self.longest_line() > MAX_PARSE_LINE:
            self.tree = None
            return
        if self._parser is None:
            self._parser = make_parser(self.language)
        if self._parser is None:
            self.tree = None
            return
        old = None if full else self.tree
        data = self.text.encode("utf-8")
        self.tree = self._parser.parse(data, old) if old is not None else self._parser.parse(data)


def _byte_point(text: str, offset: int) -> tuple[int, tuple[int, int]]:
    """(byte offset, (row, byte column)) of a character offset."""
    head = text[:offset]
    row = head.count("\n")
    line_start = head.rfind("\n") + 1
    return len(head.encode("utf-8")), (row, len(head[line_start:].encode("utf-8")))


class Snapshot:
    """Text + tree of one moment, with byte <-> character offset conversion for the planner."""

    def __init__(self, text: str, tree: Any | None, language: str):
        self.text = text
        self.tree = tree
        self.language = language
        self._ascii = text.isascii()
        self._data: bytes | None = None

    def char_offset(self, byte: int) -> int:
        if self._ascii:
            return byte
        if self._data is None:
            self._data = self.text.encode("utf-8")
        return len(self._data[:byte].decode("utf-8", errors="ignore"))

    def byte_offset(self, char: int) -> int:
        return char if self._ascii else len(self.text[:char].encode("utf-8"))


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_DRIVE = re.compile(r"/[A-Za-z]:")
_PATH_SAFE = "/:@!$&'()*+,;="  # what a path segment may hold unescaped (RFC 3986 pchar)


def _escapes(s: str) -> str:
    """RFC 3986 6.2.2: escapes of unreserved characters decoded, the others in upper case."""
    if "%" not in s:
        return s

    def one(m: re.Match) -> str:
        ch = chr(int(m[1], 16))
        return ch if ch in _UNRESERVED else "%" + m[1].upper()

    return _ESCAPE.sub(one, s)


def normalize_uri(uri: str) -> str:
    """The key one document is stored under, the same for every spelling of its URI that LSP
    clients produce: the scheme in lower case, escapes of unreserved characters decoded and the
    others in upper case (RFC 3986 6.2.2), so "file:///a%41.py" is "file:///aA.py"; for a file
    URI also the path's escapes decoded (VS Code's "file:///c%3A/x" is "file:///C:/x"), a Windows
    drive letter in lower case and "localhost" as no host. Answers keep the editor's URI."""
    m = _SCHEME.match(uri)
    if m is None:
        return _escapes(uri)
    scheme, rest = m.group()[:-1].lower(), uri[m.end() :]
    if scheme != "file":
        return f"{scheme}:{_escapes(rest)}"
    host = ""
    if rest.startswith("//"):
        cut = min((i for i in (rest.find(c, 2) for c in "/?#") if i >= 0), default=len(rest))
        host, rest = rest[2:cut].lower(), rest[cut:]
        host = "" if host == "localhost" else host
    cut = min((i for i in (rest.find(c) for c in "?#") if i >= 0), default=len(rest))
    path = unquote(rest[:cut], errors="surrogateescape")
    if _DRIVE.match(path):
        path = path[:2].lower() + path[2:]
    path = quote(path, safe=_PATH_SAFE, errors="surrogateescape")
    return f"file://{host}{path}{_escapes(rest[cut:])}"


class DocumentStore:
    """All open documents, by normalised URI (each keeps the URI its editor opened it with)."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}

    def open(self, uri: str, text: str, language_id: str | None, version: int = 0) -> Document:
        doc = Document.open(uri, text, detect_language(uri, language_id), version)
        self._docs[normalize_uri(uri)] = doc
        return doc

    def get(self, uri: str) -> Document | None:
        return self._docs.get(normalize_uri(uri))

    def close(self, uri: str) -> None:
        self._docs.pop(normalize_uri(uri), None)

    def __len__(self) -> int:
        return len(self._docs)
