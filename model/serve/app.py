"""The model server's FastAPI application: endpoints, auth, limits, the bounded queue, errors.

`create_app(state)` builds the app over a `ServerState` (model/serve/state.py: the Infiller, the
options, the metrics and how a request reaches a batch). Under Ray Serve each replica builds one
(model/serve/deployment.py, batches by `@serve.batch`); without Ray, `local_app(options)` builds
one with `LocalBatcher` (one process: tests of the HTTP surface, `parafill serve-model --no-ray`).

Endpoints: `POST /v1/fim/completions` (Mercury-compatible, model/serve/fim.py), `POST /v1/infill`
(the native request of model/interface.py, `request_from_json`), `GET /v1/models`, `GET /health`
(no auth) and `GET /metrics` (Prometheus). Errors are JSON, `{"error": {"message", "type",
"code"}}`, never a traceback: 400 malformed JSON (model/serve/bodies.py: also NaN, infinities,
deep nesting, lone surrogates), 401 a missing or wrong bearer token, 404 an unknown model, 408 a
request past its time budget (`request_seconds`), 413 a body over the limit, 415 a POST that is
not application/json and 421 a Host that is not this server's (model/serve/guard.py), 422 a
request the server cannot take (its message says why), 429 the queue is full (with
Retry-After), 500 the model failed. A stream's error comes as its last event before
`data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from model.interface import (
    InfillCancelled,
    Infiller,
    InfillResult,
    request_from_json,
    result_to_json,
)
from model.serve import bodies, fim
from model.serve.batching import BatchItem, LocalBatcher, Outcome, live_steps
from model.serve.guard import BrowserGuard
from model.serve.metrics import Metrics
from model.serve.options import (
    RequestError,
    ServeOptions,
    check_limits,
    check_options,
    load_model,
    typed,
)
from model.serve.state import ServerState, choose_batch

log = logging.getLogger("parafill.serve")
DISCONNECT_POLL_S = 0.05
# `stream` on /v1/infill sends the canvas after each step as the step happens, where the infiller
# takes a step callback (model/infill.py `on_step`); another backend's steps are sent once the run
# has ended, from the trajectory it records (want_trajectory), with "live": false
LIVE_STEPS = True


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        headers=None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers
        self.code = code

    def body(self) -> dict:
        code = self.code or self.status
        return {"error": {"message": self.message, "type": self.kind, "code": code}}


def local_app(options: ServeOptions, infiller: Infiller | None = None) -> FastAPI:
    """The app without Ray: one process, requests grouped by LocalBatcher."""
    check_options(options)
    infiller = infiller if infiller is not None else load_model(options)
    state = ServerState(
        infiller, options, Metrics(model=options.model_id), batch=choose_batch(infiller, options)
    )
    batcher = LocalBatcher(state.run_batch, state.max_batch_size, state.batch_wait_s)
    state.submit = batcher.submit
    return create_app(state)


def _retrieve(task: asyncio.Future) -> None:
    """A batch a request stopped waiting for (it was answered, or went away): its outcome is
    not needed, and its failure is the failure of each request (already answered)."""
    if not task.cancelled():
        task.exception()


def _error(status: int, message: str, kind: str, headers=None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


class _EndingStream(StreamingResponse):
    """A stream whose queue slot is given back when the response ends, even when its body never
    started (a client gone before the first byte): the body's own end may never run."""

    def __init__(self, content, end: Callable[[], None], **kwargs):
        super().__init__(content, **kwargs)
        self._end = end

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._end()


def step_event(step: int, canvas: list, live: bool) -> dict:
    """A streamed `/v1/infill` event: each row's holes after denoising step `step` (`live`:
    sent as the step happened, not replayed from the trajectory after the answer)."""
    return {"object": "infill.step", "step": step, "live": live, "canvas": canvas}


