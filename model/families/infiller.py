"""The Infiller for published diffusion coders (Dream family, Open-dCoder, LLaDA).

Owns: loading one (model/families/checkpoint.py, tokens.py, networks.py), laying a request out
as the authors do (model/families/specs.py), and running the decoding loops over the family's
passes:
- fixed-length holes (Dream-Coder, DiffuCoder, Open-dCoder, LLaDA): model/sampler.py's
  `Denoiser`, the loop the shipped model runs, with the family's end token as its PAD (a
  committed end ends the fill) and its schedules, stop rules, deadline and trajectory;
- variable-length holes (a Dream checkpoint with `<|expand|>`: DreamOn): model/growing.py's
  `GrowingDenoiser`, DreamOn's expand/delete decoding, with DreamOn's evaluation settings as
  defaults (entropy order, 4 starting masks, 64 expansions, 128 passes, top-p 0.9).
Passes are exact (the whole window) or, with `cache="dual"`, Fast-dLLM's dual cache: the
context's keys and values from one exact pass, reused by passes over the holes (refreshed when
a hole changes length). Answers InfillRequests as model/interface.py describes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from model.decoding import (
    fixed_results,
    fixed_run,
    grow_results,
    growing_run,
    one_by_one,
    span_of,
    temperature_of,
)
from model.families.checkpoint import check_memory, inspect
from model.families.networks import BidirectionalLM, build
from model.families.specs import PASS_CACHES, SPECS
from model.families.tokens import FamilyTokenizer, find_specials
from model.growing import GrowConfig
from model.interface import (
    MASK_GLYPH,
    CheckpointError,
    InfillCancelled,
    InfillRequest,
    InfillResult,
    never,
    past,
)
from model.layout import fit_pieces, text_pieces

# DreamOn's evaluation settings (eval/configs/eval_infill.yaml of its authors), temperature 0
DREAMON = GrowConfig(start=4, max_expansions=64, steps=128, alg="entropy", top_p=0.9)
INT8_AUTO_MAX = 1_500_000_000  # "auto" precision on the CPU: int8 up to this many weights


@dataclass(frozen=True)
class FamilyLayout:
    """A request in the window: the text pieces' ids around the holes, and each hole's size
    (fixed slots, or the most it may grow to)."""

    begin: list[int]
    pieces: list[list[int]]  # prefix, middles, suffix (trimmed)
    end: list[int]
    sizes: list[int]

    def sequence(self, holes: list[list[int]]) -> tuple[list[int], list[int]]:
        """The window's ids with `holes` in place, and the holes' slots' sequence indices."""
        seq, slots = list(self.begin), []
        for k, piece in enumerate(self.pieces):
            seq += piece
            if k < len(holes):
                slots += range(len(seq), len(seq) + len(holes[k]))
                seq += holes[k]
        return seq + self.end, slots


