"""Repository-level infill examples (issue #23): a file's holes with the repository context
ahead of its prefix, as the language server packs it, so that the network learns to use it.

Owns grouping the corpus's files into packages, choosing the cursors, and the examples. A package
is a top-level folder under a corpus root (`email/` of the standard library, `httpx/` of
site-packages), its files named by their path from that root (`email/parser.py`), as a workspace
would name them; a module alone at a root's top (`os.py`, `six.py`) is a package of its own, so it
gets no header: in site-packages those are separate distributions, and a user's workspace never
holds the standard library, so the server never packs `os` or `typing` for `import os`: only a
package's own modules importing each other are what the server meets. A `site-packages` or
`dist-packages` folder inside a root starts a root of its own.

For a file whose imports name other files of its package (of its own split: a validation file's
definitions never reach a training example), the cursor goes on a line using an imported name
(USE_SHARE of the examples) or on another line (so that the network does not learn that the
header always matters); the holes are drawn as training/data.py draws them, the first on that line.
The header is what the server would pack there (lsp_server/context's own functions: `bindings`
over the file with its holes taken out, `definitions` of the imported files, `rank`, `pack` in
file order with the file's path as `here`), by a budget of a random share of contextTokens (the
server's repoContextShare, 0.25 by default) up to what the window leaves the file; the example is
header + the file's window (trimmed prefix starting at a line) + holes + suffix, in
training/data.py's infill layout (`assemble`), so training/train.py reads it unchanged. Only the
kept corpus (decontaminated, the eval-only packages such as pygls never walked) is read, and only
as the texts it is handed: nothing here touches the disk.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from lsp_server.context.chunks import IDENT_RE, Chunk, definitions
from lsp_server.context.imports import Binding, bindings
from lsp_server.context.index import MAX_DEFS
from lsp_server.context.pack import Packed, pack
from lsp_server.context.rank import import_lines, rank
from lsp_server.context.repo import ORDER
from lsp_server.planner import Budgets
from training.data import (
    SEQ_LEN,
    assemble,
    assign_splits,
    choose_holes,
    file_window,
    hole_pieces,
    hole_shape,
    split_of,
)

LANGUAGE = "python"
ROOT_DIRS = ("site-packages", "dist-packages")  # folders that hold packages, not one
USE_SHARE = 0.7  # of the cursors: on a line using an imported name
CONTEXT_TOKENS = Budgets.context_tokens  # the server's contextTokens default (400)
CHARS_PER_TOKEN = Budgets.chars_per_token  # the planner's estimate the packing budgets with
DEFAULT_SHARE = 0.25  # the server's repoContextShare default ...
SHARES = (0.05, 0.75)  # ... drawn half the time, else uniformly from its allowed range
MIN_FILE_TOKENS = 96  # the file's own prefix and suffix keep at least this many tokens


# ----------------------------------------------------------------------------- packages
def package_of(path: str, roots: list[str]) -> tuple[str, str] | None:
    """(package, path relative to the package's root, '/'-separated) of a corpus file, or None
    outside the roots."""
    best = None
    for r in roots:
        r = os.path.normpath(r)
        if path.startswith(r + os.sep) and (best is None or len(r) > len(best)):
            best = r
    if best is None:
        return None
    parts = os.path.relpath(path, best).split(os.sep)
    root = best
    for k in range(len(parts) - 1, -1, -1):
        if parts[k] in ROOT_DIRS and k < len(parts) - 1:
            root = os.path.join(root, *parts[: k + 1])
            parts = parts[k + 1 :]
            break
    return os.path.join(root, parts[0]), "/".join(parts)


def group_packages(
    pairs: list[tuple[str, str]], roots: list[str], splits: list[str]
) -> dict[tuple[str, str], dict[str, str]]:
    """(split, package) -> {relative path: text} of the packages with two files or more in a
    split."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for (path, text), split in zip(pairs, splits):
        where = package_of(path, roots)
        if where is not None:
            out.setdefault((split, where[0]), {})[where[1]] = text
    return {k: v for k, v in out.items() if len(v) > 1}


# ----------------------------------------------------------------------------- cursors
def bound_names(binds: list[Binding], here: str, defs: Callable[[str], list[Chunk]]) -> set[str]:
    """The local names the imports bind to other files of the package (a `*` import: the
    names that file defines)."""
    out: set[str] = set()
    for b in binds:
        if b.path == here:
            continue
        if b.name == "*":
            out |= {c.names[0] for c in defs(b.path) if c.names}
        else:
            out.add(b.name.split(".")[0])
    return out


def cursor_lines(text: str, names: set[str]) -> tuple[list[int], list[int]]:
    """(lines using one of `names`, the other lines), import statements and blank lines left
    out."""
    lines = text.split("\n")
    skip = import_lines(lines)
    using, other = [], []
    for i, line in enumerate(lines):
        if i in skip or not line.strip():
            continue
        (using if names & set(IDENT_RE.findall(line)) else other).append(i)
    return using, other


# ----------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class RepoExample:
    arrays: tuple  # (tokens, pos, group) as training/data.py's infill examples
    header: str  # the packed repository context ahead of the prefix
    line: int  # the cursor's line in the file (the first hole's)
    uses: bool  # whether that line uses a name imported from the package
    header_tokens: int


def header_for(
    seen: str,
    cursor: int,
    here: str,
    exists: Callable[[str], bool],
    defs: Callable[[str], list[Chunk]],
    budget_tokens: int,
) -> Packed:
    """The server's packing at `cursor` of `seen` (the file as typed: its holes taken out)."""
    binds = bindings(seen, LANGUAGE, here, exists)
    defs_of = {p: defs(p) for p in {b.path for b in binds} if p != here}
    ranked = rank(seen, cursor, binds, defs_of, [], here)
    return pack(ranked, budget_tokens, LANGUAGE, CHARS_PER_TOKEN, ORDER, here)


def header_budget(rng: np.random.Generator) -> int:
    share = DEFAULT_SHARE if rng.random() < 0.5 else float(rng.uniform(*SHARES))
    return int(CONTEXT_TOKENS * share)


def from_line_start(newlines: frozenset[int]) -> Callable[[list[int], list[int]], list[int]]:
    """A prefix trimmed mid-line starts after its first line break (the planner's window starts
    at a line)."""

    def cut(kept: list[int], pre: list[int]) -> list[int]:
        if len(kept) == len(pre):
            return kept
        k = next((j for j, t in enumerate(kept) if t in newlines), len(kept) - 1)
        return kept[k + 1 :]

    return cut


def repo_examples(
    text: str,
    here: str,
    exists: Callable[[str], bool],
    defs: Callable[[str], list[Chunk]],
    seed: int,
    n: int,
    tok,
    seq_len: int = SEQ_LEN,
) -> list[RepoExample]:
    """Up to n repository-level examples of the file `here` (its text `text`; `exists` and
    `defs` answer for the files of its package), none when its imports name no other file."""
    names = bound_names(bindings(text, LANGUAGE, here, exists), here, defs)
    if not names:
        return []
    using, other = cursor_lines(text, names)
    if not using:
        return []
    rng = np.random.default_rng(seed)
    starts = np.cumsum([0] + [len(line) + 1 for line in text.split("\n")])
    cut = from_line_start(frozenset(tok.newline_ids))
    out: list[RepoExample] = []
    for _ in range(n * 3):
        if len(out) >= n:
            break
        uses = not other or rng.random() < USE_SHARE
        pool = using if uses else other
        line = int(pool[rng.integers(len(pool))])
        w0, window = file_window(text, rng, int(starts[line]))
        holes = choose_holes(window, rng, line - text.count("\n", 0, w0))
        if not holes:
            continue
        shape = hole_shape(tok.encode_pieces(hole_pieces(window, holes)), rng, seq_len)
        if shape is None:
            continue
        cap = shape.ctx_budget - shape.middle - MIN_FILE_TOKENS
        budget = min(header_budget(rng), cap)
        if budget < 16:
            continue
        seen = hole_pieces(text, [(w0 + a, w0 + b) for a, b in holes])[0::2]
        cursor = w0 + holes[0][0]
        packed = header_for("".join(seen), cursor, here, exists, defs, budget)
        head = tok.encode(packed.text) if packed.text else []
        if len(head) > cap:  # the estimate was short: pack again by the ratio
            packed = header_for(
                "".join(seen), cursor, here, exists, defs, budget * cap // len(head)
            )
            head = tok.encode(packed.text) if packed.text else []
        if not head or len(head) > cap:
            continue
        arrays = assemble(shape, seq_len, tok.pad_id, head, cut)
        if arrays is not None:
            out.append(RepoExample(arrays, packed.text, line, uses, len(head)))
    return out


# ----------------------------------------------------------------------------- the corpus
_TABLES: dict[tuple[str, str], dict[str, str]] = {}  # set before the workers fork
_tok = None
_defs_cache: dict[tuple, list[Chunk]] = {}


def _init_worker(tok_path: str) -> None:
    global _tok
    from model.tokenizer import CodeTokenizer

    _tok = CodeTokenizer.from_file(tok_path)


def _examples_for(job: tuple) -> tuple[str, list[tuple], list[bool], list[int]]:
    split, package, here, seed, n = job
    table = _TABLES[(split, package)]

    def defs(rel: str) -> list[Chunk]:
        key = (split, package, rel)
        if key not in _defs_cache:
            if len(_defs_cache) > 4096:
                _defs_cache.clear()
            _defs_cache[key] = definitions(rel, table[rel], LANGUAGE)[:MAX_DEFS]
        return _defs_cache[key]

    found = repo_examples(table[here], here, table.__contains__, defs, seed, n, _tok)
    return (
        split,
        [e.arrays for e in found],
        [e.uses for e in found],
        [e.header_tokens for e in found],
    )


def build(
    files: list[tuple[str, str]],
    sources: list[tuple[str, str]],
    roots: list[str],
    tok_path: str,
    workers: int,
    per_kb: float,
    seed: int = 0,
) -> tuple[dict[str, list[tuple]], dict]:
    """Repository-level examples of `files` ((path, text): the corpus as it goes into the
    shards), their headers from `sources` (the whole kept corpus, `files` among it), per_kb
    examples per KB of each file importing from its package: ({split: arrays}, stats)."""
    t0 = time.time()
    splits = dict(zip((t for _, t in files), assign_splits([t for _, t in files])))
    pairs = list({p: t for p, t in [*sources, *files]}.items())
    _TABLES.clear()
    _TABLES.update(group_packages(pairs, roots, [splits.get(t) or split_of(t) for _, t in pairs]))
    jobs = []
    for path, text in files:
        where = package_of(path, roots)
        if where is None or (splits[text], where[0]) not in _TABLES:
            continue
        n = int(np.ceil(len(text) / 1024 * per_kb))
        jobs.append((splits[text], where[0], where[1], seed ^ zlib.crc32(where[1].encode()), n))
    jobs.sort(key=lambda j: (j[0], j[1]))  # a package's files together: its definitions reused
    out: dict[str, list[tuple]] = {"train": [], "val": []}
    uses, head_tokens, files_with = [], [], 0
    ctx = multiprocessing.get_context("fork")  # the workers read _TABLES without a copy each
    try:
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(tok_path,)
        ) as pool:
            for split, arrays, u, h in pool.map(_examples_for, jobs, chunksize=8):
                out[split] += arrays
                uses += u
                head_tokens += h
                files_with += bool(arrays)
    finally:
        _TABLES.clear()
    stats = {
        "packages": len({(j[0], j[1]) for j in jobs}),
        "files_in_packages": len(jobs),
        "files_with_examples": files_with,
        "examples": len(uses),
        "on_using_lines": int(sum(uses)),
        "header_tokens_mean": round(float(np.mean(head_tokens)), 1) if head_tokens else 0,
        "header_tokens_p90": int(np.percentile(head_tokens, 90)) if head_tokens else 0,
        "per_mb": round(len(uses) / max(1e-9, sum(len(t) for _, t in files) / 1e6), 1),
        "seconds": round(time.time() - t0, 1),
    }
    return out, stats
