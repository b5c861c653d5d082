"""Parallel denoising over fixed-length holes: the loop, its schedules and end rules.

Owns: the schedules (confidence threshold with an adaptive step count, a fixed number of steps
committing the most confident positions, and one token per step left to right as the
autoregressive-style baseline), budgeted length (a committed PAD ends its hole), temperature
sampling over several candidates, cancellation between steps and the optional trajectory.

`denoise(step_fn, span, vocab, cfg, ...)`: `step_fn(span_ids) -> logits` is the only contact with
the network, (B, S) ids -> (B, S, V); `Span` says where the holes are, `Vocab` which ids are
special, `DenoiseConfig` how to schedule the commits, `Hooks` what the caller is asked between
steps. Context tokens never enter here, so they cannot be changed; only hole slots are written.
`Denoiser` is one request's state between steps (`denoise` runs one to the end);
`denoise_batch(step_fn, runs)` runs several requests' Denoisers together, one `step_fn` call per
step for all of them (the model server's batches), each by its own settings and hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from model.interface import SCHEDULES


class Cancelled(Exception):
    """should_stop() returned True between two denoising steps."""


@dataclass(frozen=True)
class DenoiseConfig:
    schedule: str = "threshold"
    # fixed: number of steps. threshold: an upper bound (None: no bound), kept by committing in
    # each step at least an even share of the masked slots left (ceil(masked / steps left)) when
    # fewer pass the threshold: adaptive while confident, never more than `steps` passes
    steps: int | None = None
    threshold: float | None = 0.9  # None only in bench configs the infiller resolves first
    temperature: float = 0.0
    pad_run: bool = True  # a committed PAD also commits the PADs predicted just before it
    # semi-autoregressive: only the `window` masked slots nearest each hole's left frontier may be
    # committed in a step (parallel within the window); None: the whole hole at once
    window: int | None = None
    # the end of a fill is decided where the content reaches it: PAD may be committed only at
    # the first masked slot of its hole (as one-token-per-step decoding decides it), never from
    # the confident trailing PADs inward, which cut fills short
    pad_at_frontier: bool | None = None  # None: False here; the infiller decides by hole length
    # how `min_length`'s estimate ends a fill (model/length.py): "hard", no end before it;
    # "soft", an end before it only where P(end) reaches the threshold by itself (never as part
    # of a run of predicted PADs)
    length_rule: str = "hard"
    # the step whose logits `min_length` reads; before it no PAD is committed (content only), so
    # a later step reads the end with the confident first tokens in place
    length_step: int = 1
    # "soft": the P(end) that lets a fill end before the estimate (None: the threshold)
    length_end_prob: float | None = None


@dataclass
class DenoiseOutput:
    tokens: torch.Tensor  # (B, S) final ids; hole slots after a hole's end are PAD
    logprob_sum: torch.Tensor  # (B,) sum of log-probabilities of the committed tokens
    committed: torch.Tensor  # (B,) number of committed non-PAD tokens
    steps_used: int
    trajectory: list[torch.Tensor] = field(default_factory=list)  # (B, S) ids after each step


@dataclass(frozen=True)
class Span:
    """The holes of one request as the sampler sees them: the span is the holes' slots back to
    back (S = holes[-1][1] slots)."""

    holes: list[tuple[int, int]]  # each hole's slot range [a, b) within the span
    min_tokens: list[int] | None = None  # each fill has at least this many tokens (None: 0)
    # holes whose fill ends at its line's end: there the probability of the vocabulary's line
    # breaks is moved onto PAD, so "the line ends here" is one event (None: no such hole)
    line_holes: list[bool] | None = None


@dataclass(frozen=True)
class Vocab:
    """The token ids the sampler treats specially."""

    mask_id: int  # a slot not yet committed
    pad_id: int  # the end of a fill: a committed PAD makes every later slot of its hole PAD
    banned_ids: list[int]  # never committed (the mask, the separator)
    newline_ids: list[int] = field(default_factory=list)  # line breaks (Span.line_holes)


@dataclass(frozen=True)
class Hooks:
    """The caller's say in a run, each asked between steps (None: not asked)."""

    # True: stop now (raises Cancelled)
    should_stop: Callable[[], bool] | None = None
    # (B, S) ids -> (B, holes) bool, after each step: where True, the hole's fill is over (its
    # caller cuts it within what is committed) and its masked slots become PAD
    ended: Callable[[torch.Tensor], torch.Tensor] | None = None
    # (B, S, V) logits -> (B, holes) int, once, with the logits of step `cfg.length_step`
    # (banned ids and line breaks already folded): each row's hole then ends no sooner than that
    # many tokens (`cfg.length_rule`), on top of `Span.min_tokens` (model/length.py's estimate)
    min_length: Callable[[torch.Tensor], torch.Tensor] | None = None
    # (step, (B, S) ids) after each step (1-based), where the trajectory is kept: a live view of
    # the canvas (the ids are the sampler's own: read them, do not keep or change them)
    on_step: Callable[[int, torch.Tensor], None] | None = None


