"""An Infiller that calls a model server over HTTP, and one that falls back to a local model
while the server cannot be reached.

`RemoteInfiller(url, api=...)`: `api="parafill"` sends the request as it is to a Parafill model
server's native `POST /v1/infill` (model/interface.py `request_to_json`: several holes, stop
rules, schedule, deadline); `api="fim"` speaks to any `POST /v1/fim/completions` provider
(`parafill serve-model`, Mercury Coder): one hole as prefix/suffix, its budget as `max_tokens`, a
single-line hole's end as the stop sequence "\\n"; the provider's fill is then checked against the
hole's stop rules here (model/codetext.py) to say why it ended.

The HTTP is `Connections`: HTTP/1.1 on the standard library's http.client, run in the calling
thread on a connection kept alive for that thread (proxies from the environment, as `http_proxy`,
`https_proxy` and `no_proxy` say). `should_stop` is polled every few milliseconds while the answer
is awaited: when it fires the connection is closed (the server sees the client go away and stops
the work) and InfillCancelled is raised. A request used to go through httpx's async client on an
event-loop thread of its own; the two thread hand-offs and the async stack cost 1.6-2.6 ms a
request more on the 2-core machine (bench/serve_added_latency.py, docs/benchmarks.md). Errors are one clear line: RemoteUnavailable
when the server cannot be reached (a connection refused or timed out), RemoteError for everything
else (its HTTP status and message, a timeout, an answer that is not what was asked). The API key
is sent as a bearer token and never logged or shown.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import selectors
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from model.interface import (
    Hole,
    InfillCancelled,
    Infiller,
    InfillRequest,
    InfillResult,
    never,
    request_to_json,
    result_from_json,
)

log = logging.getLogger("parafill.remote")
APIS = ("parafill", "fim")
POLL_S = 0.005  # how often should_stop is asked while a request is out
CONNECT_TIMEOUT_S = 2.0
LATENCY_WINDOW = 200
# a kept-alive connection that failed this way before any answer was closed by the server while
# idle: the request is sent again, once, on a new connection
STALE = (
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    http.client.RemoteDisconnected,
)


class RemoteError(RuntimeError):
    """The model server answered with an error, too late, or not in the expected shape."""


class RemoteUnavailable(RemoteError):
    """The model server cannot be reached (connection refused, reset, or timed out)."""


@dataclass
class Reply:
    """An HTTP answer: its status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connections:
    """HTTP/1.1 requests to one server (`base_url`: scheme, host, port and a path prefix), each
    in its calling thread on a connection kept alive for that thread. A proxy from the
    environment is used as urllib would (`http_proxy` / `https_proxy`, not for `no_proxy`
    hosts, nor for this machine): plain HTTP through it, HTTPS tunnelled with CONNECT."""

    def __init__(self, base_url: str, headers: dict[str, str], connect_timeout_s: float):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = dict(headers)
        self.connect_timeout_s = connect_timeout_s
        self.proxy: urllib.parse.SplitResult | None = None
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and not _loopback(self.host) and not urllib.request.proxy_bypass(self.host):
            self.proxy = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            if self.proxy.scheme != "http" or not self.proxy.hostname:
                raise ValueError(f"only http:// proxies are supported, got {proxy!r}")
            if not self.https:  # plain HTTP goes to the proxy, with its credentials
                self.headers.update(self._proxy_auth())
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout_s: float = 10.0,
        should_stop: Callable[[], bool] = never,
    ) -> Reply:
        """Send a request and wait for its answer (at most `timeout_s`), asking `should_stop`
        every POLL_S: True closes the connection and raises InfillCancelled. RemoteUnavailable
        when no connection can be made, TimeoutError past `timeout_s`, OSError or
        http.client.HTTPException for a connection that fails while the request is out."""
        deadline = time.monotonic() + timeout_s
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
                conn.request(method, self._target(path), body=body, headers=headers)
                self._wait(conn, deadline, should_stop)
                response = conn.getresponse()
                data = response.read()
            except STALE:
                self._drop(conn)
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self._drop(conn)
                raise
            if response.will_close:
                self._drop(conn)
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()

    def _target(self, path: str) -> str:
        if self.proxy is not None and not self.https:  # plain HTTP through a proxy: the full URL
            return self.base_url + path
        return self.prefix + path

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it was open already; one the server has closed
        while it was idle (readable: the server's end of the stream) is replaced."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None and not _readable(conn.sock, 0):
            return conn, True
        if conn is not None:
            self._drop(conn)
        conn = self._new()
        try:
            conn.connect()
        except OSError as exc:  # refused, unresolved, timed out, TLS refused
            conn.close()
            raise RemoteUnavailable(
                f"cannot reach the model server at {self.base_url}: {exc}"
            ) from None
        self._local.conn = conn
        with self._lock:
            self._open.add(conn)
        return conn, False

    def _new(self) -> http.client.HTTPConnection:
        host, port, timeout = self.host, self.port, self.connect_timeout_s
        if self.proxy is not None:
            host, port = self.proxy.hostname or "", self.proxy.port or 80
        if self.https:
            context = ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=context
            )
            if self.proxy is not None:
                conn.set_tunnel(self.host, self.port, headers=self._proxy_auth())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        return conn

    def _proxy_auth(self) -> dict[str, str]:
        if self.proxy is None or self.proxy.username is None:
            return {}
        user = urllib.parse.unquote(self.proxy.username)
        password = urllib.parse.unquote(self.proxy.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Proxy-Authorization": f"Basic {token}"}

    def _wait(
        self, conn: http.client.HTTPConnection, deadline: float, should_stop: Callable[[], bool]
    ) -> None:
        """Until the answer starts to arrive: InfillCancelled once `should_stop()`,
        TimeoutError at the deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer in time")
            if _readable(conn.sock, min(POLL_S, left)):
                return
            if should_stop():
                raise InfillCancelled()

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            self._open.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None


def _loopback(host: str) -> bool:
    """Whether `host` is this machine (never asked through a proxy). model/serve/options.py
    has the same test; model/ outside model/serve does not import the server's package."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Whether `sock` has something to read (data, or the other end closed) within `timeout`."""
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(timeout))


