"""The completion pipeline shared by the LSP handlers and the CLI, without any LSP types:
plan -> InfillRequest -> (engine) -> post-processed candidates, and fill markers.

A request is plain data: each hole carries its region's stop rules, and an as-you-type request
that may span lines carries a deadline, past which the backend ends such a fill at a finished
line; each result says why each fill ended (`ended_by`), which trimming and caching read.

Owns the hole marker syntax of `parafill fill` / `parafill.fill`: `<|fill|>` marks a hole with the
default budget, `<|fill:N|>` a hole of at most N tokens.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

from lsp_server import postprocess
from lsp_server.config import Settings
from lsp_server.planner import (
    BLOCK,
    BRACKET,
    STATEMENT,
    Budgets,
    InfillPlan,
    Region,
    plan_holes,
)
from lsp_server.postprocess import Candidate
from lsp_server.syntax import Snapshot
from model.codetext import DEADLINE, finished_fill
from model.interface import InfillRequest, InfillResult, past

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
    long, and its finished lines are the suggestion (the result says so: ended_by)."""
    multi_line = any(not r.stop.single_line for r in plan.regions)
    fields = {
        "segments": plan.segments(text, min_tokens=1 if explicit else 0),
        "steps": settings.steps if settings.schedule in ("fixed", "threshold") else None,
        "candidates": candidates,
        "temperature": INVOKED_TEMPERATURE if candidates > 1 else 0.0,
        "language": plan.language,
        "schedule": settings.schedule,
        "threshold": settings.threshold,
        "end_rule": "frontier" if any(r.kind in MULTI_LINE for r in plan.regions) else None,
        "length_estimate": settings.length_estimate,
        "reuse_context": settings.context_reuse,
        "deadline": time.time() + deadline_ms / 1000 if deadline_ms and multi_line else None,
        "header_chars": len(plan.header),
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return InfillRequest(**fields)


def deadline_cut(results: list[InfillResult]) -> bool:
    """Whether a deadline ended any of the fills (such results depend on timing: not cached)."""
    return any(DEADLINE in r.ended_by for r in results)


def late(req: InfillRequest) -> bool:
    """Whether the request's deadline has passed (the user is waiting)."""
    return past(req.deadline)


def region_candidates(
    plan: InfillPlan,
    text: str,
    results: list[InfillResult],
    index: int = 0,
) -> list[Candidate]:
    """Post-processed candidates for region `index`, best first; a fill a deadline ended keeps
    its finished lines only."""
    region: Region = plan.regions[index]
    fills = [
        (finished_fill(r.fills[index], _ended_by(r, index)), r.score)
        for r in results
        if index < len(r.fills)
    ]
    prefix = text[plan.context_start : region.start] + region.lead
    suffix = region.trail + text[region.end : plan.context_end]
    complete = region.kind in MUST_PARSE
    cands = postprocess.process(fills, region.stop, prefix, suffix, plan.language, complete)
    if region.lead or region.trail:
        cands = [replace(c, text=region.lead + c.text + region.trail) for c in cands]
    return cands


def _ended_by(result: InfillResult, index: int) -> str:
    return result.ended_by[index] if index < len(result.ended_by) else ""


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
    if late(req):
        return None
    if cands and cands[0].errors == 0:
        return None
    return replace(req, end_rule="confident", want_trajectory=False)


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
    text: str, language: str, budgets: Budgets, snapshot: Snapshot | None = None
) -> InfillPlan:
    """A multi-hole plan over every marker in `text` (ValueError when there is none)."""
    markers = find_markers(text)
    if not markers:
        raise ValueError("no <|fill|> markers in the text")
    return plan_holes(
        text, [(m.start, m.end, m.budget) for m in markers], language, snapshot, budgets
    )


def hole_fills(plan: InfillPlan, text: str, results: list[InfillResult]) -> list[str]:
    """One cleaned fill per region from the best result (holes with no usable fill become '')."""
    out = []
    for i, region in enumerate(plan.regions):
        best = results[0].fills[i] if results and i < len(results[0].fills) else ""
        out.append(region.lead + postprocess.clean(best, region.stop, plan.language) + region.trail)
    return out
