"""Packing ranked chunks into the window by a token budget (pure).

Owns the text the model reads ahead of the current file's prefix: the chunks of each file under
one path comment line (`# path/to/file.py` for Python, `// path/to/file.ts` for the brace
languages; the path relative to the completed file's folder where that is shorter;
docs/benchmarks.md measured the marking), in file order (by path and line: a chunk
coming in or going out moves nothing else, which the model's context reuse needs) or in rank
order with the best file and chunk last, nearest the prefix (`order`). Coverage first: as many
chunks as fit in rank order, each definition as the shortest form of its signature
(`Chunk.forms`; a class the file never calls, its header line alone: `Ranked.brief`; a chunk
that does not fit is skipped for smaller ones after it, except the best, which is cut at a line
end), then each, best first, in its longer form, then whole (docstring,
class members), where what is left allows. The budget is in tokens, estimated with the
planner's characters-per-token. `stable` keeps the previous packing while it holds the best chunk
(and its chunks are still current), so that the text ahead of the prefix does not change between
keystrokes and the model's context reuse (model/context_reuse.py) keeps its encoding.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from lsp_server.context.rank import Ranked

MIN_CHUNK_TOKENS = 12  # a chunk cut shorter than this is not worth its path line


@dataclass(frozen=True)
class Packed:
    """What goes ahead of the prefix, and what it is made of."""

    text: str = ""
    chunks: tuple[Ranked, ...] = field(default_factory=tuple)  # in the text's order
    tokens: int = 0  # the estimate the budget was held to
    pieces: tuple[str, ...] = ()  # each chunk's text as it went in (a form, or whole)

    @property
    def keys(self) -> frozenset:
        return frozenset(r.chunk.key for r in self.chunks)

    def describe(self) -> str:
        """'context: 3 chunks from core.py, grouping.py' (or '' for none)."""
        if not self.chunks:
            return ""
        names = list(dict.fromkeys(r.chunk.path.rsplit("/", 1)[-1] for r in self.chunks))
        n = len(self.chunks)
        return f"context: {n} chunk{'s' if n != 1 else ''} from {', '.join(names)}"

    def as_json(self) -> list[dict]:
        """The chunks as `parafill/status` reports them (lines 1-based, inclusive; `text` the
        chunk, `packed` what of it the prompt holds)."""
        return [
            {
                "path": r.chunk.path,
                "lines": [r.chunk.start + 1, r.chunk.end + 1],
                "kind": r.chunk.kind,
                "why": r.why,
                "text": r.chunk.text,
                "packed": piece,
            }
            for r, piece in zip(self.chunks, self.pieces, strict=True)
        ]


EMPTY = Packed()


def comment(language: str) -> str:
    return "#" if language == "python" else "//"


def path_line(path: str, language: str, here: str | None = None) -> str:
    """The comment line naming a file: its path relative to the folder of the file being
    completed (`here`), as it is the shorter (`core.py` beside it, `../util/io.py`)."""
    if here is not None:
        rel = posixpath.relpath(path, posixpath.dirname(here) or ".")
        path = rel if len(rel) < len(path) else path
    return f"{comment(language)} {path}\n"


def forms(r: Ranked) -> list[str]:
    """A chunk's texts as it may be packed, shortest first: its header line alone where that is
    enough at first (a class the file does not call: `Ranked.brief`), its signature's forms (a
    definition), then its whole text, each ending with a line break."""
    head = (r.chunk.head,) if r.brief and r.chunk.head else ()
    return [t.rstrip() + "\n" for t in (*head, *r.chunk.forms, r.chunk.text)]


def _cut_to(text: str, chars: int) -> str:
    """`text` cut at the last line end within `chars` characters ('' if none)."""
    if len(text) <= chars:
        return text
    nl = text.rfind("\n", 0, chars)
    return text[: nl + 1] if nl > 0 else ""


ORDERS = ("rank", "path")


def _grouped(chosen: list[list], order: str) -> list[list]:
    """The chosen [ranked, body] pairs in the text's order: by file and line (`path`), or by
    file with the file of the best chunk last and the best chunk of each file last (`rank`)."""
    if order == "path":  # by file and line: a chunk in or out changes only its own place
        return sorted(chosen, key=lambda item: (item[0].chunk.path, item[0].chunk.start))
    files = list(dict.fromkeys(item[0].chunk.path for item in chosen))[::-1]
    return [item for f in files for item in chosen[::-1] if item[0].chunk.path == f]


def pack(
    ranked: list[Ranked],
    budget_tokens: int,
    language: str,
    chars_per_token: float = 3.0,
    order: str = "rank",
    here: str | None = None,
) -> Packed:
    """The best chunks within `budget_tokens` (estimated at `chars_per_token`), a path line ahead
    of each file's: first as many as fit in rank order, each definition in its shortest form,
    then each, best first, longer, then whole, where what is left allows."""
    room = int(budget_tokens * chars_per_token)
    least = MIN_CHUNK_TOKENS * chars_per_token
    chosen: list[list] = []  # [ranked, body]
    paths: set[str] = set()
    lines: dict[str, int] = {}  # path -> its path line's length
    used = 0
    for k, r in enumerate(ranked):
        path = r.chunk.path
        if path not in paths and path not in lines:
            lines[path] = len(path_line(path, language, here))
        line = 0 if path in paths else lines[path]
        piece = forms(r)[0]
        if used + line + len(piece) > room:
            if k > 0:
                continue  # skipped for smaller ones after it
            piece = _cut_to(piece, room - used - line)  # the best chunk, cut at a line end
            if not piece.strip() or line + len(piece) < least:
                continue
        chosen.append([r, piece])
        paths.add(r.chunk.path)
        used += line + len(piece)
    for level in (1, 2, 3):  # longer forms where they fit (then whole), best first
        for item in chosen:
            texts = forms(item[0])
            longer = texts[min(level, len(texts) - 1)]
            if len(longer) > len(item[1]) and used + len(longer) - len(item[1]) <= room:
                used += len(longer) - len(item[1])
                item[1] = longer
    if not chosen:
        return EMPTY
    parts, last = [], None
    ordered = _grouped(chosen, order)
    for r, piece in ordered:
        if r.chunk.path != last:
            parts.append(path_line(r.chunk.path, language, here))
            last = r.chunk.path
        parts.append(piece)
    text = "".join(parts) + "\n"
    chunks = tuple(r for r, _ in ordered)
    pieces = tuple(piece for _, piece in ordered)
    return Packed(text, chunks, int(len(text) / chars_per_token) + 1, pieces)


def stable(previous: Packed | None, new: Packed, ranked: list[Ranked] | None = None) -> Packed:
    """`previous` while it still serves, so that the text ahead of the prefix stays the same
    between keystrokes: it holds the same chunks as `new`, or it holds `new`'s best chunk and
    every chunk of it is still a candidate (`ranked`) with the same text. Else `new`."""
    if previous is None or not previous.text or not new.chunks:
        return new
    now = {r.chunk.key: r.chunk.text for r in (ranked if ranked is not None else new.chunks)}
    if any(now.get(r.chunk.key) != r.chunk.text for r in previous.chunks):
        return new  # a chunk gone, or its file edited
    if previous.keys == new.keys or new.chunks[-1].chunk.key in previous.keys:
        return previous
    return new
