"""Line-fill tasks on code the model never saw, split by file into a calibration half and a
development half, for the length signal (model/length.py) and its decoding choices.

Owns: the unseen files (installed packages the corpus builder excludes by name,
training.data.EVAL_EXCLUDE_PACKAGES), their split (by a hash of the file's path relative to its
package, so it is the same on every machine), and the tasks: the rest of one line from its
indentation (a line start) or from a random column inside it (typing mid-line), with the file
around it as context. What `bench/dev_infill.py` asks, in both cursor kinds the editor has.
"""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path

import numpy as np

from training.data import EVAL_EXCLUDE_PACKAGES

SPLITS = ("calib", "dev")


def unseen_files(split: str | None = None) -> list[Path]:
    """The eval-only packages' *.py files (2 KB - 400 KB); `split` keeps one half of them."""
    out = []
    for name in EVAL_EXCLUDE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if not (spec and spec.submodule_search_locations):
            continue
        for loc in spec.submodule_search_locations:
            for f in sorted(Path(loc).rglob("*.py")):
                if not 2_000 < f.stat().st_size < 400_000:
                    continue
                rel = f"{name}/{f.relative_to(loc)}"
                if split is None or split_of(rel) == split:
                    out.append(f)
    return out


def split_of(rel: str) -> str:
    return SPLITS[zlib.crc32(rel.encode()) % 2]


def line_tasks(
    n: int, split: str | None, seed: int = 0, mid_line: float = 0.5
) -> list[tuple[str, str, str]]:
    """(prefix, rest of the line, suffix) tasks: a line of at least 6 characters that is not a
    comment or a string's; with probability `mid_line` the cursor is at a random column inside
    it (at least one character typed, at least two left), otherwise after its indentation. The
    suffix starts with the line's break, as in the editor."""
    rng = np.random.default_rng(seed)
    files = unseen_files(split)
    if not files:
        raise SystemExit(
            "no unseen files found: install the test extra (pygls, lsprotocol, tree_sitter)"
        )
    texts = [f.read_text(errors="replace").split("\n") for f in files]
    # draw files in proportion to their line count, so one long file is not under-sampled
    weights = np.array([len(t) for t in texts], dtype=float)
    weights /= weights.sum()
    tasks, seen = [], set()
    while len(tasks) < n and len(seen) < sum(len(t) for t in texts):
        k = int(rng.choice(len(texts), p=weights))
        lines = texts[k]
        i = int(rng.integers(len(lines)))
        line = lines[i]
        s = line.strip()
        if len(s) < 6 or s.startswith(("#", '"', "'")) or (k, i) in seen:
            continue
        seen.add((k, i))
        col = len(line) - len(line.lstrip())
        if rng.random() < mid_line and len(line.rstrip()) - col > 3:
            col = int(rng.integers(col + 1, len(line.rstrip()) - 1))
        pre = "\n".join(lines[:i] + [line[:col]])
        suf = "\n" + "\n".join(lines[i + 1 :])
        tasks.append((pre[-3000:], line[col:].rstrip(), suf[:1500]))
    return tasks
