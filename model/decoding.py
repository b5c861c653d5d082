"""The decoding loop every model runs: a request's canvas, stop rules, trajectory and results.

Owns what makes a fill good whatever the network: the canvas a request is denoised on (fixed
slots, model/sampler.py's `Denoiser`, where a committed end token ends its hole; or holes that
grow and shrink, model/growing.py's `GrowingDenoiser`, for checkpoints with an expand token),
the holes' stop rules judged between passes (model/codetext.py `end_reason`, the deadline),
the live view of the canvas, the sampling generator, and turning the loop's output into
InfillResults (texts, why each fill ended, scores, trajectories, duplicates once, best first).

A model takes part through a `Model`: its special ids and how it writes ids as text. What
varies per model (how a window is encoded, which positions a pass recomputes, logits shifted or
not) stays in its adapter: model/infill.py for the shipped network, model/families/ for the
published coders; each hands the loop a step function and runs it with `sampler.denoise_run`
(one request) or `sampler.denoise_batch` (several).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from model.codetext import BUDGET, PAD, end_reason
from model.growing import GrowConfig, GrowHooks, GrowIds, GrowingDenoiser, GrowOutput
from model.interface import InfillRequest, InfillResult
from model.sampler import DenoiseConfig, DenoiseOutput, Denoiser, Hooks, Span, Vocab

Rows = list[list[list[int]]]  # per row (candidate), per hole, the ids so far
StepView = Callable[[int, list[list[str]]], None]  # (step, each row's holes as text so far)


class Model(Protocol):
    """What the loop needs of a model beyond its step function."""

    mask_id: int
    end_id: int  # a committed end token ends its hole (the shipped network's PAD)

    def text(self, ids: list[int], show_masks: bool = False) -> str:
        """A hole's ids as text: up to its end token; with `show_masks`, masked slots as
        MASK_GLYPH."""


def temperature_of(req: InfillRequest) -> float:
    """The request's sampling temperature: several greedy candidates would be identical, so
    they sample at 0.7 unless the request sets one."""
    t = float(req.temperature)
    return 0.7 if int(req.candidates) > 1 and t <= 0 else t


def generator_for(temperature: float, seed: int | None, device) -> torch.Generator | None:
    if temperature <= 0:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


def span_of(req: InfillRequest, rel: list[tuple[int, int]], budgets: list[int]) -> Span:
    """The request's holes as the fixed-slot sampler sees them: their slot ranges, each fill's
    least length (within its budget) and which end at their line's end."""
    holes = req.holes
    return Span(
        rel,
        min_tokens=[min(h.min_tokens, b) for h, b in zip(holes, budgets)],
        line_holes=[h.single_line for h in holes],
    )


def best_first(results: list[InfillResult]) -> list[InfillResult]:
    """Candidates with the same fills once (the first of them), best score first."""
    seen, out = set(), []
    for r in results:
        if tuple(r.fills) not in seen:
            seen.add(tuple(r.fills))
            out.append(r)
    return sorted(out, key=lambda x: -x.score)


def one_by_one(infill: Callable, reqs, stops, lates, on_steps, finish) -> None:
    """A batch run as its requests one after another (where a model cannot pass them
    together): `finish(i, outcome)` with each one's results or the exception it raised."""
    for i, req in enumerate(reqs):
        try:
            finish(i, infill(req, stops[i], lates[i], on_step=on_steps[i]))
        except Exception as exc:  # noqa: BLE001 - a request's failure stays its own
            finish(i, exc)


def stop_verdicts(
    model: Model, req: InfillRequest, late: Callable[[], bool]
) -> Callable[[Rows], list[list[str | None]]] | None:
    """The holes' stop rules as a function of the canvas: per row, per hole, why the fill is
    over (its text up to its first masked slot has run past its region, into repetition, or
    past the deadline to a finished line), else None. None when no hole has stop rules."""
    holes, language = req.holes, req.language or "python"
    if not any(h.stop is not None for h in holes):
        return None
    mask, end = model.mask_id, model.end_id

    def verdicts(rows: Rows) -> list[list[str | None]]:
        is_late = late()
        out = []
        for row in rows:
            v: list[str | None] = []
            for hole, ids in zip(holes, row):
                if hole.stop is None or mask not in ids:
                    v.append(None)  # nothing left to stop
                    continue
                done = [i for i in ids[: ids.index(mask)] if i != end]
                why = done and end_reason(model.text(done), hole.stop, language, is_late)
                v.append(why or None)
            out.append(v)
        return out

    return verdicts


