"""The real server process over raw stdio bytes, without an LSP client library: malformed
JSON-RPC must not take it down. (Synchronous: kept apart from the asyncio-marked modules.)"""

from __future__ import annotations

import json
import select
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


class Raw:
    """The real server (fake model) over raw stdio: send messages, read answers by id."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            fake_server_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=server_env(),
        )
        self.buf = b""

    def send(self, msg: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **msg}).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def answer(self, msg_id: int, timeout: float = 20.0) -> dict:
        """The response with this id (server-sent notifications and requests are skipped)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\r\n\r\n" in self.buf:
                head, rest = self.buf.split(b"\r\n\r\n", 1)
                n = int(head.split(b"Content-Length:")[1].split(b"\r\n")[0])
                if len(rest) < n:
                    break
                msg, self.buf = json.loads(rest[:n]), rest[n:]
                if msg.get("id") == msg_id and "method" not in msg:
                    return msg
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                self.buf += self.proc.stdout.read1(65536)
        raise AssertionError(f"no answer to request {msg_id}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_lifecycle_is_enforced():
    """LSP's lifecycle: a request before initialize is -32002 (ServerNotInitialized); a second
    initialize is an invalid request and keeps the first session; after shutdown requests are
    invalid; exit without shutdown exits 1, after shutdown 0."""
    init = {"method": "initialize", "params": {"capabilities": {}}}
    status = {"method": "parafill/status", "params": {}}
    s = Raw()
    try:
        s.send({"id": 1, **status})
        assert s.answer(1)["error"]["code"] == -32002
        s.send({"id": 2, **init})
        assert "capabilities" in s.answer(2)["result"]
        s.send({"method": "initialized", "params": {}})
        s.send({"id": 3, **init})
        assert s.answer(3)["error"]["code"] == -32600
        s.send({"id": 4, **status})
        assert s.answer(4)["result"]["state"] in ("loading", "ready")
        s.send({"id": 5, "method": "shutdown"})
        assert s.answer(5)["result"] is None
        s.send({"id": 6, **status})
        assert s.answer(6)["error"]["code"] == -32600
        s.send({"method": "exit"})
        assert s.proc.wait(timeout=20) == 0
    finally:
        s.close()
    s = Raw()
    try:
        s.send({"id": 1, **init})
        s.answer(1)
        s.send({"method": "exit"})  # no shutdown first
        assert s.proc.wait(timeout=20) == 1
    finally:
        s.close()
