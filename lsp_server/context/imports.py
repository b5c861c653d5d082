"""A file's imports, read with tree-sitter, and their resolution to workspace files (pure).

Owns `Binding` (a local name the file's imports bring in: the module file it comes from and the
symbol it names there, or None for a module bound as a whole) and, per language, reading the
import statements (Python: `import a.b as c`, `from .m import x as y`, `from . import m`;
JavaScript/TypeScript: `import x, {y as z}, * as ns from './m'`, `require('./m')`) and resolving a
module to a path with a caller-given `exists` test, so that resolution touches no disk itself
(the index answers from what it holds, open documents included).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from lsp_server import syntax
from lsp_server.context.chunks import top_level

JS_EXTENSIONS = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".d.ts")


@dataclass(frozen=True)
class Binding:
    name: str  # the local name
    path: str  # the workspace file (relative, '/'-separated) it comes from
    symbol: str | None  # the name in that file; None: the module itself (use `name.attr`)


def _py_module_paths(module: str, level: int, here: str, roots: list[str]) -> list[str]:
    """Candidate files of a Python module: relative to `here`'s package for a relative import,
    else under each source root."""
    parts = [p for p in module.split(".") if p]
    if level:
        base = posixpath.dirname(here)
        for _ in range(level - 1):
            base = posixpath.dirname(base)
        bases = [base]
    else:
        bases = roots
    out = []
    for b in bases:
        stem = posixpath.join(b, *parts) if parts else b
        stem = posixpath.normpath(stem) if stem else ""
        if stem in ("", "."):
            out.append("__init__.py")
            continue
        out += [stem + ".py", stem + ".pyi", stem + "/__init__.py"]
    return out


def python_roots(here: str) -> list[str]:
    """Where absolute imports are looked for: the workspace root, src/, and the folder above the
    outermost package holding `here` (a package's own absolute imports)."""
    roots = ["", "src"]
    parts = here.split("/")[:-1]
    for k in range(len(parts)):
        roots.append("/".join(parts[:k]))
    return list(dict.fromkeys(roots))


def _first(paths: list[str], exists: Callable[[str], bool]) -> str | None:
    return next((p for p in paths if exists(p)), None)


def _py_bindings(tree, here: str, exists: Callable[[str], bool]) -> list[Binding]:
    roots = python_roots(here)
    out: list[Binding] = []
    for node in _walk_imports(tree.root_node, ("import_statement", "import_from_statement")):
        if node.type == "import_statement":
            for name in node.named_children:
                alias = None
                if name.type == "aliased_import":
                    alias = name.child_by_field_name("alias").text.decode()
                    name = name.child_by_field_name("name")
                dotted = name.text.decode()
                path = _first(_py_module_paths(dotted, 0, here, roots), exists)
                if path is not None:  # `import a.b`: a.b.x is used through the name `a`
                    out.append(Binding(alias or dotted, path, None))
            continue
        mod = node.child_by_field_name("module_name")
        if mod is None:
            continue
        text = mod.text.decode()
        level = len(text) - len(text.lstrip("."))
        module = text[level:]
        mpath = _first(_py_module_paths(module, level, here, roots), exists)
        for child in node.named_children:
            if child == mod or child.type not in ("dotted_name", "aliased_import"):
                continue
            alias = None
            if child.type == "aliased_import":
                alias = child.child_by_field_name("alias").text.decode()
                child = child.child_by_field_name("name")
            symbol = child.text.decode()
            sub = _first(_py_module_paths(f"{module}.{symbol}", level, here, roots), exists)
            if sub is not None:  # `from pkg import module`
                out.append(Binding(alias or symbol, sub, None))
            elif mpath is not None:
                out.append(Binding(alias or symbol, mpath, symbol))
        if mpath is not None and any(c.type == "wildcard_import" for c in node.children):
            out.append(Binding("*", mpath, None))
    return out


def _walk_imports(root, types: tuple[str, ...]):
    """Import statements at the top level and inside functions, classes and if/try blocks."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        for child in node.named_children:
            if child.type in types:
                found.append(child)
            elif child.type in (
                "if_statement", "try_statement", "block", "function_definition",
                "class_definition", "decorated_definition", "else_clause", "except_clause",
                "finally_clause", "with_statement", "elif_clause", "ERROR",
            ):  # fmt: skip
                stack.append(child)
    return sorted(found, key=lambda n: n.start_byte)


def _js_module_path(spec: str, here: str, exists: Callable[[str], bool]) -> str | None:
    if not spec.startswith("."):
        return None  # a package: not a workspace file
    stem = posixpath.normpath(posixpath.join(posixpath.dirname(here), spec))
    stem = "" if stem == "." else stem
    base = stem[: -len(posixpath.splitext(stem)[1])] if stem.endswith((".js", ".mjs")) else stem
    cands = [stem] + [base + e for e in JS_EXTENSIONS] + [f"{stem}/index{e}" for e in JS_EXTENSIONS]
    return _first(cands, exists)


def _string_value(node) -> str | None:
    if node is None or node.type != "string":
        return None
    return node.text.decode().strip("'\"`")


def _js_bindings(tree, here: str, exists: Callable[[str], bool]) -> list[Binding]:
    out: list[Binding] = []
    for node in top_level(tree.root_node):
        if node.type != "import_statement":
            if node.type in ("lexical_declaration", "variable_declaration"):
                out += _js_requires(node, here, exists)
            continue
        path = _js_module_path(
            _string_value(node.child_by_field_name("source")) or "", here, exists
        )
        if path is None:
            continue
        for clause in node.named_children:
            if clause.type != "import_clause":
                continue
            for part in clause.named_children:
                if part.type == "identifier":  # default import
                    out.append(Binding(part.text.decode(), path, "default"))
                elif part.type == "namespace_import":
                    ids = [c for c in part.named_children if c.type == "identifier"]
                    if ids:
                        out.append(Binding(ids[0].text.decode(), path, None))
                elif part.type == "named_imports":
                    for spec in part.named_children:
                        if spec.type != "import_specifier":
                            continue
                        name = spec.child_by_field_name("name").text.decode()
                        alias = spec.child_by_field_name("alias")
                        out.append(Binding(alias.text.decode() if alias else name, path, name))
    return out


def _js_requires(node, here: str, exists: Callable[[str], bool]) -> list[Binding]:
    out = []
    for decl in node.named_children:
        value = decl.child_by_field_name("value") if decl.type == "variable_declarator" else None
        if value is None or value.type != "call_expression":
            continue
        fn = value.child_by_field_name("function")
        args = value.child_by_field_name("arguments")
        if fn is None or fn.text != b"require" or args is None or not args.named_children:
            continue
        path = _js_module_path(_string_value(args.named_children[0]) or "", here, exists)
        name = decl.child_by_field_name("name")
        if path is None or name is None:
            continue
        if name.type == "identifier":
            out.append(Binding(name.text.decode(), path, None))
        elif name.type == "object_pattern":
            for p in name.named_children:
                if p.type == "shorthand_property_identifier_pattern":
                    out.append(Binding(p.text.decode(), path, p.text.decode()))
    return out


def bindings(
    text: str, language: str, here: str, exists: Callable[[str], bool], tree=None
) -> list[Binding]:
    """The names `text`'s imports bind to workspace files (`here`: its relative path;
    `exists(relative path)`: whether the workspace holds that file)."""
    if tree is None:
        tree = syntax.parse(text, language)
    if tree is None:
        return []
    if language == "python":
        return _py_bindings(tree, here, exists)
    if language in ("javascript", "typescript", "tsx"):
        return _js_bindings(tree, here, exists)
    return []
