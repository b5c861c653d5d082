"""What one model-server replica serves and how its model thread is shared: `ServerState` (the
Infiller, the options with the limits the model itself sets, the metrics, the bounded queue, the
batches run on the model thread, the interleaving of cheaper requests between a running one's
steps, model/serve/interleave.py, and the batch size chosen by measurement at start and kept
by measurement as requests run, model/serve/calibrate.py).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from model.interface import Infiller
from model.serve.batching import BatchItem, Outcome, bucket_of, infill_batch
from model.serve.calibrate import BatchChoice, BatchPacer, batch_size
from model.serve.interleave import Interleaver, one_bucket
from model.serve.metrics import Metrics
from model.serve.options import CPU_REQUEST_TOKENS, ServeOptions


def effective_options(infiller: Infiller, opts: ServeOptions) -> ServeOptions:
    """`opts` with the limits the model sets: a hole's tokens at most half its window
    (`max_len`, the built-in model's 512 tokens: 256), so that a request over it is refused
    before it is admitted, with the number that is enforced; and the automatic
    `max_request_tokens` for its device."""
    window = getattr(infiller, "max_len", None)
    if isinstance(window, int) and window > 1:
        opts = replace(opts, max_hole_tokens=min(opts.max_hole_tokens, window // 2))
    if not opts.max_request_tokens:
        cpu = str(getattr(infiller, "device", "cpu")).startswith("cpu")
        most = opts.max_candidates * opts.max_hole_tokens
        opts = replace(opts, max_request_tokens=min(most, CPU_REQUEST_TOKENS) if cpu else most)
    return opts


def choose_batch(infiller: Infiller, opts: ServeOptions) -> BatchChoice:
    if not opts.calibrate_batch:
        return BatchChoice(opts.max_batch_size, measured=False)
    return batch_size(infiller, opts.max_batch_size)


@dataclass
class ServerState:
    """What one replica serves: its Infiller, options, metrics, and `submit`, which hands a
    request to a batch (LocalBatcher's, or the Ray deployment's @serve.batch methods)."""

    infiller: Infiller
    options: ServeOptions
    metrics: Metrics
    submit: Callable[[BatchItem], Awaitable[Outcome]] | None = None
    batch: BatchChoice | None = None  # None: options.max_batch_size, not measured
    inflight: int = 0  # admitted and not yet answered (the bounded queue)
    mean_seconds: float = 0.5  # a request's recent model time (for Retry-After)
    started: float = field(default_factory=time.time)
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="parafill-model")
    )
    # requests handed to the model and not yet run, with the futures of their outcomes; the
    # model thread takes from it too (interleaving), so it is read and changed under `lock`
    waiting: list[tuple[BatchItem, asyncio.Future]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    draining: bool = False
    loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        self.options = effective_options(self.infiller, self.options)
        if self.batch is None:
            self.batch = BatchChoice(self.options.max_batch_size, measured=False)
        self.pacer = BatchPacer(self.max_batch_size, self.batch)
        self.interleaver = Interleaver(
            self.infiller,
            self.options.interleave_after_s,
            self._take_cheaper,
            self._run_now,
            self.max_batch_size,
        )

    @property
    def max_batch_size(self) -> int:
        return max(1, self.batch.max_batch_size if self.batch else self.options.max_batch_size)

    async def run_batch(self, items: list[BatchItem]) -> list[Outcome]:
        """Run `items` on the model thread (the event loop stays free for other clients). While
        the model is busy, what comes waits; once it is free, everything of one bucket waiting
        then runs as one batch (up to `max_batch_size`, oldest first), and what costs less than
        the running request may run between its steps (model/serve/interleave.py). Ray Serve
        forms its batches as requests arrive (within `batch_wait_s()` of the first), so under
        load its batches would stay at about one request each (1.07 on average with 8 clients
        here)."""
        self.loop = loop = asyncio.get_running_loop()
        futures = []
        with self.lock:
            for item in items:
                item.pause = self.interleaver.pause
                futures.append(loop.create_future())
                self.waiting.append((item, futures[-1]))
        if not self.draining:
            self.draining = True
            asyncio.ensure_future(self._drain())
        return list(await asyncio.gather(*futures))

    def _take(self, pick: Callable[[list[BatchItem]], list[BatchItem]]) -> list:
        with self.lock:
            chosen = {id(item) for item in pick([w[0] for w in self.waiting])}
            take = [w for w in self.waiting if id(w[0]) in chosen]
            self.waiting = [w for w in self.waiting if id(w[0]) not in chosen]
        return take

    def _next_batch(self, waiting: list[BatchItem]) -> list[BatchItem]:
        if not waiting:
            return []
        bucket = bucket_of(waiting[0].request)
        same = [w for w in waiting if bucket_of(w.request) == bucket]
        return same[: self.pacer.limit(len(same))]

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while take := self._take(self._next_batch):
                items = [item for item, _ in take]
                self.metrics.batch_size.observe(len(items))
                t0 = time.perf_counter()
                try:
                    outcomes = await loop.run_in_executor(
                        self.pool, infill_batch, self.infiller, items
                    )
                except Exception as exc:  # noqa: BLE001 - the batch failed as a whole
                    outcomes = [exc] * len(items)
                self.pacer.ran(len(items), time.perf_counter() - t0)
                self._settle(take, outcomes)
        finally:
            self.draining = False

    def _settle(self, take: list, outcomes: list[Outcome]) -> None:
        """On the event loop: a batch's outcomes to the futures of its requests."""
        for (item, fut), outcome in zip(take, outcomes):
            if item.started is not None and item.finished is not None:
                spent = item.finished - item.started
                self.metrics.model_seconds.observe(spent)
                self.metrics.queued.observe(item.started - item.enqueued)
                self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * spent
            if not fut.done():  # a caller that went away has cancelled its future
                fut.set_result(outcome)

    # ---- interleaving (called on the model thread, between a running request's steps) -------
    def _take_cheaper(self, most_cost: int, limit: int) -> list:
        if not self.waiting:  # read without the lock: a miss is retried at the next step
            return []
        return self._take(lambda waiting: one_bucket(waiting, most_cost, limit))

    def _run_now(self, take: list) -> None:
        items = [item for item, _ in take]
        self.metrics.batch_size.observe(len(items))
        try:
            outcomes = infill_batch(self.infiller, items)
        except Exception as exc:  # noqa: BLE001 - the batch failed as a whole
            outcomes = [exc] * len(items)
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._settle, take, outcomes)

    def batch_wait_s(self) -> float:
        """How long a batch that starts now waits for more requests: `batch_wait_ms` while
        other requests are admitted (arriving, waiting or running), none for a request alone.
        At one client a fixed wait was added to every request (about 5 of the 10 ms the
        server added without Ray), and with nothing else in flight there is nothing to wait
        for: what comes while the model runs waits for it anyway and joins the next batch
        (`run_batch`)."""
        return self.options.batch_wait_ms / 1000 if self.inflight > 1 else 0.0

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained enough for one more request."""
        return max(1, math.ceil(self.inflight * self.mean_seconds))

    async def prompt_tokens(self, text: str) -> int:
        """The prompt's token count, off the event loop (a 1 MiB prompt takes seconds)."""
        count = token_counter(self.infiller)
        if count is None:
            return 0
        return int(await asyncio.to_thread(count, text))


def token_counter(infiller: Infiller) -> Callable[[str], int] | None:
    """How to count a text's tokens without holding the GIL all the while: the built-in model's
    tokenizer through its batch call (`encode_pieces`, which the Rust tokenizer runs with the
    GIL released: the same ids as `count_tokens`, whose single-text call held it, and the event
    loop with it, for 2.3 s over 1 MiB here); otherwise the infiller's `count_tokens`."""
    pieces = getattr(getattr(infiller, "tok", None), "encode_pieces", None)
    if callable(pieces):
        return lambda text: len(pieces([text])[0])
    return getattr(infiller, "count_tokens", None)
