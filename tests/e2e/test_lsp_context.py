"""Context beyond the file (issue #23) on the real server process over a real LSP client
(pytest-lsp, the fake backend, which fills a hole with the first `expect:` text it reads in the
request): a workspace with imports across files, where the right fill is only in the definition
of a name another file defines, in an open document that differs from its copy on disk; the
index following files created and deleted on disk (workspace/didChangeWatchedFiles, registered
dynamically); `parafill/status` showing the chunks; the fill command reading them too; the setting
turning it off."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp
from context_workspace import make_workspace
from lsp_helpers import as_dict, fake_server_command, inline_params, open_doc, server_env
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = pytest.mark.asyncio(loop_scope="module")
CONFIG = ClientServerConfig(server_command=fake_server_command(), server_env=server_env())
DISK = "total = compute_total(order.items, discount=0.1)"  # core.py's docstring on disk
EDITOR = "total = compute_total(order.items, rounding=2)"  # ... and in the editor


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient, tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("context"))
    lsp_client.ws = ws
    lsp_client.registrations = []
    lsp_client.applied_edits = []

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):
        lsp_client.applied_edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams):
        lsp_client.registrations += [r.method for r in params.registrations]

    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=ws.as_uri(),
            workspace_folders=[types.WorkspaceFolder(ws.as_uri(), "ws")],
            initialization_options={
                "debounceMs": 0,
                "prefetch": False,
                "repoContext": True,
                "repoContextShare": 0.75,  # room for whole definitions (docstrings)
            },
        )
    )
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict:
    return as_dict(await client.protocol.send_request_async("parafill/status", {}))


async def indexed(client: LanguageClient, files: int) -> dict:
    end = time.monotonic() + 20
    while True:
        st = (await status(client))["context"]
        if st["index"]["files"] == files and not st["index"]["building"]:
            return st
        assert time.monotonic() < end, st
        await asyncio.sleep(0.05)


async def fill(client: LanguageClient, uri: str, line: int, col: int) -> str:
    res = await client.text_document_inline_completion_async(inline_params(uri, line, col, False))
    return res.items[0].insert_text if res and res.items else ""


async def test_a_name_defined_in_another_file_from_the_editors_copy(client: LanguageClient):
    ws = client.ws
    st = await indexed(client, 6)  # walked in the background: the excluded files left out
    assert st["enabled"] and st["index"]["folders"] == [str(ws.resolve())]
    core = (ws / "pkg/core.py").read_text()
    assert DISK in core
    open_doc(client, (ws / "pkg/core.py").as_uri(), core.replace(DISK, EDITOR))
    open_doc(client, (ws / "pkg/main.py").as_uri(), (ws / "pkg/main.py").read_text())
    got = await fill(client, (ws / "pkg/main.py").as_uri(), 6, 4)
    assert got == EDITOR  # read from core.py's definition as the editor has it, not the disk's
    last = (await status(client))["context"]["last"]
    assert last["uri"] == (ws / "pkg/main.py").as_uri()
    chunks = {(c["path"], *c["lines"]): c for c in last["chunks"]}
    assert EDITOR in chunks["pkg/core.py", 6, 10]["text"]  # compute_total, lines 6-10
    assert "grouping.py" in last["summary"] and last["summary"].startswith("context: ")
    assert all(c["path"] in ("pkg/core.py", "pkg/grouping.py") for c in last["chunks"])


async def test_files_created_and_deleted_on_disk(client: LanguageClient):
    ws = client.ws
    assert types.WORKSPACE_DID_CHANGE_WATCHED_FILES in client.registrations
    new = ws / "pkg" / "shiny.py"
    new.write_text('def shine(x):\n    """Shines.\n    expect: shine(order)\n    """\n')
    client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams(
            [types.FileEvent(new.as_uri(), types.FileChangeType.Created)]
        )
    )
    await indexed(client, 7)
    use = ws / "pkg" / "use.py"
    open_doc(client, use.as_uri(), "from pkg.shiny import shine\n\n\ndef f(order):\n    \n")
    assert await fill(client, use.as_uri(), 4, 4) == "shine(order)"
    new.unlink()
    client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams(
            [types.FileEvent(new.as_uri(), types.FileChangeType.Deleted)]
        )
    )
    await indexed(client, 6)
    other = ws / "pkg" / "use2.py"  # (a new document: no typing-through of the last suggestion)
    open_doc(client, other.as_uri(), "from pkg.shiny import shine\n\n\ndef f(order):\n    \n")
    assert await fill(client, other.as_uri(), 4, 4) == "pass"  # the fake's fill without context


async def test_workspace_folders_added_and_removed(client: LanguageClient):
    ws, other = client.ws, client.ws.parent / "other"
    other.mkdir()
    (other / "lib.py").write_text("def helper():\n    pass\n")
    folder = types.WorkspaceFolder(other.as_uri(), "other")
    event = types.WorkspaceFoldersChangeEvent(added=[folder], removed=[])
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(event))
    st = await indexed(client, 7)
    assert st["index"]["folders"] == [str(ws.resolve()), str(other.resolve())]
    event = types.WorkspaceFoldersChangeEvent(added=[], removed=[folder])
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(event))
    st = await indexed(client, 6)
    assert st["index"]["folders"] == [str(ws.resolve())]


async def test_the_fill_command_reads_the_context_too(client: LanguageClient):
    uri = (client.ws / "pkg" / "filled.py").as_uri()
    text = "from pkg.core import compute_total\n\n\ndef checkout(order):\n    <|fill|>\n"
    open_doc(client, uri, text)
    client.applied_edits.clear()
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="parafill.fill", arguments=[{"uri": uri}])
    )
    ((edit,),) = [e.document_changes[0].edits for e in client.applied_edits]
    assert edit.new_text == EDITOR  # core.py's definition, as the editor has it
    last = (await status(client))["context"]["last"]
    assert last["uri"] == uri and "core.py" in last["summary"]


async def test_turned_off_nothing_is_added(client: LanguageClient):
    ws = client.ws
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"repoContext": False}})
    )
    main2 = ws / "pkg" / "main2.py"
    open_doc(client, main2.as_uri(), (ws / "pkg/main.py").read_text())
    assert await fill(client, main2.as_uri(), 6, 4) == "pass"
    st = (await status(client))["context"]
    assert not st["enabled"] and st["last"]["uri"] != main2.as_uri()
