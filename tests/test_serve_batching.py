"""The model server's batch wait, without Ray (model/serve/app.py `ServerState.batch_wait_s`,
model/serve/batching.py `LocalBatcher`): a request alone starts at once instead of waiting the
batch window; requests in flight together still wait for each other and run as a batch.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from fake_infiller import FakeInfiller

from model.interface import Hole, InfillRequest, request_to_json
from model.serve.app import ServerState, local_app
from model.serve.metrics import Metrics
from model.serve.options import ServeOptions

WAIT_MS = 1000  # a batch window far longer than any request here takes


def body(expect: str) -> dict:
    return request_to_json(InfillRequest([f"# expect: {expect}\nx = ", Hole(8), "\n"]))


def test_batch_wait_only_while_others_are_in_flight():
    state = ServerState(FakeInfiller(), ServeOptions(batch_wait_ms=7), Metrics())
    for inflight, wait in ((0, 0.0), (1, 0.0), (2, 0.007), (5, 0.007)):
        state.inflight = inflight
        assert state.batch_wait_s() == wait


def test_a_request_alone_does_not_wait_the_batch_window():
    from fastapi.testclient import TestClient

    app = local_app(ServeOptions(api_key_env="", batch_wait_ms=WAIT_MS), FakeInfiller())
    with TestClient(app, base_url="http://127.0.0.1") as client:
        t0 = time.perf_counter()
        r = client.post("/v1/infill", json=body("alone"))
        elapsed = time.perf_counter() - t0
    assert r.status_code == 200 and r.json()["results"][0]["fills"] == ["alone"]
    assert r.json()["timing"]["queued_ms"] < WAIT_MS / 4
    assert elapsed < WAIT_MS / 1000 / 2


def test_requests_in_flight_together_still_form_a_batch():
    """Four at once: the first may start alone, the others wait for it and for each other (the
    batch window applies while others are in flight) and run as one batch; every answer is the
    one its request gets alone."""
    app = local_app(ServeOptions(api_key_env="", batch_wait_ms=50), FakeInfiller(0.05))
    state: ServerState = app.state.parafill
    words = ["one", "two", "three", "four"]

    async def together() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await asyncio.gather(*(client.post("/v1/infill", json=body(w)) for w in words))

    answers = asyncio.run(together())
    assert [r.json()["results"][0]["fills"] for r in answers] == [[w] for w in words]
    batches = state.metrics.registry.get_sample_value("parafill_batch_size_count")
    requests = state.metrics.registry.get_sample_value("parafill_batch_size_sum")
    assert requests == len(words) and batches < requests  # some ran in a batch of several
