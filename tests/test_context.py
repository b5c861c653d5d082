"""The repository context (lsp_server/context/): the exclusions, the definitions and imports
read with tree-sitter, the ranking, the packing by a token budget, the index's updates on edits,
saves, created and deleted files, and what the completion path plans with it."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest
from context_workspace import make_workspace

from lsp_server import syntax
from lsp_server.completion import Ask, Completer
from lsp_server.config import MODEL_WINDOW, Settings
from lsp_server.context import files
from lsp_server.context.chunks import Chunk, definitions
from lsp_server.context.imports import Binding, bindings
from lsp_server.context.index import WorkspaceIndex
from lsp_server.context.pack import pack, stable
from lsp_server.context.rank import Ranked, rank
from lsp_server.context.repo import RepoContext
from lsp_server.syntax import Document, Snapshot


@pytest.fixture
def ws(tmp_path):
    return make_workspace(tmp_path)


def test_only_allowed_files_are_walked(ws):
    found = {os.path.relpath(p, ws) for p in files.walk([str(ws)], files.Ignores(), 100)}
    assert found == {
        "pkg/__init__.py", "pkg/core.py", "pkg/grouping.py", "pkg/main.py",
        "web/api.ts", "web/app.ts",
    }  # fmt: skip
    ig = files.Ignores()
    why = {rel: files.allowed(str(ws / rel), [str(ws)], ig) for rel in (
        "build/generated.py", "pkg/ignored_module.py", "pkg/credentials.py", ".env",
        "pkg/huge.py", "pkg/blob.py", "pkg/core.py",
    )}  # fmt: skip
    assert why == {
        "build/generated.py": "ignored by .gitignore",
        "pkg/ignored_module.py": "ignored by .gitignore",
        "pkg/credentials.py": "a secret's name",
        ".env": "not a source file",
        "pkg/huge.py": "over 1 MB",
        "pkg/blob.py": "binary",
        "pkg/core.py": None,
    }
    outside = ws.parent / "outside.py"
    outside.write_text("def outside():\n    pass\n")
    assert files.allowed(str(outside), [str(ws)], ig) == "outside the workspace folders"
    assert files.is_secret_name("/x/.env.local") and files.is_secret_name("/x/id_rsa")


def test_gitignore_negation_and_anchors(tmp_path):
    (tmp_path / ".gitignore").write_text("*.py\n!keep.py\n/top.ts\ndocs/**/gen/\n")
    ig = files.Ignores()
    root = str(tmp_path)
    assert ig.ignored(f"{root}/a/b.py", root)
    assert not ig.ignored(f"{root}/a/keep.py", root)
    assert ig.ignored(f"{root}/top.ts", root) and not ig.ignored(f"{root}/a/top.ts", root)
    assert ig.ignored(f"{root}/docs/x/y/gen/z.ts", root)


def test_python_definitions_are_signatures_not_bodies(ws):
    text = (ws / "pkg/core.py").read_text()
    defs = {c.names[0]: c for c in definitions("pkg/core.py", text, "python")}
    assert set(defs) == {"TAX_RATE", "compute_total", "Order"}
    fn = defs["compute_total"].text
    assert fn.startswith("def compute_total(items, discount=0.0):")
    assert "The order's total" in fn and "return sum" not in fn
    cls = defs["Order"]
    assert cls.names == ("Order", "__init__", "add")
    assert 'currency: str = "EUR"' in cls.text and "self.items.append" not in cls.text
    assert (cls.start, cls.end) == (12, 22)  # 0-based, the class to its last line


SIGNATURES = """
@click.command()
@click.option(
    "--method",
)
def main(url: str, method: str = "GET", params: dict | None = None, data: bytes = b"", files: list | None = None, json=None) -> None:
    \"\"\"Send a request.\"\"\"


def wrap(app: App, conn: Request | Socket) -> App:  # type: ignore[misc]
    ...


@dataclass(frozen=True)
class Point(Base):  # a point
    \"\"\"A point.\"\"\"
    x: int
    y: int = 0

    def norm(self): ...


class Client:
    def __init__(
        self,
        *,
        auth: Auth | None = None,  # who
        timeout: float = 5.0,
    ) -> None:
        pass


