"""Batches of requests for the model server: what one batch is, how requests are grouped
(hole-length buckets), and `infill_batch`, the ONE function that runs a batch on an Infiller.

`infill_batch` hands a batch of two or more requests to the infiller's batched denoising loop
where it has one (`BuiltinInfiller.infill_batch`: the contexts encoded together, one network
call per step for every request still going, a request that is done leaving the batch), and
runs them one after another otherwise (another backend, or a batch of one: the single-request
path). A request whose client went away, or whose time budget on the model is spent
(`BatchItem.budget_s` from when its run began: then `expired`), is skipped before it starts and leaves the batch between denoising steps while it
runs (`BatchItem.should_stop`, which also lets the server run cheaper waiting requests there:
`BatchItem.pause`, model/serve/interleave.py). Each request's steps (`BatchItem.on_step`) and
its outcome (`BatchItem.on_outcome`) are handed back from the model thread as they happen, so its
client can be streamed the canvas live and answered as soon as its request is done, before the
rest of the batch.

`LocalBatcher` groups requests without Ray (one process, tests of the HTTP surface, `--no-ray`);
under Ray Serve, `model/serve/deployment.py` groups them with `@serve.batch`, one queue per bucket.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from model.interface import InfillCancelled, Infiller, InfillRequest, InfillResult

# holes of similar length denoise together: the longest hole of a request picks its bucket
BUCKETS = (("line", 32), ("block", 128), ("long", None))

Outcome = list[InfillResult] | Exception  # a request's results, or what it raised


def bucket_of(req: InfillRequest) -> str:
    """The bucket of a request: by its longest hole's budget (tokens)."""
    longest = max((h.max_tokens for h in req.holes), default=0)
    for name, limit in BUCKETS:
        if limit is None or longest <= limit:
            return name
    return BUCKETS[-1][0]


# (step, canvas): after each denoising step, each row's holes so far (masks shown)
StepView = Callable[[int, list[list[str]]], None]


@dataclass
class BatchItem:
    """One request in a batch, with its cancellation (`stop`: set when its client disconnected),
    its time budget on the model (`budget_s` from `started`; `expired` once it is spent), timings
    (perf_counter seconds) and callbacks, called from the model thread: `on_step` after each
    denoising step (where the infiller can: `live_steps`), `on_outcome` once its outcome is known
    (it may come before the batch ends), `pause` between its steps (the server's interleaving)."""

    request: InfillRequest
    stop: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.perf_counter)
    budget_s: float | None = None
    expired: bool = False
    started: float | None = None
    finished: float | None = None
    on_step: StepView | None = None
    on_outcome: Callable[[Outcome], None] | None = None
    pause: Callable[[BatchItem], None] | None = None

    def should_stop(self) -> bool:
        """Asked between denoising steps: the infiller stops this request when True."""
        if self.pause is not None:
            self.pause(self)
        started, budget = self.started, self.budget_s
        if budget is not None and started is not None and time.perf_counter() - started >= budget:
            self.expired = True
        return self.expired or self.stop.is_set()


def cost(req: InfillRequest) -> int:
    """A request's size for the model: its candidates times its holes' token budgets."""
    return max(1, int(req.candidates)) * sum(h.max_tokens for h in req.holes)


def live_steps(infiller: Infiller) -> bool:
    """Whether `infiller.infill` takes an `on_step` callback (the built-in model does)."""
    try:
        return "on_step" in inspect.signature(infiller.infill).parameters
    except (TypeError, ValueError):
        return False


def infill_batch(infiller: Infiller, requests: Sequence[BatchItem]) -> list[Outcome]:
    """Run one batch; one outcome per request, in order (its results, or the exception it
    raised: InfillCancelled for a client that went away or a spent time budget, ValueError for a
    request the model refuses). Two or more requests go to the infiller's batched loop where it has one
    (`infill_batch`); otherwise they run one after another."""
    out: list[Outcome | None] = [None] * len(requests)

    def done(k: int, outcome: Outcome) -> None:
        item = requests[k]
        item.finished = time.perf_counter()
        out[k] = outcome
        if item.on_outcome is not None:
            item.on_outcome(outcome)

    waiting = []
    for k, item in enumerate(requests):
        if item.should_stop():  # its client disconnected while it waited
            done(k, InfillCancelled())
        else:
            waiting.append(k)
    batched = getattr(infiller, "infill_batch", None)
    if batched is not None and len(waiting) > 1:
        now = time.perf_counter()
        items = [requests[k] for k in waiting]
        for item in items:
            item.started = now
        try:
            batched(
                [item.request for item in items],
                [item.should_stop for item in items],
                on_steps=[item.on_step for item in items],
                on_done=lambda j, outcome: done(waiting[j], outcome),
            )
        except Exception as exc:  # noqa: BLE001 - the batch failed as a whole
            for k in waiting:
                if out[k] is None:
                    done(k, exc)
        return out  # type: ignore[return-value]
    steps = live_steps(infiller)
    for k in waiting:
        item = requests[k]
        if item.should_stop():  # its client went away while the one before it ran
            done(k, InfillCancelled())
            continue
        item.started = time.perf_counter()
        extra = {"on_step": item.on_step} if steps and item.on_step is not None else {}
        try:
            outcome: Outcome = infiller.infill(item.request, should_stop=item.should_stop, **extra)
        except Exception as exc:  # noqa: BLE001 - one request's failure is its own
            outcome = exc
        done(k, outcome)
    return out  # type: ignore[return-value]


RunBatch = Callable[[list[BatchItem]], Awaitable[list[Outcome]]]


def no_wait() -> float:
    """LocalBatcher's default wait: a batch starts with what has come."""
    return 0.0


class LocalBatcher:
    """Groups requests by bucket without Ray: a batch starts `wait_s()` after its first request
    (asked when the batch forms: `ServerState.batch_wait_s`, none for a request alone) or once it
    has `max_batch_size` requests, and `run_batch` runs it."""

    def __init__(
        self, run_batch: RunBatch, max_batch_size: int = 8, wait_s: Callable[[], float] = no_wait
    ):
        self.run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self.wait_s = wait_s
        self._pending: dict[str, list[tuple[BatchItem, asyncio.Future]]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._running: set[asyncio.Task] = set()

    async def submit(self, item: BatchItem) -> Outcome:
        bucket = bucket_of(item.request)
        fut = asyncio.get_running_loop().create_future()
        self._pending.setdefault(bucket, []).append((item, fut))
        task = self._tasks.get(bucket)
        if task is None or task.done():
            self._tasks[bucket] = asyncio.create_task(self._drain(bucket))
        return await fut

    async def _drain(self, bucket: str) -> None:
        """Form batches as requests come and hand each on at once (as Ray Serve does with
        `max_concurrent_batches`): `run_batch` (ServerState's) queues what waits for the model
        and regroups it there, where the model thread also takes cheaper requests between a
        running one's steps."""
        queue = self._pending[bucket]
        while queue:
            wait = self.wait_s() if len(queue) < self.max_batch_size else 0.0
            if wait > 0:
                await asyncio.sleep(wait)  # let a batch gather
            batch = queue[: self.max_batch_size]
            del queue[: self.max_batch_size]
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[BatchItem, asyncio.Future]]) -> None:
        try:
            outcomes = await self.run_batch([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the batch failed as a whole
            outcomes = [exc] * len(batch)
        for (_, fut), outcome in zip(batch, outcomes):
            if not fut.done():  # a caller that went away has cancelled its future
                fut.set_result(outcome)
