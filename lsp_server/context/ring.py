"""The recently edited regions: a bounded ring of (document, line) places (llama.vim's ring).

Owns which places were edited last: an edit near a place already in the ring (within `NEAR`
lines of the same document) moves it to the front; the ring holds at most `SIZE` places and
forgets a document's places when it closes. The text of a place is read from the document when a
completion asks (the region as it is now, not as it was), as `CONTEXT_LINES` lines around it.
"""

from __future__ import annotations

from lsp_server.context.chunks import Chunk

SIZE = 16
NEAR = 8
CONTEXT_LINES = 6  # lines each side of an edited line


class EditRing:
    def __init__(self, size: int = SIZE):
        self.size = size
        self.places: list[tuple[str, int]] = []  # (uri, line), newest first

    def edited(self, uri: str, line: int) -> None:
        for k, (u, ln) in enumerate(self.places):
            if u == uri and abs(ln - line) <= NEAR:
                del self.places[k]
                break
        self.places.insert(0, (uri, line))
        del self.places[self.size :]

    def forget(self, uri: str) -> None:
        self.places = [p for p in self.places if p[0] != uri]

    def chunks(self, texts: dict[str, tuple[str, str]]) -> list[Chunk]:
        """The places as chunks; `texts`: uri -> (relative path, text now) of the documents
        that may feed a prompt (others are left out)."""
        out = []
        for uri, line in self.places:
            if uri not in texts:
                continue
            path, text = texts[uri]
            lines = text.split("\n")
            s = max(0, line - CONTEXT_LINES)
            e = min(len(lines), line + CONTEXT_LINES + 1) - 1
            if s > e:
                continue
            body = "\n".join(lines[s : e + 1])
            if body.strip():
                out.append(Chunk(path, s, e, body, (), "edit"))
        return out
