"""The real server process (pytest-lsp) with the shipped model: inline completion at every region
kind in Python and JavaScript (the text must parse in context), completion items, parafill.fill
with two holes, a typing burst (superseding/cancellation), typing-through, configuration changes
and bad input. These FAIL (not skip) when model/weights/ is missing.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp
from lsp_helpers import (
    WEIGHTS,
    apply_item,
    as_dict,
    change_doc,
    cursor_of,
    fill_two_holes,
    inline_params,
    open_doc,
    real_server_command,
    server_env,
)
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from lsp_server.syntax import count_errors, parse

pytestmark = pytest.mark.asyncio(loop_scope="module")
CONFIG = ClientServerConfig(server_command=real_server_command(), server_env=server_env())
INIT_BUDGET_S = 20.0  # generous: the process start itself is slow on a loaded 2-core machine
LOAD_TIMEOUT_S = 120


def require_weights() -> None:
    if not (WEIGHTS / "config.json").is_file():
        pytest.fail(
            f"the shipped checkpoint is missing: {WEIGHTS / 'config.json'} (model/ has not landed)"
        )


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient):
    require_weights()
    t0 = time.perf_counter()
    lsp_client.init_result = await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            initialization_options={"parafill": {"debounceMs": 10}},
        )
    )
    lsp_client.init_seconds = time.perf_counter() - t0
    lsp_client.first_status = await status(lsp_client)
    lsp_client.applied_edits = []

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):
        lsp_client.applied_edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient, uri: str | None = None) -> dict:
    return as_dict(
        await client.protocol.send_request_async("parafill/status", {"uri": uri} if uri else {})
    )


async def inline(client, uri, line, char, **kw) -> list[types.InlineCompletionItem]:
    res = await asyncio.wait_for(
        client.text_document_inline_completion_async(inline_params(uri, line, char, **kw)),
        LOAD_TIMEOUT_S,
    )
    return list(res.items) if isinstance(res, types.InlineCompletionList) else list(res or [])


def new_errors(text: str, completed: str, language: str) -> int:
    return count_errors(parse(completed, language)) - count_errors(parse(text, language))


async def test_initialize_answers_before_the_model_loads(client: LanguageClient):
    assert client.init_seconds < INIT_BUDGET_S
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None and caps.completion_provider is not None
    assert client.first_status["state"] == "loading"  # initialize did not wait for the model
    uri = "file:///m/warm.py"
    open_doc(client, uri, "x = 1\ny = \n")
    await inline(client, uri, 1, 4)  # waits for the load only as long as needed
    st = await status(client)
    assert st["state"] == "ready", st
    assert st["model"] and st["device"] == "cpu" and st["precision"] == "int8"


REGIONS = [
    ("python", "line", "import os\n\n\ndef exists(path):\n    return os.path.|\n"),
    ("python", "statement", "values = [1, 2, 3]\ntotal = sum(|\n"),
    ("python", "block", "def square(x):\n    |\n\n\nprint(square(3))\n"),
    ("python", "bracket", 'def greet(name):\n    print("Hello, " + |)\n'),
    ("javascript", "line", "function add(a, b) {\n  return |\n}\n"),
    (
        "javascript",
        "block",
        "function sum(xs) {\n  let total = 0;\n  for (const x of xs) {|}\n  return total;\n}\n",
    ),
    ("javascript", "bracket", "function add(a, b) {\n  return a + b;\n}\nconst total = add(|);\n"),
]


@pytest.mark.parametrize("language,kind,marked", REGIONS, ids=[f"{r[0]}-{r[1]}" for r in REGIONS])
async def test_region_kinds_parse_in_context(client: LanguageClient, language, kind, marked):
    text, line, col = cursor_of(marked)
    uri = f"file:///m/{kind}.{'py' if language == 'python' else 'js'}"
    open_doc(client, uri, text, language)
    items = await inline(client, uri, line, col, invoked=True)
    assert items, f"no completion for a {kind} region"
    for item in items:
        assert item.range.start == types.Position(line, col)
        assert item.range.end.line == line
    completed = apply_item(text, items[0])
    assert new_errors(text, completed, language) <= 0, completed


async def test_completion_items(client: LanguageClient):
    text, line, col = cursor_of("def mean(xs):\n    return sum(xs) / |\n")
    uri = "file:///m/items.py"
    open_doc(client, uri, text)
    res = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, col)
        )
    )
    items = res.items if isinstance(res, types.CompletionList) else res
    assert items and items[0].text_edit.new_text.strip()
    assert items[0].text_edit.range.start == types.Position(line, col)


async def test_fill_command_two_holes(client: LanguageClient):
    res, starts = await fill_two_holes(client, "file:///m/holes.py")
    assert res["applied"] is True and len(res["fills"]) == 2
    assert starts == [(1, 11), (5, 11)]
    assert any(f.strip() for f in res["fills"])


async def test_typing_burst_supersedes(client: LanguageClient):
    uri = "file:///m/burst.py"
    text = "def total(xs):\n    result = 0\n    for x in xs:\n        result += x\n    return \n"
    open_doc(client, uri, text)
    before = await status(client)
    tasks, col = [], len("    return ")
    for version, ch in enumerate("result", start=2):
        change_doc(client, uri, version, 4, col, 4, col, ch)
        col += 1
        tasks.append(asyncio.ensure_future(inline(client, uri, 4, col, invoked=False)))
        await asyncio.sleep(0.005)
    results = await asyncio.gather(*tasks)
    after = await status(client)
    dropped = (after["superseded"] - before["superseded"]) + (
        after["cancelled"] - before["cancelled"]
    )
    assert dropped >= 3, after
    assert sum(1 for r in results if r) <= len(results) - 3
    st = await status(client, uri)
    assert st["document"]["version"] == 7 and st["document"]["length"] == len(text) + len("result")


async def test_typing_through(client: LanguageClient):
    uri = "file:///m/through.py"
    text, line, col = cursor_of("import sys\n\n\ndef main():\n    args = sys.|\n")
    open_doc(client, uri, text)
    items = await inline(client, uri, line, col, invoked=False)
    assert items and len(items[0].insert_text) >= 2
    suggestion = items[0].insert_text
    before = await status(client)
    change_doc(client, uri, 2, line, col, line, col, suggestion[0])
    again = await inline(client, uri, line, col + 1, invoked=False)
    assert again and again[0].insert_text == suggestion[1:]
    after = await status(client)
    assert (
        after["typedThrough"] == before["typedThrough"] + 1
        and after["completed"] == before["completed"]
    )


async def test_by_its_deadline_an_as_you_type_fill_shows_its_finished_lines(client):
    """multilineDeadlineMs: arguments on their own lines, typed (automatic trigger) under a 1 ms
    deadline, come back as the first finished line, which begins the fill given no deadline."""
    text, line, col = cursor_of(
        "def connect(host, port, reader, writer):\n    return Connection(\n        host=host,\n"
        "        |\n    )\n"
    )
    uri = "file:///m/deadline.py"
    open_doc(client, uri, text)
    texts = {}
    for ms in (1, 0):
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"parafill": {"multilineDeadlineMs": ms, "debounceMs": 10}}
            )
        )
        before = await status(client)
        items = await inline(client, uri, line, col, invoked=False)
        assert items, ms
        texts[ms] = items[0].insert_text
        after = await status(client)
        assert after["deadlineCuts"] == before["deadlineCuts"] + (ms == 1)
        assert after["completed"] == before["completed"] + 1  # the cut result was not cached
        if ms:  # an explicit request is never cut
            assert await inline(client, uri, line, col, invoked=True)
            assert (await status(client))["deadlineCuts"] == after["deadlineCuts"]
    assert "\n" not in texts[1] and texts[0].startswith(texts[1] + "\n")
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"multilineDeadlineMs": 300}})
    )


async def test_configuration_change(client: LanguageClient):
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"parafill": {"schedule": "fixed", "steps": 2, "debounceMs": 10}}
        )
    )
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"steps": "many"}})
    )
    await client.wait_for_notification(types.WINDOW_SHOW_MESSAGE)
    assert "steps" in client.messages[-1].message
    st = await status(client)
    assert st["settings"]["schedule"] == "fixed" and st["settings"]["steps"] == 2
    text, line, col = cursor_of("names = ['a', 'b']\nfor name in |\n")
    open_doc(client, "file:///m/cfg.py", text)
    items = await inline(client, "file:///m/cfg.py", line, col)
    assert items is not None
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"parafill": {"schedule": "threshold", "steps": None}}
        )
    )


async def test_context_reuse_follows_the_setting(client: LanguageClient):
    """Typing in one document reuses the last context encoding; contextReuse=false stops it."""
    uri = "file:///m/reuse.py"
    body = "".join(f"def f{i}(x):\n    return x * {i}\n\n\n" for i in range(12))
    open_doc(client, uri, body + "def g(y):\n    \n")
    last = body.count("\n") + 1
    await inline(client, uri, last, 4)
    before = (await status(client))["contextReused"]
    change_doc(client, uri, 2, last, 4, last, 4, "zq_7 = ")  # no suggestion starts so
    await inline(client, uri, last, 11)
    assert (await status(client))["contextReused"] == before + 1
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"contextReuse": False}})
    )
    change_doc(client, uri, 3, last, 11, last, 11, "yw + ")
    await inline(client, uri, last, 16)
    assert (await status(client))["contextReused"] == before + 1
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"contextReuse": True}})
    )


async def test_length_signal_follows_the_setting(client: LanguageClient):
    """The shipped checkpoint has a length head; lengthEstimate=false asks for the PAD-budget
    fill instead (a different request: not answered from the cache of the other)."""
    assert (await status(client))["lengthSignal"] is True
    uri = "file:///m/length.py"
    text, line, col = cursor_of("def area(width, height):\n    return |\n")
    open_doc(client, uri, text)
    with_signal = await inline(client, uri, line, col)
    hits = (await status(client))["cacheHits"]
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"lengthEstimate": False}})
    )
    without = await inline(client, uri, line, col)
    st = await status(client)
    assert st["settings"]["lengthEstimate"] is False and st["cacheHits"] == hits
    assert with_signal and without
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"lengthEstimate": True}})
    )


async def test_bad_input_with_the_model(client: LanguageClient):
    uri = "file:///m/bad.py"
    open_doc(client, uri, "x = 1\n")
    assert await inline(client, uri, 0, 999) is not None
    assert await inline(client, uri, 42, 3) is not None
    with pytest.raises(Exception, match="unknown document"):
        await inline(client, "file:///m/not-open.py", 0, 0)
    open_doc(client, "file:///m/notes.txt", "Dear diary,\ntoday I \n", "plaintext")
    assert await inline(client, "file:///m/notes.txt", 1, 8) is not None
    huge = "def f(x):\n    return x + 1\n\n\n" * 300_000 + "def g(y):\n    return \n"
    open_doc(client, "file:///m/huge.py", huge)
    t0 = time.perf_counter()
    await inline(client, "file:///m/huge.py", huge.count("\n") - 1, 11)
    assert time.perf_counter() - t0 < 30
    assert (await status(client))["state"] == "ready"


async def test_latency_is_recorded(client: LanguageClient):
    st = await status(client)
    lat = st["latencyMs"]
    assert lat["n"] >= 5 and lat["p50"] is not None
    assert st["lastLatencyMs"] is not None and st["lastLatencyMs"] > 0  # the status bars show it
    print(
        f"\nserver-side model latency p50 {lat['p50']} ms, p95 {lat['p95']} ms over {lat['n']} requests"
    )


MISSING = ClientServerConfig(server_command=real_server_command(), server_env=server_env())


@pytest_lsp.fixture(config=MISSING, scope="module")
async def missing_client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("neovim"),
            initialization_options={"modelPath": "/nonexistent/ckpt"},
        )
    )
    yield
    await lsp_client.shutdown_session()


async def test_missing_checkpoint_real_loader(missing_client: LanguageClient):
    open_doc(missing_client, "file:///m/x.py", "x = \n")
    assert await inline(missing_client, "file:///m/x.py", 0, 4) == []
    st = await status(missing_client)
    assert st["state"] == "error" and "/nonexistent/ckpt" in st["error"]
    assert any("/nonexistent/ckpt" in m.message for m in missing_client.messages)
