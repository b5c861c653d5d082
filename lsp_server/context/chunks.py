"""What of a file can feed a prompt: its definitions as short chunks (pure, tree-sitter).

Owns `Chunk` (a piece of a workspace file: path, line range, text, the names it defines) and the
extraction of a file's definitions: for Python, functions (signature and the docstring's first
lines), classes (header, docstring, class fields and constants, method signatures) and module
constants; for JavaScript/TypeScript, functions, classes (method signatures), interfaces, type
aliases and top-level constants, exported or not. Signatures, not whole files: a definition is
what a call into it needs. Also the windows of a file's lines (other open documents and recent
edits are ranked in those).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lsp_server import syntax

DOC_LINES = 3  # docstring lines kept
MAX_CHUNK_CHARS = 600  # a definition's text is cut here
MAX_MEMBERS = 12  # class fields and method signatures kept
# a signature's short forms: over this many characters, its defaults go, then its types, then
# its last parameters; the shortest where the budget is tight, the longer where it allows
FORM_CHARS = (60, 120)
SHORT_CHARS = FORM_CHARS[-1]
SHORT_DECORATOR = 40  # a class's decorator lines up to this long stay in its short form
SHORT_FIELDS = 8  # a class without a constructor: its first fields, in its short form
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Chunk:
    path: str  # relative to its workspace folder, '/'-separated
    start: int  # first line (0-based)
    end: int  # last line (0-based, inclusive)
    text: str
    names: tuple[str, ...] = ()  # the names it defines (a class: its name, then its members')
    kind: str = "def"  # "def" (a definition) | "open" (an open document's lines) | "edit"
    # the signature alone, on one line where it spanned several (a class: its header and its
    # constructor's, or its fields), for a budget too small for the whole chunk: shortest first,
    # each shorter than the next and than `text`; none for a chunk that is not a definition
    forms: tuple[str, ...] = ()
    # a class's header line alone (`class Request(HTTPConnection):`): all a file needs of it
    # where it only names the class (annotations, a base, isinstance) and never calls it
    head: str = ""

    @property
    def key(self) -> tuple:
        return (self.path, self.start, self.end, self.kind)

    @property
    def short(self) -> str:
        """The shortest form ('' without one)."""
        return self.forms[0] if self.forms else ""


def collapse(text: str) -> str:
    """`text` on one line: line breaks and their indentation become one space, none inside
    brackets' ends, and a trailing comma before a closing bracket goes."""
    text = re.sub(r"\s*\n\s*", " ", text.strip())
    text = re.sub(r"([(\[{]) ", r"\1", text)
    return re.sub(r",? ([)\]}])", r"\1", text)


def _header(lines: list[str], k: int) -> list[str]:
    """Lines from `k` to the one that ends the header (a ':' for Python, '{' for the others)."""
    out = []
    for ln in lines[k:]:
        out.append(ln)
        s = ln.rstrip()
        if s.endswith((":", "{", "{ ... }", ";", "...")):
            break
    return out


def short_form(text: str) -> str:
    """A brace-language definition's header (a class: and its constructor's), each on one line."""
    lines = text.split("\n")
    k = next((i for i, ln in enumerate(lines) if not ln.lstrip().startswith("@")), 0)
    out = [collapse("\n".join(_header(lines, k)))]
    for i in range(k + 1, len(lines)):
        if re.match(r"\s+(def __init__|constructor)\b", lines[i]):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            out.append(indent + collapse("\n".join(_header(lines, i))))
            break
    return "\n".join(out)


def _forms(text: str, *forms: str) -> tuple[str, ...]:
    """The distinct `forms` shorter than `text`, shortest first."""
    return tuple(sorted({f for f in forms if f and len(f) < len(text.rstrip())}, key=len))


