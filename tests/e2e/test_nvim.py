"""Neovim 0.12 end to end: a headless Neovim with only editors/nvim loaded, the real `parafill
serve` with the shipped model, driven over Neovim's RPC socket with pynvim.

Checks the native inline completion (ghost text appears in insert mode where a line is missing,
the configured accept key inserts it, the buffer still parses) and `:'<,'>ParafillFill` on a
visual selection and `:ParafillFill` on every `<|fill|>` hole (the server's workspace/applyEdit
lands in the buffer), `:ParafillStatus`, and the virtual-text fallback used before 0.12.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import time
from pathlib import Path

import pynvim
import pytest
from editors_helpers import (
    COMPLETION_S,
    HOLE_LINE,
    HOLE_PREFIX,
    HOLES,
    MISSING_INDENT,
    MISSING_LINE,
    MODEL_READY_S,
    NVIM_PLUGIN,
    SAMPLE,
    SELECT_LINE,
    SELECT_PREFIX,
    nvim_binary,
    parafill_command,
    start,
    stop,
    tail,
    wait_for,
)

ACCEPT_KEY = "<C-j>"  # not the default <Tab>: proves the option reaches the keymap
INLINE_NS = "nvim.lsp.inline_completion"

INIT_LUA = """
vim.opt.runtimepath:prepend({plugin})
vim.opt.swapfile = false
vim.opt.shadafile = 'NONE'
require('parafill').setup({{
  cmd = {cmd},
  settings = {{ debounceMs = 0, logFile = {log} }},
  inline = {{ accept_key = {accept} }},
}})
"""

# Lua helpers run through exec_lua: the client's status, the ghost text shown at the cursor.
STATUS_LUA = """
local client = vim.lsp.get_clients({ name = 'parafill' })[1]
if not client then return vim.NIL end
local r = client:request_sync('parafill/status', {}, 10000, 0)
return r and r.result or vim.NIL
"""
MESSAGES_LUA = "return vim.api.nvim_exec2('messages', { output = true }).output"
GHOST_LUA = """
local ns = vim.api.nvim_get_namespaces()[...]
if not ns then return vim.NIL end
local marks = vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
local out = {}
for _, m in ipairs(marks) do
  local parts = {}
  for _, chunk in ipairs(m[4].virt_text or {}) do parts[#parts + 1] = chunk[1] end
  for _, line in ipairs(m[4].virt_lines or {}) do
    local l = {}
    for _, chunk in ipairs(line) do l[#l + 1] = chunk[1] end
    parts[#parts + 1] = '\\n' .. table.concat(l)
  end
  out[#out + 1] = table.concat(parts)
end
return #out > 0 and table.concat(out) or vim.NIL
"""


def _lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid Lua string literal for these paths


@pytest.fixture(scope="module")
def nvim(tmp_path_factory):
    """Headless Neovim on a socket, editing a Python file, with the server ready."""
    tmp = tmp_path_factory.mktemp("nvim")
    work = tmp / "project"
    work.mkdir()
    (work / "pyproject.toml").write_text("[project]\nname = 'sample'\n")
    source = work / "geometry.py"
    source.write_text(SAMPLE)
    server_log = tmp / "server.log"
    cmd = parafill_command()
    lua_cmd = "{ " + ", ".join(_lua_str(c) for c in cmd) + " }"
    init = tmp / "init.lua"
    init.write_text(
        INIT_LUA.format(
            plugin=_lua_str(str(NVIM_PLUGIN)),
            cmd=lua_cmd,
            log=_lua_str(str(server_log)),
            accept=_lua_str(ACCEPT_KEY),
        )
    )
    sock = tmp / "nvim.sock"
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[var] = str(tmp / var.lower())  # nothing of the user's config or plugins
    env.setdefault("OMP_NUM_THREADS", "2")
    nvim_log = tmp / "nvim.log"
    proc = start(
        [
            str(nvim_binary()),
            "--headless",
            "-n",
            "-i",
            "NONE",
            "-u",
            str(init),
            "--listen",
            str(sock),
            str(source),
        ],
        nvim_log,
        cwd=work,
        env=env,
    )
    session = None
    try:
        wait_for(sock.exists, 30, f"Neovim's socket {sock}; Neovim log:\n{tail(nvim_log)}")
        session = pynvim.attach("socket", path=str(sock))
        session.request("nvim_set_option_value", "columns", 120, {})

        def ready():
            status = session.exec_lua(STATUS_LUA)
            if isinstance(status, dict) and status.get("state") == "error":
                pytest.fail(
                    f"the server reports an error: {status.get('error')}\n{tail(server_log)}",
                    pytrace=False,
                )
            return isinstance(status, dict) and status.get("state") == "ready" and status

        status = wait_for(
            ready, MODEL_READY_S, f"the server to load the model; server log:\n{tail(server_log)}"
        )
        print("parafill status:", status)
        yield session, source, server_log
    finally:
        if session is not None:
            with contextlib.suppress(Exception):  # Neovim exits while answering
                session.command("qall!")
            session.close()
        stop(proc)


def _buffer(session) -> list[str]:
    return session.current.buffer[:]


def _reset(session, source: Path) -> None:
    session.input("<Esc>")
    session.current.buffer[:] = SAMPLE.splitlines()


def test_inline_completion_is_accepted_with_the_configured_key(nvim):
    session, source, server_log = nvim
    _reset(session, source)
    assert session.exec_lua("return vim.lsp.inline_completion.is_enabled({ bufnr = 0 })")
    before = _buffer(session)
    assert before[MISSING_LINE - 1] == MISSING_INDENT
    session.current.window.cursor = (MISSING_LINE, len(MISSING_INDENT))
    session.input("A")  # insert mode at the end of the indented empty line

    ghost = wait_for(
        lambda: session.exec_lua(GHOST_LUA, INLINE_NS),
        COMPLETION_S,
        f"ghost text from the server; server log:\n{tail(server_log)}",
    )
    print("ghost text:", repr(ghost))
    assert session.api.get_mode()["mode"] == "i"

    session.input(ACCEPT_KEY)
    after = wait_for(
        lambda: _buffer(session) != before and _buffer(session),
        10,
        f"{ACCEPT_KEY} to insert the completion",
    )
    assert session.api.get_mode()["mode"] == "i", "accepting leaves insert mode as it was"
    session.input("<Esc>")
    # Only the region at the cursor changed: the lines above it and below it are as they were.
    assert after[: MISSING_LINE - 1] == before[: MISSING_LINE - 1]
    n_below = len(before) - MISSING_LINE
    assert after[len(after) - n_below :] == before[MISSING_LINE:]
    inserted = "\n".join(after[MISSING_LINE - 1 : len(after) - n_below])
    assert inserted.strip(), f"nothing was inserted: {after!r}"
    assert inserted.startswith(MISSING_INDENT)
    print("inserted:", repr(inserted))
    ast.parse("\n".join(after))  # still a valid Python module


def test_visual_selection_is_filled_with_the_user_command(nvim):
    session, source, server_log = nvim
    _reset(session, source)
    before = _buffer(session)
    line = before[SELECT_LINE - 1]
    assert line.startswith(SELECT_PREFIX)
    tick = session.current.buffer.api.get_changedtick()
    # Select the expression after "return " charwise, then run the command on the selection.
    session.current.window.cursor = (SELECT_LINE, len(SELECT_PREFIX))
    session.input("v$h")
    session.input(":ParafillFill<CR>")

    def filled():
        return session.current.buffer.api.get_changedtick() != tick and _buffer(session)

    after = wait_for(
        filled, COMPLETION_S, f"the fill to be applied; server log:\n{tail(server_log)}"
    )
    print("filled line:", repr(after[SELECT_LINE - 1]))
    assert session.api.get_mode()["mode"] == "n"
    assert after[: SELECT_LINE - 1] == before[: SELECT_LINE - 1], (
        "text before the selection is kept"
    )
    n_below = len(before) - SELECT_LINE
    assert after[len(after) - n_below :] == before[SELECT_LINE:], "text after the selection is kept"
    assert after[SELECT_LINE - 1].startswith(SELECT_PREFIX), (
        "the fill starts where the selection did"
    )
    ast.parse("\n".join(after))


def test_virtual_text_fallback_of_older_neovims(nvim):
    """The 0.10/0.11 path (lua/parafill/ghost.lua), switched on in this 0.12 for the test."""
    session, source, server_log = nvim
    _reset(session, source)
    session.exec_lua(
        """
        vim.lsp.inline_completion.enable(false, { bufnr = 0 })
        local client = require('parafill.client').get(0)
        local opts = vim.tbl_extend('force', require('parafill.config').options.inline, { debounce_ms = 50 })
        require('parafill.ghost').attach(0, client, opts)
        """
    )
    before = _buffer(session)
    session.current.window.cursor = (MISSING_LINE, len(MISSING_INDENT))
    session.input("A")
    ghost = wait_for(
        lambda: session.exec_lua(GHOST_LUA, "parafill.ghost"),
        COMPLETION_S,
        f"virtual-text ghost from the server; server log:\n{tail(server_log)}",
    )
    print("virtual text:", repr(ghost))
    word = session.exec_lua("return require('parafill.partial').piece(...)", ghost, "word")
    if word != ghost:  # accept-word, then the rest is shown again (typing-through)
        status = _status(session)
        session.input("<M-Right>")
        wait_for(
            lambda: _buffer(session)[MISSING_LINE - 1] == MISSING_INDENT + word,
            10,
            "accept-word in the fallback",
        )
        wait_for(
            lambda: session.exec_lua(GHOST_LUA, "parafill.ghost") == ghost[len(word) :],
            30,
            "the rest as virtual text",
        )
        again = _status(session)
        assert again["typedThrough"] > status["typedThrough"]
        assert again["requests"] == status["requests"]
    session.input(ACCEPT_KEY)
    after = wait_for(lambda: _buffer(session) != before and _buffer(session), 10, "the accept key")
    session.input("<Esc>")
    assert after[: MISSING_LINE - 1] == before[: MISSING_LINE - 1]
    n_below = len(before) - MISSING_LINE
    assert after[len(after) - n_below :] == before[MISSING_LINE:]
    assert "\n".join(after[MISSING_LINE - 1 : len(after) - n_below]).strip()
    ast.parse("\n".join(after))


def test_status_command_shows_the_model_state(nvim):
    session, _, _ = nvim
    session.command("messages clear")
    session.command("ParafillStatus")
    shown = wait_for(
        lambda: "state: ready" in (m := session.exec_lua(MESSAGES_LUA)) and m,
        20,
        ":ParafillStatus to show the status",
    )
    assert "model: " in shown and "device: " in shown, shown
    assert session.exec_lua("return require('parafill').statusline()").startswith("parafill ready")


def test_fill_without_a_range_fills_every_hole(nvim):
    session, _, server_log = nvim
    session.input("<Esc>")
    session.current.buffer[:] = HOLES.splitlines()
    session.command("ParafillFill")
    after = wait_for(
        lambda: "<|fill|>" not in "\n".join(b := _buffer(session)) and b,
        COMPLETION_S,
        f"the hole to be filled; server log:\n{tail(server_log)}",
    )
    print("filled holes:", after)
    expected = HOLES.splitlines()
    assert after[HOLE_LINE - 1].startswith(HOLE_PREFIX)
    assert after[: HOLE_LINE - 1] == expected[: HOLE_LINE - 1]
    assert after[-2:] == expected[-2:]
    ast.parse("\n".join(after))


def _edit_copy(session, source: Path, name: str) -> None:
    """Edits a new copy of the sample beside `source`: a buffer the native inline completion is
    attached to afresh (the fallback test switched it off in the first one)."""
    session.input("<Esc>")
    copy = source.parent / name
    copy.write_text(SAMPLE)
    session.command(f"edit {copy}")
    wait_for(
        lambda: session.exec_lua(
            "return #vim.lsp.get_clients({ name = 'parafill', bufnr = 0 }) > 0"
            " and vim.lsp.inline_completion.is_enabled({ bufnr = 0 })"
        ),
        30,
        f"the client to attach to {name}",
    )


def _status(session) -> dict:
    status = session.exec_lua(STATUS_LUA)
    assert isinstance(status, dict), status
    return status


def _settled_status(session, quiet_s: float = 0.4) -> dict:
    """The server's status once its counters stop moving (the editor may have asked twice for
    the first ghost text: the second answer can still be on its way when the ghost shows)."""
    keys = ("requests", "completed", "cancelled", "superseded", "cacheHits", "typedThrough")
    last = None
    for _ in range(50):
        status = _status(session)
        now = tuple(status[k] for k in keys)
        if now == last:
            return status
        last = now
        time.sleep(quiet_s)
    return status


def _ghost_rest(session) -> str | None:
    ghost = session.exec_lua(GHOST_LUA, INLINE_NS)
    return ghost if isinstance(ghost, str) else None


def test_partial_accept_rules(nvim):
    """lua/parafill/partial.lua: what accept-word and accept-line take of the ghost text."""
    session, _, _ = nvim
    cases = [
        ("dy = p[1] - q[1]", "word", "dy"),
        (" = p[1] - q[1]", "word", " ="),
        (" p[1]", "word", " p"),
        ("x = 1\n    return x", "line", "x = 1"),
        ("\n    return x\nnext", "line", "\n    return x"),
        ("\n    return x", "word", "\n    return"),
        ("(", "word", "("),
    ]
    for rest, unit, want in cases:
        got = session.exec_lua("return require('parafill.partial').piece(...)", rest, unit)
        assert got == want, (rest, unit, got)


def test_accept_word_then_line_in_neovim(nvim):
    """Accept-word (default <M-Right>) inserts the ghost text's first word; the rest shows again,
    from the server's typing-through (no model run); accept-line (<M-C-Right>) then takes the
    rest of the line, which is all that is left: a full accept, counted by the item's command."""
    session, source, server_log = nvim
    _edit_copy(session, source, "words.py")
    session.current.window.cursor = (MISSING_LINE, len(MISSING_INDENT))
    session.input("A")
    ghost = wait_for(
        lambda: _ghost_rest(session), COMPLETION_S, f"ghost text; log:\n{tail(server_log)}"
    )
    assert "\n" not in ghost, ghost
    before = _settled_status(session)
    word = session.exec_lua("return require('parafill.partial').piece(...)", ghost, "word")
    print("ghost:", repr(ghost), "word:", repr(word))
    assert word and word != ghost, f"the suggestion {ghost!r} has more than one word"
    rest = ghost[len(word) :]

    session.input("<M-Right>")
    line = wait_for(
        lambda: (b := _buffer(session)[MISSING_LINE - 1]) != MISSING_INDENT and b,
        10,
        "accept-word to insert the first word",
    )
    assert line == MISSING_INDENT + word
    assert session.api.get_mode()["mode"] == "i"
    shown = wait_for(
        lambda: _ghost_rest(session) == rest.rstrip() and _status(session),
        30,
        f"the rest {rest!r} to show again; log:\n{tail(server_log)}",
    )
    # the rest came from typing-through, without a model run. (Neovim's native inline completion
    # asks once more at the old cursor as it accepts; depending on timing the server sees it
    # with the old text, the same request as before: a cache hit, or with the new text, which
    # the next request cancels before its run ends: never a completed run.)
    assert shown["typedThrough"] > before["typedThrough"], shown
    assert shown["completed"] == before["completed"], shown
    assert shown["acceptance"]["shown"] == before["acceptance"]["shown"]

    session.input("<M-C-Right>")  # accept-line: the rest of the line is the rest of it
    wait_for(
        lambda: _buffer(session)[MISSING_LINE - 1] == MISSING_INDENT + ghost,
        10,
        "accept-line to insert the rest",
    )
    after = wait_for(
        lambda: (
            (s := _status(session))["acceptance"]["accepted"] > before["acceptance"]["accepted"]
            and s
        ),
        10,
        "the accept command to be counted",
    )
    assert after["completed"] == before["completed"]
    assert after["acceptance"]["byLanguage"]["python"]["accepted"] >= 1
    session.input("<Esc>")
    ast.parse("\n".join(_buffer(session)))


def test_steps_command_shows_the_denoising(nvim):
    session, source, server_log = nvim
    _edit_copy(session, source, "steps.py")
    session.current.window.cursor = (MISSING_LINE, len(MISSING_INDENT))
    session.input("A")
    wait_for(lambda: _ghost_rest(session), COMPLETION_S, f"ghost; log:\n{tail(server_log)}")
    session.input("<Esc>")
    steps = session.exec_lua(
        """
        local client = vim.lsp.get_clients({ name = 'parafill' })[1]
        local r = client:request_sync('parafill/steps', { uri = vim.uri_from_bufnr(0) }, 10000, 0)
        return r and r.result or vim.NIL
        """
    )
    print("steps:", steps)
    assert isinstance(steps, dict) and steps["steps"], steps
    assert len(steps["steps"]) == steps["stepsUsed"]
    if steps["stepsUsed"] > 1:
        assert steps["mask"] in steps["steps"][0], "masked slots are shown"
    wins = len(session.api.list_wins())
    session.command("ParafillSteps")
    lines = wait_for(
        lambda: (
            len(session.api.list_wins()) > wins
            and session.api.win_get_config(0).get("relative")
            and session.current.buffer[:]
        ),
        20,
        ":ParafillSteps to open its window",
    )
    print("\n".join(lines))
    assert lines[0].startswith("Parafill: how the last suggestion was denoised")
    step_lines = [ln for ln in lines if ln.startswith("step")]
    assert len(step_lines) == steps["stepsUsed"]
    assert step_lines[0] == "step  1 | " + steps["steps"][0].split("\n")[0]
    assert any(ln.startswith("shown") for ln in lines)
    session.input("q")
    wait_for(lambda: len(session.api.list_wins()) == wins, 5, "q to close the window")
