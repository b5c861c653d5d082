"""Documents and syntax: language detection, LSP position maths, one tree-sitter tree per document.

Owns the server's copy of every open document. Text is stored with line endings normalised to
"\\n" (the document's own ending is remembered in `Document.eol` and restored by convert.py), so
line/character positions are the client's own. Each change is applied incrementally and the tree is
re-parsed with `tree.edit` + `parser.parse(new, old_tree)`. Languages without a grammar, binary
documents and huge documents get no tree; the planner then falls back to indentation rules.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

MAX_PARSE_CHARS = 2_000_000  # larger documents are planned without a tree
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


@cache
def get_language(name: str) -> Any | None:
    """The tree-sitter Language for a grammar name, or None when no grammar is installed."""
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
    return text.replace("\r\n", "\n").replace("\r", "\n")


def detect_eol(text: str) -> str:
    i = text.find("\n")
    return "\r\n" if i > 0 and text[i - 1] == "\r" else "\n"


def utf16_len(s: str) -> int:
    return len(s) + sum(1 for c in s if ord(c) > 0xFFFF)


def utf16_to_col(line: str, units: int) -> int:
    """Python index in `line` of a UTF-16 column (clamped to the line's end)."""
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


@dataclass
class Document:
    """One open document: normalised text, its language, version and (maybe) tree."""

    uri: str
    text: str
    language: str
    version: int = 0
    eol: str = "\n"
    tree: Any | None = None
    _parser: Any | None = field(default=None, repr=False)
    _line_starts: list[int] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, uri: str, raw_text: str, language: str, version: int = 0) -> Document:
        doc = cls(uri, normalize_eol(raw_text), language, version, detect_eol(raw_text))
        doc.reparse(full=True)
        return doc

    @property
    def binary(self) -> bool:
        return BINARY_MARKER in self.text

    # ---- positions -------------------------------------------------------------------------
    @property
    def line_starts(self) -> list[int]:
        if self._line_starts is None:
            starts = [0]
            find = self.text.find
            i = find("\n")
            while i >= 0:
                starts.append(i + 1)
                i = find("\n", i + 1)
            self._line_starts = starts
        return self._line_starts

    def line_text(self, line: int) -> str:
        starts = self.line_starts
        end = starts[line + 1] - 1 if line + 1 < len(starts) else len(self.text)
        return self.text[starts[line] : end]

    def offset_at(self, line: int, character: int) -> int:
        """Offset of an LSP position (UTF-16 column); past the end of a line or file clamps."""
        starts = self.line_starts
        if line < 0:
            return 0
        if line >= len(starts):
            return len(self.text)
        return starts[line] + utf16_to_col(self.line_text(line), character)

    def position_at(self, offset: int) -> tuple[int, int]:
        """LSP (line, UTF-16 character) of an offset."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.line_starts, offset) - 1
        return line, utf16_len(self.text[self.line_starts[line] : offset])

    # ---- edits -----------------------------------------------------------------------------
    def apply_change(self, raw_text: str, rng: tuple[int, int, int, int] | None) -> None:
        """Apply one LSP content change: `rng` is (line, char, end line, end char) or None (full)."""
        text = normalize_eol(raw_text)
        if rng is None:
            self.text = text
            self.eol = detect_eol(raw_text) if "\n" in raw_text else self.eol
            self._line_starts = None
            self.reparse(full=True)
            return
        start = self.offset_at(rng[0], rng[1])
        end = max(start, self.offset_at(rng[2], rng[3]))
        old = self.text
        self.text = old[:start] + text + old[end:]
        self._line_starts = None
        if self.tree is not None and len(self.text) <= MAX_PARSE_CHARS and not self.binary:
            sb, sp = _byte_point(old, start)
            ob, op = _byte_point(old, end)
            nb, np_ = _byte_point(self.text, start + len(text))
            self.tree.edit(sb, ob, nb, sp, op, np_)
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

    def reparse(self, full: bool) -> None:
        if len(self.text) > MAX_PARSE_CHARS or self.binary:
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


class DocumentStore:
    """All open documents by URI."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}

    def open(self, uri: str, text: str, language_id: str | None, version: int = 0) -> Document:
        doc = Document.open(uri, text, detect_language(uri, language_id), version)
        self._docs[uri] = doc
        return doc

    def get(self, uri: str) -> Document | None:
        return self._docs.get(uri)

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def __len__(self) -> int:
        return len(self._docs)