Types = Union[
    "Headers",  # a mapping
    Mapping[str, str],
]


@overload
def pick(x: int) -> int: ...
@overload
def pick(x: str) -> str: ...
def pick(x):
    return x
"""


def test_short_forms_are_one_line_signatures():
    """Each definition's signature on one line, its comments out; over 60 / 120 characters (its
    two forms) the defaults go, then the types; past 120 even so, the last parameters; a class:
    its short decorators, header and constructor (else its fields)."""
    defs = {c.names[0]: c for c in definitions("m.py", SIGNATURES, "python")}
    assert defs["main"].forms == (
        "def main(url, method, params, data, files, json):",
        (
            "def main(url: str, method: str, params: dict | None, data: bytes, files: list | None,"
            " json) -> None:"
        ),
    )  # (the decorators out too)
    assert defs["wrap"].forms == ("def wrap(app: App, conn: Request | Socket) -> App:",)
    assert defs["Point"].forms == (
        "@dataclass(frozen=True)\nclass Point(Base):\n    x: int; y: int",
    )
    assert defs["Client"].forms == (
        "class Client:\n    def __init__(self, *, auth, timeout):",
        (
            "class Client:\n    def __init__(self, *, auth: Auth | None = None, timeout: float = 5.0)"
            " -> None:"
        ),
    )
    assert defs["Types"].forms == ('Types = Union["Headers", Mapping[str, str]]',)
    long = "def f(" + ", ".join(f"argument_{k}: int" for k in range(12)) + "):\n    pass\n"
    (f,) = definitions("m.py", long, "python")
    (form,) = f.forms  # named in full past 120 characters: the last ones out, in both forms
    assert len(form) <= 120 and form.startswith("def f(argument_0, argument_1, ")
    assert form.endswith(", ...):")
    typed = "def g(" + ", ".join(f"a{k}: Mapping[str, int]" for k in range(4)) + "):\n    pass\n"
    (g,) = definitions("m.py", typed, "python")
    assert g.forms == ("def g(a0, a1, a2, a3):", typed.split("\n")[0])


def test_packing_takes_the_longer_forms_where_room_is_left():
    src = "def f(a: int = 1, b: str = 'x', c: float = 2.0, d=None, e: bool = False):\n    pass\n"
    (f,) = definitions("m.py", src, "python")
    short, longer = f.forms
    assert short == "def f(a: int, b: str, c: float, d, e: bool):" and longer == src.split("\n")[0]
    r = [Ranked(f, 1.0, "def:f")]
    for text in (short, longer, f.text):  # each just fits (3 characters a token)
        fits = -(-len("# m.py\n" + text + "\n") // 3)
        assert pack(r, fits, "python").text == "# m.py\n" + text + "\n\n"


def test_a_class_the_file_never_calls_is_packed_by_its_header_line_first():
    """A class only named (an annotation, a base, isinstance) needs no constructor at first: its
    header line alone, its constructor where the room allows; one the file calls keeps it."""
    lib = "".join(
        f"class {n}(Connection):\n"
        "    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:\n"
        "        self.scope = scope\n"
        for n in ("Request", "Reply")
    )
    defs = {"lib.py": definitions("lib.py", lib, "python")}
    assert [c.head for c in defs["lib.py"]] == [
        "class Request(Connection):",
        "class Reply(Connection):",
    ]
    binds = [Binding(n, "lib.py", n) for n in ("Request", "Reply")]
    named = "from lib import Request, Reply\n\n\ndef handle(request: Request) -> Reply:\n    "
    called = (
        "from lib import Request, Reply\n\n\ndef handle(scope):\n    return Reply(Request(scope))\n"
    )
    ctor = "    def __init__(self, scope, receive, send):\n"
    by_name = rank(named, len(named), binds, defs, [], "main.py")
    assert [r.brief for r in by_name] == [True, True]
    p = pack(by_name, 30, "python")  # 90 characters: both header lines, no constructor
    assert sorted(p.text.split("\n")) == sorted(
        ["# lib.py", "class Request(Connection):", "class Reply(Connection):", "", ""]
    )
    assert {c["packed"] for c in p.as_json()} == {  # (what the status shows went in)
        "class Request(Connection):\n",
        "class Reply(Connection):\n",
    }
    assert ctor in pack(by_name, 40, "python").text  # (the best one's where room is left)
    by_call = rank(called, len(called), binds, defs, [], "main.py")
    assert [r.brief for r in by_call] == [False, False]
    p = pack(by_call, 30, "python")  # each with its constructor: one fits
    assert len(p.chunks) == 1 and p.text.endswith(ctor + "\n")
    ts = "export class Box extends Base {\n  constructor(n: number) {}\n}\n"
    assert definitions("m.ts", ts, "typescript")[0].head == "export class Box extends Base {"
    (f,) = definitions("m.py", "def f(a, b):\n    pass\n", "python")
    assert f.head == ""  # (a function is called: its signature is its least)


def test_of_overloads_the_definition_ranks_once():
    defs = {"m.py": definitions("m.py", SIGNATURES, "python")}
    text = "from m import pick\n\npick(1)\n"
    ranked = rank(text, len(text), [Binding("pick", "m.py", "pick")], defs, [], "main.py")
    assert len(ranked) == 1 and ranked[0].chunk.text.startswith("def pick(x):")


def test_definitions_of_a_file_being_written():
    text = "X = 1\n\n\ndef f(a):\n    if (\n        pass\n    elif a:\n        pass\n\n\ndef g(b):\n    pass\n"
    assert [n.type for n in syntax.parse(text, "python").root_node.named_children] == ["ERROR"]
    assert {c.names[0] for c in definitions("m.py", text, "python")} == {"X", "f"}  # (g: swallowed)


def test_typescript_definitions(ws):
    text = (ws / "web/api.ts").read_text()
    defs = {c.names[0]: c.text for c in definitions("web/api.ts", text, "typescript")}
    assert set(defs) == {"User", "fetchUser", "BASE_URL"}
    assert defs["fetchUser"].startswith("export async function fetchUser(id: number)")
    assert "await fetch" not in defs["fetchUser"]


def test_imports_resolve_to_workspace_files():
    have = {"pkg/__init__.py", "pkg/core.py", "pkg/grouping.py", "pkg/sub/mod.py"}.__contains__
    src = (
        "import os\nfrom pkg.core import Order as O, compute_total\nfrom pkg import grouping\n"
        "from .sub import mod\nimport pkg.sub.mod as m\nfrom . import missing\n"
    )
    assert bindings(src, "python", "pkg/main.py", have) == [
        Binding("O", "pkg/core.py", "Order"),
        Binding("compute_total", "pkg/core.py", "compute_total"),
        Binding("grouping", "pkg/grouping.py", None),
        Binding("mod", "pkg/sub/mod.py", None),
        Binding("m", "pkg/sub/mod.py", None),
        Binding("missing", "pkg/__init__.py", "missing"),  # (a name __init__.py may define)
    ]
    js = "import api, { fetchUser as f } from './api';\nimport * as lib from '../lib';\n"
    have_js = {"web/api.ts", "lib/index.js"}.__contains__
    assert bindings(js, "typescript", "web/app.ts", have_js) == [
        Binding("api", "web/api.ts", "default"),
        Binding("f", "web/api.ts", "fetchUser"),
        Binding("lib", "lib/index.js", None),
    ]


def test_imports_of_a_file_being_written_are_read():
    """A line being written breaks the parse (an ERROR node can hold the whole module): the
    imports are still read."""
    have = {"pkg/core.py", "web/api.ts"}.__contains__
    src = (
        "from pkg.core import Order\n\n\nclass A:\n    def f(self, x):\n        for i in x:\n"
        "            try:\n                y = 1\n                if (\n                    z = Order(i)\n"
        "                elif i:\n                    pass\n            finally:\n                pass\n"
    )  # `if (` just typed
    assert [n.type for n in syntax.parse(src, "python").root_node.named_children] == ["ERROR"]
    assert bindings(src, "python", "pkg/main.py", have) == [
        Binding("Order", "pkg/core.py", "Order")
    ]
    js = "import { fetchUser } from './api';\nfunction g( {\n  return fetchUser(1);\n"
    assert bindings(js, "typescript", "web/app.ts", have) == [
        Binding("fetchUser", "web/api.ts", "fetchUser")
    ]


def chunk(name: str, path: str = "a.py", start: int = 0, text: str | None = None) -> Chunk:
    return Chunk(path, start, start + 1, text or f"def {name}():\n    ...", (name,))


def test_definitions_of_names_at_the_cursor_rank_first():
    text = "from a import far, near, here\nfar()\n\n\n\nnear()\nx = here(|)\n"
    cursor = text.index("|")
    text = text.replace("|", "")
    binds = [Binding(n, "a.py", n) for n in ("far", "near", "here")]
    defs = {"a.py": [chunk("far", start=0), chunk("near", start=3), chunk("here", start=6)]}
    other = Chunk("b.py", 0, 3, "near here unrelated", (), "open")
    ranked = rank(text, cursor, binds, defs, [other], "main.py")
    assert [r.chunk.names[0] if r.chunk.names else r.chunk.path for r in ranked] == [
        "here", "near", "far", "b.py",
    ]  # fmt: skip
    assert rank(text, cursor, binds, defs, [other], "a.py")[0].chunk.path == "b.py"  # not itself


def test_module_attributes_rank_through_the_module_name():
    text = "from pkg import grouping\n\nx = grouping.group_by(rows)\n"
    binds = [Binding("grouping", "pkg/grouping.py", None)]
    defs = {
        "pkg/grouping.py": [
            chunk("other", "pkg/grouping.py"),
            chunk("group_by", "pkg/grouping.py", 5),
        ]
    }
    ranked = rank(text, len(text) - 2, binds, defs, [], "main.py")
    assert ranked[0].chunk.names == ("group_by",) and ranked[0].why == "def:grouping.group_by"


def ranked_chunks(n: int, size: int) -> list[Ranked]:
    return [Ranked(chunk(f"f{k}", f"m{k}.py", text="x" * size), 10.0 - k, "def") for k in range(n)]


def test_packing_holds_the_budget_with_a_path_line_per_chunk_best_last():
    ranked = ranked_chunks(5, 60)
    p = pack(ranked, 60, "python")  # 180 characters: two chunks of 68
    assert len(p.text) <= 180 and [r.chunk.path for r in p.chunks] == ["m1.py", "m0.py"]
    assert p.text == "# m1.py\n" + "x" * 60 + "\n# m0.py\n" + "x" * 60 + "\n\n"
    assert p.describe() == "context: 2 chunks from m1.py, m0.py"
    assert pack(ranked, 0, "python").text == ""
    ts = pack(ranked, 30, "typescript")
    assert ts.text.startswith("// m0.py\n")
    # a chunk too big is skipped for smaller ones after it; the best one is cut at a line end
    big = [Ranked(chunk("big", "big.py", text="line\n" * 100), 9.0, "def"), *ranked_chunks(1, 30)]
    cut = pack(big, 40, "python")
    assert cut.chunks[-1].chunk.path == "big.py" and len(cut.text) <= 120
    assert cut.text.endswith("line\n\n")


def test_chunks_of_one_file_share_its_path_line():
    same = [
        Ranked(chunk(f"f{k}", "m.py", start=k * 5, text="x" * 30), 9.0 - k, "def") for k in range(3)
    ]
    p = pack(same, 40, "python")  # 120 characters: "# m.py\n" once and three chunks of 31
    assert len(p.chunks) == 3 and p.text.count("# m.py\n") == 1 and len(p.text) <= 121
    assert p.text == "# m.py\n" + ("x" * 30 + "\n") * 3 + "\n"
    mixed = [*same[:2], *ranked_chunks(1, 30)]  # the best file's chunks last, the best one last
    q = pack([same[0], mixed[2], same[1]], 100, "python")
    assert [r.chunk.path for r in q.chunks] == ["m0.py", "m.py", "m.py"]
    assert [r.chunk.start for r in q.chunks[1:]] == [5, 0]
    assert q.text.count("# m.py\n") == 1
    here = pack(same, 100, "python", here="m/main.py")  # paths relative to the file's folder
    assert here.text.startswith("# m.py\n") and here.chunks[0].chunk.path == "m.py"  # (shorter)
    deep = [Ranked(chunk("f", "pkg/sub/util.py"), 1.0, "def")]
    assert pack(deep, 100, "python", here="pkg/main.py").text.startswith("# sub/util.py\n")
    assert pack(deep, 100, "python", here="other/x/y.py").text.startswith("# pkg/sub/util.py\n")


def test_lines_placed_like_the_cursors_lend_their_names():
    """Repeated code (the same parameters in sibling functions): the names on the lines whose
    neighbours are the cursor line's rank above names used nearby."""
    text = (
        "from a import Near, Cookies, Headers\n\n"
        "def get(url,\n    headers: Headers,\n    cookies: Cookies,\n    timeout=None):\n    pass\n\n"
        "def post(url,\n    headers: Headers,\n    |\n    timeout=None):\n    x = Near()\n"
    )
    cursor = text.index("|")
    text = text.replace("|", "")
    binds = [Binding(n, "a.py", n) for n in ("Near", "Cookies", "Headers")]
    defs = {"a.py": [chunk("Near", start=0), chunk("Cookies", start=3), chunk("Headers", start=6)]}
    ranked = rank(text, cursor, binds, defs, [], "main.py")
    assert ranked[0].chunk.names == ("Cookies",)


