"""Batches of requests for the model server: what one batch is, how requests are grouped
(hole-length buckets), and `infill_batch`, the ONE function that runs a batch on an Infiller.

`infill_batch` runs the batch's requests one after another for now; the batched denoising loop
(context encodes batched with padding, span steps batched, a finished request leaving the batch)
replaces its body, and nothing else here changes. A request whose client went away is skipped
before it starts and stopped between denoising steps while it runs (`BatchItem.stop`).

`LocalBatcher` groups requests without Ray (one process, tests of the HTTP surface, `--no-ray`);
under Ray Serve, `model/serve/deployment.py` groups them with `@serve.batch`, one queue per bucket.
"""

from __future__ import annotations

import asyncio
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


@dataclass
class BatchItem:
    """One request in a batch, with its cancellation (set when its client disconnected) and
    timings (perf_counter seconds)."""

    request: InfillRequest
    stop: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None


def infill_batch(infiller: Infiller, requests: Sequence[BatchItem]) -> list[Outcome]:
    """Run one batch; one outcome per request, in order (its results, or the exception it
    raised: InfillCancelled for a client that went away, ValueError for a request the model
    refuses). For now the requests run one after another on `infiller`; the batched denoising
    loop will replace this body (one encode of the padded contexts, span steps over every
    request's holes at once, a request that finishes leaving the batch)."""
    out: list[Outcome] = []
    for item in requests:
        if item.stop.is_set():  # its client disconnected while it waited
            out.append(InfillCancelled())
            continue
        item.started = time.perf_counter()
        try:
            out.append(infiller.infill(item.request, should_stop=item.stop.is_set))
        except Exception as exc:  # noqa: BLE001 - one request's failure is its own
            out.append(exc)
        item.finished = time.perf_counter()
    return out


RunBatch = Callable[[list[BatchItem]], Awaitable[list[Outcome]]]


class LocalBatcher:
    """Groups requests by bucket without Ray: a batch starts `wait_s` after its first request or
    once it has `max_batch_size` requests, and `run_batch` runs it."""

    def __init__(self, run_batch: RunBatch, max_batch_size: int = 8, wait_s: float = 0.005):
        self.run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self.wait_s = wait_s
        self._pending: dict[str, list[tuple[BatchItem, asyncio.Future]]] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    async def submit(self, item: BatchItem) -> Outcome:
        bucket = bucket_of(item.request)
        fut = asyncio.get_running_loop().create_future()
        self._pending.setdefault(bucket, []).append((item, fut))
        task = self._tasks.get(bucket)
        if task is None or task.done():
            self._tasks[bucket] = asyncio.create_task(self._drain(bucket))
        return await fut

    async def _drain(self, bucket: str) -> None:
        queue = self._pending[bucket]
        while queue:
            if len(queue) < self.max_batch_size:
                await asyncio.sleep(self.wait_s)  # let a batch gather
            batch = queue[: self.max_batch_size]
            del queue[: self.max_batch_size]
            try:
                outcomes = await self.run_batch([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the batch failed as a whole
                outcomes = [exc] * len(batch)
            for (_, fut), outcome in zip(batch, outcomes):
                if not fut.done():  # a caller that went away has cancelled its future
                    fut.set_result(outcome)
