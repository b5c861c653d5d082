"""The completion pipeline shared by the LSP handlers and the CLI, without any LSP types:
plan -> InfillRequest -> (engine) -> post-processed candidates, and fill markers.

Owns the holes' end checks (`EndCheck`, the backend's Hole.ends): the scope and repetition rules,
and the deadline of an as-you-type multi-line fill, which then shows the lines it has finished.

Owns the hole marker syntax of `parafill fill` / `parafill.fill`: `<|fill|>` marks a hole with the
default budget, `<|fill:N|>` a hole of at most N tokens.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from lsp_server import postprocess
from lsp_server.config import Settings
from lsp_server.planner import (
    BLOCK,
    BRACKET,
    STATEMENT,
    InfillPlan,
    Region,
    StopRules,
    plan_holes,
)
from lsp_server.postprocess import Candidate
from lsp_server.syntax import Snapshot
from model.interface import Hole, InfillRequest, InfillResult

MULTI_LINE = (BLOCK, STATEMENT)  # region kinds decoded with the frontier end rule
MARKER_RE = re.compile(r"<\|fill(?::(\d+))?\|>")
INVOKED_TEMPERATURE = 0.6  # extra candidates for an explicit request are sampled
MUST_PARSE = (BLOCK, BRACKET)  # region kinds whose fill is complete: it must add no syntax error


def build_request(
    plan: InfillPlan,
    text: str,
    settings: Settings,
    candidates: int = 1,
    explicit: bool = False,
    deadline_ms: int = 0,
    **overrides,
) -> InfillRequest:
    """The model request for a plan. An `explicit` request (the user asked: an Invoked trigger)
    gets holes of at least one token: an empty fill is a fine answer to typing, not to asking.
    `deadline_ms` (0: none): a fill that may span lines ends at the first line end after that
    long, and its finished lines are the suggestion (region_candidates with this request)."""
    fields = {
        "segments": with_end_checks(
            plan, plan.segments(text, min_tokens=1 if explicit else 0), deadline_ms
        ),
        "steps": settings.steps if settings.schedule in ("fixed", "threshold") else None,
        "candidates": candidates,
        "temperature": INVOKED_TEMPERATURE if candidates > 1 else 0.0,
        "language": plan.language,
        "schedule": settings.schedule,
        "threshold": settings.threshold,
        "end_rule": "frontier" if any(r.kind in MULTI_LINE for r in plan.regions) else None,
        "length_estimate": settings.length_estimate,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return InfillRequest(**fields)


@dataclass(eq=False)
class EndCheck:
    """A hole's `ends` callback: True once the fill so far (from its start up to the first slot
    still masked) has run past its region or into a repeated line (postprocess.fill_ended: the
    suggestion cannot change), or, past `deadline` (time.monotonic()), once it has a finished
    line that leaves nothing open (postprocess.clean_break). The texts the deadline ended are
    remembered, so that `trim` keeps only their finished lines."""

    stop: StopRules
    language: str
    deadline: float | None = None
    cut: set[str] = field(default_factory=set)

    def late(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def __call__(self, fill: str) -> bool:
        if postprocess.fill_ended(fill, self.stop, self.language):
            return True
        if not self.late():
            return False
        head = postprocess.whole_lines(fill)
        if not head or not postprocess.clean_break(head, self.language):
            return False  # a line still open: wait for the next line end
        self.cut.add(fill)
        return True

    def trim(self, fill: str) -> str:
        """The fill as the suggestion starts from: its finished lines if the deadline ended it."""
        return postprocess.whole_lines(fill) if fill in self.cut else fill


def with_end_checks(plan: InfillPlan, segments: list, deadline_ms: int = 0) -> list:
    """Each Hole gets its region's EndCheck (`Hole.ends`): the model may stop denoising a fill
    once it has run past its region or into a repeated line, since the post-processing would cut
    the rest off; with `deadline_ms`, a fill that may span lines also stops at its first line
    end after that long."""
    regions = iter(plan.regions)
    start = time.monotonic()
    out = []
    for s in segments:
        if isinstance(s, Hole):
            stop = next(regions).stop
            late = start + deadline_ms / 1000 if deadline_ms and not stop.single_line else None
            s = replace(s, ends=EndCheck(stop, plan.language, late))
        out.append(s)
    return out


def _end_checks(req: InfillRequest) -> list[EndCheck]:
    return [h.ends for h in req.holes if isinstance(h.ends, EndCheck)]


def take_deadlines(src: InfillRequest, dst: InfillRequest) -> None:
    """Give `dst` (the same request, already running: a prefetch a request took over) the
    deadlines of `src`'s end checks. Safe while `dst` runs: each is one attribute store."""
    for mine, theirs in zip(_end_checks(src), _end_checks(dst)):
        theirs.deadline = mine.deadline