def _text(src: bytes, node) -> str:
    return src[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CHUNK_CHARS else text[:MAX_CHUNK_CHARS].rstrip() + " ..."


def _doc_lines(src: bytes, body, indent: str) -> list[str]:
    """The first lines of a Python body's docstring, re-indented."""
    if body is None or not body.named_children:
        return []
    first = body.named_children[0]
    if first.type != "expression_statement" or not first.named_children:
        return []
    s = first.named_children[0]
    if s.type != "string":
        return []
    lines = _text(src, s).split("\n")
    head = [ln.strip() for ln in lines[:DOC_LINES]]
    if len(lines) > DOC_LINES:
        quote = '"""' if lines[0].strip().startswith('"""') else "'''"
        head.append(quote)
    return [indent + ln for ln in head if ln]


def _py_header(src: bytes, node) -> str:
    body = node.child_by_field_name("body")
    end = body.start_byte if body is not None else node.end_byte
    return src[node.start_byte : end].decode("utf-8", "replace").rstrip()


def uncommented(text: str) -> str:
    """Python source lines without their trailing comments (a `#` outside quotes)."""
    out = []
    for line in text.split("\n"):
        k = line.find("#")
        while k >= 0 and (line.count("'", 0, k) % 2 or line.count('"', 0, k) % 2):
            k = line.find("#", k + 1)
        out.append(line if k < 0 else line[:k].rstrip())
    return "\n".join(out)


def _py_function(src: bytes, node, indent: str, start_node=None) -> str:
    start_node = start_node or node
    head = src[start_node.start_byte : node.start_byte].decode("utf-8", "replace")  # decorators
    out = [head + _py_header(src, node)]
    doc = _doc_lines(src, node.child_by_field_name("body"), indent + "    ")
    return "\n".join(out + doc + [indent + "    ..."])


def _unwrap(node):
    """(definition, decorated wrapper or None)."""
    if node.type == "decorated_definition":
        d = node.child_by_field_name("definition")
        return d, node
    return node, None


def _py_assign_name(node) -> str | None:
    if node.type != "expression_statement" or not node.named_children:
        return None
    a = node.named_children[0]
    if a.type != "assignment":
        return None
    left = a.child_by_field_name("left")
    return left.text.decode() if left is not None and left.type == "identifier" else None


def _py_param(src: bytes, p, typed: bool = True) -> str:
    """A parameter without its default value (and without its type unless `typed`)."""
    if p.type in ("default_parameter", "typed_default_parameter", "typed_parameter"):
        name = p.child_by_field_name("name")
        name = _text(src, name) if name is not None else _text(src, p.named_children[0])
        typ = p.child_by_field_name("type")
        return name if typ is None or not typed else f"{name}: {collapse(_text(src, typ))}"
    return collapse(uncommented(_text(src, p)))


def py_signature(src: bytes, node, limit: int = SHORT_CHARS, cut: int = SHORT_CHARS) -> str:
    """A function's header on one line (`def f(a: int, b=1) -> str:`); over `limit` characters
    the defaults go, then the types (the return type too): every parameter is still named.
    Only past `cut` characters even so are the last parameters left out (an `...` in their
    place), so that a short form never names fewer parameters than the longest one."""
    full = collapse(uncommented(_py_header(src, node)))
    params = node.child_by_field_name("parameters")
    if len(full) <= limit or params is None:
        return full
    head = collapse(src[node.start_byte : params.start_byte].decode("utf-8", "replace"))
    ret = node.child_by_field_name("return_type")
    typed_tail = f" -> {collapse(_text(src, ret))}:" if ret is not None else ":"
    params = [p for p in params.named_children if p.type != "comment"]
    for typed in (True, False):
        parts = [_py_param(src, p, typed) for p in params]
        tail = typed_tail if typed else ":"
        line = f"{head}({', '.join(parts)}){tail}"
        if len(line) <= limit:
            return line
    while len(line) > max(limit, cut) and parts:
        parts.pop()
        line = f"{head}({', '.join([*parts, '...'])}){tail}"
    return line
    while len(line) > limit and parts:
        parts.pop()
        line = f"{head}({', '.join([*parts, '...'])}){tail}"
    return line


def _py_field(src: bytes, child) -> str | None:
    """`name: type` of a class field (`name` of one without a type), else None."""
    if child.type != "expression_statement" or not child.named_children:
        return None
    a = child.named_children[0]
    left = a.child_by_field_name("left") if a.type == "assignment" else None
    if left is None or left.type != "identifier":
        return None
    typ = a.child_by_field_name("type")
    return _text(src, left) + (f": {collapse(_text(src, typ))}" if typ is not None else "")


def _py_class_short(src: bytes, node, wrapper, body, limit: int = SHORT_CHARS) -> str:
    """A class's short form: its short decorators, its header, and its constructor's signature
    (else its first fields, on one line)."""
    out = []
    if wrapper is not None:
        for d in wrapper.named_children:
            if d.type == "decorator" and len(_text(src, d)) <= SHORT_DECORATOR:
                out.append(collapse(_text(src, d)))
    out.append(collapse(uncommented(_py_header(src, node))))
    fields = []
    for child in body.named_children if body is not None else []:
        d, _ = _unwrap(child)
        if d.type == "function_definition" and d.child_by_field_name("name").text == b"__init__":
            return "\n".join(out + ["    " + py_signature(src, d, limit - 4, SHORT_CHARS - 4)])
        field = _py_field(src, child)
        if field is not None and len(fields) < SHORT_FIELDS:
            fields.append(field)
    line = "; ".join(fields)
    if len(line) > limit:
        line = line[: max(0, line.rfind("; ", 0, limit))] + "; ..."
    return "\n".join(out + (["    " + line] if fields else []))


def _py_class(src: bytes, node, wrapper) -> tuple[str, tuple[str, ...], list[str], str]:
    start = wrapper or node
    head = src[start.start_byte : node.start_byte].decode("utf-8", "replace")
    body = node.child_by_field_name("body")
    out = [head + _py_header(src, node)]
    out += _doc_lines(src, body, "    ")
    names = [node.child_by_field_name("name").text.decode()]
    members = 0
    for child in body.named_children if body is not None else []:
        if members >= MAX_MEMBERS:
            out.append("    ...")
            break
        d, w = _unwrap(child)
        if d.type == "function_definition":
            text = _py_function(src, d, "    ", w)
            out += ["    " + ln.lstrip() if i == 0 else ln for i, ln in enumerate(text.split("\n"))]
            names.append(d.child_by_field_name("name").text.decode())
            members += 1
        elif child.type == "expression_statement":
            line = _text(src, child).split("\n")[0]
            if child.named_children and child.named_children[0].type == "assignment":
                out.append("    " + line[:160])
                members += 1
    forms = [_py_class_short(src, node, wrapper, body, n) for n in FORM_CHARS]
    return "\n".join(out), tuple(names), forms, collapse(uncommented(_py_header(src, node)))


def top_level(root) -> list:
    """The root's children, those of ERROR nodes among them too (a file being written)."""
    out = []
    for node in root.named_children:
        out += top_level(node) if node.type == "ERROR" else [node]
    return out


def _python_defs(path: str, src: bytes, root) -> list[Chunk]:
    out = []
    for node in top_level(root):
        d, w = _unwrap(node)
        start = (w or d).start_point[0]
        if d.type == "function_definition":
            name = d.child_by_field_name("name").text.decode()
            text = _cut(_py_function(src, d, "", w))
            forms = _forms(text, *(py_signature(src, d, n) for n in FORM_CHARS))
            out.append(Chunk(path, start, d.end_point[0], text, (name,), forms=forms))
        elif d.type == "class_definition":
            text, names, forms, head = _py_class(src, d, w)
            text = _cut(text)
            forms = _forms(text, *forms)
            head = head if forms and len(head) < len(forms[0]) else ""
            out.append(Chunk(path, start, d.end_point[0], text, names, "def", forms, head))
        elif (name := _py_assign_name(node)) is not None:
            text = _text(src, node)
            whole = text
            if len(text) > 200 or text.count("\n") > 3:
                text = text.split("\n")[0][:200]
            forms = _forms(text, _one_line(uncommented(whole)))
            out.append(Chunk(path, start, node.end_point[0], text, (name,), forms=forms))
    return out


JS_FUNCS = ("function_declaration", "generator_function_declaration")
JS_TYPES = ("interface_declaration", "type_alias_declaration", "enum_declaration")


def _js_body_cut(src: bytes, node, body_field: str = "body") -> str:
    body = node.child_by_field_name(body_field)
    end = body.start_byte if body is not None else node.end_byte
    return src[node.start_byte : end].decode("utf-8", "replace").rstrip()


def _js_class(src: bytes, node) -> tuple[str, tuple[str, ...]]:
    name = node.child_by_field_name("name")
    names = [name.text.decode()] if name is not None else []
    out = [_js_body_cut(src, node) + " {"]
    body = node.child_by_field_name("body")
    for member in (body.named_children if body is not None else [])[:MAX_MEMBERS]:
        if member.type in ("method_definition", "method_signature", "abstract_method_signature"):
            out.append("  " + _js_body_cut(src, member) + ";")
            n = member.child_by_field_name("name")
            if n is not None:
                names.append(n.text.decode())
        elif member.type in ("public_field_definition", "field_definition"):
            out.append("  " + _text(src, member).split("\n")[0][:160].rstrip(";") + ";")
    out.append("}")
    return "\n".join(out), tuple(names)


def _one_line(text: str) -> str:
    """`text` collapsed to one line and cut at SHORT_CHARS."""
    one = collapse(text)
    return one if len(one) <= SHORT_CHARS else one[:SHORT_CHARS].rstrip() + " ..."


def _js_defs(path: str, src: bytes, root) -> list[Chunk]:
    out = []
    for top in top_level(root):
        node = top
        if node.type == "export_statement":
            node = node.child_by_field_name("declaration") or node
        lead = src[top.start_byte : node.start_byte].decode("utf-8", "replace")
        start, end = top.start_point[0], top.end_point[0]
        if node.type in JS_FUNCS:
            name = node.child_by_field_name("name").text.decode()
            text = _cut(lead + _js_body_cut(src, node) + " { ... }")
            out.append(Chunk(path, start, end, text, (name,), forms=_forms(text, short_form(text))))
        elif node.type in ("class_declaration", "abstract_class_declaration"):
            text, names = _js_class(src, node)
            text = _cut(lead + text)
            forms = _forms(text, short_form(text))
            head = forms[0].split("\n")[0] if forms and "\n" in forms[0] else ""
            out.append(Chunk(path, start, end, text, names, "def", forms, head))
        elif node.type in JS_TYPES:
            name = node.child_by_field_name("name")
            text = lead + _text(src, node)
            if text.count("\n") > 12:
                text = "\n".join(text.split("\n")[:12]) + "\n  ...\n}"
            text, names = _cut(text), (name.text.decode(),) if name else ()
            out.append(Chunk(path, start, end, text, names, forms=_forms(text, _one_line(text))))
        elif node.type in ("lexical_declaration", "variable_declaration"):
            for decl in node.named_children:
                if decl.type != "variable_declarator":
                    continue
                n = decl.child_by_field_name("name")
                value = decl.child_by_field_name("value")
                if n is None or n.type != "identifier":
                    continue
                if value is not None and value.type in ("arrow_function", "function_expression"):
                    text = lead + src[node.start_byte : value.start_byte].decode("utf-8", "replace")
                    text += _js_body_cut(src, value) + " { ... }"
                else:
                    text = lead + _text(src, node).split("\n")[0][:200]
                text = _cut(text)
                forms = _forms(text, short_form(text))
                out.append(Chunk(path, start, end, text, (n.text.decode(),), forms=forms))
    return out


def definitions(path: str, text: str, language: str, tree=None) -> list[Chunk]:
    """The definitions of a file, in file order ([] without a grammar or a tree)."""
    if tree is None:
        tree = syntax.parse(text, language)
    if tree is None:
        return []
    src = text.encode("utf-8", "surrogatepass")
    if language == "python":
        return _python_defs(path, src, tree.root_node)
    if language in ("javascript", "typescript", "tsx"):
        return _js_defs(path, src, tree.root_node)
    return []


WINDOW_LINES = 20  # an open document's lines are ranked in windows of this many


def windows(path: str, text: str, kind: str = "open", size: int = WINDOW_LINES) -> list[Chunk]:
    """`text` as windows of `size` lines, half overlapping (Copilot's neighbouring tabs)."""
    lines = text.split("\n")
    out = []
    step = max(1, size // 2)
    for s in range(0, max(1, len(lines) - step), step):
        e = min(len(lines), s + size) - 1
        body = "\n".join(lines[s : e + 1])
        if body.strip():
            out.append(Chunk(path, s, e, body, (), kind))
    return out


def identifiers(text: str) -> list[str]:
    return IDENT_RE.findall(text)
