"""The `parafill` command line end to end (subprocesses). Error cases need no model; the rest use
the shipped checkpoint and FAIL (not skip) when model/weights/ is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lsp_server.syntax import count_errors, parse

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "model" / "weights"
TIMEOUT = 120


def parafill(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI; stdout/stderr are bytes so line endings are checked exactly."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.setdefault("OMP_NUM_THREADS", "2")
    cmd = [sys.executable, "-m", "lsp_server.cli", *args]
    return subprocess.run(cmd, capture_output=True, check=False, timeout=TIMEOUT, env=env, cwd=ROOT)


def out(proc) -> str:
    return proc.stdout.decode("utf-8")


def err(proc) -> str:
    return proc.stderr.decode("utf-8")


@pytest.fixture(scope="module")
def shipped_model():
    if not (WEIGHTS / "config.json").is_file():
        pytest.fail(
            f"the shipped checkpoint is missing: {WEIGHTS / 'config.json'} (model/ has not landed)"
        )
    return WEIGHTS


@pytest.mark.parametrize(
    "args,message",
    [
        (["complete", "no/such/file.py:1:1"], "no such file"),
        (["complete", "{f}:99:1"], "line 99 is outside"),
        (["complete", "{f}:1:500"], "column 500 is outside"),
        (["complete", "{f}"], "FILE:LINE:COL"),
        (["fill", "{f}"], "no <|fill|> markers"),
        (["complete", "{f}:1:1", "--model", "{tmp}/no-checkpoint"], "no-checkpoint"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path, args, message):
    f = tmp_path / "a.py"
    f.write_text("x = 1\n")
    proc = parafill(*[a.format(f=f, tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    lines = err(proc).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parafill: error:") and message in lines[0], err(
        proc
    )
    assert "Traceback" not in err(proc) and out(proc) == ""


SNIPPET = 'import os\n\n\ndef read_lines(path):\n    with open(path) as fh:\n        return fh.\n\n\nprint(read_lines("x"))\n'


def test_complete_prints_exactly_the_fill(tmp_path, shipped_model):
    f = tmp_path / "snippet.py"
    f.write_bytes(SNIPPET.encode())
    line, col = 6, len("        return fh.") + 1
    proc = parafill("complete", f"{f}:{line}:{col}", "--show-steps")
    assert proc.returncode == 0, err(proc)
    fill = out(proc)
    cursor = SNIPPET.index("fh.") + 3
    completed = SNIPPET[:cursor] + fill + SNIPPET[cursor:]
    assert "\n" not in fill  # a rest-of-line region
    assert count_errors(parse(completed, "python")) == 0, completed
    steps = [ln for ln in err(proc).splitlines() if ln.startswith("step ")]
    assert steps and "region" in err(proc).splitlines()[-1]


def test_complete_crlf_and_options(tmp_path, shipped_model):
    f = tmp_path / "crlf.py"
    text = "def area(w, h):\r\n    \r\n\r\nprint(area(2, 3))\r\n"
    f.write_bytes(text.encode())
    proc = parafill("complete", f"{f}:2:5", "--steps", "4", "--budget", "24", "--seed", "1")
    assert proc.returncode == 0, err(proc)
    fill = out(proc)
    assert "\n" not in fill.replace("\r\n", "")  # line breaks, if any, are the file's CRLF
    completed = text[: text.index("\r\n    ") + 6] + fill + text[text.index("\r\n    ") + 6 :]
    assert completed.startswith("def area(w, h):\r\n    ")


def test_fill_two_markers(tmp_path, shipped_model):
    f = tmp_path / "holes.py"
    f.write_text("def add(a, b):\n    return <|fill|>\n\n\ndef sub(a, b):\n    return <|fill:8|>\n")
    proc = parafill("fill", str(f))
    assert proc.returncode == 0, err(proc)
    result = out(proc)
    assert "<|fill" not in result and result.startswith("def add(a, b):\n    return ")
    assert result.count("def ") == 2
    proc = parafill("fill", str(f), "--in-place")
    assert proc.returncode == 0 and out(proc) == "" and "<|fill" not in f.read_text()


def test_status(shipped_model):
    proc = parafill("status", "--json")
    assert proc.returncode == 0, err(proc)
    info = json.loads(out(proc))
    assert info["state"] == "ready" and info["model"] and info["grammars"]["python"]


def test_serve_tcp_binds_localhost_only():
    """`parafill serve --tcp PORT` answers initialize on 127.0.0.1 (fake backend: no model)."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    cmd = [sys.executable, "-m", "lsp_server.cli", "serve", "--tcp", str(port)]
    proc = subprocess.Popen([*cmd, "--backend", "fake_infiller:load"], env=env, cwd=ROOT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.time() < deadline, "server did not listen"
                time.sleep(0.2)
        with conn:
            body = json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
            )
            conn.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode()))
            data = b""
            while b"inlineCompletionProvider" not in data:
                chunk = conn.recv(65536)
                assert chunk, data
                data += chunk
            listening = subprocess.run(
                ["ss", "-ltn"], capture_output=True, text=True, check=False
            ).stdout
            if listening:
                assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening
    finally:
        proc.kill()
        proc.wait()
