"""Which workspace files may feed a prompt (privacy and limits), and the walk that finds them.

Owns: the rules a file passes before anything of it is read into a prompt: it lies under one of
the workspace folders (symbolic links resolved), no `.gitignore` on its way excludes it, its name
is not a secret's (`.env*`, keys, certificates, credential and token files), it is a source file
of a language the index reads, at most 1 MB, and not binary (a NUL byte in its first 8 KB). No
network, no state beyond the parsed `.gitignore` files.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

MAX_FILE_BYTES = 1_000_000
SOURCE_LANGUAGES = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".tsx": "tsx",
}
SKIP_DIRS = {
    ".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".nox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", "site-packages", "dist", "build",
}  # fmt: skip
SECRET_PATTERNS = (
    ".env", ".env.*", "*.env", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".netrc", ".npmrc", ".pypirc", ".pgpass",
    "*credential*", "*secret*", "*password*", "*passwd*", "*.token", "*token.json",
    "*tokens.json", "auth.json", ".htpasswd", "*.kdbx", "*.gpg", "*.asc",
)  # fmt: skip


def language_of(path: str) -> str | None:
    """The index's language for a path (None: not a source file it reads)."""
    return SOURCE_LANGUAGES.get(os.path.splitext(path)[1].lower())


def is_secret_name(path: str) -> bool:
    name = os.path.basename(path).lower()
    return any(fnmatch.fnmatchcase(name, p) for p in SECRET_PATTERNS)


def under(path: str, folders: list[str]) -> str | None:
    """The workspace folder `path` (resolved) lies under, or None."""
    real = os.path.realpath(path)
    for f in folders:
        if real == f or real.startswith(f.rstrip(os.sep) + os.sep):
            return f
    return None


def is_binary(head: bytes) -> bool:
    return b"\0" in head[:8192]


def _glob_regex(pattern: str) -> str:
    """A .gitignore glob as a regular expression over a '/'-separated relative path."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


class GitIgnore:
    """The rules of one .gitignore file (the usual subset: globs, `**`, anchors, `!`, dir/)."""

    def __init__(self, base: str, lines: list[str]):
        self.base = base  # the folder holding the .gitignore
        self.rules: list[tuple[re.Pattern, bool, bool]] = []  # (regex, negated, dirs only)
        for raw in lines:
            line = raw.rstrip("\n").rstrip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            line = line[1:] if neg else line
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            line = line.lstrip("/")
            rx = _glob_regex(line)
            rx = ("^" if anchored else "^(?:.*/)?") + rx + "$"
            self.rules.append((re.compile(rx), neg, dir_only))

    @classmethod
    def read(cls, folder: str) -> GitIgnore | None:
        path = os.path.join(folder, ".gitignore")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return cls(folder, f.readlines())
        except OSError:
            return None

    def verdict(self, rel: str, is_dir: bool) -> bool | None:
        """True: ignored, False: re-included, None: no rule says."""
        out = None
        for rx, neg, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if rx.match(rel):
                out = not neg
        return out


class Ignores:
    """The .gitignore files from a workspace folder down to a path (cached per folder)."""

    def __init__(self) -> None:
        self._cache: dict[str, GitIgnore | None] = {}

    def forget(self, folder: str) -> None:
        self._cache.pop(folder, None)

    def _rules(self, folder: str) -> GitIgnore | None:
        if folder not in self._cache:
            self._cache[folder] = GitIgnore.read(folder)
        return self._cache[folder]

    def ignored(self, path: str, root: str, is_dir: bool = False) -> bool:
        """Whether `path` under workspace folder `root` is ignored (a parent directory ignored
        ignores everything under it, as git does)."""
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        parts = rel.split("/")
        for depth in range(1, len(parts) + 1):  # each ancestor directory, then the path itself
            sub_is_dir = is_dir or depth < len(parts)
            if parts[depth - 1] in SKIP_DIRS and sub_is_dir:
                return True
            out = None
            for k in range(depth):  # .gitignore files of root/parts[:k]
                gi = self._rules(os.path.join(root, *parts[:k]))
                if gi is not None:
                    v = gi.verdict("/".join(parts[k:depth]), sub_is_dir)
                    if v is not None:
                        out = v
            if out:
                return True
        return False


def allowed(path: str, folders: list[str], ignores: Ignores) -> str | None:
    """Why `path` may not feed a prompt (a short reason), or None when it may. Reads at most
    8 KB of it (the binary check)."""
    root = under(path, folders)
    if root is None:
        return "outside the workspace folders"
    if language_of(path) is None:
        return "not a source file"
    if is_secret_name(path):
        return "a secret's name"
    real = os.path.realpath(path)
    if ignores.ignored(real, root):
        return "ignored by .gitignore"
    try:
        if os.path.getsize(real) > MAX_FILE_BYTES:
            return "over 1 MB"
        with open(real, "rb") as f:
            if is_binary(f.read(8192)):
                return "binary"
    except OSError:
        return "unreadable"
    return None


def walk(folders: list[str], ignores: Ignores, limit: int):
    """Source files under the folders that `allowed` lets through, at most `limit`, in a stable
    order (sorted per directory), skipping ignored directories without entering them."""
    n = 0
    for root in folders:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d
                for d in dirnames
                if d not in SKIP_DIRS and not ignores.ignored(os.path.join(dirpath, d), root, True)
            )
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if language_of(name) is None or allowed(path, [root], ignores) is not None:
                    continue
                yield path
                n += 1
                if n >= limit:
                    return


def uri_to_path(uri: str) -> str | None:
    """The local path of a file URI, or of a plain path (the CLI's documents); None for another
    scheme (untitled:, ...)."""
    from urllib.parse import unquote, urlparse

    if "://" not in uri and not re.match(r"[A-Za-z][A-Za-z0-9+.\-]+:", uri):
        return os.path.abspath(uri)  # a path
    u = urlparse(uri)
    if u.scheme != "file":
        return None
    path = unquote(u.path)
    if os.name == "nt" and re.match(r"/[A-Za-z]:", path):
        path = path[1:]
    return str(Path(path))
