"""SpanStep: full steps are the exact span forward; block steps run a region of a long hole and
read the other slots' K/V from the last full step; the region is refreshed before the sampler's
window could leave it."""

from __future__ import annotations

import torch
from tiny_model import tiny_model

from model.sampler import DenoiseConfig, Span, Vocab, denoise
from model.span_step import SpanStep

MASK, PAD = 1, 0
N_CTX, SPAN = 20, 40


def _setup(seed: int = 0):
    net = tiny_model(seed)
    ctx = torch.randint(3, 64, (1, N_CTX))
    with torch.no_grad():
        cache = net.encode_context(ctx, torch.arange(N_CTX)[None])
    pos = torch.arange(N_CTX, N_CTX + SPAN)[None]
    return net, cache, pos


def test_without_block_every_step_is_the_exact_span_forward():
    net, cache, pos = _setup()
    step = SpanStep(net, pos, cache, [(0, SPAN)], MASK)
    ids = torch.full((1, SPAN), MASK)
    ids[0, :5] = torch.tensor([5, 6, 7, 8, 9])
    with torch.no_grad():
        assert torch.equal(step(ids), net.span_forward(ids, pos, cache))
        step(ids)
    assert (step.full_steps, step.partial_steps) == (2, 0)


def test_block_step_runs_the_region_and_is_exact_when_nothing_else_changed():
    net, cache, pos = _setup()
    step = SpanStep(net, pos, cache, [(0, SPAN)], MASK, block=8, window=4)
    ids = torch.full((1, SPAN), MASK)
    with torch.no_grad():
        full = step(ids)  # first step: full, region starts at the frontier (slot 0)
        again = step(ids)  # same ids: the region's logits equal the full step's
        assert (step.full_steps, step.partial_steps) == (1, 1)
        assert torch.allclose(again[0, :8], full[0, :8], atol=1e-5)
        assert torch.count_nonzero(again[0, 8:]) == 0  # outside the region: not computed
        ids[0, :3] = torch.tensor([5, 6, 7])  # frontier 3: window [3, 7) still inside [0, 8)
        part = step(ids)
        exact = net.span_forward(ids, pos, cache)
        assert step.partial_steps == 2
        # stale K/V of slots 8.. (computed when slots 0-2 were masks): close, not equal
        assert not torch.equal(part[0, :8], exact[0, :8])
        assert torch.allclose(part[0, :8].softmax(-1), exact[0, :8].softmax(-1), atol=0.05)
        ids[0, 3:5] = torch.tensor([8, 9])  # frontier 5: window [5, 9) leaves [0, 8): refresh
        assert torch.equal(step(ids), net.span_forward(ids, pos, cache))
        assert step.full_steps == 2 and step.starts == [5]


def test_short_holes_always_run_whole():
    net, cache, pos = _setup()
    holes = [(0, 6), (6, SPAN)]
    step = SpanStep(net, pos, cache, holes, MASK, block=8, window=2)
    ids = torch.full((1, SPAN), MASK)
    with torch.no_grad():
        step(ids)
        out = step(ids)
    assert step.partial_steps == 1
    assert (
        torch.count_nonzero(out[0, :14].abs().sum(-1)) == 14
    )  # short hole + region of the long one
    assert torch.count_nonzero(out[0, 14:]) == 0


def test_windowed_denoise_with_blocks_fills_every_slot_in_order():
    net, cache, pos = _setup(1)
    step = SpanStep(net, pos, cache, [(0, SPAN)], MASK, block=12, window=4)
    cfg = DenoiseConfig(threshold=0.5, window=4, pad_at_frontier=True)
    with torch.no_grad():
        out = denoise(step, Span([(0, SPAN)], min_tokens=[SPAN]), Vocab(MASK, PAD, [MASK]), cfg)
    assert not bool((out.tokens == MASK).any())
    assert step.partial_steps > 0 and step.full_steps >= SPAN // 12
    assert out.steps_used == step.full_steps + step.partial_steps


def test_stale_ends_run_up_to_the_end_and_refresh_when_it_moves():
    net, cache, pos = _setup(2)
    step = SpanStep(net, pos, cache, [(0, 12), (12, SPAN)], MASK, pad_id=PAD, stale_ends=True)
    ids = torch.full((1, SPAN), MASK)
    with torch.no_grad():
        step(ids)
        ids[0, 5:12] = PAD  # the first hole ends at slot 5: slots 6-11 are after its end
        assert torch.equal(step(ids), net.span_forward(ids, pos, cache))  # moved: full step
        part = step(ids)  # end unchanged: slots 6-11 are not run
        exact = net.span_forward(ids, pos, cache)
        assert (step.full_steps, step.partial_steps) == (2, 1)
        assert torch.count_nonzero(part[0, 6:12]) == 0
        live = torch.ones(SPAN, dtype=torch.bool)
        live[6:12] = False
        # nothing changed since the full step, so the kept K/V are exact
        assert torch.allclose(part[0, live], exact[0, live], atol=1e-5)
        ids[0, 3:5] = PAD  # the end moves left: the slots live before (0-5 and 12-) run once
        again = step(ids)
        assert (step.full_steps, step.partial_steps) == (2, 2)
        assert torch.count_nonzero(again[0, 6:12]) == 0 and torch.count_nonzero(again[0, 3:6]) > 0
        step(ids)  # end unchanged: now slots 4-11 are not run
        assert (step.full_steps, step.partial_steps) == (2, 3)
        last = step(ids)
        assert torch.count_nonzero(last[0, 4:12]) == 0 and torch.count_nonzero(last[0, 12:]) > 0


def test_block_region_holds_every_rows_window():
    net, cache, pos = _setup(3)
    step = SpanStep(net, pos, cache, [(0, SPAN)], MASK, block=8, window=2)
    ids = torch.full((2, SPAN), MASK)
    ids[1, :5] = torch.tensor([5, 6, 7, 8, 9])  # candidate rows at frontiers 0 and 5
    with torch.no_grad():
        step(ids)
        assert step.starts == [0]  # the leftmost row's frontier
        step(ids)  # row 1's window [5, 7) is inside [0, 8)
        assert step.partial_steps == 1
        ids[1, 5:7] = torch.tensor([10, 11])  # row 1 at 7: its window [7, 9) leaves the region
        step(ids)
    assert (step.full_steps, step.partial_steps) == (2, 1)
