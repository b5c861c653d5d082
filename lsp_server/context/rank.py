"""Ranking context chunks for a cursor (pure: no I/O, no state).

Owns the order in which chunks compete for the window:

1. the definitions of names the file imports from other workspace files, by where those names
   are used: on the cursor's line first, then by distance from the cursor (lines above and a few
   below; a name imported and not used yet counts as used a few lines up: it is likely what
   comes next), then imported but used further away (the more uses, the higher); a module bound
   as a whole (`import pkg.mod as m`, `from . import core`) lends its definitions through
   `m.name`, and its other definitions come last;
2. the windows of the other open documents and the recently edited regions, by identifier
   overlap with the cursor's neighbourhood (Jaccard over distinct identifiers, Copilot's
   neighbouring-tab rule), an edit counting a little more than an open window.

Definitions always rank above overlap chunks; chunks from the file being completed are never
ranked (its own text is in the window already). A class the file never calls (`Name(`) is marked
`brief`: its header line alone tells what the file does with it (an annotation, a base, an
isinstance), and the packing gives it that first (lsp_server/context/pack.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lsp_server.context.chunks import IDENT_RE, Chunk
from lsp_server.context.imports import Binding

NEAR_ABOVE = 40  # lines above the cursor that count as its neighbourhood
NEAR_BELOW = 8
CURSOR_LINE = 1000.0  # a name on the cursor's line
NEAR = 100.0  # a name in the neighbourhood, divided by (1 + distance)
FAR = 0.1  # per use elsewhere in the file (imported but not used near the cursor), at most
FAR_MAX = 1.0  # this in all: below any use in the neighbourhood (NEAR / 49)
UNUSED = NEAR / (1 + 5)  # an imported name not used yet: as if used five lines up
MODULE = 0.001  # a name of an imported module that is not used yet
ANALOG = 60.0  # a name on a line whose neighbour is the same as the cursor line's (per neighbour)
ANALOG_OFFSETS = ((-2, 0.5), (-1, 1.0), (1, 1.0), (2, 0.5))  # which neighbours, how much each
SIBLING = 0.3  # a name on another item of the multi-line list the cursor's line is in counts this
LIST_OPENERS = (",", "(", "[", "{", "|")  # a line ending so continues into a list of items
EDIT_BONUS = 1.2  # a recently edited region's overlap counts this much more
MIN_OVERLAP = 0.05  # overlap chunks under this are not worth a token
CALL_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
ATTR_RE = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
KEYWORDS = frozenset(
    [
        "self",
        "cls",
        "None",
        "True",
        "False",
        "return",
        "def",
        "class",
        "if",
        "else",
        "elif",
        "for",
        "while",
        "in",
        "not",
        "and",
        "or",
        "is",
        "import",
        "from",
        "as",
        "with",
        "try",
        "except",
        "finally",
        "raise",
        "pass",
        "break",
        "continue",
        "lambda",
        "yield",
        "await",
        "async",
        "const",
        "let",
        "var",
        "function",
        "this",
        "new",
        "null",
        "undefined",
        "export",
        "default",
        "typeof",
    ]
)


@dataclass(frozen=True)
class Ranked:
    chunk: Chunk
    score: float
    why: str  # "def:NAME" | "overlap"
    brief: bool = False  # a class the file does not call: its header line is enough at first


def import_lines(lines: list[str]) -> set[int]:
    """The lines of import statements (a name there is not a use)."""
    out: set[int] = set()
    closer = None  # inside a multi-line import until this character
    for i, line in enumerate(lines):
        if closer is not None:
            out.add(i)
            if closer in line:
                closer = None
            continue
        if line.lstrip().startswith(("import ", "from ")):
            out.add(i)
            closer = next((c for o, c in ("()", "{}") if o in line and c not in line), None)
    return out


def _names(line: str) -> set[str]:
    names = set(IDENT_RE.findall(line))
    names |= {f"{a}.{b}" for a, b in ATTR_RE.findall(line)}
    return names - KEYWORDS


def name_weights(text: str, cursor: int) -> dict[str, float]:
    """Each identifier of `text` weighted by where it is used relative to the cursor (the
    nearest use counts; elsewhere, FAR per use up to FAR_MAX); also `m.name` pairs as
    'm.name'. Import statements are not uses."""
    lines = text.split("\n")
    cur_line = text.count("\n", 0, cursor)
    imports = import_lines(lines)
    lo, hi = max(0, cur_line - NEAR_ABOVE), min(len(lines), cur_line + NEAR_BELOW + 1)
    far_text = "\n".join(ln for i, ln in enumerate(lines) if i not in imports and not lo <= i < hi)
    counts: dict[str, int] = {}
    for n in IDENT_RE.findall(far_text) + [f"{a}.{b}" for a, b in ATTR_RE.findall(far_text)]:
        counts[n] = counts.get(n, 0) + 1
    out = {n: min(FAR_MAX, FAR * k) for n, k in counts.items() if n not in KEYWORDS}
    for i, w in analogous(lines, cur_line, imports).items():
        for n in _names(lines[i]):
            out[n] = max(out.get(n, 0.0), w)
    for i in range(lo, hi):
        if i in imports:
            continue
        w = CURSOR_LINE if i == cur_line else NEAR / (1 + abs(i - cur_line))
        for n in _names(lines[i]):
            out[n] = max(out.get(n, 0.0), w)
    mine = _names(lines[cur_line]) if cur_line < len(lines) else set()
    for n in (siblings(lines, cur_line) - mine) & out.keys():  # each item another name
        out[n] *= SIBLING
    return out


def siblings(lines: list[str], cur: int) -> set[str]:
    """The names on the other items of the multi-line list (parameters, arguments, a union's
    members) that the cursor's line is an item of: the line above it continues into it (ends
    with `,`, `(`, `|`, ...), and the items are the lines around it at its indentation."""
    if cur <= 0 or cur >= len(lines) or not lines[cur - 1].rstrip().endswith(LIST_OPENERS):
        return set()
    indent = len(lines[cur]) - len(lines[cur].lstrip())
    out: set[str] = set()
    for span in (range(cur - 1, -1, -1), range(cur + 1, len(lines))):
        for i in span:
            line = lines[i]
            if not line.strip() or len(line) - len(line.lstrip()) != indent:
                break
            out |= _names(line)
    return out


def _telling(line: str) -> str:
    """A line stripped, or '' when it tells little (blank, brackets, keywords alone)."""
    s = line.strip()
    return s if len(s) > 3 and set(_names(s)) else ""


def analogous(lines: list[str], cur: int, skip: set[int]) -> dict[int, float]:
    """Lines of the file placed like the cursor's line: a neighbour of theirs (one or two lines
    above or below) is the same as the cursor line's (repeated code, such as the same
    parameters or calls in sibling functions), weighted ANALOG per neighbour alike (half for a
    neighbour two lines off)."""
    near = {}
    for off, w in ANALOG_OFFSETS:
        if 0 <= cur + off < len(lines) and (t := _telling(lines[cur + off])):
            near[off] = (t, w)
    out: dict[int, float] = {}
    if not near:
        return out
    stripped = [ln.strip() for ln in lines]
    for off, (t, w) in near.items():
        for j, s in enumerate(stripped):
            i = j - off  # line j is line i's neighbour at `off`
            if s == t and 0 <= i < len(lines) and i != cur and i not in skip:
                out[i] = out.get(i, 0.0) + ANALOG * w
    return out


def _by_name(defs: list[Chunk]) -> dict[str, Chunk]:
    """A file's definitions by name; of several (`@overload`s, a redefinition) the last, which
    is what the name is bound to."""
    return {c.names[0]: c for c in defs if c.names}


def called_names(text: str) -> set[str]:
    """The names `text` calls (`name(`, `m.name(`, `new Name(`), the keywords left out."""
    return set(CALL_RE.findall(text)) - KEYWORDS


def rank_definitions(
    weights: dict[str, float],
    binds: list[Binding],
    defs_of: dict[str, list[Chunk]],
    called: set[str] | None = None,
) -> list[Ranked]:
    """Definitions of imported names, best first (`defs_of`: path -> that file's definitions;
    `called`: the names the file calls, None for all)."""
    best: dict[tuple, Ranked] = {}

    def offer(chunk: Chunk, score: float, why: str, used: bool) -> None:
        old = best.get(chunk.key)
        if old is None or score > old.score:
            # named in the file and never called (not a name not used yet: maybe a call next)
            uncalled = called is not None and chunk.names[0] not in called
            best[chunk.key] = Ranked(chunk, score, why, used and bool(chunk.head) and uncalled)

    named = {path: _by_name(defs) for path, defs in defs_of.items()}
    for b in binds:
        defs = named.get(b.path, {})
        if b.symbol is not None:
            w = weights.get(b.name, 0.0)
            if b.symbol in defs:  # (imported, not used yet: likely next)
                offer(defs[b.symbol], w or UNUSED, f"def:{b.name}", w > 0)
            continue
        # a module: its definitions through `name.attr` (or everything, for `import *`)
        for name, c in defs.items():
            if name.startswith("__") and name.endswith("__"):
                continue  # `__all__`, `__version__`: not what a line calls
            key = name if b.name == "*" else f"{b.name}.{name}"
            w = weights.get(key, 0.0)
            if w:
                offer(c, w, f"def:{key}", True)
            elif b.name != "*":
                offer(c, MODULE, f"def:{key}", False)  # the module's other names may come next
    return sorted(best.values(), key=lambda r: (-r.score, r.chunk.path, r.chunk.start))


def neighbourhood(text: str, cursor: int) -> set[str]:
    """Distinct identifiers on the lines around the cursor."""
    lines = text[:cursor].split("\n")[-NEAR_ABOVE // 2 :]
    after = text[cursor:].split("\n")[:NEAR_BELOW]
    return {n for n in IDENT_RE.findall("\n".join(lines + after)) if n not in KEYWORDS}


def identifiers(text: str) -> frozenset[str]:
    """The distinct identifiers of a chunk's text, keywords left out."""
    return frozenset(IDENT_RE.findall(text)) - KEYWORDS


