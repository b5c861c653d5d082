"""The remote backend's HTTP (model/backends/remote.py `RemoteInfiller` on `Connections`) against
the model server's app without Ray (model/serve/app.py `local_app`, the fake backend) on uvicorn
in a thread: answers and the server's timing, one kept-alive connection, a connection the server
closed while idle replaced, a cancelled request closing its connection (the server stops the
work), and the errors: unreachable, too slow, refused; and a proxy from the environment.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from typing import ClassVar

import pytest
from fake_infiller import FakeInfiller
from http_serving import free_port, serving

from model.backends.remote import Connections, RemoteError, RemoteInfiller, RemoteUnavailable
from model.interface import Hole, InfillCancelled, InfillRequest
from model.serve.app import local_app
from model.serve.options import ServeOptions

TOKEN_ENV = "PARAFILL_TEST_REMOTE_TOKEN"


def request(expect: str) -> InfillRequest:
    return InfillRequest([f"# expect: {expect}\nx = ", Hole(8), "\n"])


async def client_port(scope, receive, send) -> None:
    """An ASGI app that answers every request with the client's port (its connection)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = str(scope["client"][1]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_answers_with_the_server_timing():
    app = local_app(ServeOptions(api_key_env=""), FakeInfiller(0.01))
    with serving(app) as url:
        client = RemoteInfiller(url)
        try:
            assert client.last_timing == {}
            assert client.infill(request("timed"))[0].fills == ["timed"]
            timing = client.last_timing
            client.probe()
        finally:
            client.close()
    assert set(timing) == {"round_trip_ms", "queued_ms", "model_ms"}
    assert timing["model_ms"] >= 4 * 10 * 0.9  # the fake's 4 steps of 10 ms
    assert timing["round_trip_ms"] >= timing["model_ms"] + timing["queued_ms"]
    assert client.status()["requests"] == 1 and client.status()["errors"] == 0


def test_one_connection_kept_alive_and_replaced_once_the_server_closed_it():
    with serving(client_port, keep_alive_s=1) as url:
        http = Connections(url, {}, 2.0)
        ports = [int(http.request("GET", "/", timeout_s=5).body) for _ in range(3)]
        time.sleep(1.6)  # the server closes the idle connection
        later = int(http.request("POST", "/", b"{}", timeout_s=5).body)
        http.close()
    assert len(set(ports)) == 1  # three requests, one connection
    assert later != ports[0]


def test_a_cancelled_request_closes_its_connection_and_the_server_stops():
    app = local_app(ServeOptions(api_key_env=""), FakeInfiller(0.1))  # 4 steps of 0.1 s
    registry = app.state.parafill.metrics.registry

    def cancelled() -> float:
        return registry.get_sample_value("parafill_cancelled_total") or 0.0

    with serving(app) as url:
        client = RemoteInfiller(url)
        t0 = time.perf_counter()
        with pytest.raises(InfillCancelled):
            client.infill(request("never"), should_stop=lambda: time.perf_counter() - t0 > 0.15)
        assert time.perf_counter() - t0 < 0.3  # not the whole 0.4 s fill
        for _ in range(100):  # the server sees the client go away and stops between steps
            if cancelled() >= 1:
                break
            time.sleep(0.02)
        assert cancelled() >= 1
        assert client.infill(request("after"))[0].fills == ["after"]  # a new connection
        client.close()
    assert client.status()["cancelled"] == 1


def test_errors_say_what_went_wrong(monkeypatch):
    client = RemoteInfiller(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(RemoteUnavailable, match="cannot reach"):
        client.infill(request("x"))
    with pytest.raises(RemoteUnavailable, match="cannot reach"):
        client.probe()
    assert client.status()["errors"] == 1 and "cannot reach" in client.status()["error"]

    monkeypatch.setenv(TOKEN_ENV, "sesame")
    app = local_app(ServeOptions(api_key_env=TOKEN_ENV), FakeInfiller(0.2))
    with serving(app) as url:
        without_key = RemoteInfiller(url)
        with pytest.raises(RemoteError, match="401.*remote.apiKeyEnv"):
            without_key.infill(request("x"))
        slow = RemoteInfiller(url, api_key="sesame", timeout_s=0.2)  # the fill takes 0.8 s
        with pytest.raises(RemoteError, match="did not answer within 200 ms"):
            slow.infill(request("x"))
        keyed = RemoteInfiller(url, api_key="sesame")
        assert keyed.infill(request("opened"))[0].fills == ["opened"]
        for c in (without_key, slow, keyed):
            c.close()


class Forwarder(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP proxy for the test: forwards every request to `target` (host, port) and
    records the request lines it was sent."""

    target: ClassVar[tuple[str, int]] = ("127.0.0.1", 0)
    seen: ClassVar[list[str]] = []

    def forward(self) -> None:
        self.seen.append(self.requestline)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        conn = http.client.HTTPConnection(*self.target, timeout=10)
        path = "/" + self.path.split("/", 3)[3]  # absolute-form target: http://host/path
        conn.request(self.command, path, body or None, dict(self.headers))
        answer = conn.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = forward

    def log_message(self, *args) -> None:
        pass


def test_plain_http_goes_through_the_proxy_of_the_environment(monkeypatch):
    # reached under a name that is not loopback and without a token: a name it allows (#24)
    app = local_app(ServeOptions(api_key_env="", allowed_hosts=("model.test",)), FakeInfiller())
    with serving(app) as url:
        Forwarder.target = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forwarder)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
        try:
            client = RemoteInfiller("http://model.test:9")  # resolved by the proxy only
            assert client.infill(request("proxied"))[0].fills == ["proxied"]
            client.close()
            local = RemoteInfiller(url)  # this machine: never through the proxy
            assert local.infill(request("direct"))[0].fills == ["direct"]
            local.close()
        finally:
            proxy.shutdown()
    assert Forwarder.seen == ["POST http://model.test:9/v1/infill HTTP/1.1"]


def test_the_remote_backend_needs_only_the_standard_library():
    """An editor's language server with `backend: remote` needs no extra: loading the remote
    backend (and the language server's engine) imports none of the serve extra's packages."""
    import subprocess
    import sys

    code = (
        "import sys; import lsp_server.engine, model.backends.remote; "
        "extra = [m for m in ('httpx', 'fastapi', 'ray', 'uvicorn', 'starlette') if m in sys.modules]; "
        "print(extra); sys.exit(1 if extra else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
