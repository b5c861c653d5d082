"""The seam between the server and the model (docs/architecture.md): requests, results, Infiller.

Plain data only: a request is something you could send over HTTP (and `request_to_json` /
`request_from_json` do), nothing in it is a callable or mutable state. The backend evaluates a
hole's stop rules itself (model/codetext.py), and each result says why each fill ended
(`ended_by`), so the caller trims and caches by reading the result. No torch import here, so the
server can type against it cheaply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Protocol

# InfillResult.trajectory and the streamed canvas: a slot still masked
MASK_GLYPH = "\u2591"
# InfillRequest.schedule: adaptive (confidence threshold), fixed steps, one token a step
SCHEDULES = ("threshold", "fixed", "ltr")
# the built-in model's weights on a CPU (auto: int8 where it pays; on CUDA bf16 whatever is asked)
PRECISIONS = ("auto", "int8", "fp32")


@dataclass(frozen=True)
class StopRules:
    """Where the caller cuts a fill (its region's end). A backend may stop denoising a hole once
    its fill so far has run past them (model/codetext.py `end_reason`): the rest would be cut."""

    single_line: bool = False  # cut at the first line break
    max_lines: int | None = None  # keep at most this many lines
    dedent_below: int | None = None  # cut at a non-blank later line indented <= this
    open_brackets: int = 0  # statement: cut at the line end where these brackets close
    inside_bracket: bool = False  # cut before the first unmatched closing bracket


@dataclass(frozen=True)
class Hole:
    """One region to fill: up to `max_tokens` tokens (the rest of the budget becomes PAD), at
    least `min_tokens`.
    `single_line`: the fill ends at its line's end, so a line break ends it as PAD does (the
    denoiser then spends no passes on text that would be cut off).
    `stop`: where the caller will cut the fill; with it the backend ends the hole as soon as the
    fill so far runs past them or into repetition (and, past the request's deadline, at a
    finished line), instead of denoising what would be cut off. None: the whole budget is
    decoded (benchmarks)."""

    max_tokens: int
    min_tokens: int = 0
    single_line: bool = False
    stop: StopRules | None = None


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
    # the backend may reuse a kept context encoding, re-encoding only what changed (approximate:
    # model/context_reuse.py); False: encode the context in full
    reuse_context: bool = True
    # when the user is waiting (seconds since the epoch, time.time()): past it, a hole with stop
    # rules that may span lines ends at its first finished line that leaves nothing open, and its
    # result says so (ended_by "deadline"); None: no deadline. Not part of what is asked: two
    # requests differing only in it give the same fills when neither is cut.
    deadline: float | None = None
    # commit this many tokens a pass, the most confident first (1: as the published samplers
    # do); None: the schedule decides (several a pass, by confidence)
    tokens_per_step: int | None = None
    # the first this many characters of the first segment are text from outside the document
    # (the repository context, lsp_server/context/): a backend may keep their encoding apart
    # from the document's (model/context_reuse.py); 0: none
    header_chars: int = 0

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
    # why each fill ended (model/codetext.py): "budget" (every slot holds content), "pad" (the
    # model ended it), "scope" / "repeat" (its stop rules: it ran past its region or into
    # repetition), "deadline" (the request's deadline: keep its finished lines only)
    ended_by: list[str] = field(default_factory=list)


def past(deadline: float | None) -> bool:
    """Whether a deadline (InfillRequest.deadline's clock: seconds since the epoch) has passed;
    None: never."""
    return deadline is not None and time.time() >= deadline


def never() -> bool:
    """The default `should_stop` and `late`: never."""
    return False


class Infiller(Protocol):
    """Anything that can fill holes. `should_stop` is polled between denoising steps (True:
    raise InfillCancelled). `late`, when given, replaces the request's own deadline test (True
    once the caller's deadline has passed): a prefetch that a request takes over while it runs
    gets that request's deadline (lsp_server/engine.py).

    An Infiller may also say what its last `infill` call spent, as a dict `last_timing`
    (milliseconds by phase, "context_reused": whether it reused a kept context encoding): the
    language server logs it and counts the reuse. The built-in, published-coder and remote
    backends do; a backend without it is timed from outside only."""

    def infill(
        self,
        req: InfillRequest,
        should_stop: Callable[[], bool] = never,
        late: Callable[[], bool] | None = None,
    ) -> list[InfillResult]: ...


class InfillCancelled(Exception):
    """Raised by an Infiller when `should_stop()` returned True between steps."""


class CheckpointError(RuntimeError):
    """A missing, truncated or mismatched checkpoint; the message names the file."""


# ---- JSON (a remote backend sends requests and results over HTTP) ----------------------------
def request_to_json(req: InfillRequest) -> dict[str, Any]:
    """A JSON-ready dict: text segments as strings, holes as {"hole": {...}}; the fields left
    at their defaults are left out (a server that predates a field takes requests not using it)."""
    out = {
        f.name: getattr(req, f.name)
        for f in fields(req)
        if f.name != "segments" and getattr(req, f.name) != _default(f)
    }
    out["segments"] = [{"hole": asdict(s)} if isinstance(s, Hole) else s for s in req.segments]
    return out


def _default(f) -> Any:
    """A field's default (MISSING for a field without one, which equals no value)."""
    if f.default is not MISSING or f.default_factory is MISSING:
        return f.default
    return f.default_factory()


def request_from_json(data: dict[str, Any]) -> InfillRequest:
    """The request `request_to_json` wrote (ValueError on a malformed one)."""
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise ValueError("an infill request needs a list of segments")  # noqa: TRY004
    segments: list[Segment] = []
    for s in data["segments"]:
        if isinstance(s, str):
            segments.append(s)
        elif isinstance(s, dict) and isinstance(s.get("hole"), dict):
            hole = dict(s["hole"])
            stop = hole.pop("stop", None)
            try:
                segments.append(Hole(**hole, stop=None if stop is None else StopRules(**stop)))
            except TypeError as exc:
                raise ValueError(f"bad hole {s!r}: {exc}") from None
        else:
            raise ValueError(f"a segment is a string or {{'hole': {{...}}}}, got {s!r}")  # noqa: TRY004
    known = {f.name for f in fields(InfillRequest)} - {"segments"}
    unknown = set(data) - known - {"segments"}
    if unknown:
        raise ValueError(f"unknown request fields: {sorted(unknown)}")
    for k in known & set(data):
        _check_type(k, data[k], _FIELD_TYPES[k])
    for h in segments:
        if isinstance(h, Hole):
            for f in fields(Hole):
                if f.name != "stop":
                    _check_type(f"hole.{f.name}", getattr(h, f.name), _FIELD_TYPES[f.name])
            for f in fields(StopRules) if h.stop is not None else ():
                _check_type(f"stop.{f.name}", getattr(h.stop, f.name), _FIELD_TYPES[f.name])
    return InfillRequest(segments=segments, **{k: data[k] for k in known if k in data})


# JSON types of the request's fields: (types, whether null is allowed)
_INT, _NUM, _STR, _BOOL = (int,), (int, float), (str,), (bool,)
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "steps": (_INT, True),
    "candidates": (_INT, False),
    "temperature": (_NUM, False),
    "language": (_STR, True),
    "schedule": (_STR, True),
    "threshold": (_NUM, True),
    "seed": (_INT, True),
    "want_trajectory": (_BOOL, False),
    "end_rule": (_STR, True),
    "length_estimate": (_BOOL, False),
    "reuse_context": (_BOOL, False),
    "deadline": (_NUM, True),
    "tokens_per_step": (_INT, True),
    "header_chars": (_INT, False),
    "max_tokens": (_INT, False),
    "min_tokens": (_INT, False),
    "single_line": (_BOOL, False),
    "max_lines": (_INT, True),
    "dedent_below": (_INT, True),
    "open_brackets": (_INT, False),
    "inside_bracket": (_BOOL, False),
}


def _check_type(name: str, value: Any, spec: tuple[tuple[type, ...], bool]) -> None:
    types, nullable = spec
    if value is None and nullable:
        return
    is_bool = isinstance(value, bool)
    if value is None or (is_bool and bool not in types) or not isinstance(value, types):
        want = " or ".join(t.__name__ for t in types) + (" or null" if nullable else "")
        raise ValueError(f"{name} must be {want}, not {value!r}")


def result_to_json(result: InfillResult) -> dict[str, Any]:
    return asdict(result)


def result_from_json(data: dict[str, Any]) -> InfillResult:
    try:
        return InfillResult(**data)
    except TypeError as exc:
        raise ValueError(f"bad infill result: {exc}") from None


__all__ = [
    "MASK_GLYPH",
    "PRECISIONS",
    "SCHEDULES",
    "CheckpointError",
    "Hole",
    "InfillCancelled",
    "InfillRequest",
    "InfillResult",
    "Infiller",
    "Segment",
    "StopRules",
    "never",
    "past",
    "request_from_json",
    "request_to_json",
    "result_from_json",
    "result_to_json",
]