def rank_overlap(
    near: set[str], chunks: Iterable[Chunk], idents: Mapping[tuple, frozenset[str]] | None = None
) -> list[Ranked]:
    """Open-document windows and edited regions by Jaccard identifier overlap, best first
    (`idents`: chunk key -> its identifiers, where they were kept; the others are read)."""
    out = []
    if not near:
        return out
    idents = idents or {}
    for c in chunks:
        ids = idents.get(c.key)
        if ids is None:
            ids = identifiers(c.text)
        if not ids:
            continue
        shared = len(ids & near)
        score = shared / (len(ids) + len(near) - shared)  # (Jaccard: shared over the union)
        if c.kind == "edit":
            score *= EDIT_BONUS
        if score >= MIN_OVERLAP:
            out.append(Ranked(c, score, "overlap"))
    return sorted(out, key=lambda r: (-r.score, r.chunk.path, r.chunk.start))


def rank(
    text: str,
    cursor: int,
    binds: list[Binding],
    defs_of: dict[str, list[Chunk]],
    others: Iterable[Chunk],
    here: str | None = None,
    idents: Mapping[tuple, frozenset[str]] | None = None,
) -> list[Ranked]:
    """All candidates for the window at `cursor` of `text` (the file at relative path `here`),
    best first: definitions, then overlap chunks (`idents`: rank_overlap's)."""
    weights = name_weights(text, cursor)
    ranked = rank_definitions(weights, binds, defs_of, called_names(text))
    defs = [r for r in ranked if r.chunk.path != here]
    seen = {r.chunk.key for r in defs}
    rest = [
        r
        for r in rank_overlap(neighbourhood(text, cursor), others, idents)
        if r.chunk.path != here and r.chunk.key not in seen
    ]
    return defs + rest
