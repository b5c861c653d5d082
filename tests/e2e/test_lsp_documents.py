"""The server's copy of a document is always the editor's (issue #16 items 1 and 4), checked on
the real server process (pytest-lsp, the fake backend): random didChange batches in every
line-ending style, with every Unicode line separator, positions past line ends and reversed
ranges, some sent under another spelling of the document's URI, each batch followed by
`parafill/status {"uri"}` whose sha256 and length must be those of the reference document
(tests/test_documents.py's `LspReference`: LSP's own definition of text edits); the examples of
the issue; the line ending of a suggestion in a mixed-ending document.
"""

from __future__ import annotations

import hashlib
import random

import pytest
import pytest_lsp
from lsp_helpers import (
    as_dict,
    cursor_of,
    fake_server_command,
    inline_params,
    server_env,
    start_session,
)
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient
from test_documents import STYLES, LspReference, random_change, random_text

pytestmark = pytest.mark.asyncio(loop_scope="module")
CONFIG = ClientServerConfig(server_command=fake_server_command(), server_env=server_env())
SEEDS = range(10)


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient):
    await start_session(lsp_client)
    yield
    await lsp_client.shutdown_session()


def alias(uri: str) -> str:
    """Another spelling of `uri`, as another client would write it: a letter percent-encoded."""
    i = max(i for i, c in enumerate(uri) if c.isalpha())
    return f"{uri[:i]}%{ord(uri[i]):02x}{uri[i + 1 :]}"


def open_doc(client: LanguageClient, uri: str, text: str, version: int = 1) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=version, text=text
            )
        )
    )


def send_changes(client: LanguageClient, uri: str, version: int, changes) -> None:
    """One didChange with these (text, (line, char, end line, end char) | None) changes."""
    content = [
        types.TextDocumentContentChangeWholeDocument(text=text)
        if rng is None
        else types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(rng[0], rng[1]), types.Position(rng[2], rng[3])),
            text=text,
        )
        for text, rng in changes
    ]
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=content,
        )
    )


async def server_copy(client: LanguageClient, uri: str) -> dict:
    res = await client.protocol.send_request_async("parafill/status", {"uri": uri})
    return as_dict(res)["document"]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


async def assert_in_sync(client: LanguageClient, uri: str, text: str, version: int) -> None:
    doc = await server_copy(client, uri)
    assert (doc["sha256"], doc["length"], doc["version"]) == (digest(text), len(text), version), (
        f"the server's copy of {uri} differs from the editor's {text!r}"
    )


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_edit_batches_keep_the_editors_text(client: LanguageClient, seed: int):
    rnd = random.Random(seed)
    style = STYLES[seed % len(STYLES)]
    uri = f"file:///t/docs/fuzz{seed}.py"
    ref = LspReference(random_text(rnd, style, rnd.randrange(4, 16)))
    open_doc(client, uri, ref.text)
    await assert_in_sync(client, uri, ref.text, 1)
    for version in range(2, 14):
        changes = []
        for _ in range(rnd.randrange(1, 5)):
            text, rng = random_change(rnd, ref, style, negative=False)
            ref.apply(text, rng)
            changes.append((text, rng))
        send_changes(client, alias(uri) if rnd.random() < 0.3 else uri, version, changes)
        await assert_in_sync(client, uri, ref.text, version)
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )


EXAMPLES = [
    # (first text, [(text, range)], the editor's text after them)
    ("abc", [("X", (0, 10, 0, 10))], "abcX"),
    ("abc", [("", (0, 1, 0, 99))], "a"),
    ("a\fbcdef\n", [("X", (0, 5, 0, 5))], "a\fbcdXef\n"),
    ("a\u2028bcdef\n", [("X", (0, 5, 0, 5))], "a\u2028bcdXef\n"),
    (
        "a\x85b\vc\x1cd\x1de\x1ef\u2029g",
        [("X", (0, 12, 0, 12))],
        "a\x85b\vc\x1cd\x1de\x1ef\u2029Xg",
    ),
    ("a\rb", [("\n", (1, 0, 1, 0)), ("Y", (1, 0, 1, 0))], "a\r\nYb"),
    ("a\r\nb\nc", [("Z", (2, 0, 2, 0))], "a\r\nb\nZc"),
    ("x\ny\n", [("p\r\nq", (1, 0, 1, 0))], "x\np\r\nqy\n"),
    ("abc\ndef", [("X", (1, 1, 0, 1))], "aXef"),
    ("a😀b\r\nc", [("X", (0, 3, 0, 3)), ("", (0, 99, 1, 0))], "a😀Xbc"),
]


@pytest.mark.parametrize("first, changes, expected", EXAMPLES)
async def test_examples_of_the_issue(client: LanguageClient, first, changes, expected):
    uri = f"file:///t/docs/example{EXAMPLES.index((first, changes, expected))}.py"
    open_doc(client, uri, first)
    send_changes(client, uri, 2, changes)
    await assert_in_sync(client, uri, expected, 2)


async def test_two_spellings_of_a_uri_are_one_document(client: LanguageClient):
    before = as_dict(await client.protocol.send_request_async("parafill/status", {}))
    open_doc(client, "file:///t/docs/a%41.py", "x = 1\n")
    send_changes(client, "file:///t/docs/aA.py", 2, [("y", (0, 0, 0, 1))])
    await assert_in_sync(client, "file:///t/docs/aA.py", "y = 1\n", 2)
    await assert_in_sync(client, "file:///t/docs/a%41.py", "y = 1\n", 2)
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri="file:///t/docs/a%41.py")
        )
    )
    after = as_dict(await client.protocol.send_request_async("parafill/status", {}))
    assert after["documents"] == before["documents"]


async def test_a_suggestion_gets_the_line_ending_of_its_line(client: LanguageClient):
    raw = "x = 1\n# expect: y = x\\n    return y\ndef f(x):\r\n    |\r\n\r\n"
    text, line, col = cursor_of(raw)
    uri = "file:///t/docs/mixed.py"
    open_doc(client, uri, text)
    res = await client.text_document_inline_completion_async(inline_params(uri, line, col))
    items = res.items if isinstance(res, types.InlineCompletionList) else res
    assert items[0].insert_text == "y = x\r\n    return y"
    assert items[0].range.start == types.Position(line, col)
    await assert_in_sync(client, uri, text, 1)
