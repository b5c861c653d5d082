"""The real server process over raw stdio bytes, without an LSP client library: malformed
JSON-RPC must not take it down. (Synchronous: kept apart from the asyncio-marked modules.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from lsp_helpers import fake_server_command, server_env


def test_malformed_json_rpc_keeps_server_up():
    """Raw bytes: a body that is not JSON, then a valid request that must still be answered."""
    proc = subprocess.Popen(
        fake_server_command(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=server_env(),
    )

    def send(body: bytes) -> None:
        proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        proc.stdin.flush()

    send(b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {')
    send(
        json.dumps(
            {"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"capabilities": {}}}
        ).encode()
    )
    deadline = time.time() + 20
    out = b""
    try:
        while time.time() < deadline and b'"id": 2' not in out and b'"id":2' not in out:
            out += proc.stdout.read1(65536)
    finally:
        proc.kill()
        proc.wait()
    assert b"capabilities" in out
    assert sys.platform != "win32"
