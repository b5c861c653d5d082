"""Partial accept, acceptance statistics and parafill/steps over the real server process (stdio,
pytest-lsp) with the deterministic fake backend of tests/fake_infiller.py.

A partial accept (an editor's accept-next-word inserts part of the ghost text, then asks again)
is answered from typing-through with the rest, carrying the same accept command, and runs no
model; each suggestion's outcome (accepted by the command or typed in full, in part, dismissed) is
counted once in `parafill/status` `acceptance` and logged to the logFile, which `parafill stats`
reads; `parafill/steps` returns the last suggestion's denoising steps and forgets them on close.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pytest
import pytest_lsp
from lsp_helpers import (
    as_dict,
    change_doc,
    cursor_of,
    fake_server_command,
    inline_params,
    open_doc,
    server_env,
    start_session,
)
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from lsp_server import cli

pytestmark = pytest.mark.asyncio(loop_scope="module")
CONFIG = ClientServerConfig(server_command=fake_server_command(), server_env=server_env())
LOG = Path(tempfile.mkdtemp(prefix="parafill-acceptance-")) / "server.log"
ACCEPTED = "parafill.accepted"


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient):
    lsp_client.init_result = await start_session(lsp_client, {"logFile": str(LOG)})
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict:
    return as_dict(await client.protocol.send_request_async("parafill/status", {}))


async def steps(client: LanguageClient, uri: str):
    return as_dict(await client.protocol.send_request_async("parafill/steps", {"uri": uri}))


async def inline(client, uri, line, char, invoked=False) -> list[types.InlineCompletionItem]:
    res = await client.text_document_inline_completion_async(
        inline_params(uri, line, char, invoked=invoked)
    )
    return list(res.items) if isinstance(res, types.InlineCompletionList) else list(res or [])


async def accept(client: LanguageClient, item: types.InlineCompletionItem):
    """What an editor does after inserting an item: run its command."""
    assert item.command is not None and item.command.command == ACCEPTED
    return as_dict(
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command=item.command.command, arguments=item.command.arguments
            )
        )
    )


def delta(after: dict, before: dict, *keys: str) -> tuple:
    return tuple(after[k] - before[k] for k in keys)


def outcomes(st: dict) -> tuple:
    a = st["acceptance"]
    return a["shown"], a["accepted"], a["partial"], a["dismissed"]


async def test_the_accept_command_is_offered_and_on_every_item(client: LanguageClient):
    assert ACCEPTED in client.init_result.capabilities.execute_command_provider.commands
    uri = "file:///acc/items.py"
    text, line, col = cursor_of("# expect: compute(x)\ny = |\n")
    open_doc(client, uri, text)
    items = await inline(client, uri, line, col, invoked=True)
    assert len(items) == 3  # candidates of an explicit request
    ids = {it.command.arguments[0] for it in items}
    assert len(ids) == 1 and [it.command.arguments[1] for it in items] == [0, 1, 2]


async def test_accept_next_word_is_served_by_typing_through_and_counted(client: LanguageClient):
    uri = "file:///acc/word.py"
    text, line, col = cursor_of("# expect: alpha_one + beta_two(gamma)\nresult = |\n")
    open_doc(client, uri, text)
    before = await status(client)
    (item,) = await inline(client, uri, line, col)
    assert item.insert_text == "alpha_one + beta_two(gamma)"
    sid = item.command.arguments[0]
    shown = await status(client)
    assert delta(shown, before, "requests", "completed") == (1, 1)
    assert outcomes(shown)[0] == outcomes(before)[0] + 1

    # accept-next-word: the editor inserts "alpha_one " and asks again at the new cursor
    change_doc(client, uri, 2, line, col, line, col, "alpha_one ")
    (rest,) = await inline(client, uri, line, col + 10)
    assert rest.insert_text == "+ beta_two(gamma)"
    assert rest.command.arguments[0] == sid, "the rest is the same suggestion"
    change_doc(client, uri, 3, line, col + 10, line, col + 10, "+ ")
    (rest,) = await inline(client, uri, line, col + 12)
    assert rest.insert_text == "beta_two(gamma)"
    mid = await status(client)
    assert delta(mid, shown, "requests", "completed", "typedThrough") == (0, 0, 2), (
        "no model request for the part taken"
    )
    assert outcomes(mid) == outcomes(shown), "still open: taken in part so far"

    # then the rest in full (Tab): the command counts it accepted, once
    change_doc(client, uri, 4, line, col + 12, line, col + 12, "beta_two(gamma)")
    assert (await accept(client, rest)) == {"counted": True}
    assert await inline(client, uri, line, col + 27) == []  # nothing left, no model run
    assert (await accept(client, rest)) == {"counted": False}
    after = await status(client)
    assert delta(after, mid, "requests", "completed") == (0, 0)
    assert tuple(a - b for a, b in zip(outcomes(after), outcomes(mid))) == (0, 1, 0, 0)
    acc = after["acceptance"]
    assert acc["byKind"]["line"]["accepted"] >= 1 and acc["byLanguage"]["python"]["accepted"] >= 1
    assert acc["acceptedModelMs"]["p50"] is not None


async def test_taken_in_part_then_replaced_and_dismissed(client: LanguageClient):
    uri = "file:///acc/part.py"
    text, line, col = cursor_of("# expect: first_word second_word\nvalue = |\n")
    open_doc(client, uri, text)
    before = await status(client)
    (item,) = await inline(client, uri, line, col)
    assert item.insert_text == "first_word second_word"
    change_doc(client, uri, 2, line, col, line, col, "first_word ")  # accept-next-word
    (rest,) = await inline(client, uri, line, col + 11)
    assert rest.insert_text == "second_word"
    change_doc(client, uri, 3, line, col + 11, line, col + 11, "zzz")  # something else typed
    await inline(client, uri, line, col + 14)  # a new suggestion there (the model runs)
    mid = await status(client)
    assert tuple(a - b for a, b in zip(outcomes(mid), outcomes(before))) == (2, 0, 1, 0)

    change_doc(client, uri, 4, line, col + 14, line, col + 14, "\n")  # typed over at once
    await inline(client, uri, line + 1, 0)
    after = await status(client)
    assert outcomes(after)[3] == outcomes(mid)[3] + 1, "a suggestion not taken is dismissed"


async def test_asked_again_in_place_is_one_suggestion(client: LanguageClient):
    uri = "file:///acc/again.py"
    text, line, col = cursor_of("# expect: again()\nz = |\n")
    open_doc(client, uri, text)
    before = await status(client)
    (a,) = await inline(client, uri, line, col)
    (b,) = await inline(client, uri, line, col)  # the editor asks twice (a cache hit)
    assert a.command.arguments == b.command.arguments
    after = await status(client)
    assert outcomes(after)[0] == outcomes(before)[0] + 1


async def test_steps_of_the_last_suggestion_and_dropped_on_close(client: LanguageClient):
    uri = "file:///acc/steps.py"
    assert await steps(client, uri) is None  # not open
    text, line, col = cursor_of("# expect: total + 1\nanswer = |\n")
    open_doc(client, uri, text)
    assert await steps(client, uri) is None  # no suggestion yet
    (item,) = await inline(client, uri, line, col)
    got = await steps(client, uri)
    print(got)
    assert got["uri"] == uri and got["kind"] == "line"
    # the fake backend's trajectory: a quarter more of the fill each of its 4 steps
    fill = "total + 1"
    assert got["steps"] == [fill[: len(fill) * k // 4] for k in range(1, 5)]
    assert got["fill"] == got["suggestion"] == "total + 1"
    assert got["position"] == {"line": line, "character": col}
    assert got["id"] == item.command.arguments[0] and got["stepsUsed"] == 4
    assert got["mask"] == "\u2591" and got["modelMs"] >= 0
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri))
    )
    assert await steps(client, uri) is None
    with pytest.raises(Exception, match="uri"):
        await client.protocol.send_request_async("parafill/steps", {})


async def test_outcomes_are_logged_and_parafill_stats_reads_them(client: LanguageClient, capsys):
    uri = "file:///acc/logged.py"
    text, line, col = cursor_of("# expect: logged_value\nq = |\n")
    open_doc(client, uri, text)
    (item,) = await inline(client, uri, line, col)
    change_doc(client, uri, 2, line, col, line, col, "logged_value")
    await accept(client, item)
    st = (await status(client))["acceptance"]
    for _ in range(50):  # the log handler writes as it goes
        if LOG.exists() and "acceptance {" in LOG.read_text():
            break
        await asyncio.sleep(0.05)
    assert cli.main(["stats", "--log", str(LOG), "--json"]) == 0
    read = json.loads(capsys.readouterr().out)
    decided = st["accepted"] + st["partial"] + st["dismissed"]
    assert read["shown"] == decided and read["accepted"] == st["accepted"]
    assert read["dismissed"] == st["dismissed"] and read["partial"] == st["partial"]
    assert cli.main(["stats", "--log", str(LOG)]) == 0
    table = capsys.readouterr().out
    assert "accept rate" in table and "language python" in table
