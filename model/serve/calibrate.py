"""Choosing a replica's batch size by measuring it on its own device (issue #22 item 7): a batch
must never be slower than its requests one at a time.

`batch_size(infiller, ceiling)` times a group of short line requests (the shape of an editor's
FIM request, each with a context of its own) one after another with `infill` and together with
`infill_batch`, best of `ROUNDS`, from `ceiling` down by halves, and returns the largest size
whose batch took no longer than its requests alone (1 where none did, or where the infiller has
no batched loop). The model server runs it once at start (`ServeOptions.calibrate_batch`) and
never batches more than it chose; `GET /health` shows the choice and its timings.

What a batch costs depends on the requests too, not only on the device: requests whose contexts
a kept encode serves (one user's successive requests, or 16 near-equal prompts) cost a few
milliseconds of encoding alone, and the whole encode in a batch (requests of one batch do not
reuse each other's). So `BatchPacer` goes on measuring as requests run: the model seconds per
request of batches and of requests alone (moving averages, from the calibration's to start
with), and it batches only while batches cost no more per request than requests alone, trying
the other way every `EXPLORE_EVERY` choices to keep both figures current.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from model.interface import Hole, Infiller, InfillRequest

ROUNDS = 2
EXPLORE_EVERY = 16
EWMA = 0.3  # the weight of the newest run


@dataclass
class BatchChoice:
    max_batch_size: int
    measured: bool
    # size -> [seconds one after another, seconds together] (best of ROUNDS)
    timings: dict[int, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "max_batch_size": self.max_batch_size,
            "measured": self.measured,
            "timings_s": {str(k): [round(x, 4) for x in v] for k, v in self.timings.items()},
        }


def probe_requests(n: int, tag: str) -> list[InfillRequest]:
    """`n` line requests, each with a context of its own (no request reuses another's)."""
    return [
        InfillRequest(
            [
                f"def {tag}_{k}(values):\n    total = 0\n    for v in values:\n        total += ",
                Hole(24, single_line=True),
                "\n    return total\n",
            ],
            reuse_context=False,
        )
        for k in range(n)
    ]


def _timed(run) -> float:
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def batch_size(infiller: Infiller, ceiling: int) -> BatchChoice:
    batched = getattr(infiller, "infill_batch", None)
    if ceiling <= 1 or batched is None:  # a backend without one runs a batch one by one
        return BatchChoice(max(1, ceiling), measured=False)
    warm = probe_requests(2, "warm")
    infiller.infill(warm[0])
    batched(warm)
    choice = BatchChoice(1, measured=True)
    size = ceiling
    while size > 1:
        alone, together = [], []
        for r in range(ROUNDS):
            group = probe_requests(size, f"a{size}r{r}")
            alone.append(_timed(lambda g=group: [infiller.infill(q) for q in g]))
            group = probe_requests(size, f"b{size}r{r}")
            together.append(_timed(lambda g=group: batched(g)))
        choice.timings[size] = [min(alone), min(together)]
        if min(together) <= min(alone):
            choice.max_batch_size = size
            return choice
        size //= 2
    return choice


class BatchPacer:
    """How many requests the next batch may take (`limit`), from what runs cost (`ran`)."""

    def __init__(self, ceiling: int, choice: BatchChoice | None = None):
        self.ceiling = max(1, ceiling)
        self.per_request: dict[bool, float] = {}  # batched? -> seconds per request
        if choice is not None and choice.timings:
            size = max(choice.timings)
            alone, together = choice.timings[size]
            self.per_request = {False: alone / size, True: together / size}
        self.choices = 0

    def batching_pays(self) -> bool:
        alone, together = self.per_request.get(False), self.per_request.get(True)
        return alone is None or together is None or together <= alone

    def limit(self, waiting: int) -> int:
        """The most requests the next batch takes, `waiting` being ready to go."""
        if self.ceiling == 1 or waiting < 2:
            return self.ceiling
        self.choices += 1
        pays = self.batching_pays()
        if self.choices % EXPLORE_EVERY == 0:
            pays = not pays
        return self.ceiling if pays else 1

    def ran(self, n: int, seconds: float) -> None:
        """A run of `n` requests took `seconds` on the model thread."""
        key, per = n > 1, seconds / max(1, n)
        old = self.per_request.get(key)
        self.per_request[key] = per if old is None else (1 - EWMA) * old + EWMA * per

    def to_json(self) -> dict:
        return {
            "batching_pays": self.batching_pays(),
            "ms_per_request": {
                ("batched" if k else "alone"): round(v * 1e3, 2)
                for k, v in self.per_request.items()
            },
        }
