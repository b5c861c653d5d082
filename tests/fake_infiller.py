"""A small deterministic Infiller for unit tests and server tests that must not depend on the
trained model (`parafill serve --backend fake_infiller:load`, with tests/ on PYTHONPATH).

The fill of hole i is read from the text itself: the i-th `expect: TEXT` comment found in the
segments (`\\n` in TEXT is a line break), or `FALLBACK` when there is none. Model paths select
behaviour: "slow:SECONDS" sleeps that long per denoising step, "loadslow:SECONDS" delays the load,
anything starting with "missing" raises CheckpointError like a missing checkpoint. A text
containing "fake: raise" makes `infill` raise ValueError (a backend failure). A fill is ended by
"deadline" when the request's deadline (or the caller's `late`) has passed at the end and the
hole has stop rules that let it span lines, by "pad" otherwise.
"""

from __future__ import annotations

import re
import time

from model.interface import (
    CheckpointError,
    Hole,
    InfillCancelled,
    InfillRequest,
    InfillResult,
    never,
    past,
)

FALLBACK = "pass"
STEPS = 4
EXPECT_RE = re.compile(r"expect: (.*)")


class FakeInfiller:
    name = "fake"
    device = "cpu"

    def __init__(self, step_delay: float = 0.0, steps: int = STEPS):
        self.step_delay = step_delay
        self.steps = steps
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def infill(self, req: InfillRequest, should_stop=never, late=None) -> list[InfillResult]:
        self.calls += 1
        text = "".join(s for s in req.segments if isinstance(s, str))
        if "fake: raise" in text:
            raise ValueError("the fake backend was asked to fail")
        wanted = [m.group(1).replace("\\n", "\n") for m in EXPECT_RE.finditer(text)]
        holes = [s for s in req.segments if isinstance(s, Hole)]
        fills = [wanted[i] if i < len(wanted) else FALLBACK for i in range(len(holes))]
        trajectory = []
        for step in range(1, self.steps + 1):
            if should_stop():
                raise InfillCancelled()
            if self.step_delay:
                time.sleep(self.step_delay)
            trajectory.append([f[: len(f) * step // self.steps] for f in fills])
        if should_stop():
            raise InfillCancelled()
        is_late = (
            past(req.deadline) if late is None else late()
        )  # as the built-in backend: holes with stop rules that may span lines
        ended_by = [
            "deadline" if is_late and h.stop is not None and not h.single_line else "pad"
            for h in holes
        ]
        results = []
        for k in range(req.candidates):
            alt = fills if k == 0 else [f + f"  # alt {k}" for f in fills]
            results.append(
                InfillResult(
                    fills=alt,
                    score=-0.1 * (k + 1),
                    steps_used=self.steps,
                    trajectory=trajectory if req.want_trajectory else None,
                    tokens=sum(self.count_tokens(f) for f in alt),
                    ended_by=ended_by,
                )
            )
        return results


def load(path: str | None = None, device: str | None = None, *_options) -> FakeInfiller:
    if path and path.startswith("missing"):
        raise CheckpointError(f"{path}/config.json: no such file")
    if path and path.startswith("loadslow:"):
        time.sleep(float(path.split(":", 1)[1]))
    if path and path.startswith("slow:"):
        return FakeInfiller(step_delay=float(path.split(":", 1)[1]), steps=8)
    return FakeInfiller()
