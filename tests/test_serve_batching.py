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


class Timed(FakeInfiller):
    """A request costs `alone_s` by itself; a batch of n costs `batch_s(n)`."""

    def __init__(self, alone_s: float, batch_s):
        super().__init__()
        self.alone_s, self.batch_s = alone_s, batch_s

    def infill(self, req, should_stop=None, late=None):
        time.sleep(self.alone_s)
        return super().infill(req)

    def infill_batch(self, reqs, *args, **kwargs):
        time.sleep(self.batch_s(len(reqs)))
        return [super(Timed, self).infill(r) for r in reqs]


def test_the_batch_size_is_chosen_by_measuring_it():
    """A batch is never slower than its requests one at a time (issue #22 item 7): where a
    batch of n costs more than n requests alone, no batching; where it costs less, the
    ceiling; in between, the largest size that pays."""
    from model.serve.calibrate import batch_size

    slower = batch_size(Timed(0.01, lambda n: 0.03 * n), 8)
    assert slower.max_batch_size == 1 and slower.measured
    assert set(slower.timings) == {8, 4, 2}
    faster = batch_size(Timed(0.02, lambda n: 0.005 * n), 8)
    assert faster.max_batch_size == 8 and list(faster.timings) == [8]
    # a batch pays up to 4 requests (a fixed 0.06 s, then 0.05 s a request beyond 4)
    knee = batch_size(Timed(0.02, lambda n: 0.06 + 0.05 * max(0, n - 4)), 8)
    assert knee.max_batch_size == 4
    assert batch_size(FakeInfiller(), 8).max_batch_size == 8  # no batched loop: one by one


def test_a_replica_batches_at_most_the_size_it_chose():
    app = local_app(ServeOptions(api_key_env=""), Timed(0.01, lambda n: 0.03 * n))
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://127.0.0.1") as client:
        chosen = client.get("/health").json()["batching"]
    assert chosen["max_batch_size"] == 1 and chosen["measured"]
    assert app.state.parafill.max_batch_size == 1


def test_batching_stops_while_batches_cost_more_than_requests_alone():
    """The pacer batches while a batched request costs no more than one alone, and stops when
    the runs say otherwise (requests a kept encode serves are cheap alone); it tries the other
    way now and then, so a change back is seen."""
    from model.serve.calibrate import EXPLORE_EVERY, BatchChoice, BatchPacer

    pacer = BatchPacer(8, BatchChoice(8, True, {8: [0.4, 0.3]}))  # batching paid at start
    assert pacer.limit(16) == 8
    for _ in range(20):
        pacer.ran(8, 8 * 0.05)  # 50 ms a request in a batch
        pacer.ran(1, 0.01)  # 10 ms alone
    limits = [pacer.limit(16) for _ in range(2 * EXPLORE_EVERY)]
    assert limits.count(1) == 2 * EXPLORE_EVERY - 2 and limits.count(8) == 2
    assert pacer.limit(1) == 8  # one waiting: nothing to decide
    for _ in range(8):
        pacer.ran(8, 8 * 0.004)
    assert pacer.batching_pays() and pacer.limit(16) == 8
    assert abs(pacer.to_json()["ms_per_request"]["alone"] - 10.0) < 0.1