# ---- fixed slots (model/sampler.py) -----------------------------------------------------------
@dataclass
class FixedRun:
    """One request's Denoiser and where its stop rules write why fills ended."""

    denoiser: Denoiser
    rel: list[tuple[int, int]]
    ended_by: dict[tuple[int, int], str] = field(default_factory=dict)


def fixed_run(
    model: Model,
    req: InfillRequest,
    span: Span,
    vocab: Vocab,
    cfg: DenoiseConfig,
    *,
    should_stop: Callable[[], bool],
    late: Callable[[], bool],
    on_step: StepView | None = None,
    min_length: Callable | None = None,
    device=None,
) -> FixedRun:
    """A request's fixed-slot canvas with its stop rules, length hook and live view."""
    rel = span.holes
    ended_by: dict[tuple[int, int], str] = {}
    verdicts = stop_verdicts(model, req, late)
    ended = None
    if verdicts is not None:

        def ended(x: torch.Tensor) -> torch.Tensor:
            rows = [[row[a:b] for a, b in rel] for row in x.tolist()]
            out = torch.zeros(x.shape[0], len(rel), dtype=torch.bool)
            for r, v in enumerate(verdicts(rows)):
                for h, why in enumerate(v):
                    if why:
                        out[r, h] = True
                        ended_by[(r, h)] = why
            return out.to(x.device)

    view = None
    if on_step is not None:

        def view(step: int, x: torch.Tensor) -> None:
            on_step(step, [[model.text(row[a:b], True) for a, b in rel] for row in x.tolist()])

    denoiser = Denoiser(
        span,
        vocab,
        cfg,
        max(1, int(req.candidates)),
        Hooks(should_stop, ended, min_length, view),
        generator_for(cfg.temperature, req.seed, device),
        req.want_trajectory,
        device or "cpu",
    )
    return FixedRun(denoiser, rel, ended_by)


def fixed_results(
    model: Model,
    req: InfillRequest,
    out: DenoiseOutput,
    rel: list[tuple[int, int]],
    ended_by: dict[tuple[int, int], str],
) -> list[InfillResult]:
    """Each row's fills (up to its end token), its score (mean log-probability of its tokens,
    with one end per hole), why each fill ended (the stop rules', else "pad" or "budget") and,
    when asked, its trajectory; identical candidates once, best first."""
    end = model.end_id
    results = []
    for r in range(out.tokens.shape[0]):
        row = out.tokens[r].tolist()
        holes = [row[a:b] for a, b in rel]
        fills = [model.text(h) for h in holes]
        traj = None
        if req.want_trajectory:
            traj = [[model.text(t[r].tolist()[a:b], True) for a, b in rel] for t in out.trajectory]
        why = [ended_by.get((r, h), PAD if end in hole else BUDGET) for h, hole in enumerate(holes)]
        tokens = int(out.committed[r])
        score = float(out.logprob_sum[r]) / max(1, tokens + len(rel))
        results.append(InfillResult(fills, score, out.steps_used, traj, tokens, why))
    return best_first(results)


# ---- holes that grow and shrink (model/growing.py) --------------------------------------------
def growing_run(
    model: Model,
    req: InfillRequest,
    sizes: list[int],
    expand_id: int,
    cfg: GrowConfig,
    *,
    should_stop: Callable[[], bool],
    late: Callable[[], bool],
    on_step: StepView | None = None,
    room: int | None = None,
    device=None,
) -> GrowingDenoiser:
    """A request's variable-length canvas (holes of at most `sizes` slots) with its stop rules
    and live view."""
    view = None
    if on_step is not None:

        def view(step: int, rows: Rows) -> None:
            on_step(step, [[model.text(h, True) for h in row] for row in rows])

    return GrowingDenoiser(
        sizes,
        GrowIds(model.mask_id, model.end_id, expand_id),
        cfg,
        max(1, int(req.candidates)),
        GrowHooks(should_stop, stop_verdicts(model, req, late), view),
        generator_for(cfg.temperature, req.seed, device),
        req.want_trajectory,
        room=room,
    )


def grow_results(model: Model, req: InfillRequest, out: GrowOutput) -> list[InfillResult]:
    """As `fixed_results`, for a variable-length canvas."""
    results = []
    for r, row in enumerate(out.rows):
        fills = [model.text(h) for h in row]
        traj = None
        if req.want_trajectory:
            traj = [[model.text(h, True) for h in t[r]] for t in out.trajectory]
        why = [out.ended_by.get((r, h), BUDGET) for h in range(len(row))]
        score = out.logprob_sum[r] / max(1, out.committed[r] + len(row))
        results.append(InfillResult(fills, score, out.steps_used, traj, out.committed[r], why))
    return best_first(results)
