"""Benchmark-side access to the built-in infiller: one context encoding, several schedules.

Owns: running the infiller's public steps (model/infill.py: `layout`, `encode`, `denoise`,
`decode`) the way benchmarks need them: a request laid out and its context encoded once (in
full, kept out of the infiller's reuse bases), then denoised for any number of schedules over
that one cache (cache on), or with the full forward over context + span under the same group
layout at every step (cache off). Greedy, one candidate. A bench schedule is a DenoiseConfig
(`denoise_config`): its schedule, steps, threshold and end rule become the request's, its
experiment fields the infiller's DecodeOptions; what it leaves None takes the infiller's default
for the hole, as `infiller.infill` would. The benchmarks check these paths against
`infiller.infill`.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from model.infill import DecodeOptions, Layout
from model.interface import InfillRequest
from model.sampler import DenoiseConfig


@dataclass(frozen=True)
class Prepared:
    """A request (its segments; the schedule comes with each fill) and its layout."""

    req: InfillRequest
    layout: Layout


@dataclass
class Fill:
    fills: list[str]
    steps: int
    tokens: int
    ms: float  # denoising only (the context encoding is timed separately)


def prepare(m, segments: list) -> Prepared:
    req = InfillRequest(segments=list(segments))
    return Prepared(req, m.layout(req))


def encode(m, p: Prepared):
    """The context K/V cache for `p` (a full encode, not kept as a base) and the milliseconds it
    took."""
    t0 = time.perf_counter()
    cache, _ = m.encode(p.layout, reuse=False, keep=False)
    return cache, (time.perf_counter() - t0) * 1e3


def request_for(p: Prepared, cfg: DenoiseConfig, length: bool | str) -> InfillRequest:
    """`p`'s request under a bench schedule (greedy, one candidate; `length` falsy: no length
    signal)."""
    end_rule = None
    if cfg.pad_at_frontier is not None:
        end_rule = "frontier" if cfg.pad_at_frontier else "confident"
    return replace(
        p.req,
        schedule=cfg.schedule,
        steps=cfg.steps,
        threshold=cfg.threshold,
        temperature=cfg.temperature,
        end_rule=end_rule,
        length_estimate=bool(length),
    )


def options_for(m, cfg: DenoiseConfig, length: bool | str, options: DecodeOptions | None = None):
    """The DecodeOptions for a bench schedule: `options` (None: the infiller's own) with the
    schedule's experiment fields; `length` "all": the length signal at line starts too."""
    return replace(
        options or m.options,
        window=cfg.window,
        pad_run=cfg.pad_run,
        length_every_line=length == "all",
    )


def _run(
    m,
    p: Prepared,
    cache,
    cfg: DenoiseConfig,
    length: bool | str,
    options: DecodeOptions | None,
    step_fn=None,
) -> Fill:
    req = request_for(p, cfg, length)
    if getattr(m, "expand_id", None) is not None:  # trained with expand and delete: it grows
        t0 = time.perf_counter()
        r = m.infill(req)[0]
        return Fill(r.fills, r.steps_used, r.tokens, (time.perf_counter() - t0) * 1e3)
    opts = options_for(m, cfg, length, options)
    t0 = time.perf_counter()
    done = m.denoise(p.layout, cache, req, options=opts, step_fn=step_fn)
    ms = (time.perf_counter() - t0) * 1e3
    r = m.decode(done, p.layout, req)[0]
    return Fill(r.fills, r.steps_used, r.tokens, ms)


def fill_cached(
    m,
    p: Prepared,
    cache,
    cfg: DenoiseConfig,
    length: bool | str = False,
    options: DecodeOptions | None = None,
) -> Fill:
    """Denoise over an existing context cache: each step is a forward over the span only, or
    over the slots that can change, as the infiller runs it (model/span_step.py). `length`:
    True, line holes use the length signal where the infiller would (mid-line); "all", every
    line hole does (at line starts too); False, none. `options`: the infiller's DecodeOptions
    to start from (None: its own)."""
    return _run(m, p, cache, cfg, length, options)


def fill_uncached(
    m,
    p: Prepared,
    cfg: DenoiseConfig,
    length: bool | str = False,
    options: DecodeOptions | None = None,
) -> Fill:
    """Cache off: every step runs the full forward over context + span (group layout 0 / 1)."""
    lay = p.layout
    n_ctx = len(lay.ctx_ids)
    dev = m.device
    ctx = torch.tensor([lay.ctx_ids], dtype=torch.long, device=dev)
    pos = torch.tensor([lay.ctx_pos + lay.span_pos], dtype=torch.long, device=dev)
    group = torch.tensor([[0] * n_ctx + [1] * len(lay.span_pos)], dtype=torch.long, device=dev)

    def step_fn(ids: torch.Tensor) -> torch.Tensor:
        return m.net(torch.cat([ctx, ids], 1), pos, group)[:, n_ctx:]

    return _run(m, p, None, cfg, length, options, step_fn)


def denoise_config(
    schedule: str, steps: int | None = None, threshold: float | None = None, **options
) -> DenoiseConfig:
    """Greedy sampler settings; what is left None (threshold, end rule, window) takes the
    infiller's default for the hole when the fill runs."""
    return DenoiseConfig(
        schedule=schedule, steps=steps, threshold=threshold, temperature=0.0, **options
    )


def run_info(m, threads: int) -> dict:
    """What a result was measured with: the command, checkpoint, device, threads, machine."""
    return {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "weights": str(m.path),
        "device": str(m.device),
        "dtype": str(m.dtype),
        "precision": m.precision,
        "torch_threads": threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "git": _git_state(),
    }


def _git_state() -> str:
    """HEAD and whether model/ differs from it: the code that produced a result."""
    import subprocess

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    dirty = git("status", "--porcelain", "model/")
    return git("rev-parse", "--short", "HEAD") + (" (model/ modified)" if dirty else "")
