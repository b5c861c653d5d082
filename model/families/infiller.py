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
from collections.abc import Callable
from dataclasses import dataclass

import torch

from model.decoding import (
    MASK_GLYPH,
    fixed_results,
    fixed_run,
    grow_results,
    growing_run,
    stop_verdicts,
    temperature_of,
)
from model.families.checkpoint import check_memory, inspect
from model.families.networks import BidirectionalLM, build
from model.families.specs import PASS_CACHES, SPECS
from model.families.tokens import FamilyTokenizer, find_specials
from model.growing import GrowConfig
from model.interface import (
    CheckpointError,
    Hole,
    InfillCancelled,
    InfillRequest,
    InfillResult,
    never,
    past,
)
from model.layout import trim_context

# DreamOn's evaluation settings (eval/configs/eval_infill.yaml of its authors), temperature 0
DREAMON = GrowConfig(start=4, max_expansions=64, steps=128, alg="entropy", top_p=0.9)
INT8_AUTO_MAX = 1_500_000_000  # "auto" precision on the CPU: int8 up to this many weights
DEFAULT_CONTEXT = 2048  # window used when the config allows more (the authors' max_tokens)


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
        if device in (None, "", "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise CheckpointError("device 'cuda' requested but no CUDA device is available")
        self.device = torch.device(device)
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
        self.window = min(self.lm.window, context_tokens or DEFAULT_CONTEXT)
        self.max_len = self.window  # (the model server reads the window under this name)
        self.growing = self.ids.expand is not None
        # the variable-length loop's settings (DreamOn's evaluation ones); a request's steps,
        # threshold, temperature and tokens_per_step override theirs
        self.defaults = DREAMON
        self.special = set(self.tok.special_ids() | {self.ids.mask, self.ids.end})
        self.mask_id, self.end_id = self.ids.mask, self.ids.end  # model/decoding.py's Model
        self.newlines = self.tok.line_break_ids()
        self.name = f"{ck.family}:{ck.path.name}"
        self.lock = threading.Lock()
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
        texts: list[str] = [""]
        for s in req.segments:
            if isinstance(s, Hole):
                texts.append("")
            else:
                texts[-1] += s
        ids = self.tok.encode_pieces(texts)
        pre, mids, suf = ids[0], ids[1:-1], ids[-1]
        mid_n = sum(len(m) for m in mids)
        if mid_n > room // 2:  # cut long middle segments around their centres
            per = max(2, (room // 2) // max(1, len(mids)))
            mids = [m if len(m) <= per else m[: per // 2] + m[len(m) - per // 2 :] for m in mids]
            mid_n = sum(len(m) for m in mids)
        pre, suf = trim_context(pre, suf, room - mid_n)
        return FamilyLayout(begin, [pre, *mids, suf], end, sizes)

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
        lay = self.layout(req)
        late = late or (lambda: past(req.deadline))
        t0 = time.perf_counter()
        with self.lock, torch.inference_mode():
            if self.growing:
                results = self._grow(req, lay, should_stop, late, on_step)
            else:
                results = self._fixed(req, lay, should_stop, late, on_step)
        self.last_timing = {"denoise_ms": (time.perf_counter() - t0) * 1e3}
        return results

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

    def stop_rules(self, req: InfillRequest, late: Callable[[], bool]):
        """The holes' stop rules over the canvas (model/decoding.py `stop_verdicts`)."""
        return stop_verdicts(self, req, late)

    # ------------------------------------------------------------------ passes
    def _passes(self, lay: FamilyLayout, batch: int):
        """A function (rows of holes) -> per row the logits at its slots, exact or through the
        dual cache (its context rebuilt whenever the holes' lengths change)."""
        state: dict = {}

        def run(rows: list[list[list[int]]]) -> list[torch.Tensor]:
            seqs = [lay.sequence(r) for r in rows]
            same = all(len(s) == len(seqs[0][0]) for s, _ in seqs)
            if not same:  # candidates of different lengths: one pass each
                return [run_rows([r], [s])[0] for r, s in zip(rows, seqs)]
            return run_rows(rows, seqs)

        def run_rows(rows, seqs) -> list[torch.Tensor]:
            ids = torch.tensor([s for s, _ in seqs], device=self.device)
            at = torch.tensor([sl for _, sl in seqs], device=self.device)
            pos = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
            if self.cache == "exact" or len(rows) != batch:
                return list(self.lm.logits_at(ids, pos, at))
            slots = seqs[0][1]
            key = tuple(len(h) for h in rows[0])
            if state.get("key") != key:  # a full pass; keep its context's keys and values
                read = self.lm.read_index(at[0]).tolist()
                query = sorted(set(slots) | set(read))
                keep = [i for i in range(ids.shape[1]) if i not in set(query)]
                cache, hidden = self.lm.context(ids[:1], pos[:1], keep)
                if batch > 1:
                    cache.batch_repeat_interleave(batch)
                qi = torch.tensor(query, device=self.device)
                where = {p: k for k, p in enumerate(query)}
                state.update(key=key, cache=cache, q=qi, at=[where[p] for p in read])
                return list(self.lm._read(hidden.expand(len(rows), -1, -1), self.lm.read_index(at)))
            q = state["q"]
            at_q = torch.tensor(state["at"], device=self.device).expand(len(rows), -1)
            return list(self.lm.logits_cached(state["cache"], ids[:, q], pos[:, q], at_q))

        return run

    def _grow(self, req, lay, should_stop, late, on_step) -> list[InfillResult]:
        return grow_results(self, req, self.grow(req, lay, should_stop, late, on_step))

    def grow(
        self,
        req: InfillRequest,
        lay: FamilyLayout,
        should_stop: Callable[[], bool] = never,
        late: Callable[[], bool] | None = None,
        on_step=None,
    ):
        """The variable-length loop's own output for `req` (model/growing.py GrowOutput: each
        row's holes as token ids, why each ended, the passes): what `infill` decodes."""
        from model.sampler import Cancelled, denoise_run

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
        run = growing_run(
            self,
            req,
            lay.sizes,
            self.ids.expand,
            cfg,
            should_stop=should_stop,
            late=late or (lambda: past(req.deadline)),
            on_step=on_step,
            room=self.window - fixed_room,
            device=self.device,
        )
        try:
            with torch.inference_mode():
                return denoise_run(run, self._passes(lay, max(1, int(req.candidates))))
        except Cancelled:
            raise InfillCancelled() from None

    def _fixed(self, req, lay, should_stop, late, on_step) -> list[InfillResult]:
        from model.infill import denoise_config
        from model.layout import span_slots
        from model.sampler import Cancelled, Span, Vocab, denoise_run

        slots, o = [], 0
        for n in lay.sizes:
            slots.append((o, o + n))
            o += n
        rel, _ = span_slots(slots)
        span = Span(
            rel,
            min_tokens=[min(h.min_tokens, n) for h, n in zip(req.holes, lay.sizes)],
            line_holes=[h.single_line for h in req.holes],
        )
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
        passes = self._passes(lay, max(1, int(req.candidates)))

        def step_fn(x: torch.Tensor) -> torch.Tensor:
            return torch.stack(passes([[row[a:b] for a, b in rel] for row in x.tolist()]))

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
        try:
            out = denoise_run(run.denoiser, step_fn)
        except Cancelled:
            raise InfillCancelled() from None
        return fixed_results(self, req, out, rel, run.ended_by)
