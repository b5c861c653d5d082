"""Sharing a replica's one model thread fairly (issue #24): a small request that comes while a
large one runs is run between the large one's denoising steps, so it is answered within its own
cost plus one step of the large one, not after all of it.

The infiller asks each running request `should_stop()` between its steps, on the model thread
(model/serve/batching.py `BatchItem.should_stop`); there `Interleaver.pause` takes the requests
that wait and cost less than the running one (candidates times token budget,
`batching.cost`), as one batch of one bucket, oldest first, and runs them right there with
`infill_batch`; then the running request goes on. Only one level deep (a request run in a pause
never pauses), and only after the running request has run `after_s` (a short request is not
paused at all).

This needs an infiller whose own lock lets the thread that holds it run another request
(`reentrant`: a `threading.RLock`, or no lock); with a plain `threading.Lock` there is no pause,
and requests run one batch after another as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from model.interface import Infiller
from model.serve.batching import BatchItem, bucket_of, cost

# take(most_cost, limit) -> the waiting items to run now (removed from the queue); run(items)
Take = Callable[[int, int], list[BatchItem]]
Run = Callable[[list[BatchItem]], None]


def reentrant(infiller: Infiller) -> bool:
    """Whether the thread running a request may run another on `infiller` (asked on that
    thread, while the infiller holds its lock)."""
    lock = getattr(infiller, "lock", None)
    if lock is None:
        return True
    if lock.acquire(blocking=False):  # an RLock this thread holds, or a lock nobody holds
        lock.release()
        return True
    return False


class Interleaver:
    def __init__(self, infiller: Infiller, after_s: float, take: Take, run: Run, limit: int):
        self.infiller = infiller
        self.after_s = after_s
        self.take = take
        self.run = run
        self.limit = limit
        self.depth = 0
        self.pauses = 0  # how many times a running request paused for others

    def pause(self, running: BatchItem) -> None:
        """Between `running`'s steps, on the model thread: run cheaper waiting requests."""
        if self.depth or running.started is None:
            return
        if time.perf_counter() - running.started < self.after_s:
            return
        if not reentrant(self.infiller):
            return
        items = self.take(cost(running.request), self.limit)
        if not items:
            return
        self.depth += 1
        self.pauses += 1
        try:
            self.run(items)
        finally:
            self.depth -= 1


def one_bucket(waiting: list[BatchItem], most_cost: int, limit: int) -> list[BatchItem]:
    """From `waiting` (oldest first): those cheaper than `most_cost`, of the first one's bucket,
    at most `limit`."""
    cheaper = [w for w in waiting if cost(w.request) < most_cost]
    if not cheaper:
        return []
    bucket = bucket_of(cheaper[0].request)
    return [w for w in cheaper if bucket_of(w.request) == bucket][:limit]
