"""Benchmark-side access to the built-in infiller: one context encoding, several schedules.

Owns: laying a request out exactly as `BuiltinInfiller.infill` does (its own `_layout`), encoding
the context once and running `model.sampler.denoise` for any number of schedules over that one
cache (cache on), or recomputing the full forward under the same group layout at every step
(cache off). Greedy, one candidate. The benchmarks check these paths against `infiller.infill`.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from model.infill import LENGTH_THRESHOLD
from model.infill import denoise_config as infill_denoise_config
from model.interface import Hole, InfillRequest
from model.layout import span_slots
from model.sampler import DenoiseConfig, denoise


@dataclass
class Prepared:
    """A request laid out as the infiller lays it out: context, hole slots, span positions."""

    ctx_ids: list[int]
    ctx_pos: list[int]
    rel: list[tuple[int, int]]  # hole slot ranges within the span
    span_pos: list[int]
    min_tokens: list[int]
    line_holes: list[bool]  # holes a line break ends (Hole.single_line)
    segments: list  # the request's segments (the length signal reads the text before a hole)


@dataclass
class Fill:
    fills: list[str]
    steps: int
    tokens: int
    ms: float  # denoising only (the context encoding is timed separately)


def prepare(m, segments: list) -> Prepared:
    ctx_ids, ctx_pos, holes_abs, min_tokens = m._layout(InfillRequest(segments=segments))
    rel, span_pos = span_slots(holes_abs)
    lines = [s.single_line for s in segments if isinstance(s, Hole)]
    return Prepared(ctx_ids, ctx_pos, rel, span_pos, min_tokens, lines, list(segments))


def encode(m, p: Prepared):
    """The context K/V cache for `p` and the milliseconds it took."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        cache = m.net.encode_context(
            torch.tensor([p.ctx_ids], dtype=torch.long, device=m.device),
            torch.tensor([p.ctx_pos], dtype=torch.long, device=m.device),
        )
    return cache, (time.perf_counter() - t0) * 1e3


def _run(m, p: Prepared, make_step, cfg: DenoiseConfig, length: bool | str = False) -> Fill:
    longest = max(b - a for a, b in p.rel)
    # the infiller's own rule for long holes (model.infill.denoise_config), so both paths agree
    min_length = length_fn(m, p, cfg, length == "all") if length else None
    if min_length is not None and cfg.threshold is None:  # the infiller's default for it
        cfg = replace(cfg, threshold=LENGTH_THRESHOLD)
    cfg = denoise_config_for(cfg, longest)
    if min_length is not None:  # the infiller's rule and step for its length signal
        cfg = replace(
            cfg,
            length_rule=m.length_rule,
            length_step=m.length_step,
            length_end_prob=m.length_end_prob,
        )
    step_fn = make_step(cfg)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = denoise(
            step_fn,
            p.rel,
            1,
            m.tok.mask_id,
            m.tok.pad_id,
            [m.tok.mask_id, m.tok.sep_id],
            cfg,
            min_tokens=p.min_tokens,
            device=m.device,
            line_holes=p.line_holes,
            newline_ids=m.tok.newline_ids,
            min_length=min_length,
        )
    ms = (time.perf_counter() - t0) * 1e3
    fills = m._render(out.tokens[0], p.rel, show_masks=False)
    return Fill(fills, out.steps_used, int(out.committed[0]), ms)


def fill_cached(m, p: Prepared, cache, cfg: DenoiseConfig, length: bool | str = False) -> Fill:
    """Denoise over an existing context cache: each step is a forward over the span only, or
    over the slots that can change, as the infiller runs it (model/span_step.py). `length`:
    True, line holes use the length signal where the infiller would (mid-line); "all", every
    line hole does (at line starts too); False, none."""
    return _run(m, p, lambda c: m.span_step(cache, p.span_pos, p.rel, c), cfg, length)


def length_fn(m, p: Prepared, cfg: DenoiseConfig, every_line: bool = False):
    """The infiller's `min_length` for this layout (None without a length signal or where the
    infiller would not use it); `every_line`: for line holes at a line start too."""
    req = InfillRequest(segments=p.segments, schedule=cfg.schedule)
    return m.length_fn(req, p.rel, every_line)


def fill_uncached(m, p: Prepared, cfg: DenoiseConfig, length: bool | str = False) -> Fill:
    """Cache off: every step runs the full forward over context + span (group layout 0 / 1)."""
    n_ctx = len(p.ctx_ids)
    dev = m.device
    ctx = torch.tensor([p.ctx_ids], dtype=torch.long, device=dev)
    pos = torch.tensor([p.ctx_pos + p.span_pos], dtype=torch.long, device=dev)
    group = torch.tensor([[0] * n_ctx + [1] * len(p.span_pos)], dtype=torch.long, device=dev)

    def step_fn(ids: torch.Tensor) -> torch.Tensor:
        return m.net(torch.cat([ctx, ids], 1), pos, group)[:, n_ctx:]

    return _run(m, p, lambda _: step_fn, cfg, length)


def denoise_config(
    schedule: str, steps: int | None = None, threshold: float | None = None, **options
) -> DenoiseConfig:
    """Greedy sampler settings; what is left None (threshold, end rule, window) takes the
    infiller's default for the hole when the fill runs (`denoise_config_for`)."""
    return DenoiseConfig(
        schedule=schedule, steps=steps, threshold=threshold, temperature=0.0, **options
    )


def denoise_config_for(cfg: DenoiseConfig, longest_hole: int) -> DenoiseConfig:
    """`cfg` as the infiller would run it for a request whose longest hole has this many slots."""
    if cfg.window is not None:
        return cfg
    named = ("schedule", "steps", "threshold", "temperature")
    options = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in named}
    return infill_denoise_config(
        cfg.schedule, cfg.steps, cfg.threshold, cfg.temperature, longest_hole, **options
    )


def run_info(m, threads: int) -> dict:
    """What a result was measured with: the command, checkpoint, device, threads, machine."""
    return {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "weights": str(m.path),
        "device": str(m.device),
        "dtype": str(m.dtype),
        "precision": getattr(m, "precision", None),
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
