"""The real server process over stdio (pytest-lsp) with the deterministic fake backend of
tests/fake_infiller.py: protocol behaviour that must not depend on model quality (capabilities,
UTF-16/CRLF ranges, auto-closed brackets, typing-through, superseding, $/cancelRequest,
parafill.fill, settings, bad input). The same server with the shipped model: test_lsp_model.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
import pytest_lsp
from lsp_helpers import (
    apply_item,
    as_dict,
    change_doc,
    cursor_of,
    fake_server_command,
    inline_params,
    open_doc,
    server_env,
)
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = pytest.mark.asyncio(loop_scope="module")  # one server per fixture, shared
CONFIG = ClientServerConfig(server_command=fake_server_command(), server_env=server_env())


async def _init(client: LanguageClient, options=None, editor: str = "visual-studio-code"):
    result = await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(editor),
            initialization_options={"debounceMs": 0, **(options or {})},
        )
    )
    client.applied_edits = []

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):
        client.applied_edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    return result


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient):
    lsp_client.init_result = await _init(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def slow_client(lsp_client: LanguageClient):
    await _init(lsp_client, {"modelPath": "slow:0.15"})
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def nvim_client(lsp_client: LanguageClient):
    await _init(lsp_client, editor="neovim")
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient, uri: str | None = None) -> dict:
    res = await client.protocol.send_request_async("parafill/status", {"uri": uri} if uri else {})
    return as_dict(res)


async def inline(
    client: LanguageClient, uri: str, line: int, char: int, **kw
) -> list[types.InlineCompletionItem]:
    res = await client.text_document_inline_completion_async(inline_params(uri, line, char, **kw))
    return list(res.items) if isinstance(res, types.InlineCompletionList) else list(res or [])


async def test_capabilities(client: LanguageClient):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert "parafill.fill" in caps.execute_command_provider.commands
    sync = caps.text_document_sync
    assert (
        sync == types.TextDocumentSyncKind.Incremental
        or sync.change == types.TextDocumentSyncKind.Incremental
    )
    st = await status(client)
    assert st["state"] in ("loading", "ready") and st["settings"]["debounceMs"] == 0


async def test_rest_of_line(client: LanguageClient):
    text, line, col = cursor_of("# expect: compute(x) + 1\ny = |\n")
    open_doc(client, "file:///t/a.py", text)
    items = await inline(client, "file:///t/a.py", line, col)
    assert items[0].insert_text == "compute(x) + 1"
    assert items[0].range.start == types.Position(line, col) == items[0].range.end
    assert (await status(client))["model"] == "fake"


async def test_utf16_ranges_and_crlf(client: LanguageClient):
    # an astral character (2 UTF-16 units) before the cursor and CRLF line endings
    raw = 's = "😀"; t = |\r\n# expect: first\\n    second\r\n'
    text, line, col = cursor_of(raw)
    assert col == len('s = "😀"; t = ') + 1
    open_doc(client, "file:///t/u.py", text)
    items = await inline(client, "file:///t/u.py", line, col)
    assert items, "no completion"
    assert items[0].range.start.character == col
    st = await status(client, "file:///t/u.py")
    assert st["document"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()


async def test_a_column_past_the_line_end_is_the_line_end(client: LanguageClient):
    """LSP clamps a position past a line's end to the end; the server's copy must follow the
    editor's exactly (pygls's own document sync rewrote such ranges: "abXc" for "abcX")."""
    uri = "file:///t/clamp.py"
    open_doc(client, uri, "xyz\nabc")  # the last line has no line break
    change_doc(client, uri, 1, 1, 10, 1, 10, "X")  # insert past the end of "abc"
    st = await status(client, uri)
    assert st["document"]["sha256"] == hashlib.sha256(b"xyz\nabcX").hexdigest()
    change_doc(client, uri, 2, 1, 1, 1, 99, "")  # delete from column 1 past the end
    st = await status(client, uri)
    assert st["document"]["sha256"] == hashlib.sha256(b"xyz\na").hexdigest()
    change_doc(client, uri, 3, 0, 2, 0, 50, "Q")  # replace to past the end of "xyz"
    st = await status(client, uri)
    assert st["document"]["sha256"] == hashlib.sha256(b"xyQ\na").hexdigest()


async def test_multiline_fill_uses_crlf(client: LanguageClient):
    raw = "def f(x):\r\n    |\r\n\r\n# expect: y = x\\n    return y\r\n"
    text, line, col = cursor_of(raw)
    open_doc(client, "file:///t/crlf.py", text)
    items = await inline(client, "file:///t/crlf.py", line, col)
    assert items[0].insert_text == "y = x\r\n    return y"


async def test_auto_closed_bracket_not_duplicated(client: LanguageClient):
    text, line, col = cursor_of("# expect: a, b)\nprint(|)\n")
    open_doc(client, "file:///t/b.py", text)
    items = await inline(client, "file:///t/b.py", line, col)
    # the fill's own `)` is cut (inside-bracket stop); nothing after the cursor is duplicated
    done = apply_item(text, items[0])
    assert done.split("\n")[1] == "print(a, b)"


async def test_candidates_when_invoked(client: LanguageClient):
    text, line, col = cursor_of("# expect: 42\nanswer = |\n")
    open_doc(client, "file:///t/c.py", text)
    items = await inline(client, "file:///t/c.py", line, col, invoked=True)
    assert [i.insert_text for i in items][:2] == ["42", "42  # alt 1"]


async def test_selected_completion_info(client: LanguageClient):
    text, line, col = cursor_of("import os\n# expect: .join(a, b)\nos.pa|\n")
    open_doc(client, "file:///t/s.py", text)
    sel = types.SelectedCompletionInfo(
        range=types.Range(types.Position(line, col - 2), types.Position(line, col)), text="path"
    )
    items = await inline(client, "file:///t/s.py", line, col, selected=sel)
    assert items[0].insert_text == "path.join(a, b)"
    assert items[0].range.start.character == col - 2


async def test_typing_through(client: LanguageClient):
    uri = "file:///t/tt.py"
    text, line, col = cursor_of("# expect: value_one + value_two\nresult = |\n")
    open_doc(client, uri, text)
    items = await inline(client, uri, line, col, invoked=False)
    assert items[0].insert_text == "value_one + value_two"
    before = await status(client)
    change_doc(client, uri, 2, line, col, line, col, "value_o")
    items = await inline(client, uri, line, col + 7, invoked=False)
    assert items[0].insert_text == "ne + value_two"
    after = await status(client)
    assert after["typedThrough"] == before["typedThrough"] + 1
    assert after["completed"] == before["completed"], "typing-through must not run the model"


async def test_cache_hit(client: LanguageClient):
    uri = "file:///t/cache.py"
    text, line, col = cursor_of("# expect: 7\nz = |\n")
    open_doc(client, uri, text)
    first = await inline(client, uri, line, col)
    second = await inline(client, uri, line, col)
    assert first[0].insert_text == second[0].insert_text == "7"
    assert (await status(client))["cacheHits"] >= 1


async def test_completion_items_for_clients_without_inline(nvim_client: LanguageClient):
    uri = "file:///t/n.py"
    text, line, col = cursor_of("# expect: range(10)\nfor i in |\n")
    open_doc(nvim_client, uri, text)
    res = await nvim_client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, col)
        )
    )
    items = res.items if isinstance(res, types.CompletionList) else res
    assert items[0].text_edit.new_text == "range(10)"
    assert items[0].label == "range(10)"


async def test_fill_command_two_holes(client: LanguageClient):
    uri = "file:///t/holes.py"
    text = "# expect: a + b\n# expect: a * b\ndef add(a, b):\n    return <|fill|>\n\ndef mul(a, b):\n    return <|fill:8|>\n"
    open_doc(client, uri, text)
    res = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="parafill.fill", arguments=[{"uri": uri}])
    )
    assert res["applied"] is True and res["fills"] == ["a + b", "a * b"]
    (edit,) = client.applied_edits
    edits = edit.document_changes[0].edits
    assert [e.new_text for e in edits] == ["a + b", "a * b"]
    assert edits[0].range.start == types.Position(3, 11) and edits[0].range.end == types.Position(
        3, 19
    )
    assert edits[1].range.start == types.Position(6, 11) and edits[1].range.end == types.Position(
        6, 21
    )


async def test_fill_command_range(client: LanguageClient):
    uri = "file:///t/range.py"
    text = "# expect: x + x\ndef double(x):\n    return x * 2\n"
    open_doc(client, uri, text)
    client.applied_edits.clear()
    rng = {"start": {"line": 2, "character": 11}, "end": {"line": 2, "character": 16}}
    res = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="parafill.fill", arguments=[uri, rng])
    )
    assert res["applied"] is True and res["fills"] == ["x + x"]
    (edit,) = client.applied_edits
    (e,) = edit.document_changes[0].edits
    assert e.new_text == "x + x"
    assert (e.range.start.character, e.range.end.character) == (11, 16)


async def test_fill_command_errors(client: LanguageClient):
    open_doc(client, "file:///t/none.py", "x = 1\n")
    with pytest.raises(Exception, match="no <|fill|> markers|Invalid Params"):
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command="parafill.fill", arguments=[{"uri": "file:///t/none.py"}]
            )
        )
    with pytest.raises(Exception, match="unknown document"):
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command="parafill.fill", arguments=[{"uri": "file:///nope.py"}]
            )
        )
    assert (await status(client))["state"] == "ready"


async def test_debounce_waits_only_within_a_burst(client: LanguageClient):
    """debounceMs is leading-edge: a request after a pause runs at once; one that comes within
    debounceMs of the request before it (a burst) waits that long for more typing."""
    uri = "file:///t/debounce.py"
    text, line, col = cursor_of("# expect: done\nx = |\n")
    open_doc(client, uri, text)
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"debounceMs": 2000}})
    )
    try:
        assert (await status(client))["settings"]["debounceMs"] == 2000
        before = await status(client)
        t0 = time.perf_counter()
        items = await inline(client, uri, line, col, invoked=False)
        alone = time.perf_counter() - t0
        assert items and items[0].insert_text == "done"
        assert alone < 1.5, f"a request after a pause waited {alone:.2f} s"
        mid = await status(client)
        assert mid["requests"] == before["requests"] + 1
        uri = "file:///t/debounce_burst.py"  # the debounce is per document: a fresh one
        open_doc(client, uri, text)
        t0 = time.perf_counter()
        first = asyncio.ensure_future(inline(client, uri, line, col, invoked=False))
        second = asyncio.ensure_future(inline(client, uri, line, col, invoked=False))
        await first
        assert time.perf_counter() - t0 < 1.5  # the burst's first request did not wait
        items = await second
        assert time.perf_counter() - t0 >= 1.9  # the second came within 2 s of it: it waited
        assert items and items[0].insert_text == "done"
        assert (await status(client))["requests"] == mid["requests"] + 2  # both reached the engine
    finally:
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"parafill": {"debounceMs": 0}})
        )


async def test_the_next_line_is_prefetched(client: LanguageClient):
    """After a suggestion at a line's end the server fills, in the background, the line after it
    as Enter would leave it; taking the suggestion and pressing Enter then finds it ready."""
    uri = "file:///t/prefetch.py"
    text, line, col = cursor_of("# expect: go()\nx = |\n")
    open_doc(client, uri, text)
    before = await status(client)
    items = await inline(client, uri, line, col, invoked=False)
    assert items and items[0].insert_text == "go()"
    for _ in range(100):  # the prefetch runs after the answer
        mid = await status(client)
        if (
            mid["prefetched"] > before["prefetched"]
            and mid["cacheEntries"] > before["cacheEntries"] + 1
        ):
            break
        await asyncio.sleep(0.02)
    assert (
        mid["prefetched"] == before["prefetched"] + 1
        and mid["completed"] == before["completed"] + 1
    )
    change_doc(client, uri, 2, line, col, line, col, "go()")  # take it (Tab)
    assert await inline(client, uri, line, col + 4, invoked=False) == []  # nothing left: no run
    change_doc(client, uri, 3, line, col + 4, line, col + 4, "\n")  # press Enter
    items = await inline(client, uri, line + 1, 0, invoked=False)
    assert items and items[0].insert_text == "go()"
    after = await status(client)
    assert after["prefetchUsed"] == mid["prefetchUsed"] + 1
    assert after["cacheHits"] == mid["cacheHits"] + 1 and after["completed"] == mid["completed"]
    assert after["typedThrough"] == mid["typedThrough"] + 1


async def test_superseding_burst(slow_client: LanguageClient):
    uri = "file:///t/burst.py"
    text, line, col = cursor_of("# expect: done\nx = |\n")
    open_doc(slow_client, uri, text)
    before = await status(slow_client)
    tasks = [
        asyncio.ensure_future(inline(slow_client, uri, line, col, invoked=False)) for _ in range(4)
    ]
    await asyncio.sleep(0.05)
    change_doc(slow_client, uri, 2, line, col, line, col, "d")
    last = asyncio.ensure_future(inline(slow_client, uri, line, col + 1, invoked=False))
    results = await asyncio.gather(*tasks)
    t0 = time.perf_counter()
    final = await last
    assert all(r == [] for r in results), "superseded requests must come back empty"
    assert final and final[0].insert_text == "done"
    st = await status(slow_client)
    # the four identical requests share one run (the engine joins them), which the newer one stops
    assert (st["superseded"] + st["cancelled"]) - (before["superseded"] + before["cancelled"]) >= 1
    assert st["requests"] - before["requests"] == 5
    assert time.perf_counter() - t0 < 5


async def cancel_while_running(client: LanguageClient, fut, msg_id: str, before: dict) -> None:
    """Cancel request `msg_id` once its job runs; it is answered as cancelled and the engine
    counts a cancelled job (the model run stopped, not only the answer)."""
    await asyncio.sleep(0.3)  # the job is running on the worker now
    client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
    with pytest.raises(Exception, match="cancel"):
        await asyncio.wait_for(asyncio.wrap_future(fut), 5)
    for _ in range(50):
        st = await status(client)
        if st["cancelled"] > before["cancelled"]:
            break
        await asyncio.sleep(0.1)
    assert st["cancelled"] > before["cancelled"], st


async def test_cancel_request(slow_client: LanguageClient):
    uri = "file:///t/cancel.py"
    text, line, col = cursor_of("# expect: 1\nx = |\n")
    open_doc(slow_client, uri, text)
    before = await status(slow_client)
    fut = slow_client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, line, col), msg_id="cancel-me"
    )
    await cancel_while_running(slow_client, fut, "cancel-me", before)
    items = await inline(slow_client, uri, line, col)  # the server still answers
    assert items[0].insert_text == "1"


async def test_document_changed_while_running(slow_client: LanguageClient):
    uri = "file:///t/race.py"
    text, line, col = cursor_of("# expect: 3\nx = |\n")
    open_doc(slow_client, uri, text)
    task = asyncio.ensure_future(inline(slow_client, uri, line, col))
    await asyncio.sleep(0.3)
    change_doc(slow_client, uri, 2, 0, 0, 0, 0, "import sys\n")
    assert await task == []
    st = await status(slow_client, uri)
    assert st["document"]["sha256"] == hashlib.sha256(("import sys\n" + text).encode()).hexdigest()
    assert st["document"]["version"] == 2


async def test_configuration_change(client: LanguageClient):
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"parafill": {"lineBudget": 16, "schedule": "fixed", "steps": 4}}
        )
    )
    for _ in range(20):
        st = await status(client)
        if st["settings"]["lineBudget"] == 16:
            break
        await asyncio.sleep(0.05)
    assert st["settings"]["schedule"] == "fixed" and st["settings"]["steps"] == 4
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"parafill": {"lineBudget": -3, "schedule": "bogus"}}
        )
    )
    await client.wait_for_notification(types.WINDOW_SHOW_MESSAGE)
    assert "lineBudget" in client.messages[-1].message and "schedule" in client.messages[-1].message
    st = await status(client)
    assert st["settings"]["lineBudget"] == 16 and st["settings"]["schedule"] == "fixed"
    # settings: null -> the server pulls the "parafill" section with workspace/configuration
    client.set_configuration({"lineBudget": 20, "schedule": "threshold"}, section="parafill")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    for _ in range(40):
        st = await status(client)
        if st["settings"]["lineBudget"] == 20:
            break
        await asyncio.sleep(0.05)
    assert st["settings"]["lineBudget"] == 20 and st["settings"]["schedule"] == "threshold"


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def bad_init_client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("neovim"),
            initialization_options={"debounceMs": "soon", "candidates": 99},
        )
    )
    yield
    await lsp_client.shutdown_session()


async def test_invalid_initialization_options(bad_init_client: LanguageClient):
    for _ in range(100):  # sent while initializing, maybe before this test started waiting
        if bad_init_client.messages:
            break
        await asyncio.sleep(0.05)
    msg = bad_init_client.messages[-1].message
    assert "debounceMs" in msg and "candidates" in msg
    st = await status(bad_init_client)
    assert st["settings"]["debounceMs"] == 25 and st["settings"]["candidates"] == 3  # defaults
    assert st["state"] in ("loading", "ready")  # the model still loads with default settings


async def test_bad_positions_unknown_uri_and_languages(client: LanguageClient):
    text = "x = 1\ny = 2\n"
    open_doc(client, "file:///t/p.py", text)
    assert await inline(client, "file:///t/p.py", 1, 500) is not None  # past the end of a line
    assert await inline(client, "file:///t/p.py", 99, 0) is not None  # past the end of the file
    with pytest.raises(Exception, match="unknown document"):
        await inline(client, "file:///t/never-opened.py", 0, 0)
    open_doc(client, "file:///t/notes.weird", "# expect: world\nhello |\n", language="weird")
    items = await inline(client, "file:///t/notes.weird", 1, 6)
    assert items[0].insert_text == "world"
    assert (await status(client))["state"] == "ready"


@pytest.mark.parametrize(
    "language,uri,marked",
    [
        (
            "typescript",
            "file:///t/a.ts",
            "// expect: a + b\nfunction f(a: number, b: number) {\n  return |\n}\n",
        ),
        ("go", "file:///t/a.go", "// expect: a + b\nfunc f(a, b int) int {\n\treturn |\n}\n"),
        ("rust", "file:///t/a.rs", "// expect: a + b\nfn f(a: i32, b: i32) -> i32 {\n    |\n}\n"),
    ],
)
async def test_other_grammars(client: LanguageClient, language, uri, marked):
    text, line, col = cursor_of(marked)
    open_doc(client, uri, text, language)
    items = await inline(client, uri, line, col)
    assert items[0].insert_text == "a + b"
    doc = (await status(client, uri))["document"]
    assert doc["parsed"] is True and doc["language"] == language


async def test_binary_and_huge_documents(client: LanguageClient):
    open_doc(client, "file:///t/bin.py", "x = 1\x00\x01\x02\n")
    assert await inline(client, "file:///t/bin.py", 0, 5) == []
    huge = ("def f(x):\n    return x + 1\n\n" * 400_000)[: 10 * 1024 * 1024] + "# expect: 5\nv = \n"
    open_doc(client, "file:///t/huge.py", huge)
    last_line = huge.count("\n") - 1
    t0 = time.perf_counter()
    items = await inline(client, "file:///t/huge.py", last_line, 4)
    assert items[0].insert_text == "5"
    change_doc(client, "file:///t/huge.py", 2, last_line, 4, last_line, 4, "5")
    st = await status(client, "file:///t/huge.py")
    assert st["document"]["length"] == len(huge) + 1 and st["document"]["parsed"] is False
    assert time.perf_counter() - t0 < 20


async def test_backend_failure_is_an_empty_result(client: LanguageClient):
    open_doc(client, "file:///t/boom.py", "# fake: raise\nx = \n")
    assert await inline(client, "file:///t/boom.py", 1, 4) == []
    assert any("backend error" in m.message for m in client.log_messages)
    assert (await status(client))["errors"] >= 1


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def missing_client(lsp_client: LanguageClient):
    await _init(lsp_client, {"modelPath": "missing-checkpoint"})
    yield
    await lsp_client.shutdown_session()


async def test_missing_checkpoint(missing_client: LanguageClient):
    open_doc(missing_client, "file:///t/m.py", "x = \n")
    assert await inline(missing_client, "file:///t/m.py", 0, 4) == []
    st = await status(missing_client)
    assert st["state"] == "error" and "config.json" in st["error"]
    assert any("config.json" in m.message for m in missing_client.messages)


async def test_a_cancelled_fill_stops_its_job(slow_client: LanguageClient):
    """parafill.fill goes the one completion path: `$/cancelRequest` stops its model run between
    steps as it stops an inline completion's, and the server goes on serving."""
    uri = "file:///t/fill_cancel.py"
    open_doc(slow_client, uri, "# expect: 7\nx = <|fill|>\n")
    before = await status(slow_client)
    fut = slow_client.protocol.send_request(
        types.WORKSPACE_EXECUTE_COMMAND,
        types.ExecuteCommandParams(command="parafill.fill", arguments=[{"uri": uri}]),
        msg_id="cancel-fill",
    )
    await cancel_while_running(slow_client, fut, "cancel-fill", before)
    text, line, col = cursor_of("# expect: 1\nx = |\n")
    open_doc(slow_client, "file:///t/after_fill.py", text)
    items = await inline(slow_client, "file:///t/after_fill.py", line, col)
    assert items[0].insert_text == "1"
