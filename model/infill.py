"""The built-in Infiller: shipped tokenizer + network + sampler behind model/interface.py.

Owns: checkpoint validation and loading (safetensors + JSON only, clear errors naming the file),
device and precision choice (int8 weights on CPU, fp32 on request, bf16 on CUDA), and a request's
four steps, each a public method that benchmarks call as `infill` does:
  layout(req) -> Layout            segments as context and hole slots within the trained window
  encode(layout) -> (cache, reused) the context's K/V (reusing one of the last few encodings:
                                    model/context_reuse.py)
  denoise(layout, cache, req) -> Denoised   the sampler over the span (steps run only the span
                                    slots that can change: model/span_step.py)
  decode(denoised, layout, req) -> [InfillResult]   texts, why each fill ended, ranked candidates
How it decodes beyond what a request asks is a `DecodeOptions` (immutable; the defaults are the
shipped behaviour): the infiller's own, or one a benchmark passes to `denoise` / `infill`.
`load_infiller` builds the backend a checkpoint needs (this one, or model/families' for a
published coder); it keeps nothing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from model.interface import (
    MASK_GLYPH,
    PRECISIONS,
    CheckpointError,
    Hole,
    InfillCancelled,
    InfillRequest,
    InfillResult,
    never,
    past,
)
from model.layout import fit_pieces, header_tokens, place, span_slots, text_pieces

if TYPE_CHECKING:
    from model.sampler import DenoiseOutput, Span

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
LONG_HOLE = 40  # tokens: a hole longer than this is decoded semi-autoregressively
LONG_HOLE_WINDOW = 8
DEFAULT_THRESHOLD = 0.9
LONG_HOLE_THRESHOLD = 0.7
END_RULES = ("frontier", "confident")
REUSE_MARGIN = 16  # context tokens re-encoded on each side of what changed since the base
REUSE_LIMIT = 96  # re-encode everything once more than this many context tokens would be
REUSE_BASES = 4  # full encodes kept to reuse (most recent first): several places / files stay warm
SPAN_BLOCK = 16  # slots a windowed step runs per hole (model/span_step.py)
# a line fill ends no sooner than the length its length signal reaches with this probability
# of having ended (model/length.py's quantile_length; chosen on the dev split, docs/length.md)
LENGTH_QUANTILE = 0.3
LENGTH_RULE = "soft"  # model/sampler.py's length_rule for the estimate
LENGTH_END_PROB = None  # model/sampler.py's length_end_prob (None: the threshold)
LENGTH_THRESHOLD = 0.7  # a line decoded with its length estimate: the default threshold
GROW_START = 4  # a checkpoint with an expand token: masks a hole starts from (DreamOn's)
GROW_STEPS = 128  # and the most passes its fill takes


@dataclass(frozen=True)
class DecodeOptions:
    """How the built-in infiller decodes beyond what a request asks. The defaults are the shipped
    behaviour (chosen on the development set, never on HumanEval); benchmarks pass others to
    `BuiltinInfiller.denoise` or `infill` (`dataclasses.replace(DecodeOptions(), ...)`)."""

    # windowed (long) holes: steps run this many slots per hole, the rest of the span through
    # K/V from the last full step (model/span_step.py); None: every step runs the whole span
    span_block: int | None = SPAN_BLOCK
    # the PADs after a fill's end run once, then keep their K/V (model/span_step.py)
    stale_ends: bool = True
    # a line fill ends no sooner than the length its length signal reaches with this probability
    # of having ended (model/length.py's quantile_length)
    length_quantile: float = LENGTH_QUANTILE
    length_rule: str = LENGTH_RULE  # model/sampler.py's DenoiseConfig.length_rule
    length_end_prob: float | None = LENGTH_END_PROB  # DenoiseConfig.length_end_prob
    length_step: int | None = None  # DenoiseConfig.length_step; None: the checkpoint's
    # the length signal at line starts too, not only mid-line (benchmarks: docs/length.md)
    length_every_line: bool = False
    # DenoiseConfig fields for experiments (bench/dev_infill.py): None / the sampler's default
    # is the shipped rule (window: LONG_HOLE_WINDOW for long holes, none for short ones)
    window: int | None = None
    pad_run: bool = True


@dataclass(frozen=True)
class Layout:
    """A request laid out in the model's window (`BuiltinInfiller.layout`)."""

    ctx_ids: list[int]  # the context tokens: prefix, middle pieces, suffix (trimmed to fit)
    ctx_pos: list[int]  # their positions
    slots: list[tuple[int, int]]  # each hole's slot positions [a, b) among them
    span_pos: list[int]  # the positions of the span: the holes' slots back to back
    span: Span  # the holes as the sampler sees them (ranges within the span, min tokens, lines)
    head: int = 0  # the first context tokens that are the request's header (header_chars)