class RemoteInfiller:
    """Fills holes by asking a model server (see the module docstring)."""

    device = "remote"
    precision = None

    def __init__(
        self,
        url: str,
        api: str = "parafill",
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 10.0,
    ):
        if api not in APIS:
            raise ValueError(f"unknown remote api {api!r}; expected one of {APIS}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the model server's URL must start with http:// or https://: {url!r}")
        self.url, self.api, self.model = url.rstrip("/"), api, model
        self.timeout_s = timeout_s
        self.name = f"remote {api} {self.url}" + (f" ({model})" if model else "")
        headers = {"Accept": "application/json", "User-Agent": "parafill"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = Connections(self.url, headers, min(timeout_s, CONNECT_TIMEOUT_S))
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.requests = self.errors = self.cancelled = 0
        self.error: str | None = None  # the last failure, None once a request succeeds
        # the last answer's times (ms): round_trip_ms here, and the server's queued_ms and
        # model_ms where it reports them (the native API); lsp_server/engine.py logs them
        self.last_timing: dict[str, float] = {}
        self.lock = threading.Lock()

    # ---- the Infiller interface ----------------------------------------------------------
    def infill(
        self,
        req: InfillRequest,
        should_stop: Callable[[], bool] = never,
        late: Callable[[], bool] | None = None,
    ) -> list[InfillResult]:
        """Ask the server. `late` (a caller's deadline test) cannot travel: the request's own
        `deadline` does, in the native API (clocks in step); the fim API has no deadline."""
        if self.api == "fim":
            path, body = "/v1/fim/completions", self._fim_body(req)
        else:
            path, body = "/v1/infill", request_to_json(req)
        t0 = time.perf_counter()
        try:
            data = self._post(path, body, should_stop)
        except InfillCancelled:  # the connection was closed: the server stops the work
            with self.lock:
                self.cancelled += 1
            raise
        except RemoteError as exc:
            with self.lock:
                self.errors += 1
                self.error = str(exc)
            raise
        elapsed_ms = (time.perf_counter() - t0) * 1000
        with self.lock:
            self.requests += 1
            self.error = None
            self.latencies_ms.append(elapsed_ms)
        timing = data.get("timing") if isinstance(data, dict) else None
        self.last_timing = {"round_trip_ms": round(elapsed_ms, 2)}
        if isinstance(timing, dict):
            self.last_timing.update(
                {k: float(v) for k, v in timing.items() if isinstance(v, (int, float))}
            )
        try:
            return self._fim_results(req, data) if self.api == "fim" else self._results(data)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RemoteError(f"{self.url}{path} answered in an unexpected shape: {exc}") from None

    def count_tokens(self, text: str) -> int:  # a rough count; the server has the tokenizer
        return max(1, len(text) // 4)

    def probe(self, timeout_s: float = 1.0) -> None:
        """Whether the server answers at all (GET /health); RemoteUnavailable if not."""
        try:
            reply = self.http.request("GET", "/health", timeout_s=timeout_s)
        except RemoteUnavailable:
            raise
        except (OSError, http.client.HTTPException) as exc:  # a timeout, a reset
            raise RemoteUnavailable(
                f"the model server at {self.url} did not answer: {type(exc).__name__}"
            ) from None
        if reply.status >= 400:
            raise RemoteError(_message(self.url + "/health", reply))

    def status(self) -> dict[str, Any]:
        with self.lock:
            data = sorted(self.latencies_ms)
            errors, requests, cancelled, error = (
                self.errors,
                self.requests,
                self.cancelled,
                self.error,
            )

        def pct(q: float) -> float | None:
            return round(data[min(len(data) - 1, int(q * len(data)))], 1) if data else None

        return {
            "kind": "remote",
            "url": self.url,
            "api": self.api,
            "model": self.model,
            "latencyMs": {"p50": pct(0.5), "p95": pct(0.95), "n": len(data)},
            "requests": requests,
            "errors": errors,
            "cancelled": cancelled,
            "error": error,
        }

    def close(self) -> None:
        self.http.close()

    # ---- HTTP ------------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], should_stop: Callable[[], bool]) -> Any:
        url = self.url + path
        payload = json.dumps(body, separators=(",", ":")).encode()
        try:
            reply = self.http.request("POST", path, payload, self.timeout_s, should_stop)
        except TimeoutError:
            raise RemoteError(
                f"the model server at {self.url} did not answer within "
                f"{self.timeout_s * 1000:.0f} ms"
            ) from None
        except (OSError, http.client.HTTPException) as exc:  # reset, protocol errors
            raise RemoteUnavailable(
                f"the connection to the model server at {self.url} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if reply.status >= 400:
            raise RemoteError(_message(url, reply))
        try:
            return reply.json()
        except ValueError:
            raise RemoteError(f"{url} answered with something that is not JSON") from None

    # ---- the two APIs ------------------------------------------------------------------------
    def _results(self, data: Any) -> list[InfillResult]:
        return [result_from_json(r) for r in data["results"]]

    def _fim_body(self, req: InfillRequest) -> dict[str, Any]:
        holes = req.holes
        if len(holes) != 1:
            raise ValueError(
                f"the fim API fills one hole at a time; this request has {len(holes)} "
                "(use the parafill API for several)"
            )
        i = next(k for k, s in enumerate(req.segments) if isinstance(s, Hole))
        hole = holes[0]
        body: dict[str, Any] = {
            "prompt": "".join(s for s in req.segments[:i] if isinstance(s, str)),
            "suffix": "".join(s for s in req.segments[i + 1 :] if isinstance(s, str)),
            "max_tokens": hole.max_tokens,
            "temperature": req.temperature,
            "n": max(1, req.candidates),
            "stream": False,
        }
        if self.model:
            body["model"] = self.model
        if req.seed is not None:
            body["seed"] = req.seed
        single = hole.single_line or (hole.stop is not None and hole.stop.single_line)
        if single or (hole.stop is not None and hole.stop.max_lines == 1):
            body["stop"] = ["\n"]
        return body

    def _fim_results(self, req: InfillRequest, data: Any) -> list[InfillResult]:
        from model.codetext import end_reason

        hole = req.holes[0]
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        usage = data.get("usage") or {}
        per_choice = int(usage.get("completion_tokens", 0)) // max(1, len(choices))
        out = []
        for rank, choice in enumerate(choices):
            text = choice["text"]
            if not isinstance(text, str):
                raise TypeError("a choice's text is not a string")
            why = "budget" if choice.get("finish_reason") == "length" else "pad"
            if hole.stop is not None:
                why = end_reason(text, hole.stop, req.language or "python", False) or why
            out.append(
                InfillResult(
                    fills=[text],
                    score=-float(rank),  # the provider's order
                    steps_used=0,
                    tokens=per_choice or self.count_tokens(text),
                    ended_by=[why],
                )
            )
        return out


def _message(url: str, r: Reply) -> str:
    try:
        err = r.json().get("error")
        text = err.get("message") if isinstance(err, dict) else err or r.json().get("detail")
    except (ValueError, AttributeError):
        text = r.body[:200].decode(errors="replace")
    hint = ""
    if r.status == 401:
        hint = " (set remote.apiKeyEnv to the name of the environment variable with the token)"
    elif r.status == 429:
        hint = f" (busy: retry after {r.headers.get('retry-after', '?')} s)"
    return f"{url} answered {r.status}: {text}{hint}"


class FallbackInfiller:
    """Asks `primary` (a RemoteInfiller) and, while it cannot be reached, a local model that
    `load_fallback` loads the first time it is needed; the remote is tried again `retry_s` after
    a failure. `notify` is told once when the server cannot be reached and once when it is back
    (the language server shows it); other errors go to the caller as they are."""

    def __init__(
        self,
        primary: RemoteInfiller,
        load_fallback: Callable[[], Infiller] | None = None,
        notify: Callable[[str], None] | None = None,
        retry_s: float = 10.0,
    ):
        self.primary = primary
        self.load_fallback = load_fallback
        self.notify = notify or (lambda message: None)
        self.retry_s = retry_s
        self.fallback: Infiller | None = None
        self.down_until = 0.0  # monotonic time before which the remote is not asked
        self.using_fallback = False
        self.reported = False

    @property
    def name(self) -> str:
        return self.primary.name

    def __getattr__(self, attr: str):  # device, count_tokens, ...: the remote's
        if attr == "primary":
            raise AttributeError(attr)
        return getattr(self.primary, attr)

    def check(self, timeout_s: float = 1.0) -> None:
        """Probe the server now (at load): an unreachable one is reported and the fallback
        loaded ahead of the first request."""
        try:
            self.primary.probe(timeout_s)
        except RemoteUnavailable as exc:
            self._down(exc)
            if self.load_fallback is None:
                raise
            self._local()
        except RemoteError as exc:  # it answers: the first request will say what is wrong
            log.warning("%s", exc)

    def _down(self, exc: RemoteError) -> None:
        self.down_until = time.monotonic() + self.retry_s
        with self.primary.lock:
            self.primary.error = str(exc)
        if not self.reported:
            self.reported = True
            also = "; using the built-in model" if self.load_fallback is not None else ""
            self.notify(f"parafill: {exc}{also}")

    def _local(self) -> Infiller | None:
        if self.fallback is None and self.load_fallback is not None:
            self.fallback = self.load_fallback()
        return self.fallback

    def infill(self, req, should_stop=never, late=None) -> list[InfillResult]:
        if self.load_fallback is not None and time.monotonic() < self.down_until:
            return self._on_fallback(req, should_stop, late)
        try:
            results = self.primary.infill(req, should_stop, late)
        except RemoteUnavailable as exc:
            self._down(exc)
            if self.load_fallback is None:
                raise
            return self._on_fallback(req, should_stop, late)
        if self.reported:
            self.reported = False
            self.notify(f"parafill: the model server at {self.primary.url} answers again")
        self.using_fallback = False
        return results

    def _on_fallback(self, req, should_stop, late) -> list[InfillResult]:
        local = self._local()
        assert local is not None
        self.using_fallback = True
        return local.infill(req, should_stop=should_stop, late=late)

    def status(self) -> dict[str, Any]:
        out = self.primary.status()
        out["fallback"] = self.using_fallback
        out["fallbackModel"] = getattr(self.fallback, "name", None)
        return out