def test_the_other_items_of_a_list_rank_below_names_not_listed_yet():
    """In a multi-line list (parameters, a union's members) each item is another name: those on
    the other items count for less than names imported and not used yet."""
    text = "from a import Near, Cookies, Headers, Other\n\ndef f(\n    a: Headers,\n    b: Near,\n    |\n):\n    pass\n"
    cursor = text.index("|")
    text = text.replace("|", "")
    names = ("Near", "Cookies", "Headers", "Other")
    binds = [Binding(n, "a.py", n) for n in names]
    defs = {"a.py": [chunk(n, start=3 * k) for k, n in enumerate(names)]}
    ranked = [r.chunk.names[0] for r in rank(text, cursor, binds, defs, [], "main.py")]
    assert set(ranked[:2]) == {"Cookies", "Other"} and ranked[2:] == ["Near", "Headers"]
    plain = text.replace("b: Near,\n    \n", "b: Near\n    \n")  # not a list: nearest first
    assert rank(plain, cursor, binds, defs, [], "main.py")[0].chunk.names == ("Near",)


def test_packing_in_file_order_keeps_each_chunk_in_its_place():
    ranked = ranked_chunks(3, 20)[::-1]  # m2 best
    p = pack(ranked, 200, "python", order="path")
    assert [r.chunk.path for r in p.chunks] == ["m0.py", "m1.py", "m2.py"]
    q = pack(ranked[:1] + ranked[2:], 200, "python", order="path")  # m1 out: the rest as before
    assert p.text.replace("# m1.py\n" + "x" * 20 + "\n", "") == q.text


