"""An Infiller that calls a model server over HTTP (httpx), and one that falls back to a local
model while the server cannot be reached.

`RemoteInfiller(url, api=...)`: `api="parafill"` sends the request as it is to a Parafill model
server's native `POST /v1/infill` (model/interface.py `request_to_json`: several holes, stop
rules, schedule, deadline); `api="fim"` speaks to any `POST /v1/fim/completions` provider
(`parafill serve-model`, Mercury Coder): one hole as prefix/suffix, its budget as `max_tokens`, a
single-line hole's end as the stop sequence "\\n"; the provider's fill is then checked against the
hole's stop rules here (model/codetext.py) to say why it ended.

`should_stop` is polled every few milliseconds while the request is out: when it fires the HTTP
request is closed (the server sees the client go away and stops the work) and InfillCancelled is
raised. Errors are one clear line: RemoteUnavailable when the server cannot be reached (a
connection refused or timed out), RemoteError for everything else (its HTTP status and message,
a timeout, an answer that is not what was asked). The API key is sent as a bearer token and never
logged or shown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx

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


class RemoteError(RuntimeError):
    """The model server answered with an error, too late, or not in the expected shape."""


class RemoteUnavailable(RemoteError):
    """The model server cannot be reached (connection refused, reset, or timed out)."""


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
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.requests = self.errors = self.cancelled = 0
        self.error: str | None = None  # the last failure, None once a request succeeds
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="parafill-remote", daemon=True).start()
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))

        async def make() -> httpx.AsyncClient:
            return httpx.AsyncClient(headers=headers, timeout=timeout)

        self._client = self._call(make())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

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
        fut = asyncio.run_coroutine_threadsafe(self._post(path, body), self._loop)
        while True:
            try:
                data = fut.result(timeout=POLL_S)
                break
            except concurrent.futures.TimeoutError:
                if should_stop():
                    fut.cancel()  # closes the HTTP request: the server stops the work
                    with self.lock:
                        self.cancelled += 1
                    raise InfillCancelled() from None
            except RemoteError as exc:
                with self.lock:
                    self.errors += 1
                    self.error = str(exc)
                raise
        with self.lock:
            self.requests += 1
            self.error = None
            self.latencies_ms.append((time.perf_counter() - t0) * 1000)
        try:
            return self._fim_results(req, data) if self.api == "fim" else self._results(data)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RemoteError(f"{self.url}{path} answered in an unexpected shape: {exc}") from None

    def count_tokens(self, text: str) -> int:  # a rough count; the server has the tokenizer
        return max(1, len(text) // 4)

    def probe(self, timeout_s: float = 1.0) -> None:
        """Whether the server answers at all (GET /health); RemoteUnavailable if not."""
        fut = asyncio.run_coroutine_threadsafe(self._get("/health", timeout_s), self._loop)
        fut.result()

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
        async def shut() -> None:
            await self._client.aclose()

        try:
            self._call(shut())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)

    # ---- HTTP ------------------------------------------------------------------------------
    async def _get(self, path: str, timeout_s: float) -> None:
        try:
            r = await self._client.get(self.url + path, timeout=timeout_s)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            raise RemoteUnavailable(f"cannot reach the model server at {self.url}: {exc}") from None
        except httpx.HTTPError as exc:
            raise RemoteUnavailable(
                f"the model server at {self.url} did not answer: {type(exc).__name__}"
            ) from None
        if r.status_code >= 400:
            raise RemoteError(_message(self.url + path, r))

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        url = self.url + path
        try:
            r = await self._client.post(url, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise RemoteUnavailable(f"cannot reach the model server at {self.url}: {exc}") from None
        except httpx.TimeoutException:
            raise RemoteError(
                f"the model server at {self.url} did not answer within "
                f"{self.timeout_s * 1000:.0f} ms"
            ) from None
        except httpx.HTTPError as exc:  # reset, protocol errors
            raise RemoteUnavailable(
                f"the connection to the model server at {self.url} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if r.status_code >= 400:
            raise RemoteError(_message(url, r))
        try:
            return r.json()
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


def _message(url: str, r: httpx.Response) -> str:
    try:
        err = r.json().get("error")
        text = err.get("message") if isinstance(err, dict) else err or r.json().get("detail")
    except (ValueError, AttributeError):
        text = r.text[:200]
    hint = ""
    if r.status_code == 401:
        hint = " (set remote.apiKeyEnv to the name of the environment variable with the token)"
    elif r.status_code == 429:
        hint = f" (busy: retry after {r.headers.get('retry-after', '?')} s)"
    return f"{url} answered {r.status_code}: {text}{hint}"


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