@dataclass
class Denoised:
    """What `BuiltinInfiller.denoise` gives `decode`: the sampler's output and why the stop rules
    ended fills."""

    out: DenoiseOutput
    ended_by: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, hole) -> why
    full_steps: int = 0  # steps over the whole span (model/span_step.py)
    partial_steps: int = 0  # steps over part of it


# `on_step(step, canvas)`: after each denoising step (1-based), each row's holes as text so far
StepView = Callable[[int, list[list[str]]], None]


@dataclass
class SamplerRun:
    """One request's sampler inputs (`BuiltinInfiller.sampler_run`): its step function over the
    span and its canvas (model/decoding.py's FixedRun: the Denoiser and where its stop rules
    write why fills ended)."""

    step: Callable
    run: object  # model/decoding.py FixedRun

    def denoised(self, out: DenoiseOutput) -> Denoised:
        return Denoised(
            out,
            self.run.ended_by,
            getattr(self.step, "full_steps", 0),
            getattr(self.step, "partial_steps", 0),
        )


def denoise_config(
    schedule: str,
    steps: int | None,
    threshold: float | None,
    temperature: float,
    longest_hole: int,
    **options,
):
    """The sampler settings for a request. Under the threshold schedule (defaults chosen on the
    dev set of unseen code, bench/dev_infill.py, never on HumanEval):
    - long (block) holes are committed within a sliding window from the left, and their end only
      where the content reaches it (pad_at_frontier; the "frontier" end rule): decoding the whole
      hole at once cut 4-line blocks to 0.05 of their true length; the window alone to 0.18
      (edit similarity 0.22, first-line exact 8.8 % of 80); window and frontier 0.39 (0.34,
      15 %) at 2.5x the passes; threshold 0.7 there gives the same (0.41, 0.34, 15 %) in 20.3
      passes instead of 24.5, so long holes default to 0.7;
    - short (line) holes are decoded whole and their end committed where PAD is most confident
      (the "confident" end rule): the same exact match as at the frontier (14.5 % of 200 lines)
      in 4.5 passes instead of 10.9, though at 0.36 of the true length (similarity 0.43 vs 0.54);
    - threshold 0.9 for lines: with the confident end, 0.7 gave 13.2 % exact against 14.3 % on
      600 lines (similarity 0.446 vs 0.439) for a fifth fewer passes (3.6 vs 4.6); at the
      frontier 0.7 and 0.5 lost 1.5 and 5.5 points for 1.2 and 2.3 fewer passes.
    A request's `end_rule` overrides the end rule."""
    from model.sampler import DenoiseConfig

    long = schedule == "threshold" and longest_hole > LONG_HOLE
    if threshold is None:
        threshold = LONG_HOLE_THRESHOLD if long else DEFAULT_THRESHOLD
    if options.get("pad_at_frontier") is None:
        options["pad_at_frontier"] = long
    if long and options.get("window") is None:
        options["window"] = LONG_HOLE_WINDOW
    return DenoiseConfig(
        schedule=schedule,
        steps=steps,
        threshold=float(threshold),
        temperature=temperature,
        **options,
    )


def mid_line_holes(segments: list) -> list[bool]:
    """For each Hole of a request's segments: whether its line has text before it."""
    out, before = [], ""
    for s in segments:
        if isinstance(s, Hole):
            out.append(bool(before.rsplit("\n", 1)[-1].strip()))
            before = ""
        else:
            before += s
    return out


def resolve_device(device: str | None):
    """The torch device for a `device` setting: "auto" (or none) is CUDA where there is one,
    else the CPU; CUDA asked for where there is none is a CheckpointError."""
    import torch

    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' requested but no CUDA device is available")
    return torch.device(device)


def validate_checkpoint(path: Path, tokenizer: bool = True) -> dict:
    """Check the files of a checkpoint of the shipped format; return its config dict or raise
    CheckpointError. `tokenizer`: parse tokenizer.json too (False: only its presence; a loader
    that parses it next says itself when it is corrupt). The weight files are checked as any
    checkpoint's (model/families/checkpoint.py)."""
    from model.families.checkpoint import (
        SHIPPED_MODEL_TYPE,
        check_safetensors,
        read_config,
        shards_of,
    )

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    cfg_file, tok_file = path / "config.json", path / "tokenizer.json"
    cfg = read_config(path)
    if not tok_file.is_file():
        raise CheckpointError(f"checkpoint file missing: {tok_file}")
    if cfg.get("model_type") != SHIPPED_MODEL_TYPE:
        raise CheckpointError(
            f"{cfg_file}: model_type is {cfg.get('model_type')!r}, expected {SHIPPED_MODEL_TYPE!r}"
        )
    for shard in shards_of(path):
        check_safetensors(shard)
    if tokenizer:
        try:
            json.loads(tok_file.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"tokenizer file is corrupt: {tok_file} ({e})") from None
    return cfg