def denoise(
    step_fn: Callable[[torch.Tensor], torch.Tensor],
    span: Span,
    vocab: Vocab,
    cfg: DenoiseConfig,
    batch: int = 1,
    hooks: Hooks = Hooks(),
    generator: torch.Generator | None = None,
    want_trajectory: bool = False,
    device: torch.device | str = "cpu",
) -> DenoiseOutput:
    """Fill the holes of `span` for `batch` rows (candidates; `generator` samples them when
    `cfg.temperature` > 0), calling `step_fn` once per step, with `hooks` asked between steps;
    `want_trajectory` keeps the ids after each step."""
    run = Denoiser(span, vocab, cfg, batch, hooks, generator, want_trajectory, device)
    return denoise_run(run, step_fn)


def denoise_run(run, step_fn: Callable):
    """Run one request's denoiser to the end: a `Denoiser`, or anything of its shape
    (model/growing.py's `GrowingDenoiser`): `step_fn(run.x)` gives the logits `advance` takes;
    Cancelled once its `should_stop` says so between steps."""
    while not run.done:
        if run.stop_asked():
            raise Cancelled()
        run.advance(step_fn(run.x))
    return run.output()


def denoise_batch(
    step_fn: Callable[[list[int], list[torch.Tensor]], list[torch.Tensor]],
    runs: Sequence[Denoiser],
    on_done: Callable[[int, DenoiseOutput | Exception], None] | None = None,
) -> list[DenoiseOutput | Exception]:
    """Several requests denoised together: each step, `step_fn(indices, ids)` gives the logits of
    every run still going (one network call for all of them), and each run advances by its own
    schedule, hooks and stop rules, exactly as `denoise` would run it alone. A run that is done
    leaves the batch (it is not stepped again); one whose `should_stop` says so leaves with
    Cancelled, one whose hooks raise leaves with that exception, and the others go on. Returns
    one outcome per run, in order; `on_done(index, outcome)` is called as each run leaves."""
    outcomes: list[DenoiseOutput | Exception | None] = [None] * len(runs)

    def leave(i: int, outcome: DenoiseOutput | Exception) -> None:
        outcomes[i] = outcome
        if on_done is not None:
            on_done(i, outcome)

    active = list(range(len(runs)))
    while True:
        going = []
        for i in active:
            try:
                if runs[i].done:
                    leave(i, runs[i].output())
                elif runs[i].stop_asked():
                    leave(i, Cancelled())
                else:
                    going.append(i)
            except Exception as exc:  # noqa: BLE001 - one request's failure is its own
                leave(i, exc)
        active = going
        if not active:
            break
        logits = step_fn(active, [runs[i].x for i in active])
        going = []
        for i, lg in zip(active, logits):
            try:
                runs[i].advance(lg)
                going.append(i)
            except Exception as exc:  # noqa: BLE001
                leave(i, exc)
        active = going
    return outcomes  # type: ignore[return-value]