class FamilyInfiller:
    """A published checkpoint behind the Infiller interface. `cache`: "exact" passes (the
    reference) or "dual" (Fast-dLLM's dual cache)."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | None = None,
        precision: str | None = None,
        family: str | None = None,
        cache: str = "exact",
        context_tokens: int | None = None,
    ):
        ck = inspect(path, family)
        if ck.family not in SPECS:
            raise CheckpointError(f"{ck.path}: family {ck.family!r} is not a published coder")
        if cache not in PASS_CACHES:
            raise CheckpointError(f"unknown cache mode {cache!r}; expected one of {PASS_CACHES}")
        from model.infill import resolve_device

        self.device = resolve_device(device)
        self.precision = self._precision(precision, ck.params)
        self.spec = SPECS[ck.family]
        self.path, self.family, self.cache = ck.path, ck.family, cache
        self.tok = FamilyTokenizer(ck.path)
        s = self.spec
        self.ids = find_specials(self.tok, s.mask, s.end, s.begin, s.expand)
        check_memory(ck, self.device.type, self.precision)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        try:
            net = build(ck.family, ck.config, ck.shards, dtype)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - transformers' own errors name the problem
            raise CheckpointError(f"cannot load {ck.path}: {type(e).__name__}: {e}") from None
        vocab = int(net.config.vocab_size)
        if max(self.ids.mask, self.ids.end) >= vocab:
            raise CheckpointError(f"{ck.path}: special token ids beyond the vocab_size {vocab}")
        net.to(self.device)
        if self.precision == "int8":
            from model import quantize

            quantize.quantize_int8(net)
        self.lm = BidirectionalLM(net, s.shift, self.device)
        # the window the checkpoint was built for (its config); what fills it is the caller's
        # choice (the server's contextTokens); `context_tokens` caps it further
        self.window = min(self.lm.window, context_tokens or self.lm.window)
        self.max_len = self.window  # (the model server reads the window under this name)
        self.growing = self.ids.expand is not None
        # the variable-length loop's settings (DreamOn's evaluation ones); a request's steps,
        # threshold, temperature and tokens_per_step override theirs
        self.defaults = DREAMON
        self.special = self.tok.special_ids() | {self.ids.mask, self.ids.end}
        self.mask_id, self.end_id = self.ids.mask, self.ids.end  # model/decoding.py's Model
        self.newlines = self.tok.line_break_ids()
        self.name = f"{ck.family}:{ck.path.name}"
        self.lock = threading.RLock()  # (reentrant: model/serve/interleave.py)
        self.last_timing: dict[str, float] = {}
        self.params = ck.params

    def _precision(self, precision: str | None, params: int) -> str:
        """bf16 on CUDA; on the CPU int8 weights for checkpoints up to INT8_AUTO_MAX weights
        ("auto"; a pass reads every weight, so int8 halves it against fp32), fp32 above (their
        int8 conversion's fp32 peak is what a bigger model cannot afford) or when asked."""
        from model import quantize

        precision = precision or "auto"
        if precision not in ("auto", "int8", "fp32", "bf16"):
            raise CheckpointError(f"unknown precision {precision!r}")
        if self.device.type == "cuda":
            if precision == "int8":
                raise CheckpointError("int8 precision is for CPU inference; use bf16 on CUDA")
            return "fp32" if precision == "fp32" else "bf16"
        if precision == "bf16":
            raise CheckpointError("bf16 is slow on this kind of CPU; use int8 or fp32")
        if precision == "int8" and not quantize.available():
            raise CheckpointError("int8 precision needs torch's quantized CPU engine")
        if precision == "auto" and params <= INT8_AUTO_MAX and quantize.available():
            return "int8"
        return "int8" if precision == "int8" else "fp32"

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text))

    # ------------------------------------------------------------------ layout
    def layout(self, req: InfillRequest) -> FamilyLayout:
        holes = req.holes
        if not holes:
            raise ValueError("an InfillRequest needs at least one Hole")
        sizes = [max(1, int(h.max_tokens)) for h in holes]
        begin = [self.ids.begin] if self.spec.begin_in_layout and self.ids.begin is not None else []
        end = [self.ids.end] if self.spec.end_in_layout else []
        room = self.window - sum(sizes) - len(begin) - len(end)
        if room < 0 or sum(sizes) > self.window // 2:
            raise ValueError(f"hole budgets total {sum(sizes)} tokens; at most {self.window // 2}")
        pieces = fit_pieces(self.tok.encode_pieces(text_pieces(req)), room)
        return FamilyLayout(begin, pieces, end, sizes)

    # ------------------------------------------------------------------ the interface
    def infill(
        self,
        req: InfillRequest,
        should_stop: Callable[[], bool] = never,
        late: Callable[[], bool] | None = None,
        *,
        on_step: Callable[[int, list[list[str]]], None] | None = None,
    ) -> list[InfillResult]:
        """Fill the request's holes; `on_step(step, canvas)` after each pass with each row's
        holes as text so far (masked slots as MASK_GLYPH)."""
        from model.sampler import Cancelled, denoise_run

        t0 = time.perf_counter()
        with self.lock, torch.inference_mode():
            job = self.prepare(req, should_stop, late, on_step)
            passes = self.passes(job.layout)
            try:
                out = denoise_run(job.canvas, lambda x: job.logits(passes(job.rows(x))))
            except Cancelled:
                raise InfillCancelled() from None
            results = job.results(out)
        self.last_timing = {"denoise_ms": (time.perf_counter() - t0) * 1e3}
        return results

    def infill_batch(
        self,
        reqs: Sequence[InfillRequest],
        stops: Sequence[Callable[[], bool]] | None = None,
        lates: Sequence[Callable[[], bool] | None] | None = None,
        *,
        on_steps: Sequence[Callable | None] | None = None,
        on_done: Callable[[int, list[InfillResult] | Exception], None] | None = None,
    ) -> list[list[InfillResult] | Exception]:
        """Several requests denoised together (the model server's batches): one outcome per
        request, in order (its results, or the exception it raised), each with its own canvas,
        settings, stop rules and deadline; every pass is one network call for all the requests
        still going (their windows right-padded, the padding masked), exact. With the dual cache
        (its keys and values are one request's) they run one after another. `on_done(i,
        outcome)` as each request leaves."""
        from model.sampler import Cancelled, denoise_batch

        n = len(reqs)
        stops = list(stops) if stops is not None else [never] * n
        lates = list(lates) if lates is not None else [None] * n
        on_steps = list(on_steps) if on_steps is not None else [None] * n
        outcomes: list = [None] * n

        def finish(i: int, outcome) -> None:
            outcomes[i] = outcome
            if on_done is not None:
                on_done(i, outcome)

        if self.cache != "exact":
            one_by_one(self.infill, reqs, stops, lates, on_steps, finish)
            return outcomes
        with self.lock, torch.inference_mode():
            jobs, idx = [], []
            for i, req in enumerate(reqs):
                try:
                    jobs.append(self.prepare(req, stops[i], lates[i], on_steps[i]))
                    idx.append(i)
                except Exception as exc:  # noqa: BLE001 - a request's failure stays its own
                    finish(i, exc)

            def step(active: list[int], xs: list) -> list:
                rows = [jobs[k].rows(x) for k, x in zip(active, xs)]
                seqs = [jobs[k].layout.sequence(r) for k, rr in zip(active, rows) for r in rr]
                logits, out, at = self.forward(seqs), [], 0
                for k, rr in zip(active, rows):
                    out.append(jobs[k].logits(logits[at : at + len(rr)]))
                    at += len(rr)
                return out

            def left(k: int, out) -> None:
                if isinstance(out, Cancelled):
                    finish(idx[k], InfillCancelled())
                elif isinstance(out, Exception):
                    finish(idx[k], out)
                else:
                    try:
                        finish(idx[k], jobs[k].results(out))
                    except Exception as exc:  # noqa: BLE001 - one request's failure is its own
                        finish(idx[k], exc)

            try:
                denoise_batch(step, [j.canvas for j in jobs], on_done=left)
            except Exception as exc:  # noqa: BLE001 - the network failed: every request left
                for i in idx:
                    if outcomes[i] is None:
                        finish(i, exc)
        return outcomes

    def text(self, ids: list[int], show_masks: bool = False) -> str:
        """A hole's ids as text (model/decoding.py's Model): up to its end token, special
        tokens left out; with `show_masks`, masked slots as MASK_GLYPH."""
        if not show_masks and self.ids.end in ids:
            ids = ids[: ids.index(self.ids.end)]
        out, run = "", []
        for i in ids:
            if i == self.ids.mask and show_masks:
                out += self.tok.decode(run) + MASK_GLYPH
                run = []
            elif i not in self.special:
                run.append(i)
        return out + self.tok.decode(run)

    # ------------------------------------------------------------------ passes
    def forward(self, seqs: list[tuple[list[int], list[int]]]) -> list[torch.Tensor]:
        """Exact passes over several windows at once (`(ids, slot indices)` each; shorter ones
        right-padded, the padding masked out of attention): per window, its slots' logits."""
        lengths = [len(ids) for ids, _ in seqs]
        width, n = max(lengths), max(len(sl) for _, sl in seqs)
        ids = torch.full((len(seqs), width), self.ids.end, dtype=torch.long)
        at = torch.zeros(len(seqs), n, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for b, (s, sl) in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(s)
            at[b, : len(sl)] = torch.tensor(sl, dtype=torch.long)
            mask[b, : len(s)] = 1
        pos = torch.arange(width).expand_as(ids)
        padded = min(lengths) < width
        logits = self.lm.logits_at(
            ids.to(self.device),
            pos.to(self.device),
            at.to(self.device),
            mask.to(self.device) if padded else None,
        )
        return [logits[b, : len(sl)] for b, (_, sl) in enumerate(seqs)]

    def passes(self, lay: FamilyLayout):
        """The step function of one request: (rows of holes) -> per row the logits at its
        slots; exact, or through the dual cache (the context's keys and values from an exact
        pass, rebuilt whenever a hole changes length; rows of different lengths pass exactly)."""
        state: dict = {}

        def run(rows: list[list[list[int]]]) -> list[torch.Tensor]:
            seqs = [lay.sequence(r) for r in rows]
            if self.cache == "exact" or len({len(s) for s, _ in seqs}) > 1:
                state.clear()
                return self.forward(seqs)
            key = tuple(tuple(len(h) for h in r) for r in rows)
            ids = torch.tensor([s for s, _ in seqs], device=self.device)
            at = torch.tensor([sl for _, sl in seqs], device=self.device)
            pos = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
            if state.get("key") != key:  # an exact pass; keep its context's keys and values
                slots, read = seqs[0][1], self.lm.read_index(at[0]).tolist()
                query = sorted(set(slots) | set(read))
                skip = set(query)
                keep = [i for i in range(ids.shape[1]) if i not in skip]
                cache, hidden = self.lm.context(ids, pos, keep)
                where = {p: k for k, p in enumerate(query)}
                state.update(
                    key=key,
                    cache=cache,
                    q=torch.tensor(query, device=self.device),
                    at=torch.tensor([where[p] for p in read], device=self.device),
                )
                return list(self.lm.read(hidden, self.lm.read_index(at)))
            q, at_q = state["q"], state["at"].expand(len(rows), -1)
            return list(self.lm.logits_cached(state["cache"], ids[:, q], pos[:, q], at_q))

        return run

    # ------------------------------------------------------------------ a request's canvas
    def prepare(
        self,
        req: InfillRequest,
        should_stop: Callable[[], bool] = never,
        late: Callable[[], bool] | None = None,
        on_step=None,
    ) -> Job:
        """A request laid out, with its canvas (model/decoding.py: growing holes for a checkpoint
        with an expand token, fixed slots otherwise) and how the loop talks to it."""
        lay = self.layout(req)
        late = late or (lambda: past(req.deadline))
        if self.growing:
            return self._growing(req, lay, should_stop, late, on_step)
        return self._fixed(req, lay, should_stop, late, on_step)

    def grow(self, req: InfillRequest, lay: FamilyLayout | None = None):
        """The variable-length loop's own output for `req` (model/growing.py GrowOutput: each
        row's holes as token ids, why each ended, the passes), before it becomes results."""
        from model.sampler import denoise_run

        with torch.inference_mode():
            job = self._growing(req, lay or self.layout(req), never, lambda: past(req.deadline))
            passes = self.passes(job.layout)
            return denoise_run(job.canvas, lambda x: job.logits(passes(job.rows(x))))

    def _growing(self, req, lay, should_stop, late, on_step=None) -> Job:
        d = self.defaults
        cfg = GrowConfig(
            start=d.start,
            max_expansions=d.max_expansions,
            steps=req.steps or d.steps,
            alg=d.alg,
            tokens_per_step=req.tokens_per_step,
            threshold=d.threshold if req.threshold is None else float(req.threshold),
            temperature=temperature_of(req),
            top_p=d.top_p,
        )
        fixed_room = sum(len(p) for p in lay.pieces) + len(lay.begin) + len(lay.end)
        canvas = growing_run(
            self,
            req,
            lay.sizes,
            self.ids.expand,
            cfg,
            should_stop=should_stop,
            late=late,
            on_step=on_step,
            room=self.window - fixed_room,
            device=self.device,
        )
        return Job(
            lay,
            canvas,
            rows=lambda x: x,
            logits=list,
            results=lambda out: grow_results(self, req, out),
        )

    def _fixed(self, req, lay, should_stop, late, on_step=None) -> Job:
        from model.infill import denoise_config
        from model.sampler import Vocab

        rel, o = [], 0  # the holes' slots back to back
        for n in lay.sizes:
            rel.append((o, o + n))
            o += n
        span = span_of(req, rel, lay.sizes)
        banned = [i for i in (self.ids.mask, self.ids.begin, self.ids.expand) if i is not None]
        vocab = Vocab(self.ids.mask, self.ids.end, banned, self.newlines)
        schedule = req.schedule or ("fixed" if req.steps or req.tokens_per_step else "threshold")
        steps, extra = req.steps, {}
        if req.tokens_per_step:
            steps = -(-sum(lay.sizes) // int(req.tokens_per_step))
            extra["pad_run"] = False
        if req.end_rule is not None:
            extra["pad_at_frontier"] = req.end_rule == "frontier"
        cfg = denoise_config(
            schedule, steps, req.threshold, temperature_of(req), max(lay.sizes), **extra
        )
        run = fixed_run(
            self,
            req,
            span,
            vocab,
            cfg,
            should_stop=should_stop,
            late=late,
            on_step=on_step,
            device=self.device,
        )
        return Job(
            lay,
            run.denoiser,
            rows=lambda x: [[row[a:b] for a, b in rel] for row in x.tolist()],
            logits=torch.stack,
            results=lambda out: fixed_results(self, req, out, rel, run.ended_by),
        )


@dataclass
class Job:
    """One request ready for the loop: its layout, its canvas (a Denoiser or a
    GrowingDenoiser), the canvas as rows of holes, the pass's logits as the canvas takes them,
    and the loop's output as results."""

    layout: FamilyLayout
    canvas: object
    rows: Callable
    logits: Callable
    results: Callable
