"""The `parafill` command line end to end (subprocesses). Error cases need no model; the rest use
the shipped checkpoint and FAIL (not skip) when model/weights/ is missing."""

from __future__ import annotations

import json
import os
import shutil
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


SNIPPET = (
    "import os\n\n\ndef read_lines(path):\n    with open(path) as fh:\n        return fh.\n\n\n"
    'print(read_lines("x"))\n'
)
CRLF = "def area(w, h):\r\n    \r\n\r\nprint(area(2, 3))\r\n"
HOLES = "def add(a, b):\n    return <|fill|>\n\n\ndef sub(a, b):\n    return <|fill:8|>\n"


@pytest.fixture(scope="module")
def runs(shipped_model, tmp_path_factory):
    """Every CLI run that loads the model, started at once (each pays the torch import)."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "snippet.py").write_bytes(SNIPPET.encode())
    (tmp / "crlf.py").write_bytes(CRLF.encode())
    (tmp / "holes.py").write_text(HOLES)
    (tmp / "inplace.py").write_text(HOLES)
    col = len("        return fh.") + 1
    jobs = {
        "complete": ["complete", f"{tmp / 'snippet.py'}:6:{col}", "--show-steps"],
        "crlf": [
            "complete",
            f"{tmp / 'crlf.py'}:2:5",
            "--steps",
            "4",
            "--budget",
            "24",
            "--seed",
            "1",
        ],
        "fill": ["fill", str(tmp / "holes.py")],
        "inplace": ["fill", str(tmp / "inplace.py"), "--in-place"],
        "status": ["status", "--json"],
    }
    procs = {k: _start(*a) for k, a in jobs.items()}
    done = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=TIMEOUT)
        done[k] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    done["tmp"] = tmp
    return done


def _start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "lsp_server.cli", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)


def test_complete_prints_exactly_the_fill(runs):
    proc = runs["complete"]
    assert proc.returncode == 0, err(proc)
    fill = out(proc)
    cursor = SNIPPET.index("fh.") + 3
    completed = SNIPPET[:cursor] + fill + SNIPPET[cursor:]
    assert fill and "\n" not in fill  # a rest-of-line region
    assert count_errors(parse(completed, "python")) == 0, completed
    lines = err(proc).splitlines()
    assert [ln for ln in lines if ln.startswith("step ")] and "region" in lines[-1]


def test_complete_crlf_and_options(runs):
    proc = runs["crlf"]
    assert proc.returncode == 0, err(proc)
    fill = out(proc)
    assert "\n" not in fill.replace("\r\n", "")  # line breaks, if any, are the file's CRLF
    at = CRLF.index("\r\n    ") + 6
    completed = CRLF[:at] + fill + CRLF[at:]
    assert count_errors(parse(completed.replace("\r\n", "\n"), "python")) == 0, completed


def test_fill_two_markers(runs):
    proc = runs["fill"]
    assert proc.returncode == 0, err(proc)
    result = out(proc)
    assert "<|fill" not in result and result.startswith("def add(a, b):\n    return ")
    assert result.count("def ") == 2 and result.endswith("\n")
    proc = runs["inplace"]
    assert proc.returncode == 0 and out(proc) == "", err(proc)
    assert "<|fill" not in (runs["tmp"] / "inplace.py").read_text()


def test_status(runs):
    proc = runs["status"]
    assert proc.returncode == 0, err(proc)
    info = json.loads(out(proc))
    assert info["state"] == "ready" and info["model"] and info["grammars"]["python"]


def test_serve_tcp_binds_localhost_only():
    """`parafill serve --tcp PORT` answers initialize on 127.0.0.1 (fake backend: no model),
    after a broken frame too."""
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
            # a broken frame first: the same reader as over stdio skips it (pygls's went deaf)
            conn.sendall(b"Content-Length: lots\r\n\r\n{}")
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


def test_doctor_checks_everything_and_says_what_to_fix(tmp_path):
    """`parafill doctor`: every check passes with the shipped model (the server starts and
    completes), and a broken checkpoint is named with a fix, exit status 1."""
    proc = parafill("doctor")
    assert proc.returncode == 0, out(proc) + err(proc)
    text = out(proc)
    for name in ("python", "torch", "checkpoint", "grammars", "server start", "first completion"):
        assert f"ok  {name}" in text
    assert text.rstrip().endswith("all good")
    (tmp_path / "config.json").write_text("{}")
    bad = parafill("doctor", "--model", str(tmp_path))
    assert bad.returncode == 1
    assert "BAD checkpoint" in out(bad) and "fix: check --model" in out(bad)
    assert "server start" not in out(bad)  # no server started on a broken checkpoint


def test_serve_model_refuses_a_named_token_variable_that_is_unset(monkeypatch):
    """Named on purpose (even the default's name), an unset token variable stops the start;
    the server would otherwise run without the auth that was asked for."""
    monkeypatch.delenv("PARAFILL_API_KEY", raising=False)
    proc = parafill("serve-model", "--no-ray", "--port", "1", "--api-key-env", "PARAFILL_API_KEY")
    assert proc.returncode == 2
    assert "PARAFILL_API_KEY, which is not set" in err(proc)


def test_complete_with_the_repository_context_says_which_files_fed_it(tmp_path):
    """`complete --repo-context --show-steps`: the definitions the cursor's code uses come from
    the other files of the file's repository, and stderr says which."""
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "tests" / "fixtures" / "workspace", ws)
    (ws / ".git").mkdir()
    main = ws / "pkg" / "main.py"
    proc = parafill("complete", f"{main}:7:5", "--repo-context", "--show-steps")
    assert proc.returncode == 0, err(proc)
    said = [line for line in err(proc).splitlines() if line.startswith("[context: ")]
    assert said and ("core.py" in said[0] or "grouping.py" in said[0]), err(proc)
    plain = parafill("complete", f"{main}:7:5", "--show-steps")
    assert plain.returncode == 0 and "[context: " not in err(plain)


def test_fill_with_the_repository_context_reads_the_other_files(tmp_path):
    """`fill --repo-context`: the holes are filled with the definitions of the names the file
    imports ahead of the prefix (the fake backend fills a hole with the first `expect:` text of
    its request: there, compute_total's docstring in core.py)."""
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "tests" / "fixtures" / "workspace", ws)
    (ws / ".git").mkdir()
    f = ws / "pkg" / "fill_me.py"
    f.write_text("from pkg.core import compute_total\n\n\ndef checkout(order):\n    <|fill|>\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    cmd = [
        sys.executable,
        "-m",
        "lsp_server.cli",
        "fill",
        str(f),
        "--backend",
        "fake_infiller:load",
    ]

    def run(*more: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*cmd, *more], check=False, capture_output=True, timeout=TIMEOUT, env=env, text=True
        )

    with_ctx, plain = run("--repo-context"), run()
    assert with_ctx.returncode == 0 and plain.returncode == 0, with_ctx.stderr + plain.stderr
    assert "    total = compute_total(order.items, discount=0.1)\n" in with_ctx.stdout
    assert "compute_total(order" not in plain.stdout