class Denoiser:
    """One request's sampler state between steps: `denoise` runs one, `denoise_batch` several.
    `x` is the (batch, S) ids so far; `advance(logits)` is one step given the network's logits
    for `x`; `done` once no slot is masked; `output()` the result."""

    def __init__(
        self,
        span: Span,
        vocab: Vocab,
        cfg: DenoiseConfig,
        batch: int = 1,
        hooks: Hooks = Hooks(),
        generator: torch.Generator | None = None,
        want_trajectory: bool = False,
        device: torch.device | str = "cpu",
    ):
        if cfg.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {cfg.schedule!r}; expected one of {SCHEDULES}")
        self.cfg, self.hooks, self.generator = cfg, hooks, generator
        self.want_trajectory, self.batch = want_trajectory, batch
        self.holes = holes = span.holes
        self.mask_id, self.pad_id = vocab.mask_id, vocab.pad_id
        self.banned_ids = list(vocab.banned_ids)
        self.S = S = max((b for _, b in holes), default=0)
        self.x = torch.full((batch, S), self.mask_id, dtype=torch.long, device=device)
        self.logp_sum = torch.zeros(batch, device=device)
        self.traj: list[torch.Tensor] = []
        min_tokens = span.min_tokens or [0] * len(holes)
        self.hole_of = torch.full((S,), -1, dtype=torch.long, device=device)
        self.slot_idx = torch.arange(S, device=device)
        for h, (a, b) in enumerate(holes):
            self.hole_of[a:b] = h
        self.line_slot = torch.zeros(S, dtype=torch.bool, device=device)
        for (a, b), flag in zip(holes, span.line_holes or []):
            self.line_slot[a:b] = bool(flag)
        self.nl = torch.tensor(list(vocab.newline_ids), dtype=torch.long, device=device)
        self.merge_newlines = bool(self.line_slot.any()) and self.nl.numel() > 0
        self.forced_no_pad = torch.zeros(batch, S, dtype=torch.bool, device=device)
        self.before_estimate = torch.zeros(batch, S, dtype=torch.bool, device=device)
        for (a, b), m in zip(holes, min_tokens):
            self.forced_no_pad[:, a : a + min(m, b - a)] = True
        self.steps = 0

    @property
    def done(self) -> bool:
        return not bool((self.x == self.mask_id).any())

    def stop_asked(self) -> bool:
        return self.hooks.should_stop is not None and bool(self.hooks.should_stop())

    def output(self) -> DenoiseOutput:
        x = self.x
        committed = ((x != self.pad_id) & (self.hole_of[None, :] >= 0)).sum(1)
        return DenoiseOutput(x, self.logp_sum, committed, self.steps, self.traj)

    def advance(self, logits: torch.Tensor) -> None:
        """One step: commit what the schedule chooses from `logits` ((batch, S, V) for `x`)."""
        cfg, holes, x = self.cfg, self.holes, self.x
        mask_id, pad_id, slot_idx = self.mask_id, self.pad_id, self.slot_idx
        ended, min_length = self.hooks.ended, self.hooks.min_length
        batch, S = self.batch, self.S
        masked = x == mask_id
        logits = logits.float()
        self.steps += 1
        steps = self.steps
        logits[..., self.banned_ids] = -math.inf
        if self.merge_newlines:
            logits = fold_newlines(logits, self.line_slot, self.nl, pad_id)
        if steps == cfg.length_step and min_length is not None:
            lengths = min_length(logits)
            for h, (a, b) in enumerate(holes):
                first = slot_idx[a:b][None, :] - a < lengths[:, h : h + 1]
                self.before_estimate[:, a:b] = first
            if cfg.length_rule == "hard":
                self.forced_no_pad |= self.before_estimate
        before_estimate = self.before_estimate
        # a slot before a committed non-PAD token of its hole cannot be PAD (fills are contiguous)
        no_pad = self.forced_no_pad.clone()
        if min_length is not None and steps < cfg.length_step:
            no_pad[:] = True  # the end waits for the step that estimates the length
        if cfg.length_rule == "soft" and bool(before_estimate.any()):
            # before the estimate an end is a candidate only where it is likely by itself
            floor = cfg.length_end_prob if cfg.length_end_prob is not None else cfg.threshold
            p_end = (logits[..., pad_id] - torch.logsumexp(logits, -1)).exp()
            no_pad |= before_estimate & (p_end < (floor or 0.0))
        for a, b in holes:
            real = (x[:, a:b] != mask_id) & (x[:, a:b] != pad_id)
            last = torch.where(real, slot_idx[a:b], torch.full_like(slot_idx[a:b], -1)).amax(1)
            no_pad[:, a:b] |= slot_idx[a:b][None, :] < last[:, None]
        logits[..., pad_id] = logits[..., pad_id].masked_fill(no_pad, -math.inf)
        logp = torch.log_softmax(logits, -1)
        if cfg.temperature > 0:
            probs = torch.softmax(logits / cfg.temperature, -1)
            cand = torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=self.generator)
            cand = cand.view(batch, S)
        else:
            cand = logits.argmax(-1)
        cand_logp = logp.gather(-1, cand[..., None])[..., 0]
        eligible = masked
        if cfg.window and cfg.schedule != "ltr":
            eligible = masked & _window(masked, holes, cfg.window)
        if cfg.pad_at_frontier:
            eligible = eligible & ((cand != pad_id) | _window(masked, holes, 1))
        conf = cand_logp.exp().masked_fill(~eligible, -1.0)
        commit = _choose(conf, eligible, cfg, steps)
        if cfg.pad_run and cfg.schedule != "ltr":
            commit = _extend_pad_runs(commit, cand, masked, holes, pad_id)
        x = torch.where(commit, cand, x)
        self.logp_sum += (cand_logp * commit).sum(1)
        if ended is not None:
            over = ended(x)
            for h, (a, b) in enumerate(holes):
                stop = over[:, h : h + 1] & (x[:, a:b] == mask_id)
                x[:, a:b] = torch.where(stop, torch.full_like(x[:, a:b], pad_id), x[:, a:b])
        # a committed PAD ends its hole: every later slot of that hole becomes PAD
        for a, b in holes:
            is_pad = x[:, a:b] == pad_id
            after = is_pad.int().cummax(1).values.bool()
            x[:, a:b] = torch.where(after, torch.full_like(x[:, a:b], pad_id), x[:, a:b])
        self.x = x
        if self.want_trajectory:
            self.traj.append(x.clone())
        if self.hooks.on_step is not None:
            self.hooks.on_step(steps, x)


