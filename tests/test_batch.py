"""The batched denoising loop (model server batches): requests denoised together give what each
gives alone.

`BuiltinInfiller.infill_batch` over varied requests (lines mid-line and at a line start, with and
without the length signal, a block, two holes, short, long and empty contexts, fixed and ltr
schedules, several sampled candidates, a trajectory) equals `infill` of each request alone, in fp32
and in the default int8 CPU path: the same fills, ended_by, steps and tokens, scores within 1e-4
(here they are equal to the bit). The parts: `encode_contexts` and `span_forward_batch` against
their one-request forms, int8 activations quantized per request as torch's kernel does, and the
sampler's `denoise_batch` against `denoise`. Then what the server needs: a request whose client
went away leaves the batch (the others unchanged), one the model refuses fails alone, each
request's steps are seen as they happen (`on_step`) and each answer as soon as it is done
(`on_done`).
"""

from __future__ import annotations

import sysconfig
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_model

from model import network
from model.infill import MASK_GLYPH, BuiltinInfiller
from model.interface import Hole, InfillCancelled, InfillRequest, StopRules
from model.network import SpanPart
from model.sampler import DenoiseConfig, Denoiser, Hooks, Span, Vocab, denoise, denoise_batch

LINE = StopRules(single_line=True)


def _stdlib(name: str, start: int, n: int) -> str:
    return (Path(sysconfig.get_paths()["stdlib"]) / name).read_text()[start : start + n]


def varied_requests() -> list[InfillRequest]:
    pre, suf = _stdlib("textwrap.py", 2000, 1400), _stdlib("textwrap.py", 3400, 700)
    return [
        # a line mid-line (the length signal) / at a line start without it / in a long context
        InfillRequest(
            ["def add(a, b):\n    return ", Hole(24, single_line=True, stop=LINE), "\n\nx = 1\n"],
            language="python",
        ),
        InfillRequest(
            ["import os\n\nfor name in os.listdir('.'):\n    ", Hole(24, single_line=True), "\n"],
            length_estimate=False,
        ),
        InfillRequest([pre + "\n        x = ", Hole(24, single_line=True, stop=LINE), "\n" + suf]),
        # a block (windowed, span block steps) with scope rules
        InfillRequest(
            [
                "def mean(xs):\n    ",
                Hole(96, stop=StopRules(max_lines=4, dedent_below=0)),
                "\n\n\ndef median(xs):\n    return sorted(xs)[len(xs) // 2]\n",
            ],
            language="python",
        ),
        # two holes
        InfillRequest(
            [
                "def area(w, h):\n    return ",
                Hole(12, single_line=True, stop=LINE),
                "\n\n\ndef perimeter(w, h):\n    return ",
                Hole(12, single_line=True, stop=LINE),
                "\n",
            ]
        ),
        InfillRequest(["x = ", Hole(16, single_line=True), ""]),  # a 3-token context
        InfillRequest(["numbers = [1, 2, 3]\ntotal = ", Hole(16), "\n"], schedule="fixed", steps=4),
        InfillRequest(
            ["for i in range(9):\n    print(", Hole(16, single_line=True), ")\n"],
            candidates=3,
            seed=7,
        ),
        InfillRequest(
            ["def is_even(n):\n    return ", Hole(8, single_line=True), "\n"], schedule="ltr"
        ),
        InfillRequest(["", Hole(8), ""]),  # no context at all
        InfillRequest(
            [pre, Hole(48, stop=StopRules(max_lines=3)), suf], want_trajectory=True, threshold=0.8
        ),
    ]


@pytest.fixture(scope="module", params=["fp32", "int8"])
def infiller(request):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server on this machine
    inf = BuiltinInfiller(None, "cpu", request.param, reuse_context=False, adaptive_threads=False)
    yield inf
    torch.set_num_threads(threads)


def _same(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.fills, g.ended_by, g.steps_used, g.tokens) == (
            w.fills,
            w.ended_by,
            w.steps_used,
            w.tokens,
        )
        assert abs(g.score - w.score) <= 1e-4
        assert g.trajectory == w.trajectory


def test_a_batch_equals_each_request_alone(infiller):
    reqs = varied_requests()
    alone = [infiller.infill(r) for r in reqs]
    together = infiller.infill_batch(reqs)
    for got, want in zip(together, alone):
        _same(got, want)
    assert infiller.last_timing["batch"] == len(reqs)
    # the order within a batch does not matter; the contexts packed through the weights
    # together (a GPU's default) give the same too
    again = infiller.infill_batch(reqs[::-1], pack_contexts=True)[::-1]
    for got, want in zip(again, alone):
        _same(got, want)