def create_app(state: ServerState) -> FastAPI:
    opts = state.options
    app = FastAPI(title="parafill model server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.parafill = state
    api_key = opts.api_key()
    if opts.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(opts.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
        )
    app.add_middleware(BrowserGuard, check_host=api_key is None, allowed_hosts=opts.allowed_hosts)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error")
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        ):
            raise ApiError(
                401,
                "a bearer token is required: send 'Authorization: Bearer <token>'",
                "authentication_error",
                {"WWW-Authenticate": "Bearer"},
            )

    async def read_json(request: Request) -> Any:
        try:
            body = await bodies.read(
                request.stream(), request.headers.get("content-length"), opts.max_body_bytes
            )
            return bodies.parse(body)
        except RequestError as exc:
            raise ApiError(exc.status, str(exc)) from None
        except ClientDisconnect:  # it left mid-body: nobody to answer
            raise ApiError(499, "the client went away") from None

    def admit() -> None:
        if state.inflight >= opts.max_queue:
            raise ApiError(
                429,
                f"the server is busy ({state.inflight} requests queued); retry later",
                "rate_limit_error",
                {"Retry-After": str(state.retry_after())},
            )
        state.inflight += 1
        state.metrics.queue_depth.set(state.inflight)

    def release() -> None:
        state.inflight -= 1
        state.metrics.queue_depth.set(state.inflight)

    async def watch(request: Request, item: BatchItem) -> None:
        while not item.stop.is_set():
            if await request.is_disconnected():
                item.stop.set()
                return
            await asyncio.sleep(DISCONNECT_POLL_S)

    async def run(request: Request, item: BatchItem) -> list[InfillResult]:
        """The request's results; a client that goes away (a disconnect, or Ray Serve cancelling
        its request) stops the work: skipped before it starts, stopped between steps."""
        assert state.submit is not None
        item.budget_s = opts.request_seconds
        watcher = asyncio.create_task(watch(request, item))
        # the outcome as soon as the request leaves its batch (model thread -> this loop), or
        # the batch's answer, whichever comes first
        loop = asyncio.get_running_loop()
        early: asyncio.Future = loop.create_future()

        def settle(outcome: Outcome) -> None:
            if not early.done():
                early.set_result(outcome)

        item.on_outcome = lambda outcome: loop.call_soon_threadsafe(settle, outcome)
        batch = asyncio.ensure_future(state.submit(item))
        batch.add_done_callback(_retrieve)
        try:
            await asyncio.wait([batch, early], return_when=asyncio.FIRST_COMPLETED)
            outcome = early.result() if early.done() else batch.result()
        except asyncio.CancelledError:
            item.stop.set()
            batch.cancel()  # its place in the queue, where it still waits
            state.metrics.cancelled.inc()
            raise
        finally:
            watcher.cancel()
        if isinstance(outcome, InfillCancelled) and item.expired:
            raise ApiError(
                408,
                f"the request ran past this server's time budget ({opts.request_seconds:g} s): "
                "ask for fewer tokens or candidates",
                "timeout_error",
            )
        if isinstance(outcome, InfillCancelled):
            state.metrics.cancelled.inc()
            raise ApiError(499, "the client went away")
        if isinstance(outcome, ValueError):
            raise ApiError(422, str(outcome))
        if isinstance(outcome, Exception):
            log.error("model failed: %s: %s", type(outcome).__name__, outcome)
            raise ApiError(
                500, f"the model failed: {type(outcome).__name__}: {outcome}", "server_error"
            )
        return outcome

    def observe(endpoint: str, status: int, t0: float) -> None:
        state.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
        state.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - t0)

    async def answered(endpoint: str, t0: float, work: Callable[[], Awaitable[Response]]):
        try:
            response = await work()
        except ApiError as exc:
            observe(endpoint, exc.status, t0)
            raise
        except asyncio.CancelledError:
            observe(endpoint, 499, t0)
            raise
        if not isinstance(response, StreamingResponse):
            observe(endpoint, response.status_code, t0)
        return response

    def sse(events: AsyncIterator[dict[str, Any]], endpoint: str, t0: float, item: BatchItem):
        status = 200
        ended = False

        def end() -> None:  # once: from the body's end, or the response's if the body never ran
            nonlocal ended
            if not ended:
                ended = True
                release()
                observe(endpoint, status, t0)

        async def body():
            nonlocal status
            try:
                async for event in events:
                    yield f"data: {json.dumps(event)}\n\n"
                yield "data: [DONE]\n\n"
            except ApiError as exc:  # after the headers: the error is the last event
                status = exc.status
                yield f"data: {json.dumps(exc.body())}\n\n"
                yield "data: [DONE]\n\n"
            except asyncio.CancelledError:
                item.stop.set()
                status = 499
                raise
            finally:
                end()

        return _EndingStream(body(), end, media_type="text/event-stream")

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": opts.model_id,
            "queue": state.inflight,
            "batching": {
                **(state.batch.to_json() if state.batch else {}),
                **state.pacer.to_json(),
            },
            "interleaved": state.interleaver.pauses,
            "uptimeSeconds": round(time.time() - state.started, 1),
        }

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {
            "object": "list",
            "data": [
                {
                    "id": opts.model_id,
                    "object": "model",
                    "created": int(state.started),
                    "owned_by": "parafill",
                    "backend": getattr(state.infiller, "name", None),
                    "max_tokens": opts.max_hole_tokens,
                    "max_request_tokens": opts.max_request_tokens,
                    "device": str(getattr(state.infiller, "device", "")),
                }
            ],
        }

    @app.get("/metrics")
    async def metrics(request: Request):
        authorize(request)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.post("/v1/fim/completions")
    async def fim_completions(request: Request):
        t0 = time.perf_counter()

        async def work():
            authorize(request)
            try:
                ask = fim.parse_fim(await read_json(request), opts)
                check_limits(ask.request, opts)
            except RequestError as exc:
                raise ApiError(exc.status, str(exc), code=exc.code) from None
            prompt = "".join(s for s in ask.request.segments if isinstance(s, str))
            item = BatchItem(ask.request)
            admit()
            if ask.stream:

                async def events():
                    results = await run(request, item)
                    ntok = await state.prompt_tokens(prompt)
                    for chunk in fim.stream_chunks(opts.model_id, results, ask, ntok):
                        yield chunk

                return sse(events(), "fim", t0, item)
            try:
                results = await run(request, item)
            finally:
                release()
            ntok = await state.prompt_tokens(prompt)
            return JSONResponse(fim.response(opts.model_id, results, ask, ntok))

        return await answered("fim", t0, work)

    @app.post("/v1/infill")
    async def infill(request: Request):
        t0 = time.perf_counter()

        async def work():
            authorize(request)
            body = await read_json(request)
            if not isinstance(body, dict):
                raise ApiError(422, "the body must be a JSON object (model/interface.py's request)")
            try:
                stream = typed(body, "stream", bool, False)
                req = request_from_json({k: v for k, v in body.items() if k != "stream"})
                check_limits(req, opts)
            except RequestError as exc:
                raise ApiError(exc.status, str(exc), code=exc.code) from None
            except (ValueError, TypeError) as exc:
                raise ApiError(422, str(exc)) from None
            wanted = req.want_trajectory
            live = stream and LIVE_STEPS and live_steps(state.infiller)
            item = BatchItem(replace(req, want_trajectory=True) if stream and not live else req)
            prompt = "".join(s for s in req.segments if isinstance(s, str))
            admit()

            async def answer(results: list[InfillResult]) -> dict[str, Any]:
                spent = (item.finished or 0) - (item.started or 0)
                ntok = await state.prompt_tokens(prompt)
                return {
                    "object": "infill",
                    "model": opts.model_id,
                    "created": int(time.time()),
                    "results": [
                        result_to_json(r if wanted else replace(r, trajectory=None))
                        for r in results
                    ],
                    "usage": fim.usage(ntok, results),
                    "timing": {
                        "queued_ms": round(
                            ((item.started or item.enqueued) - item.enqueued) * 1e3, 2
                        ),
                        "model_ms": round(spent * 1e3, 2),
                    },
                }

            if stream and live:
                steps: asyncio.Queue = asyncio.Queue()
                loop = asyncio.get_running_loop()
                item.on_step = lambda k, canvas: loop.call_soon_threadsafe(
                    steps.put_nowait, (k, canvas)
                )

                async def live_events():
                    task = asyncio.ensure_future(run(request, item))
                    try:
                        while True:
                            get = asyncio.ensure_future(steps.get())
                            await asyncio.wait([get, task], return_when=asyncio.FIRST_COMPLETED)
                            if not get.done():
                                get.cancel()
                                break
                            k, canvas = get.result()
                            yield step_event(k, canvas, live=True)
                        while not steps.empty():  # every step comes before the answer
                            k, canvas = steps.get_nowait()
                            yield step_event(k, canvas, live=True)
                        yield await answer(await task)
                    finally:
                        task.cancel()

                return sse(live_events(), "infill", t0, item)
            if stream:

                async def events():
                    results = await run(request, item)
                    steps = max((len(r.trajectory or []) for r in results), default=0)
                    for i in range(steps):
                        canvas = [
                            r.trajectory[i]
                            for r in results
                            if r.trajectory and i < len(r.trajectory)
                        ]
                        yield step_event(i + 1, canvas, live=False)
                    yield await answer(results)

                return sse(events(), "infill", t0, item)
            try:
                results = await run(request, item)
            finally:
                release()
            return JSONResponse(await answer(results))

        return await answered("infill", t0, work)

    return app
