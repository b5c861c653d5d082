"""The seam between the server and the model (see DESIGN.md): requests, results, Infiller.

Pure data definitions; no torch import here so the server can type against it cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Hole:
    """One region to fill: up to `max_tokens` tokens (the rest of the budget becomes PAD).
    `single_line`: the fill ends at its line's end, so a line break ends it as PAD does (the
    denoiser then spends no passes on text that would be cut off).
    `ends`: called with the fill's text decoded so far from its start (up to the first slot
    still masked); True means the caller will cut the fill within that text (e.g. the server's
    scope rules: the bracket closed, the block dedented), so the backend may end the hole there
    instead of denoising what would be cut off. A backend may ignore it."""

    max_tokens: int
    min_tokens: int = 0
    single_line: bool = False
    ends: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)


Segment = str | Hole


@dataclass(frozen=True)
class InfillRequest:
    """Text segments around one or more Holes, e.g. [prefix, Hole(32), suffix]."""

    segments: list[Segment]
    steps: int | None = None  # None: adaptive (confidence threshold)
    candidates: int = 1
    temperature: float = 0.0
    language: str | None = None
    schedule: str | None = None  # "threshold" | "fixed" | "ltr" ; None: backend default
    threshold: float | None = None
    seed: int | None = None
    want_trajectory: bool = False
    # how the end of a fill is decided: "frontier" (only where the content reaches it: full-length
    # fills), "confident" (the most confident end first: shorter fills, fewer passes); None: the
    # backend's default (the built-in one: frontier for long holes, confident for short ones)
    end_rule: str | None = None
    # read how long each line hole's fill will be from the first step (model/length.py) and end
    # it no sooner, where the backend has a length signal; False: the PAD budget alone decides
    length_estimate: bool = True

    @property
    def holes(self) -> list[Hole]:
        return [s for s in self.segments if isinstance(s, Hole)]


@dataclass
class InfillResult:
    fills: list[str]  # one text per Hole, in order
    score: float  # mean log-probability of the committed tokens (higher is better)
    steps_used: int  # forward passes spent on denoising
    trajectory: list[list[str]] | None = None  # fills after each step, when asked for
    tokens: int = 0  # non-PAD tokens generated over all holes


def _never() -> bool:
    return False


class Infiller(Protocol):
    """Anything that can fill holes. `should_stop` is polled between denoising steps."""

    def infill(
        self, req: InfillRequest, should_stop: Callable[[], bool] = _never
    ) -> list[InfillResult]: ...


class InfillCancelled(Exception):
    """Raised by an Infiller when `should_stop()` returned True between steps."""


class CheckpointError(RuntimeError):
    """A missing, truncated or mismatched checkpoint; the message names the file."""


__all__ = [
    "CheckpointError",
    "Hole",
    "InfillCancelled",
    "InfillRequest",
    "InfillResult",
    "Infiller",
    "Segment",
]