def test_a_client_that_went_away_leaves_the_batch(infiller):
    reqs = varied_requests()[:4]
    alone = [infiller.infill(r) for r in reqs]
    seen = {1: 0}

    def leave_after_two_steps() -> bool:
        seen[1] += 1
        return seen[1] > 2

    stops = [lambda: False, leave_after_two_steps, lambda: True, lambda: False]
    done_order: list[int] = []
    out = infiller.infill_batch(reqs, stops, on_done=lambda i, _: done_order.append(i))
    assert isinstance(out[1], InfillCancelled) and isinstance(out[2], InfillCancelled)
    assert seen[1] == 3  # asked before each of its steps: it ran two
    _same(out[0], alone[0])
    _same(out[3], alone[3])
    assert sorted(done_order) == [0, 1, 2, 3] and done_order[0] == 2  # never started
    # the block takes more steps than the line: the line's answer comes first
    assert done_order.index(0) < done_order.index(3)


def test_a_refused_request_fails_alone(infiller):
    good = varied_requests()[0]
    out = infiller.infill_batch([InfillRequest(["no hole"]), good, InfillRequest(["a", Hole(400)])])
    assert isinstance(out[0], ValueError) and isinstance(out[2], ValueError)
    _same(out[1], infiller.infill(good))


def test_on_step_shows_each_canvas_as_it_is_denoised(infiller):
    req = varied_requests()[4]  # two holes
    steps: list[tuple[int, list[list[str]]]] = []
    (res,) = infiller.infill(req, on_step=lambda k, canvas: steps.append((k, canvas)))
    assert [k for k, _ in steps] == list(range(1, res.steps_used + 1))
    assert all(len(canvas) == 1 and len(canvas[0]) == 2 for _, canvas in steps)
    assert MASK_GLYPH in "".join(steps[0][1][0])
    assert steps[-1][1][0] == res.fills  # the last canvas: the fills (cut at their ends)
    traj = infiller.infill(replace(req, want_trajectory=True))[0].trajectory
    assert [canvas[0] for _, canvas in steps] == traj
    # in a batch, each request its own
    reqs = varied_requests()[:3]
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    out = infiller.infill_batch(
        reqs, on_steps=[lambda k, c, i=i: seen[i].append(k) for i in range(3)]
    )
    for i in range(3):
        assert seen[i] == list(range(1, out[i][0].steps_used + 1))


# ---- the parts, on a tiny random network -----------------------------------------------------
def _contexts():
    g = torch.Generator().manual_seed(3)
    lengths = [20, 5, 0, 33, 16]
    ids = [torch.randint(3, 64, (n,), generator=g).tolist() for n in lengths]
    pos = [list(range(n)) for n in lengths]
    return ids, pos


@pytest.mark.parametrize("attention", ["each", "padded"])
def test_encode_contexts_equals_encoding_each_alone(attention):
    net = tiny_model(0)
    ids, pos = _contexts()
    batch = net.encode_contexts(ids, pos, attention=attention, pack=True)
    for i, p, got in zip(ids, pos, batch):
        want = net.encode_context(
            torch.tensor([i], dtype=torch.long), torch.tensor([p], dtype=torch.long)
        )
        for a, b in zip(got.keys + got.values, want.keys + want.values):
            assert a.shape == b.shape
            if attention == "each":
                assert torch.equal(a, b)
            else:  # padded keys are masked: the same up to float rounding
                assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("attention", ["each", "padded"])
