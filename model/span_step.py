"""One denoising step's network call, and the span K/V reuse that makes long holes cheap.

Owns: `SpanStep`, the step function the sampler calls (span ids (B, S) -> logits (B, S, V)) over
a request's cached context.

A long hole (a block body of 96 slots) is decoded from the left within a window of a few slots
(model/infill.py's defaults), yet an exact step runs every slot of the span through the network:
on this CPU a 96-slot step costs about 45 ms against 14 ms for 16 slots. With `block` set, a step
runs only an active region of `block` slots per hole, starting at the hole's leftmost masked slot
(the frontier), and the region's tokens attend to the other span slots through the K/V those got
at the last full step (as Fast-dLLM's dual cache does for semi-autoregressive decoding). A full
step over the whole span refreshes every slot's K/V whenever the frontier has moved so far that
the sampler's window would leave the region; the first step is always full. Slots outside the
region get zero logits: the sampler never commits them while its window is inside the region.
This is an approximation (slots left of the region keep K/V from before the region's tokens were
committed; the masked slots to its right, from when their neighbours were masks), measured on
the development set (bench/dev_infill.py --lines 4). Holes of at most `block` slots are run whole
at every step, so `block=None` or short holes give exactly the full step.
"""

from __future__ import annotations

import torch

from model.network import ContextCache


class SpanStep:
    """The sampler's `step_fn` for one request: `SpanStep(...)(ids) -> (B, S, V) logits`."""

    def __init__(
        self,
        net,
        span_pos: torch.Tensor,
        cache: ContextCache,
        holes: list[tuple[int, int]],
        mask_id: int,
        block: int | None = None,
        window: int = 1,
    ):
        self.net, self.span_pos, self.cache = net, span_pos, cache
        self.holes, self.mask_id = holes, mask_id
        self.block, self.window = block, max(1, window)
        self.starts: list[int] | None = None  # each hole's region start since the last full step
        self.full_steps = 0
        self.partial_steps = 0

    def region(self, ids: torch.Tensor) -> torch.Tensor | None:
        """(S,) bool slots to run this step, or None for a full step (and new region starts)."""
        if self.block is None or self.starts is None:
            return None
        masked = (ids == self.mask_id).any(0)
        active = torch.zeros_like(masked)
        for (a, b), start in zip(self.holes, self.starts):
            if b - a <= self.block:
                active[a:b] = True
                continue
            left = masked[a:b].nonzero()
            if left.numel() == 0:
                continue  # filled: its K/V stay as they are
            frontier = a + int(left[0])
            if frontier + self.window > min(b, start + self.block):
                return None  # the sampler's window would leave the region: refresh
            active[start : start + self.block] = True
        return active

    def _starts(self, ids: torch.Tensor) -> list[int]:
        masked = (ids == self.mask_id).any(0)
        out = []
        for a, b in self.holes:
            left = masked[a:b].nonzero()
            out.append(a + int(left[0]) if left.numel() else b)
        return out

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        b, s = ids.shape
        pos = self.span_pos.expand(b, -1)
        active = self.region(ids)
        if active is None or bool(active.all()):
            self.full_steps += 1
            if self.block is not None:
                self.starts = self._starts(ids)
            return self.net.span_forward(ids, pos, self.cache)
        self.partial_steps += 1
        slots = active.nonzero()[:, 0]
        out = self.net.span_forward(ids[:, slots], pos[:, slots], self.cache, slots, s)
        logits = out.new_zeros(b, s, out.shape[-1])
        logits[:, slots] = out
        return logits