class BuiltinInfiller:
    """Loads `model/weights/` (or another directory of the same format) and fills holes.

    Settings: `options` (a DecodeOptions, immutable: how it decodes); and two that the server
    changes between requests, plain attributes read when a request starts: `reuse_context`
    (model/context_reuse.py; False: every context is encoded in full; the `contextReuse`
    setting) and `adaptive_threads` (CPU: a full context encode widens onto the cores idle then,
    model/cpu_threads.py; False: torch's thread count as set, a fixed `threads` setting)."""

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        device: str | None = None,
        precision: str | None = None,
        options: DecodeOptions | None = None,
        reuse_context: bool = True,
        adaptive_threads: bool = True,
    ):
        from model.cpu_threads import set_spin_count

        set_spin_count()  # before torch loads libgomp (model/cpu_threads.py)
        import torch

        from model.network import ParafillNet
        from model.sampler import Vocab
        from model.tokenizer import CodeTokenizer

        self.path = Path(path) if path else WEIGHTS_DIR
        validate_checkpoint(self.path, tokenizer=False)
        self.device = resolve_device(device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        tok_file = self.path / "tokenizer.json"
        try:
            self.tok = CodeTokenizer.from_file(tok_file)
        except Exception as e:  # noqa: BLE001 - the tokenizers library's parse errors
            raise CheckpointError(f"tokenizer file is corrupt: {tok_file} ({e})") from None
        try:
            self.net = ParafillNet.load_checkpoint(self.path, dtype=self.dtype)
            config = self.net.config
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - mismatched shapes, unreadable tensors, ...
            raise CheckpointError(
                f"cannot load checkpoint {self.path}: {type(e).__name__}: {e}"
            ) from None
        if config.vocab_size != self.tok.vocab_size:
            raise CheckpointError(
                f"{self.path / 'tokenizer.json'}: vocabulary of {self.tok.vocab_size} does not match "
                f"config.json's vocab_size {config.vocab_size}"
            )
        self.net.to(self.device).eval()
        self.precision = self._set_precision(precision)
        self.config = config
        self.max_len = int(config.train_seq_len)
        self.name = f"parafill-builtin:{self.path.name}"
        # reentrant: the model server runs a cheaper request from within a running one's
        # stop check, on the same thread (model/serve/interleave.py)
        self.lock = threading.RLock()
        self.last_timing: dict[str, float] = {}
        self.options = options or DecodeOptions()
        self.reuse_context = reuse_context
        self.adaptive_threads = adaptive_threads
        self.bases: list = []  # the last REUSE_BASES fully encoded contexts, most recent first
        # the denoising step whose end curve the head was fitted on (config.json)
        self.length_step = int(config.length_head_step or 1)
        self.mask_id, self.end_id = self.tok.mask_id, self.tok.pad_id  # model/decoding.py's Model
        # a checkpoint trained with expand and delete (training/expand.py) decodes its holes
        # growing and shrinking (model/growing.py); the shipped one has no expand token
        self.expand_id = self.tok.expand_id
        self.vocab = Vocab(
            self.tok.mask_id,
            self.tok.pad_id,
            banned_ids=[self.tok.mask_id, self.tok.sep_id],
            newline_ids=list(self.tok.newline_ids),
        )

    @property
    def has_length_signal(self) -> bool:
        """Whether the checkpoint ships a length head (model/length.py)."""
        return getattr(self.net, "length_head", None) is not None

    def _set_precision(self, precision: str | None) -> str:
        """Apply `precision`: "auto" is int8 weights on CPU where torch has the quantized engine
        (2x faster steps, see model/quantize.py), fp32 where it has not; bf16 on CUDA."""
        from model import quantize

        precision = precision or "auto"
        if precision not in PRECISIONS:
            raise CheckpointError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
        if self.device.type == "cuda":
            if precision == "int8":
                raise CheckpointError("int8 precision is for CPU inference; use bf16 on CUDA")
            return "bf16"
        if precision == "fp32":
            return "fp32"
        if not quantize.available():
            if precision == "int8":
                raise CheckpointError("int8 precision needs torch's quantized CPU engine")
            return "fp32"
        quantize.quantize_int8(self.net)
        return "int8"

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text))

    # ------------------------------------------------------------------ the interface
    def infill(
        self,
        req: InfillRequest,
        should_stop: Callable[[], bool] = never,
        late: Callable[[], bool] | None = None,
        *,
        options: DecodeOptions | None = None,
        on_step: StepView | None = None,
    ) -> list[InfillResult]:
        """Fill the request's holes (model/interface.py): layout -> encode -> denoise -> decode.
        `late`: the caller's deadline test, in place of the request's own `deadline`;
        `options`: in place of the infiller's own (benchmarks); `on_step(step, canvas)`: called
        after each denoising step (from this thread) with each row's holes as text so far,
        masked slots shown as MASK_GLYPH (the model server streams them)."""
        import torch

        from model.cpu_threads import Fitter

        if self.expand_id is not None:
            return self.grow(req, should_stop, late, on_step=on_step)
        layout = self.layout(req)
        cpu = self.adaptive_threads and self.device.type == "cpu"
        with self.lock, torch.inference_mode(), Fitter(cpu) as fitter:
            t0 = time.perf_counter()
            reuse = req.reuse_context and self.reuse_context
            cache, reused = self.encode(layout, should_stop, fit=fitter.fit, reuse=reuse)
            fitter.fit(0)  # the span steps: back to the base threads
            t1 = time.perf_counter()
            done = self.denoise(
                layout,
                cache,
                req,
                should_stop=should_stop,
                late=late,
                options=options,
                on_step=on_step,
            )
            t2 = time.perf_counter()
        self.last_timing = {
            "context_ms": (t1 - t0) * 1e3,
            "denoise_ms": (t2 - t1) * 1e3,
            "context_reused": reused,
            "header_kept": self.header_kept(layout) if reused else 0,
            "full_steps": done.full_steps,
            "partial_steps": done.partial_steps,
        }
        return self.decode(done, layout, req)

    def grow(
        self,
        req: InfillRequest,
        should_stop: Callable[[], bool] = never,
        late: Callable[[], bool] | None = None,
        *,
        on_step: StepView | None = None,
    ) -> list[InfillResult]:
        """`infill` for a checkpoint with an expand token: each hole starts from GROW_START
        masks and grows (a committed expand becomes two masks) or shrinks (a committed PAD
        deletes itself and the masks after it) to its length (model/growing.py), within its
        budget. The suffix sits right after a hole's slots, as training/expand.py trains it, so
        the context is encoded again whenever a hole changes length; passes run over the span."""
        import torch

        from model.decoding import grow_results, growing_run, temperature_of
        from model.growing import GrowConfig
        from model.sampler import Cancelled, denoise_run

        pieces, budgets = self.pieces(req)
        cfg = GrowConfig(
            start=GROW_START,
            steps=req.steps or GROW_STEPS,
            tokens_per_step=req.tokens_per_step,
            threshold=DEFAULT_THRESHOLD if req.threshold is None else float(req.threshold),
            temperature=temperature_of(req),
            banned=(self.tok.mask_id, self.tok.sep_id),
        )
        canvas = growing_run(
            self,
            req,
            budgets,
            self.expand_id,
            cfg,
            should_stop=should_stop,
            late=late or (lambda: past(req.deadline)),
            on_step=on_step,
            room=self.max_len - sum(len(p) for p in pieces),
            device=self.device,
        )
        encoded: dict[tuple[int, ...], object] = {}

        def step(rows: list[list[list[int]]]) -> list[torch.Tensor]:
            now = {tuple(len(h) for h in row) for row in rows}
            for gone in set(encoded) - now:  # lengths no row has any more
                del encoded[gone]
            out = []
            for row in rows:
                lengths = tuple(len(h) for h in row)
                ctx_ids, ctx_pos, slots = place(pieces, list(lengths))
                if lengths not in encoded:  # a hole changed length: the suffix moved
                    encoded[lengths] = self.net.encode_context(
                        torch.tensor([ctx_ids], device=self.device),
                        torch.tensor([ctx_pos], device=self.device),
                        should_stop=should_stop,
                    )
                span = [t for h in row for t in h]
                pos = [p for a, b in slots for p in range(a, b)]
                out.append(
                    self.net.span_forward(
                        torch.tensor([span], device=self.device),
                        torch.tensor([pos], device=self.device),
                        encoded[lengths],
                    )[0]
                )
            return out

        t0 = time.perf_counter()
        with self.lock, torch.inference_mode():
            try:
                out = denoise_run(canvas, step)
            except Cancelled:
                raise InfillCancelled() from None
        self.last_timing = {"denoise_ms": (time.perf_counter() - t0) * 1e3}
        return grow_results(self, req, out)

    # ------------------------------------------------------------------ the four steps
    def layout(self, req: InfillRequest) -> Layout:
        """Step 1: check the request and lay it out in the window: context ids and positions
        (prefix and suffix trimmed, long middle segments cut around their centres) and each
        hole's slots (ValueError for a request without holes, budgets over half the window, or
        an unknown end rule)."""
        from model.decoding import span_of

        texts, ids, pieces, budgets = self._pieces(req)
        head = 0
        if req.header_chars > 0:  # the header's tokens among those kept (model/layout.py)
            (alone,) = self.tok.encode_pieces([texts[0][: req.header_chars]])
            head = header_tokens(alone, ids[0], len(ids[0]) - len(pieces[0]))
        ctx_ids, ctx_pos, slots = place(pieces, budgets)
        rel, span_pos = span_slots(slots)
        return Layout(ctx_ids, ctx_pos, slots, span_pos, span_of(req, rel, budgets), head)

    def pieces(self, req: InfillRequest) -> tuple[list[list[int]], list[int]]:
        """The request's text pieces as ids, cut to the window around its holes, and each
        hole's budget (ValueError for a request without holes, budgets over half the window,
        or an unknown end rule)."""
        _, _, fitted, budgets = self._pieces(req)
        return fitted, budgets

    def _pieces(self, req: InfillRequest):
        """`pieces`, with the text pieces and their ids before the cut: (texts, ids, fitted
        ids, budgets)."""
        holes = req.holes
        if not holes:
            raise ValueError("an InfillRequest needs at least one Hole")
        budgets = [max(1, int(h.max_tokens)) for h in holes]
        if sum(budgets) > self.max_len // 2:
            raise ValueError(
                f"hole budgets total {sum(budgets)} tokens; at most {self.max_len // 2}"
            )
        if req.end_rule is not None and req.end_rule not in END_RULES:
            raise ValueError(f"unknown end_rule {req.end_rule!r}; expected one of {END_RULES}")
        texts = text_pieces(req)
        ids = self.tok.encode_pieces(texts)
        return texts, ids, fit_pieces(ids, self.max_len - sum(budgets)), budgets

    def encode(
        self,
        layout: Layout,
        should_stop: Callable[[], bool] = never,
        *,
        fit: Callable[[int], object] | None = None,
        reuse: bool | None = None,
        keep: bool = True,
    ):
        """Step 2: the context's K/V cache and whether it was built from a kept full encode.
        With `reuse` (None: `reuse_context`) the kept bases are tried most recent first (a diff
        against one that shares little costs about 2 ms); one that serves moves to the front.
        Otherwise the context is encoded in full, stopping between layers once `should_stop`
        says so (InfillCancelled; no base is kept), and with `keep` it becomes the newest base.
        `fit`, if given, sets the threads before a full encode (model/cpu_threads.py's
        Fitter.fit)."""
        import torch

        ids, pos = layout.ctx_ids, layout.ctx_pos
        with torch.inference_mode():
            if self.reuse_context if reuse is None else reuse:
                cache = self.from_bases(layout)
                if cache is not None:
                    return cache, True
            if fit is not None:
                fit(len(ids))
            cache = self.net.encode_context(  # an empty context gives (1, 0) tensors
                torch.tensor([ids], dtype=torch.long, device=self.device),
                torch.tensor([pos], dtype=torch.long, device=self.device),
                should_stop=should_stop,
            )
        if keep:
            self.keep_base(layout, cache)
        return cache, False

    def from_bases(self, layout: Layout):
        """The context cache of `layout` built from a kept full encode (model/context_reuse.py),
        tried most recent first, those with the layout's header before the others (one that
        serves moves to the front); None if none serves."""
        from model.context_reuse import reuse, serving_order

        ids, head = layout.ctx_ids, layout.head
        for k in serving_order(self.bases, ids, head):
            base = self.bases[k]
            cache = reuse(self.net, base, ids, layout.ctx_pos, REUSE_MARGIN, REUSE_LIMIT)
            if cache is not None:
                self.bases.insert(0, self.bases.pop(k))
                return cache
        return None

    def header_kept(self, layout: Layout) -> int:
        """After a reuse: the header tokens of `layout` whose encoding was kept as it was (the
        serving base, now the newest, had the same header), else 0."""
        from model.context_reuse import same_header

        front = self.bases[0] if self.bases else None
        if front is None or not same_header(front, layout.ctx_ids, layout.head):
            return 0
        return layout.head

    def keep_base(self, layout: Layout, cache) -> None:
        """Keep a full encode of `layout`'s context as the newest base (the K/V only, not the
        span buffers the request's steps add)."""
        from model.context_reuse import Base
        from model.network import ContextCache

        cc = ContextCache(cache.keys, cache.values)
        base = Base(layout.ctx_ids, layout.ctx_pos, cc, layout.head)
        self.bases = [base, *self.bases][:REUSE_BASES]

    def denoise(
        self,
        layout: Layout,
        cache,
        req: InfillRequest,
        *,
        should_stop: Callable[[], bool] = never,
        late: Callable[[], bool] | None = None,
        options: DecodeOptions | None = None,
        step_fn: Callable | None = None,
        on_step: StepView | None = None,
    ) -> Denoised:
        """Step 3: run the sampler over the span: `req.candidates` rows, the sampler settings of
        `sampler_config`, the holes' stop rules (`late`: the caller's deadline test, in place of
        the request's `deadline`) and the length signal where it applies. `options`: in place of
        the infiller's own; `step_fn`: in place of span steps over `cache` (benchmarks: a full
        forward at every step); `on_step`: as `infill`'s. InfillCancelled once `should_stop`
        says so."""
        import torch

        from model.sampler import Cancelled, denoise_run

        run = self.sampler_run(layout, cache, req, should_stop, late, options, step_fn, on_step)
        try:
            with torch.inference_mode():
                out = denoise_run(run.run.denoiser, run.step)
        except Cancelled:
            raise InfillCancelled() from None
        return run.denoised(out)

    def sampler_run(
        self,
        layout: Layout,
        cache,
        req: InfillRequest,
        should_stop: Callable[[], bool] = never,
        late: Callable[[], bool] | None = None,
        options: DecodeOptions | None = None,
        step_fn: Callable | None = None,
        on_step: StepView | None = None,
    ) -> SamplerRun:
        """What `denoise` hands the sampler for `req` (and `infill_batch` for each request):
        its step function and its canvas (model/decoding.py: the stop rules, the length
        signal, the live view)."""
        from model.decoding import fixed_run

        opts = options or self.options
        rel = layout.span.holes
        min_length = self.length_fn(req, rel, options=opts)
        cfg = self.sampler_config(req, layout, min_length is not None, opts)
        step = step_fn or self.span_step(cache, layout.span_pos, rel, cfg, opts)
        run = fixed_run(
            self,
            req,
            layout.span,
            self.vocab,
            cfg,
            should_stop=should_stop,
            late=late or (lambda: past(req.deadline)),
            on_step=on_step,
            min_length=min_length,
            device=self.device,
        )
        return SamplerRun(step, run)

    def infill_batch(
        self,
        reqs: Sequence[InfillRequest],
        stops: Sequence[Callable[[], bool]] | None = None,
        lates: Sequence[Callable[[], bool] | None] | None = None,
        *,
        on_steps: Sequence[StepView | None] | None = None,
        on_done: Callable[[int, list[InfillResult] | Exception], None] | None = None,
        options: DecodeOptions | None = None,
        attention: str | None = None,
        pack_contexts: bool | None = None,
    ) -> list[list[InfillResult] | Exception]:
        """Several requests denoised together (the model server's batches): one outcome per
        request, in order, each what `infill(req, stops[i], lates[i], on_step=on_steps[i])`
        gives alone (the same fills, scores, steps and ended_by: tests/test_batch.py), or the
        exception it raised: ValueError for a request the model refuses, InfillCancelled once
        its `stops[i]` says so (before it starts, or between steps: it leaves the batch and the
        others go on).

        The contexts that no kept encode serves are encoded together (`encode_contexts`: every
        context's tokens through the weights together, attention per context or padded with a
        key mask, `attention`; on a CPU one call each unless `pack_contexts`, measured faster
        there); each becomes a kept base as in
        `encode`, but requests of one batch do not reuse each other's encodes. Then one sampler
        loop (`model/sampler.py` `denoise_batch`) with one network call per step for every
        request still going (`model/span_step.py` `BatchSpanStep`: each request's own holes,
        slots and span steps); each request keeps its own schedule, threshold, candidates,
        length signal, stop rules and deadline, and leaves the batch when it is done, costing
        nothing more. `on_done(i, outcome)` is called (from this thread) as each request
        leaves, so a caller can answer it before the batch ends."""
        import torch

        from model.cpu_threads import Fitter
        from model.sampler import Cancelled, denoise_batch
        from model.span_step import BatchSpanStep

        n = len(reqs)
        stops = list(stops) if stops is not None else [never] * n
        lates = list(lates) if lates is not None else [None] * n
        on_steps = list(on_steps) if on_steps is not None else [None] * n
        outcomes: list[list[InfillResult] | Exception | None] = [None] * n

        def finish(i: int, outcome: list[InfillResult] | Exception) -> None:
            outcomes[i] = outcome
            if on_done is not None:
                on_done(i, outcome)

        if self.expand_id is not None:  # growing holes: one request after another
            from model.decoding import one_by_one

            one_by_one(self.grow, reqs, stops, lates, on_steps, finish)
            return outcomes  # type: ignore[return-value]

        layouts: dict[int, Layout] = {}
        for i, req in enumerate(reqs):
            try:
                layouts[i] = self.layout(req)
            except Exception as exc:  # noqa: BLE001 - a request's failure stays its own
                finish(i, exc)
        cpu = self.adaptive_threads and self.device.type == "cpu"
        t0 = time.perf_counter()
        with self.lock, torch.inference_mode(), Fitter(cpu) as fitter:
            t0 = time.perf_counter()
            pending = []
            for i in layouts:
                if stops[i]():
                    finish(i, InfillCancelled())
                else:
                    pending.append(i)
            caches: dict[int, object] = {}
            if self.reuse_context:
                for i in pending:
                    if not reqs[i].reuse_context:
                        continue  # the request asks for a full encode
                    cache = self.from_bases(layouts[i])
                    if cache is not None:
                        caches[i] = cache
            fresh = [i for i in pending if i not in caches]
            if fresh:
                fitter.fit(sum(len(layouts[i].ctx_ids) for i in fresh))
                try:
                    encoded = self.net.encode_contexts(
                        [layouts[i].ctx_ids for i in fresh],
                        [layouts[i].ctx_pos for i in fresh],
                        attention=attention,
                        should_stop=lambda: all(stops[i]() for i in fresh),
                        pack=pack_contexts,
                    )
                except InfillCancelled:
                    encoded = []
                    for i in fresh:
                        finish(i, InfillCancelled())
                    pending = [i for i in pending if i in caches]
                for i, cache in zip(fresh, encoded):
                    caches[i] = cache
                    self.keep_base(layouts[i], cache)
            fitter.fit(0)  # the span steps: back to the base threads
            t1 = time.perf_counter()
            runs, idx, samplers = [], [], []
            for i in pending:
                req, layout = reqs[i], layouts[i]
                try:
                    run = self.sampler_run(
                        layout, caches[i], req, stops[i], lates[i], options, None, on_steps[i]
                    )
                    runs.append(run.run.denoiser)
                except Exception as exc:  # noqa: BLE001 - a request's failure stays its own
                    finish(i, exc)
                    continue
                idx.append(i)
                samplers.append(run)

            def left(k: int, out: DenoiseOutput | Exception) -> None:
                i = idx[k]
                if isinstance(out, Cancelled):
                    finish(i, InfillCancelled())
                elif isinstance(out, Exception):
                    finish(i, out)
                else:
                    try:
                        finish(i, self.decode(samplers[k].denoised(out), layouts[i], reqs[i]))
                    except Exception as exc:  # noqa: BLE001 - one request's failure is its own
                        finish(i, exc)

            step = BatchSpanStep(self.net, [r.step for r in samplers], attention)
            try:
                denoise_batch(step, runs, on_done=left)
            except Exception as exc:  # noqa: BLE001 - the network failed: every request left
                for k, i in enumerate(idx):
                    if outcomes[i] is None:
                        finish(i, exc)
            t2 = time.perf_counter()
        self.last_timing = {
            "context_ms": (t1 - t0) * 1e3,
            "denoise_ms": (t2 - t1) * 1e3,
            "context_reused": len(caches) - len(fresh),
            "batch": len(idx),
            "full_steps": sum(r.step.full_steps for r in samplers),
            "partial_steps": sum(r.step.partial_steps for r in samplers),
        }
        return outcomes  # type: ignore[return-value]

    def decode(self, done: Denoised, layout: Layout, req: InfillRequest) -> list[InfillResult]:
        """Step 4: each row's fills as text, scores, why each fill ended and trajectories
        (model/decoding.py `fixed_results`)."""
        from model.decoding import fixed_results

        return fixed_results(self, req, done.out, layout.span.holes, done.ended_by)

    # ------------------------------------------------------------------ parts of the steps
    def sampler_config(
        self, req: InfillRequest, layout: Layout, length: bool, options: DecodeOptions
    ):
        """The sampler's DenoiseConfig for `req` (`length`: its lines use the length signal):
        the request's schedule, steps, threshold and end rule over `denoise_config`'s defaults
        for its longest hole; several candidates sample at temperature 0.7 unless it sets one."""
        temperature = float(req.temperature)
        if int(req.candidates) > 1 and temperature <= 0:
            temperature = 0.7  # several greedy candidates would be identical
        schedule = req.schedule or ("fixed" if req.steps else "threshold")
        extra: dict = {
            "window": options.window,
            "pad_run": options.pad_run,
        }
        if req.end_rule is not None:
            extra["pad_at_frontier"] = req.end_rule == "frontier"
        threshold = req.threshold
        if length:
            extra["length_rule"] = options.length_rule
            extra["length_step"] = options.length_step or self.length_step
            extra["length_end_prob"] = options.length_end_prob
            if threshold is None:
                threshold = LENGTH_THRESHOLD
        longest = max(b - a for a, b in layout.slots)
        return denoise_config(schedule, req.steps, threshold, temperature, longest, **extra)

    def forget_contexts(self) -> None:
        """Drop the kept context encodings (the next request encodes its context in full)."""
        self.bases = []

    def text(self, ids: list[int], show_masks: bool = False) -> str:
        """A hole's ids as text (model/decoding.py's Model): up to its first PAD; with
        `show_masks`, every slot but PAD, masked ones as MASK_GLYPH."""
        if show_masks:
            text, run = "", []
            for i in ids:
                if i == self.tok.mask_id:
                    text += self.tok.decode(run) + MASK_GLYPH
                    run = []
                elif i != self.tok.pad_id:
                    run.append(i)
            return text + self.tok.decode(run)
        end = ids.index(self.tok.pad_id) if self.tok.pad_id in ids else len(ids)
        return self.tok.decode(ids[:end])

    def span_step(
        self,
        cache,
        span_pos: list[int],
        holes: list[tuple[int, int]],
        cfg,
        options: DecodeOptions | None = None,
    ):
        """The sampler's step function over `cache` with `options`' span-step settings (None:
        the infiller's own)."""
        import torch

        from model.span_step import SpanStep

        opts = options or self.options
        return SpanStep(
            self.net,
            torch.tensor([span_pos], device=self.device),
            cache,
            holes,
            self.tok.mask_id,
            block=opts.span_block if cfg.window else None,
            window=cfg.window or 1,
            pad_id=self.tok.pad_id,
            stale_ends=opts.stale_ends,
        )

    def length_fn(
        self,
        req: InfillRequest,
        rel: list[tuple[int, int]],
        options: DecodeOptions | None = None,
    ):
        """The sampler's `min_length` for this request: each single-line hole of at most
        LONG_HOLE slots whose line already has text before it (a cursor mid-line) ends no sooner
        than its length signal's estimate (`options.length_quantile`). None when the request
        turns it off, the checkpoint has no head, the schedule is one token per step, or no hole
        is such a line. At a line start the PAD budget alone decides: there the estimate did not
        help on the dev set (docs/length.md); `options.length_every_line` (benchmarks) uses it
        there too."""
        import torch

        from model.length import end_curve, quantile_length

        opts = options or self.options
        rel_n = len(rel)
        mid = [True] * rel_n if opts.length_every_line else mid_line_holes(req.segments)
        lines = [
            h.single_line and b - a <= LONG_HOLE and m for h, (a, b), m in zip(req.holes, rel, mid)
        ]
        if not (req.length_estimate and self.has_length_signal and any(lines)):
            return None
        if req.schedule == "ltr":
            return None
        head, pad, q = self.net.length_head, self.tok.pad_id, opts.length_quantile

        def min_length(logits: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(logits.shape[0], rel_n, dtype=torch.long, device=logits.device)
            for h, ((a, b), line) in enumerate(zip(rel, lines)):
                if line:
                    end, top = end_curve(logits[:, a:b], pad)
                    out[:, h] = quantile_length(head.cdf(end, top), q)
            return out

        return min_length


def load_infiller(
    path: str | os.PathLike | None = None,
    device: str | None = None,
    precision: str | None = None,
    family: str | None = None,
    cache: str | None = None,
):
    """A new in-process backend for `path`: the shipped weights (None) or another checkpoint of
    the shipped format (a BuiltinInfiller), or a published diffusion coder's directory or hub
    id in the local cache (model/families: `family` names it where its config does not;
    `cache` is its pass mode, "exact" or "dual"). Nothing is kept here: whoever loads it owns
    it (the language server's engine, a model server's replica, a test or a benchmark)."""
    from model.families.checkpoint import is_shipped, resolve
    from model.families.infiller import FamilyInfiller

    if family in (None, "", "parafill") and is_shipped(path):
        return BuiltinInfiller(path, device, precision)
    return FamilyInfiller(
        resolve(path or WEIGHTS_DIR), device, precision, family or None, cache or "exact"
    )