def test_span_forward_batch_equals_each_alone(attention):
    """A full step over every request's span, then a step over some slots of some (their other
    slots read the K/V of the full step): rows of 1-3 candidates, spans of 3-20 slots."""
    net = tiny_model(1)
    ids, pos = _contexts()
    spans = [(1, 7), (2, 12), (1, 3), (3, 20), (1, 16)]  # (rows, span slots)
    slot_sets = [None, torch.tensor([0, 3, 4, 9]), None, torch.tensor([1, 2]), None]

    def run(batched: bool):
        caches = net.encode_contexts(ids, pos)
        full, parts = [], []
        for (c, s), slots, p, cache in zip(spans, slot_sets, pos, caches):
            span_pos = torch.arange(len(p), len(p) + s).expand(c, s)
            full.append(SpanPart(torch.full((c, s), 1), span_pos, cache, None, s))
            span_ids = torch.randint(1, 64, (c, s), generator=torch.Generator().manual_seed(s))
            if slots is not None:
                span_ids, span_pos = span_ids[:, slots], span_pos[:, slots]
            parts.append(SpanPart(span_ids, span_pos, cache, slots, s))
        if batched:
            out = net.span_forward_batch(full, attention) + net.span_forward_batch(parts, attention)
        else:
            out = [net.span_forward(f.ids, f.pos, f.cache) for f in full]
            out += [net.span_forward(q.ids, q.pos, q.cache, q.slots, q.span_len) for q in parts]
        return out, [c._bufs for c in caches]

    got, got_bufs = run(batched=True)
    want, want_bufs = run(batched=False)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert torch.equal(a, b) if attention == "each" else torch.allclose(a, b, atol=1e-4)
    for a, b in zip(got_bufs, want_bufs):  # the span K/V each step leaves for the next
        (ka, va), (kb, vb) = a[next(iter(a))], b[next(iter(b))]
        for x, y in zip(ka + va, kb + vb):
            assert torch.equal(x, y) if attention == "each" else torch.allclose(x, y, atol=1e-4)


def test_int8_activations_are_quantized_per_request_as_the_kernel_does():
    from model.quantize import available, quantize_int8

    if not available():
        pytest.skip("no quantized CPU engine in this torch build")
    net = tiny_model(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_int8(net)
    layer = net.blocks[0].gate_up
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        sizes = [1 + (trial * 7 + k * 5) % 23 for k in range(3)]
        scale = [0.01, 1.0, 30.0][trial % 3]
        x = torch.randn(1, sum(sizes), layer.in_features, generator=g) * scale
        if trial % 4 == 0:
            x = x.abs()  # every activation positive: the zero point at 0
        segs = network._segments(sizes)
        weights = network._int8_weights(layer, x[:, : sizes[0]])
        assert weights is not None  # it reproduced the layer on the probe
        got = network._int8_rows(x, segs, *weights)
        for a, b in segs:
            assert torch.equal(got[:, a:b], layer(x[:, a:b]))


def test_denoise_batch_equals_denoise_of_each():
    net = tiny_model(3)
    vocab = Vocab(1, 0, [1, 2], newline_ids=[5])
    ids, pos = _contexts()
    configs = [
        (Span([(0, 6)]), DenoiseConfig(threshold=0.3), 1),
        (
            Span([(0, 4), (4, 10)], line_holes=[True, False]),
            DenoiseConfig(schedule="fixed", steps=3),
            2,
        ),
        (Span([(0, 12)], min_tokens=[5]), DenoiseConfig(schedule="ltr"), 1),
        (Span([(0, 9)]), DenoiseConfig(threshold=0.5, temperature=0.8), 3),
        (Span([(0, 20)]), DenoiseConfig(threshold=0.2, window=4, pad_at_frontier=True), 1),
    ]

    def step_fn(cache, p, s):
        span_pos = torch.arange(len(p), len(p) + s)[None]
        return lambda x: net.span_forward(x, span_pos.expand(x.shape[0], -1), cache)

    caches = net.encode_contexts(ids, pos)
    alone = []
    for (span, cfg, rows), cache, p in zip(configs, caches, pos):
        gen = torch.Generator().manual_seed(11)
        alone.append(
            denoise(step_fn(cache, p, span.holes[-1][1]), span, vocab, cfg, rows, generator=gen)
        )
    caches = net.encode_contexts(ids, pos)
    fns = [step_fn(c, p, span.holes[-1][1]) for (span, _, _), c, p in zip(configs, caches, pos)]
    runs = [
        Denoiser(span, vocab, cfg, rows, Hooks(), torch.Generator().manual_seed(11))
        for span, cfg, rows in configs
    ]
    left: list[int] = []
    out = denoise_batch(
        lambda which, xs: [fns[i](x) for i, x in zip(which, xs)], runs, lambda i, _: left.append(i)
    )
    for got, want in zip(out, alone):
        assert torch.equal(got.tokens, want.tokens) and got.steps_used == want.steps_used
        assert torch.equal(got.logprob_sum, want.logprob_sum)
    assert sorted(left) == list(range(len(configs)))
    assert [out[i].steps_used for i in left] == sorted(o.steps_used for o in out)