def fold_newlines(
    logits: torch.Tensor, line_slot: torch.Tensor, nl: torch.Tensor, pad_id: int
) -> torch.Tensor:
    """At single-line slots: PAD's logit becomes logsumexp(PAD, line breaks), line breaks banned."""
    end = torch.logsumexp(torch.cat([logits[..., [pad_id]], logits[..., nl]], -1), -1)
    logits[..., pad_id] = torch.where(line_slot, end, logits[..., pad_id])
    nl_logits = logits[..., nl]
    logits[..., nl] = nl_logits.masked_fill(line_slot[None, :, None], -math.inf)
    return logits


def first_masked(masked: torch.Tensor) -> torch.Tensor:
    """(B, n) bool -> (B,): each row's first masked slot (its frontier), n for a row with none."""
    n = masked.shape[1]
    return torch.where(masked, torch.arange(n, device=masked.device), n).amin(1)


def _window(masked: torch.Tensor, holes: list[tuple[int, int]], width: int) -> torch.Tensor:
    """(B, S) bool: slots within `width` of the leftmost masked slot of their hole."""
    out = torch.zeros_like(masked)
    for a, b in holes:
        idx = torch.arange(b - a, device=masked.device)
        out[:, a:b] = idx[None, :] < first_masked(masked[:, a:b])[:, None] + width
    return out


def _extend_pad_runs(commit, cand, masked, holes, pad_id) -> torch.Tensor:
    """A PAD committed at slot k ends its hole there; if the slots just before k are masked and
    also predicted PAD, the fill ends even earlier: commit that whole run at once (the model's
    most confident positions are usually trailing PADs, committed one per step otherwise)."""
    commit = commit.clone()
    pad_pred = (cand == pad_id) & masked
    for a, b in holes:
        for r in range(commit.shape[0]):
            hits = (commit[r, a:b] & (cand[r, a:b] == pad_id)).nonzero()
            if hits.numel() == 0:
                continue
            k = a + int(hits[0])
            while k - 1 >= a and bool(pad_pred[r, k - 1]):
                k -= 1
                commit[r, k] = True
    return commit


def _choose(
    conf: torch.Tensor, masked: torch.Tensor, cfg: DenoiseConfig, step: int
) -> torch.Tensor:
    """Which masked positions to commit this step, per row: (B, S) bool."""
    B, S = conf.shape
    n_masked = masked.sum(1)
    if cfg.schedule == "ltr":
        first = first_masked(masked)
        return (torch.arange(S, device=conf.device)[None, :] == first[:, None]) & masked
    # an even share of the masked slots over the steps left (all of them at the last step)
    left = max(1, (cfg.steps or 1) - step + 1)
    share = (n_masked + left - 1) // left
    if cfg.schedule == "fixed":
        k = torch.clamp(share, min=1)
    else:  # threshold: every position above it, at least one, and at least a step's share
        above = (conf > cfg.threshold) & masked
        k = torch.clamp(above.sum(1), min=1)
        if cfg.steps is not None:
            k = torch.maximum(k, share)
    order = conf.argsort(1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(S, device=conf.device).expand(B, S).contiguous())
    return (rank < k[:, None]) & masked
