"""The Neovim plugin's own checks: every module loads in a bare Neovim 0.12, setup() registers the
LSP config and the user commands, the vimdoc has valid tags, and the Lua is StyLua-formatted."""

from __future__ import annotations

import subprocess

from editors_helpers import CACHE, NVIM_PLUGIN, nvim_binary, require

MODULES = [
    "parafill",
    "parafill.config",
    "parafill.client",
    "parafill.commands",
    "parafill.keys",
    "parafill.ghost",
]

CHECK_LUA = """
for _, m in ipairs(vim.split(%r, ',')) do require(m) end
require('parafill').setup({ cmd = { 'parafill-not-started', 'serve' }, settings = { device = 'cpu' } })
local cfg = vim.lsp.config.parafill
assert(cfg.cmd[1] == 'parafill-not-started', 'cmd from the options')
assert(cfg.init_options.parafill.device == 'cpu', 'settings as initializationOptions')
assert(vim.tbl_contains(cfg.filetypes, 'python'))
assert(vim.fn.exists(':ParafillFill') == 2 and vim.fn.exists(':ParafillStatus') == 2, 'user commands')
assert(require('parafill.config').options.inline.accept_key == '<Tab>', 'default accept key')
vim.cmd('helptags ' .. vim.fn.fnameescape(%r))
io.stdout:write('ok')
"""


def test_plugin_loads_and_sets_up_in_a_bare_neovim(tmp_path):
    doc = tmp_path / "doc"
    doc.mkdir()
    (doc / "parafill.txt").write_text((NVIM_PLUGIN / "doc" / "parafill.txt").read_text())
    script = tmp_path / "check.lua"
    script.write_text(CHECK_LUA % (",".join(MODULES), str(doc)))
    run = subprocess.run(
        [
            str(nvim_binary()),
            "--clean",
            "--headless",
            "--cmd",
            f"set rtp^={NVIM_PLUGIN}",
            "-l",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0 and run.stdout.endswith("ok"), run.stdout + run.stderr
    assert (doc / "tags").read_text().count("\n") >= 10, "vimdoc tags"


def test_lua_is_stylua_formatted():
    stylua = require(CACHE / "stylua" / "node_modules" / ".bin" / "stylua", "StyLua")
    run = subprocess.run(
        [str(stylua), "--check", "."],
        cwd=NVIM_PLUGIN,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, f"run: stylua editors/nvim\n{run.stdout}{run.stderr}"