def deadline_cut(req: InfillRequest) -> bool:
    """Whether the deadline ended any of the request's fills."""
    return any(check.cut for check in _end_checks(req))


def region_candidates(
    plan: InfillPlan,
    text: str,
    results: list[InfillResult],
    index: int = 0,
    req: InfillRequest | None = None,
) -> list[Candidate]:
    """Post-processed candidates for region `index`, best first. `req`: the request the results
    answer, whose end checks say which fills a deadline cut short."""
    region: Region = plan.regions[index]
    check = req.holes[index].ends if req is not None and index < len(req.holes) else None
    trim = check.trim if isinstance(check, EndCheck) else (lambda f: f)
    fills = [(trim(r.fills[index]), r.score) for r in results if index < len(r.fills)]
    prefix = text[plan.context_start : region.start] + region.lead
    suffix = region.trail + text[region.end : plan.context_end]
    complete = region.kind in MUST_PARSE
    cands = postprocess.process(fills, region.stop, prefix, suffix, plan.language, complete)
    if region.lead or region.trail:
        cands = [replace(c, text=region.lead + c.text + region.trail) for c in cands]
    return cands


def merge_candidates(old: list[Candidate] | None, new: list[Candidate]) -> list[Candidate]:
    """Candidates of two decodes of one region, deduplicated, best first (fewest errors)."""
    seen = {c.text: c for c in [*(old or []), *new]}
    return sorted(seen.values(), key=lambda c: (c.errors, -c.score))


def fallback_request(req: InfillRequest, cands: list[Candidate]) -> InfillRequest | None:
    """A second decode when a block's first gave nothing clean: the frontier end rule writes the
    fill to where its content ends, which on code unlike the training data (the model learnt
    Python) can run on into text that breaks the syntax; ending at the most confident place
    instead gives a short fill, which is often clean. None when the first decode was fine or did
    not use the frontier rule, or when its deadline has passed (the user is waiting)."""
    if req.end_rule != "frontier" or req.schedule not in (None, "threshold"):
        return None
    if any(check.late() for check in _end_checks(req)):
        return None
    if cands and cands[0].errors == 0:
        return None
    return replace(req, end_rule="confident")


@dataclass(frozen=True)
class Marker:
    start: int
    end: int
    budget: int | None


def find_markers(text: str) -> list[Marker]:
    return [
        Marker(m.start(), m.end(), int(m.group(1)) if m.group(1) else None)
        for m in MARKER_RE.finditer(text)
    ]


def plan_markers(
    text: str, language: str, settings: Settings, snapshot: Snapshot | None = None
) -> InfillPlan:
    """A multi-hole plan over every marker in `text` (ValueError when there is none)."""
    markers = find_markers(text)
    if not markers:
        raise ValueError("no <|fill|> markers in the text")
    return plan_holes(
        text, [(m.start, m.end, m.budget) for m in markers], language, snapshot, settings.budgets()
    )


def hole_fills(plan: InfillPlan, text: str, results: list[InfillResult]) -> list[str]:
    """One cleaned fill per region from the best result (holes with no usable fill become '')."""
    out = []
    for i, region in enumerate(plan.regions):
        best = results[0].fills[i] if results and i < len(results[0].fills) else ""
        fill = postprocess.cut_to_scope(postprocess.strip_special(best), region.stop, plan.language)
        out.append(region.lead + postprocess.drop_repetition(fill) + region.trail)
    return out


def apply_fills(text: str, plan: InfillPlan, fills: list[str]) -> str:
    """`text` with every region replaced by its fill."""
    out, pos = [], 0
    for region, fill in zip(plan.regions, fills):
        out.append(text[pos : region.start])
        out.append(fill)
        pos = region.end
    out.append(text[pos:])
    return "".join(out)
