"""The repository context of a completion: the sources, ranked and packed, for one cursor.

Owns the state the sources need between requests and the one call the completion path makes:
`RepoContext.pack_for(doc, text, cursor, budget)` gives the text to put ahead of the prefix
(lsp_server/context/pack.py's `Packed`) from (a) the definitions of the names the document imports
from other workspace files (the index, lsp_server/context/index.py), (b) the other open documents
and (c) the recently edited regions (lsp_server/context/ring.py). Only files under the workspace
folders that lsp_server/context/files.py allows ever contribute, open documents included; with
no workspace folder there is no context. The packing of each document is kept and reused while
it holds the same chunks (stable text ahead of the prefix: the model's context reuse), and the
last one is what `parafill/status` shows.
"""

from __future__ import annotations

import os
import time

from lsp_server.context import files
from lsp_server.context.chunks import Chunk, windows
from lsp_server.context.imports import bindings
from lsp_server.context.index import WorkspaceIndex
from lsp_server.context.pack import EMPTY, Packed, pack, stable
from lsp_server.context.rank import identifiers, rank
from lsp_server.context.ring import EditRing

FAMILIES = {"python": "python", "javascript": "js", "typescript": "js", "tsx": "js"}
MAX_WINDOWS = 200  # windows of one open document ranked at most (its first lines' windows)
# the packed chunks' order (pack.ORDERS): by file and line, so that a chunk coming in or going out
# as one types moves nothing else and the model's context reuse keeps the rest
# (bench/repo_context.py: reused 85 % against 81 % in rank order, the best one last)
ORDER = "path"


class RepoContext:
    def __init__(self, index: WorkspaceIndex | None = None):
        self.open: dict[str, object] = {}  # uri -> its open syntax.Document
        self.index = index or WorkspaceIndex()
        self.order = ORDER
        self.ring = EditRing()
        self.previous: dict[str, Packed] = {}  # uri -> its last packing
        self.last: tuple[str, Packed] | None = None  # the last completion's (uri, packing)
        self.last_ms: float | None = None
        # uri -> (key, relative path or None, windows, their identifiers by chunk key): an open
        # document's verdict and windows, kept while neither it nor the index's generation change
        self._seen: dict[str, tuple[tuple, str | None, list[Chunk], dict]] = {}

    @classmethod
    def for_file(cls, path: str, timeout: float = 30.0) -> RepoContext:
        """A context for one file outside an editor (the CLI): its workspace is the nearest
        folder above it holding `.git` (else its own folder), indexed before this returns."""
        folder = os.path.dirname(os.path.abspath(path))
        probe = folder
        while True:
            if os.path.exists(os.path.join(probe, ".git")):
                folder = probe
                break
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        ctx = cls()
        ctx.set_folders([folder])
        ctx.index.wait_built(timeout)
        return ctx

    # ---- the editor's reports ---------------------------------------------------------------
    def set_folders(self, paths: list[str]) -> None:
        self.index.set_folders(paths)

    def relative(self, uri: str, doc=None) -> str | None:
        """A document's workspace-relative path when it may feed a prompt, else None."""
        path = files.uri_to_path(uri)
        if path is None or not self.index.folders:
            return None
        rel = self.index.relative(path)
        if rel is None or files.language_of(path) is None or files.is_secret_name(path):
            return None
        root = files.under(path, self.index.folders)
        if self.index.ignores.ignored(os.path.realpath(path), root):
            return None
        if doc is not None and (doc.binary or len(doc.text) > files.MAX_FILE_BYTES):
            return None
        return rel

    def opened(self, doc) -> None:
        self.open[doc.uri] = doc
        rel = self.relative(doc.uri, doc)
        if rel is not None:
            self.index.open_doc(rel, doc)

    def changed(self, doc, lines: list[int]) -> None:
        for line in lines:
            self.ring.edited(doc.uri, line)

    def closed(self, doc) -> None:
        self.open.pop(doc.uri, None)
        self.ring.forget(doc.uri)
        self.previous.pop(doc.uri, None)
        self._seen.pop(doc.uri, None)
        rel = self.relative(doc.uri)
        if rel is not None:
            self.index.close_doc(rel)

    # ---- one completion ---------------------------------------------------------------------
    def _seen_doc(self, doc) -> tuple[str | None, list[Chunk], dict]:
        """An open document's relative path (None: it may not feed a prompt), its windows and
        their identifiers, computed again only when it changed or the index's generation did
        (folders set, a .gitignore changed): each keystroke reads every open document, and
        resolves no path and cuts no window for those unchanged."""
        key = (doc.version, len(doc.text), self.index.generation)
        cached = self._seen.get(doc.uri)
        if cached is None or cached[0] != key:
            rel = self.relative(doc.uri, doc)
            wins = [] if rel is None else windows(rel, doc.text)[:MAX_WINDOWS]
            cached = (key, rel, wins, {c.key: identifiers(c.text) for c in wins})
            self._seen[doc.uri] = cached
        return cached[1], cached[2], cached[3]

    def _others(self, doc, here: str) -> tuple[list[Chunk], dict[str, tuple[str, str]], dict]:
        """Windows of the other open documents of the same language family that may feed a
        prompt, (relative path, text) of every such document (the edit ring reads them; `here`:
        `doc`'s own), and the windows' identifiers."""
        out: list[Chunk] = []
        texts: dict[str, tuple[str, str]] = {}
        idents: dict = {}
        family = FAMILIES.get(doc.language)
        for other in list(self.open.values()):
            if FAMILIES.get(other.language) != family:
                continue
            if other.uri == doc.uri:  # (its own windows are never ranked)
                rel, wins, ids = here, [], {}
            else:
                rel, wins, ids = self._seen_doc(other)
            if rel is None:
                continue
            texts[other.uri] = (rel, other.text)
            out += wins
            idents.update(ids)
        return out, texts, idents

    def pack_for(
        self,
        doc,
        text: str,
        cursor: int,
        budget_tokens: int,
        chars_per_token: float = 3.0,
        shown: bool = True,
    ) -> Packed:
        """The context for `doc` at `cursor` of `text` (the text as the plan sees it), within
        `budget_tokens`; EMPTY when nothing may or can be added. `shown`: a completion's, which
        the status reports (a prefetch's is not)."""
        t0 = time.perf_counter()
        here = self.relative(doc.uri, doc)
        if here is None or FAMILIES.get(doc.language) is None or budget_tokens <= 0:
            return EMPTY
        tree = doc.tree if text is doc.text else None  # (the document's own parse, when current)
        binds = bindings(text, doc.language, here, self.index.exists, tree)
        defs_of = {p: self.index.defs(p) for p in {b.path for b in binds} if p != here}
        others, texts, idents = self._others(doc, here)
        edits = [c for c in self.ring.chunks(texts) if c.path != here]
        ranked = rank(text, cursor, binds, defs_of, [*edits, *others], here, idents)
        packed = pack(ranked, budget_tokens, doc.language, chars_per_token, self.order, here)
        packed = stable(self.previous.get(doc.uri), packed, ranked)
        self.previous[doc.uri] = packed
        if shown:
            self.last = (doc.uri, packed)
            self.last_ms = (time.perf_counter() - t0) * 1000
        return packed

    def status(self) -> dict:
        out = {"index": self.index.status()}
        if self.last is not None:
            uri, packed = self.last
            out["last"] = {
                "uri": uri,
                "summary": packed.describe(),
                "tokens": packed.tokens,
                "ms": None if self.last_ms is None else round(self.last_ms, 1),
                "chunks": packed.as_json(),
            }
        return out