def test_packing_is_stable_while_the_same_chunks_are_chosen():
    a = pack(ranked_chunks(2, 20), 100, "python")
    reordered = [replace(r, score=-r.score) for r in ranked_chunks(2, 20)][::-1]
    b = pack(reordered, 100, "python")
    assert b.text != a.text and stable(a, b) is a
    c = pack(ranked_chunks(3, 20), 100, "python")  # the same best chunk, one more: kept
    assert stable(a, c, ranked_chunks(3, 20)) is a
    better = [Ranked(chunk("new", "n.py", text="y" * 20), 20.0, "def"), *ranked_chunks(2, 20)]
    d = pack(better, 100, "python")  # a new best chunk: packed again
    assert stable(a, d, better) is d
    edited = [replace(r, chunk=replace(r.chunk, text="z" * 20)) for r in ranked_chunks(2, 20)]
    e = pack(edited, 100, "python")  # its file edited: packed again
    assert stable(a, e, edited) is e


def wait_for(cond, timeout=10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_index_follows_saves_creations_and_deletions(ws):
    index = WorkspaceIndex()
    index.set_folders([str(ws)])
    assert index.wait_built()
    assert index.status()["files"] == 6 and not index.status()["building"]
    assert [c.names[0] for c in index.defs("pkg/grouping.py")] == ["group_by"]
    assert index.defs("pkg/credentials.py") == [] and not index.exists("build/generated.py")
    # saved with a new definition (a later mtime)
    path = ws / "pkg/grouping.py"
    path.write_text(path.read_text() + "\n\ndef count_by(rows, key):\n    pass\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    index.file_changed(str(path))
    assert index.wait_built()
    assert [c.names[0] for c in index.defs("pkg/grouping.py")] == ["group_by", "count_by"]
    # created, then deleted
    new = ws / "pkg/extra.py"
    new.write_text("def extra():\n    pass\n")
    index.file_changed(str(new))
    assert index.wait_built() and index.exists("pkg/extra.py")
    new.unlink()
    index.file_deleted(str(new))
    assert not index.exists("pkg/extra.py")
    # a secret's name is never read, even when reported
    index.file_changed(str(ws / "pkg/credentials.py"))
    assert index.wait_built() and not index.exists("pkg/credentials.py")


def open_doc(ws, rel: str, text: str | None = None, version: int = 1) -> Document:
    text = (ws / rel).read_text() if text is None else text
    lang = "typescript" if rel.endswith(".ts") else "python"
    return Document.open((ws / rel).as_uri(), text, lang, version)


def test_open_document_wins_over_its_copy_on_disk(ws):
    ctx = RepoContext()
    ctx.set_folders([str(ws)])
    assert ctx.index.wait_built()
    main = open_doc(ws, "pkg/main.py")
    cursor = main.text.index("\n    \n") + 5
    before = ctx.pack_for(main, main.text, cursor, 200)
    assert "pkg/core.py" in [r.chunk.path for r in before.chunks]
    core = open_doc(ws, "pkg/core.py", "def compute_total(items, rounding):\n    pass\n")
    ctx.opened(core)
    after = ctx.pack_for(main, main.text, cursor, 200)
    texts = [r.chunk.text for r in after.chunks if r.chunk.path == "pkg/core.py"]
    assert texts and all("rounding" in t for t in texts)
    assert "# core.py\ndef compute_total(items, rounding):" in after.text
    assert ctx.status()["last"]["summary"].startswith("context: ")
    ctx.closed(core)
    assert ctx.index.wait_built()
    again = ctx.pack_for(main, main.text, cursor, 200)
    assert "discount" in again.text and "rounding" not in again.text


def test_documents_that_may_not_feed_a_prompt_add_nothing(ws, tmp_path):
    ctx = RepoContext()
    ctx.set_folders([str(ws)])
    assert ctx.index.wait_built()
    secret = Document.open((ws / "pkg/credentials.py").as_uri(), "group_by = 1\n", "python", 1)
    outside_path = tmp_path / "outside.py"
    outside = Document.open(outside_path.as_uri(), "group_by(rows, key)\n", "python", 1)
    ctx.opened(secret)
    ctx.opened(outside)
    main = open_doc(ws, "pkg/main.py")
    packed = ctx.pack_for(main, main.text, main.text.index("\n    \n") + 5, 400)
    assert {r.chunk.path for r in packed.chunks} <= {"pkg/core.py", "pkg/grouping.py"}
    assert "not-a-real" not in packed.text
    assert ctx.pack_for(outside, outside.text, 3, 400).text == ""  # outside: no context at all
    nothing = RepoContext()  # no workspace folder
    assert nothing.pack_for(main, main.text, 10, 400).text == ""


def test_edited_regions_of_other_documents_rank_by_overlap(ws):
    ctx = RepoContext()
    ctx.set_folders([str(ws)])
    assert ctx.index.wait_built()
    notes = open_doc(
        ws, "pkg/notes.py", "\n" * 30 + "def ship(order):\n    carrier = pick(order)\n"
    )
    (ws / "pkg/notes.py").write_text(notes.text)
    ctx.opened(notes)
    ctx.changed(notes, [31])
    text = "def send(order):\n    carrier = pick(order)\n    "
    doc = Document.open((ws / "pkg/send.py").as_uri(), text, "python", 1)
    packed = ctx.pack_for(doc, text, len(text), 200)
    assert [r.chunk.kind for r in packed.chunks][-1] == "edit"


def test_an_open_document_stops_feeding_prompts_once_gitignored(ws):
    """Open documents' verdicts and windows are kept between keystrokes; a .gitignore written
    later (reported changed on disk) leaves the document out at the next completion."""
    ctx = RepoContext()
    ctx.set_folders([str(ws)])
    assert ctx.index.wait_built()
    notes = open_doc(ws, "pkg/scratch.py", "def ship(order):\n    carrier = pick(order)\n")
    ctx.opened(notes)
    text = "def send(order):\n    carrier = pick(order)\n    "
    doc = Document.open((ws / "pkg/send.py").as_uri(), text, "python", 1)
    assert "pkg/scratch.py" in {
        r.chunk.path for r in ctx.pack_for(doc, text, len(text), 200).chunks
    }
    gitignore = ws / ".gitignore"
    gitignore.write_text(
        gitignore.read_text() + "\nscratch.py\n" if gitignore.exists() else "scratch.py\n"
    )
    ctx.index.file_changed(str(gitignore))
    assert "pkg/scratch.py" not in {
        r.chunk.path for r in ctx.pack_for(doc, text, len(text), 200).chunks
    }


class _Engine:
    def __init__(self):
        from lsp_server.engine import Stats

        self.stats = Stats()


def test_the_plan_is_unchanged_when_the_context_has_nothing_to_add(ws):
    settings = replace(Settings(), repo_context=True)
    text = "def f(x):\n    return x\n\n" * 200 + "y = f("
    doc = Document.open((ws / "pkg/lone.py").as_uri(), text, "python", 1)
    snap = Snapshot(text, doc.tree, "python")
    ctx = RepoContext()
    ctx.set_folders([str(ws)])
    plain, _ = Completer(_Engine(), Settings()).plan(snap, len(text), Ask(), doc)
    with_ctx, packed = Completer(_Engine(), settings, context=ctx).plan(snap, len(text), Ask(), doc)
    assert packed.text == "" and with_ctx == plain
    # with something to add: the packed text first, the file's own window smaller by as much
    main = open_doc(ws, "pkg/main.py", "from pkg.core import compute_total\n" + text)
    snap = Snapshot(main.text, main.tree, "python")
    assert ctx.index.wait_built()
    plan, packed = Completer(_Engine(), settings, context=ctx).plan(
        snap, len(main.text), Ask(), main
    )
    base, _ = Completer(_Engine(), Settings()).plan(snap, len(main.text), Ask(), main)
    assert packed.text.startswith("# core.py\n")  # (relative to pkg/main.py)
    assert plan.segments(main.text)[0].startswith(packed.text)
    assert packed.tokens <= Settings().context_tokens * settings.repo_context_share
    # in the room the window has beyond contextTokens: the file's own window is the same
    assert packed.tokens <= MODEL_WINDOW - Settings().context_tokens
    assert (plan.context_start, plan.context_end) == (base.context_start, base.context_end)
    # past that room, the file's own window gives way
    full = replace(settings, context_tokens=MODEL_WINDOW)
    plan, packed = Completer(_Engine(), full, context=ctx).plan(snap, len(main.text), Ask(), main)
    base, _ = Completer(_Engine(), replace(full, repo_context=False)).plan(
        snap, len(main.text), Ask(), main
    )
    assert packed.text and plan.context_start > base.context_start


def test_a_context_for_one_file_outside_an_editor(ws):
    (ws / ".git").mkdir()
    ctx = RepoContext.for_file(str(ws / "pkg" / "main.py"))
    assert ctx.index.folders == [str(ws.resolve())] and ctx.index.exists("pkg/core.py")
    main = open_doc(ws, "pkg/main.py")
    packed = ctx.pack_for(main, main.text, main.text.index("\n    \n") + 5, 200)
    assert "core.py" in packed.describe()
    as_path = Document.open(str(ws / "pkg" / "main.py"), main.text, "python")  # (the CLI's)
    assert ctx.pack_for(as_path, main.text, main.text.index("\n    \n") + 5, 200).text
    assert files.uri_to_path("untitled:Untitled-1") is None
