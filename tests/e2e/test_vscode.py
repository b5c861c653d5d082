"""VS Code end to end: the packaged extension (editors/vscode/parafill.vsix) in a real VS Code
(code-server 4.139.1 on Node 24, on 127.0.0.1) driven in Debian's headless Chromium with
playwright-core, talking to the real `parafill serve` with the shipped model.

Opens a Python file of a workspace, types at a cursor, waits for the ghost text, saves a screenshot
of it (editors/vscode/out/e2e/vscode-ghost-text.png, or $PARAFILL_E2E_ARTIFACTS), accepts its
next word with VS Code's own accept-next-word (Ctrl+Right: the rest stays suggested, without a
model run, as the server's counters show), then the rest with Tab (the item's command counts it
accepted), saves, and checks the file; shows the suggestion's denoising steps ("Parafill: Show
Denoising"); then fills the `<|fill|>` hole of a second file with the command "Parafill: Fill
Every Hole in File". Another takes the suggestion with VS Code's accept-next-line
(`editor.action.inlineSuggest.acceptNextLine`, bound to a key in the test's keybindings: it has
no default one). The error tests check the message shown when the server command is missing.
Every process it starts listens on loopback only and is stopped at the end.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from editors_helpers import (
    CHROMIUM,
    COMPLETION_S,
    HOLE_LINE,
    HOLE_PREFIX,
    HOLES,
    LOOPBACK,
    MISSING_INDENT,
    MISSING_LINE,
    MODEL_READY_S,
    ROOT,
    SAMPLE,
    VSCODE_EXT,
    code_server_entry,
    free_port,
    node24,
    parafill_command,
    playwright_core,
    require,
    start,
    stop,
    tail,
    vsix,
    wait_for,
)

ARTIFACTS = Path(os.environ.get("PARAFILL_E2E_ARTIFACTS", VSCODE_EXT / "out" / "e2e"))
SCREENSHOT = ARTIFACTS / "vscode-ghost-text.png"
TYPED = "dy = "  # typed at the end of the indented empty line
DRIVER = VSCODE_EXT / "e2e" / "drive.cjs"
# Keys the driver presses for the counters without taking the focus from the editor.
KEYBINDINGS = [
    {"key": "ctrl+alt+shift+s", "command": "parafill.showStatus"},
    {"key": "ctrl+alt+shift+c", "command": "notifications.clearAll"},
    {"key": "ctrl+alt+shift+l", "command": "editor.action.inlineSuggest.acceptNextLine"},
]
# No extension gallery: nothing leaves the machine.
GALLERY = {"serviceUrl": f"http://{LOOPBACK}:9/gallery", "itemUrl": f"http://{LOOPBACK}:9/items"}


def _user_settings(server_log: Path) -> dict:
    return {
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "workbench.secondarySideBar.defaultVisibility": "hidden",
        "chat.disableAIFeatures": True,
        "security.workspace.trust.enabled": False,
        "telemetry.telemetryLevel": "off",
        "update.mode": "none",
        "extensions.autoCheckUpdates": False,
        "extensions.autoUpdate": False,
        "extensions.ignoreRecommendations": True,
        "editor.inlineSuggest.enabled": True,
        "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
        "editor.suggestOnTriggerCharacters": False,
        "editor.minimap.enabled": False,
        "editor.fontSize": 15,
        "files.autoSave": "off",
        "parafill.server.command": parafill_command(),
        "parafill.debounceMs": 0,
        "parafill.logFile": str(server_log),
    }


def _drive_vscode(
    tmp_path: Path,
    scenario: str,
    screenshot: Path,
    settings: dict | None = None,
    expect: str | None = None,
    clean_python_env: bool = False,
    partial: str = "word",
):
    """Installs the .vsix into a fresh code-server on loopback, opens the sample workspace and
    runs the playwright driver's `scenario`. Returns (what the driver saw, the sample file)."""
    require(CHROMIUM, "Chromium")
    node, entry, package = node24(), code_server_entry(), vsix()
    user_data, extensions = tmp_path / "user-data", tmp_path / "extensions"
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    source = workspace / "geometry.py"
    source.write_text(SAMPLE)
    holes = workspace / "shapes.py"
    holes.write_text(HOLES)
    server_log = tmp_path / "server.log"
    (user_data / "User").mkdir(parents=True)
    user_settings = {**_user_settings(server_log), **(settings or {})}
    (user_data / "User" / "settings.json").write_text(json.dumps(user_settings, indent=2))
    (user_data / "User" / "keybindings.json").write_text(json.dumps(KEYBINDINGS, indent=2))
    port = free_port()
    config = tmp_path / "code-server.yaml"
    config.write_text(f"bind-addr: {LOOPBACK}:{port}\nauth: none\ncert: false\n")
    env = dict(os.environ, EXTENSIONS_GALLERY=json.dumps(GALLERY), OMP_NUM_THREADS="2")
    if clean_python_env:
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
    common = [
        str(node),
        str(entry),
        "--config",
        str(config),
        "--user-data-dir",
        str(user_data),
        "--extensions-dir",
        str(extensions),
    ]
    installed = subprocess.run(
        [*common, "--install-extension", str(package)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, (
        f"installing the .vsix failed:\n{installed.stdout}{installed.stderr}"
    )
    assert any(p.name.startswith("parafill.parafill-") for p in extensions.iterdir()), (
        installed.stdout
    )

    cs_log = tmp_path / "code-server.log"
    server = start(
        [
            *common,
            "--bind-addr",
            f"{LOOPBACK}:{port}",
            "--auth",
            "none",
            "--disable-telemetry",
            "--disable-update-check",
            "--disable-workspace-trust",
            "--disable-getting-started-override",
            str(workspace),
        ],
        cs_log,
        env=env,
    )
    try:
        wait_for(
            lambda: (
                urllib.request.urlopen(f"http://{LOOPBACK}:{port}/healthz", timeout=2).status == 200
            ),
            60,
            f"code-server on port {port}; its log:\n{tail(cs_log)}",
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        opts = {
            "scenario": scenario,
            "expect": expect,
            "playwright": str(playwright_core()),
            "url": f"http://{LOOPBACK}:{port}/?folder={workspace}",
            "file": source.name,
            "holesFile": holes.name if scenario == "ghost" and partial == "word" else None,
            "partial": partial,
            "line": MISSING_LINE,
            "column": len(MISSING_INDENT) + 1,
            "typed": TYPED,
            "screenshot": str(screenshot),
            "readyMs": MODEL_READY_S * 1000,
            "ghostMs": COMPLETION_S * 1000,
        }
        drive = subprocess.run(
            [str(node), str(DRIVER), json.dumps(opts)],
            capture_output=True,
            text=True,
            check=False,
            timeout=MODEL_READY_S + COMPLETION_S + 120,
            cwd=ROOT,
        )
        lines = drive.stdout.strip().splitlines()
        seen = json.loads(lines[-1]) if lines else {}
        print(drive.stderr)
        print("driver:", seen)
        assert drive.returncode == 0 and seen.get("ok"), (
            f"driving VS Code failed: {seen.get('error', drive.stdout)}\n"
            f"driver log:\n{drive.stderr[-3000:]}\nserver log:\n{tail(server_log)}\n"
            f"code-server log:\n{tail(cs_log)}"
        )
    finally:
        stop(server)
    return seen, source


def test_vscode_ghost_text_is_shown_and_accepted_with_tab(tmp_path):
    seen, source = _drive_vscode(tmp_path, "ghost", SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000, "the ghost-text screenshot is missing or empty"
    assert seen["ghost"].strip(), "the ghost text was empty"
    assert "Parafill" in seen["status"] and "error" not in seen["status"], seen["status"]
    before, after = SAMPLE.splitlines(), source.read_text().splitlines()
    n_below = len(before) - MISSING_LINE
    assert after[: MISSING_LINE - 1] == before[: MISSING_LINE - 1], "lines above the cursor kept"
    assert after[len(after) - n_below :] == before[MISSING_LINE:], "lines below the cursor kept"
    inserted = "\n".join(after[MISSING_LINE - 1 : len(after) - n_below])
    print("inserted:", repr(inserted))
    assert inserted.startswith(MISSING_INDENT + TYPED), "the typed text stays at the cursor"
    assert len(inserted) > len(MISSING_INDENT + TYPED), "Tab inserted the completion"
    ast.parse(source.read_text())
    _check_partial_accept_and_counters(seen, inserted)

    # Then "Parafill: Fill Every Hole in File" on shapes.py, through parafill.fill and applyEdit.
    assert seen.get("filled"), seen
    filled = (source.parent / "shapes.py").read_text()
    print("filled holes:", repr(filled))
    assert "<|fill|>" not in filled
    lines, expected = filled.splitlines(), HOLES.splitlines()
    assert lines[HOLE_LINE - 1].startswith(HOLE_PREFIX), "the fill replaced only the marker"
    assert lines[: HOLE_LINE - 1] == expected[: HOLE_LINE - 1]
    assert lines[-2:] == expected[-2:], "the code after the hole is kept"
    ast.parse(filled)


def test_vscode_says_clearly_when_the_server_command_is_missing(tmp_path):
    missing = str(tmp_path / "no-such-dir" / "parafill")
    seen, _ = _drive_vscode(
        tmp_path,
        "error",
        ARTIFACTS / "vscode-missing-server.png",
        {"parafill.server.command": [missing, "serve"]},
    )
    assert missing in seen["message"] and "parafill.server.command" in seen["message"], seen
    assert "error" in seen["status"], seen["status"]


def test_vscode_restarts_a_crashing_server_with_back_off_then_gives_up(tmp_path):
    crash = ["/bin/sh", "-c", "echo parafill-test-crash >&2; exit 3"]
    seen, _ = _drive_vscode(
        tmp_path,
        "error",
        ARTIFACTS / "vscode-crashing-server.png",
        {"parafill.server.command": crash},
        expect="stays stopped",
    )
    assert "crashed" in seen["message"] and "parafill-test-crash" in seen["message"], seen
    assert "error" in seen["status"], seen["status"]


def test_vscode_says_clearly_when_python_lacks_parafill(tmp_path):
    bare = (
        Path(sys.base_prefix) / "bin" / "python3"
    )  # the interpreter under .venv, without parafill
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    check = subprocess.run([bare, "-c", "import lsp_server"], cwd=tmp_path, env=env, check=False)
    assert check.returncode != 0, f"{bare} should not have parafill installed"
    seen, _ = _drive_vscode(
        tmp_path,
        "error",
        ARTIFACTS / "vscode-python-without-parafill.png",
        {"parafill.server.command": [], "parafill.server.pythonPath": str(bare)},
        expect="cannot import",
        clean_python_env=True,
    )
    assert str(bare) in seen["message"] and "pip install parafill" in seen["message"], seen


def test_vscode_accept_next_line_takes_the_line(tmp_path):
    """VS Code's accept-next-line on Parafill's item. The suggestion at the sample's missing line
    is one line (a line region stops at the line's end), so the next line is all of it: VS Code
    accepts it in full, which runs the item's command. No model request or run for it, and no
    new suggestion."""
    seen, source = _drive_vscode(
        tmp_path, "ghost", ARTIFACTS / "vscode-accept-next-line.png", partial="line"
    )
    prefix = MISSING_INDENT + TYPED
    ghost, line, rest = seen["ghost"], seen["lineAfterPart"], seen["ghostAfterPart"]
    shown, part, accepted = (
        seen["countersShown"],
        seen["countersAfterPart"],
        seen["countersAccepted"],
    )
    print("ghost:", repr(ghost), "after accept-next-line:", repr(line), "+", repr(rest))
    print("counters:", shown, part, accepted, sep="\n  ")
    assert ghost.strip(), "the ghost text was empty"
    assert line == prefix + ghost, "accept-next-line took the whole (single-line) suggestion"
    assert rest == "", "nothing is left suggested"
    before, after = SAMPLE.splitlines(), source.read_text().splitlines()
    assert after[: MISSING_LINE - 1] == before[: MISSING_LINE - 1], "lines above the cursor kept"
    assert after[MISSING_LINE - 1] == prefix + ghost, "the saved line is the suggestion"
    assert after[MISSING_LINE:] == before[MISSING_LINE:], "lines below the cursor kept"
    ast.parse(source.read_text())
    for counters in (part, accepted):
        assert (counters["requests"], counters["completed"]) == (
            shown["requests"],
            shown["completed"],
        ), "no model request or run for the line taken"
        assert counters["shown"] == shown["shown"], "no new suggestion"
    assert accepted["accepted"] == shown["accepted"] + 1, "the full accept was counted"
    assert accepted["partial"] == shown["partial"], "not counted as a partial accept"


def _check_partial_accept_and_counters(seen: dict, inserted: str) -> None:
    """Accept-next-word inserted the start of the ghost text and left the rest suggested; no
    model request ran for the part taken; Tab took the rest, and its command counted it."""
    prefix = MISSING_INDENT + TYPED
    ghost, line = seen["ghost"], seen["lineAfterPart"]
    shown, word, accepted = (
        seen["countersShown"],
        seen["countersAfterPart"],
        seen["countersAccepted"],
    )
    print(
        "ghost:",
        repr(ghost),
        "after accept-next-word:",
        repr(line),
        "+",
        repr(seen["ghostAfterPart"]),
    )
    print("counters:", shown, word, accepted, sep="\n  ")
    taken = line[len(prefix) :]
    assert line.startswith(prefix) and taken and ghost.startswith(taken), (line, ghost)
    assert len(taken) < len(ghost), "accept-next-word took a part, not all of it"
    assert seen["ghostAfterPart"] == ghost[len(taken) :], "the rest is still suggested"
    assert (word["requests"], word["completed"]) == (shown["requests"], shown["completed"]), (
        "the rest came without a model request or run"
    )
    # VS Code asked again after the partial accept: typing-through answered with the rest
    assert word["typedThrough"] > shown["typedThrough"]
    assert inserted == prefix + ghost, "Tab inserted the rest"
    assert (accepted["requests"], accepted["completed"]) == (shown["requests"], shown["completed"])
    assert accepted["accepted"] == shown["accepted"] + 1, "the accept command was counted"
    assert accepted["shown"] == shown["shown"], "the rest was no new suggestion"

    # "Parafill: Show Denoising": each step of that suggestion, then what was shown
    steps = seen["denoising"].splitlines()
    print("\n".join(steps))
    assert steps[0].startswith("Parafill: how the last suggestion in geometry.py")
    assert any(ln.startswith("step  1 | ") for ln in steps)
    assert any(ln.startswith("shown   | ") and ln.endswith(ghost) for ln in steps)
