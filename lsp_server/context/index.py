"""The workspace index: every allowed source file's definitions, built in the background.

Owns the definitions of the workspace's files (lsp_server/context/chunks.py), kept up to date:
a full walk of the workspace folders when they are set (bounded: `MAX_FILES` files, each at most
1 MB, `MAX_DEFS` definitions each), then one file at a time as the editor reports it saved,
created, changed or deleted on disk. One worker thread does it all, a file at a time, and waits
while a completion runs (`hold`), so indexing never delays one; a completion asks the index for
what it holds now, whether or not the walk has finished. Open documents are not read from disk:
their text (the editor's) wins, read from the document itself when asked (`open_doc`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

from lsp_server.context import files
from lsp_server.context.chunks import Chunk, definitions

MAX_FILES = 10_000
MAX_DEFS = 200  # definitions kept per file
HOLD_MAX_S = 5.0  # the worker waits at most this long for a completion to end
log = logging.getLogger("parafill")


@dataclass
class Entry:
    mtime: float
    language: str
    defs: list[Chunk]


class WorkspaceIndex:
    def __init__(self, max_files: int = MAX_FILES):
        self.max_files = max_files
        self.folders: list[str] = []  # resolved paths
        self.ignores = files.Ignores()
        self._entries: dict[str, Entry] = {}  # relative path -> its definitions on disk
        self._open: dict[str, tuple[object, tuple, list[Chunk]]] = {}  # rel -> (doc, key, defs)
        self._lock = threading.Lock()
        self._tasks: queue.Queue = queue.Queue()
        self.idle = threading.Event()  # cleared while a completion runs
        self.idle.set()
        self.building = False
        self.build_ms: float | None = None
        self.generation = 0  # bumped by each full walk (a stale walk stops)
        self._thread: threading.Thread | None = None

    # ---- paths ------------------------------------------------------------------------------
    def relative(self, path: str) -> str | None:
        """The workspace-relative '/'-path of a local path (None outside the folders)."""
        root = files.under(path, self.folders)
        if root is None:
            return None
        return os.path.relpath(os.path.realpath(path), root).replace(os.sep, "/")

    def absolute(self, rel: str) -> str | None:
        for root in self.folders:
            p = os.path.join(root, *rel.split("/"))
            if os.path.exists(p):
                return p
        return None

    # ---- the editor's reports -----------------------------------------------------------------
    def set_folders(self, paths: list[str]) -> None:
        """Index these folders (replacing any before): a full walk in the background."""
        self.folders = [os.path.realpath(p) for p in paths if os.path.isdir(p)]
        self.ignores = files.Ignores()
        with self._lock:
            self._entries.clear()
        self.generation += 1
        self._put(("walk", self.generation))

    def file_changed(self, path: str) -> None:
        """A file was created, changed or saved on disk: read it again (in the background)."""
        if os.path.basename(path) == ".gitignore":
            self.ignores.forget(os.path.dirname(os.path.realpath(path)))
            self.generation += 1
            self._put(("walk", self.generation))  # what it lets through may have changed
            return
        self._put(("file", path))

    def file_deleted(self, path: str) -> None:
        rel = self.relative(path)
        if rel is not None:
            with self._lock:
                self._entries.pop(rel, None)

    def open_doc(self, rel: str, doc) -> None:
        """An open document's text wins over its copy on disk (`doc`: .text, .version,
        .language, .tree)."""
        with self._lock:
            self._open[rel] = (doc, (), [])

    def close_doc(self, rel: str) -> None:
        with self._lock:
            self._open.pop(rel, None)
        path = self.absolute(rel)
        if path is not None:
            self._put(("file", path))  # back to its copy on disk

    # ---- what a completion asks -----------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return rel in self._open or rel in self._entries

    def defs(self, rel: str) -> list[Chunk]:
        """The definitions of a workspace file: an open document's from its text now (parsed
        again only when its version changed), else the index's (none if not indexed yet)."""
        opened = self._open.get(rel)
        if opened is not None:
            doc, key, defs = opened
            now = (doc.version, len(doc.text))
            if now != key:
                defs = definitions(rel, doc.text, doc.language, doc.tree)[:MAX_DEFS]
                with self._lock:
                    if rel in self._open:
                        self._open[rel] = (doc, now, defs)
            return defs
        entry = self._entries.get(rel)
        return entry.defs if entry is not None else []

    def status(self) -> dict:
        with self._lock:
            n = len(self._entries)
            chunks = sum(len(e.defs) for e in self._entries.values())
        return {
            "folders": list(self.folders),
            "files": n,
            "definitions": chunks,
            "building": self.building,
            "buildMs": None if self.build_ms is None else round(self.build_ms),
        }

    # ---- the worker -----------------------------------------------------------------------------
    def _put(self, task: tuple) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="parafill-index", daemon=True)
            self._thread.start()
        self._tasks.put(task)

    def wait_built(self, timeout: float = 30.0) -> bool:
        """Wait until the queue is empty (tests, benches)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._tasks.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                if task[0] == "walk":
                    self._walk(task[1])
                else:
                    self._read(task[1])
            except Exception:
                log.exception("parafill: indexing failed")
            finally:
                self._tasks.task_done()

    def _pause(self) -> None:
        """Yield to a completion in progress, and to the event loop between files."""
        self.idle.wait(HOLD_MAX_S)
        time.sleep(0)

    def _walk(self, generation: int) -> None:
        self.building = True
        t0 = time.perf_counter()
        seen = set()
        try:
            for path in files.walk(self.folders, self.ignores, self.max_files):
                if generation != self.generation:
                    return  # a newer walk replaces this one
                self._pause()
                rel = self._read(path, checked=True)
                if rel is not None:
                    seen.add(rel)
            with self._lock:
                for rel in [r for r in self._entries if r not in seen]:
                    del self._entries[rel]
            self.build_ms = (time.perf_counter() - t0) * 1000
        finally:
            if generation == self.generation:
                self.building = False

    def _read(self, path: str, checked: bool = False) -> str | None:
        rel = self.relative(path)
        if rel is None:
            return None
        if not checked and files.allowed(path, self.folders, self.ignores) is not None:
            with self._lock:
                self._entries.pop(rel, None)
            return None
        try:
            mtime = os.path.getmtime(path)
            old = self._entries.get(rel)
            if old is not None and old.mtime == mtime:
                return rel
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            with contextlib.suppress(KeyError), self._lock:
                del self._entries[rel]
            return None
        language = files.language_of(path) or ""
        defs = definitions(rel, text, language)[:MAX_DEFS]
        with self._lock:
            if len(self._entries) < self.max_files or rel in self._entries:
                self._entries[rel] = Entry(mtime, language, defs)
        return rel
