"""Model unit tests: tokenizer, network cache exactness, sampler rules, the shipped checkpoint."""

from __future__ import annotations

import argparse
import ast
import gc
import itertools
import shutil
import subprocess
import textwrap
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_model

from model.infill import (
    WEIGHTS_DIR,
    BuiltinInfiller,
    DecodeOptions,
    load_infiller,
    validate_checkpoint,
)
from model.interface import CheckpointError, Hole, InfillCancelled, InfillRequest, StopRules
from model.sampler import Cancelled, DenoiseConfig, Hooks, Span, Vocab, denoise
from model.tokenizer import CodeTokenizer

NASTY = [
    "def f(x):\n    return x  + 1\r\n\tif é:\n\n  y = 'a'\n",
    "\ttabs\t\tinside\t\n\r\n\r\r\n",
    "😀 中文 Ωmega \x00\x7f\u200b trailing   ",
    "s = '''\n    multi\n'''  # ünïcödé\n",
    "",
    "   ",
    "\n\n\n",
]


@pytest.fixture(scope="module")
def tok() -> CodeTokenizer:
    return CodeTokenizer.from_file(WEIGHTS_DIR / "tokenizer.json")


@pytest.fixture(scope="module")
def shipped() -> BuiltinInfiller:
    return load_infiller()


def test_tokenizer_round_trip(tok):
    for text in NASTY:
        assert tok.decode(tok.encode(text)) == text
    assert {tok.pad_id, tok.mask_id, tok.sep_id} == {0, 1, 2}


def test_tokenizer_line_boundaries_are_token_boundaries(tok):
    text = "def f(x):\n    return x\n"
    whole = tok.encode(text)
    pieces = tok.encode_pieces(["def f(x):\n", "    return x", "\n"])
    assert [i for p in pieces for i in p] == whole
    # specials in text are not interpreted as control tokens
    assert tok.mask_id not in tok.encode("<|mask|>")


def test_cached_span_step_equals_full_forward():
    m = tiny_model()
    L = 30
    ids = torch.randint(3, 64, (1, L))
    pos = torch.arange(L)[None]
    group = torch.zeros(1, L, dtype=torch.long)
    group[0, 8:14] = 1
    group[0, 20:24] = 1
    with torch.no_grad():
        full = m(ids, position_ids=pos, group_ids=group)
    ctx = group[0] == 0
    cache = m.encode_context(ids[:, ctx], pos[:, ctx])
    span = m.span_forward(ids[:, ~ctx], pos[:, ~ctx], cache)
    assert torch.allclose(full[0, ~ctx], span[0], atol=1e-5)
    # and context logits do not depend on span tokens
    ids2 = ids.clone()
    ids2[0, 8:14] = 1
    with torch.no_grad():
        full2 = m(ids2, position_ids=pos, group_ids=group)
    assert torch.allclose(full[0, ctx], full2[0, ctx], atol=1e-6)
    assert not torch.allclose(full[0, 8:14], full2[0, 8:14])


def _random_step_fn(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    calls = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.clone())
        return torch.randn(x.shape[0], x.shape[1], vocab, generator=g) * 3

    return fn, calls


@pytest.mark.parametrize("schedule,steps", [("threshold", None), ("fixed", 3), ("ltr", None)])
def test_sampler_fills_only_holes_contiguously_within_budget(schedule, steps):
    fn, calls = _random_step_fn(50)
    holes = [(0, 6), (6, 10)]
    out = denoise(
        fn,
        Span(holes),
        Vocab(mask_id=1, pad_id=0, banned_ids=[1, 2]),
        DenoiseConfig(schedule=schedule, steps=steps, threshold=0.3),
        batch=3,
    )
    x = out.tokens
    assert x.shape == (3, 10)
    assert not (x == 1).any() and not (x == 2).any()  # no MASK or SEP left
    for a, b in holes:
        for row in x[:, a:b].tolist():
            if 0 in row:  # PAD ends the fill: everything after it is PAD
                k = row.index(0)
                assert all(t == 0 for t in row[k:])
    assert out.steps_used == len(calls)
    if schedule == "fixed":
        assert out.steps_used == 3
    # each step only ever sees span slots (never context), and committed tokens never change
    for before, after in itertools.pairwise(calls):
        done = before != 1
        assert torch.equal(before[done], after[done])


def test_threshold_with_a_step_bound_commits_a_share_each_step():
    """Nothing passes a 0.999 threshold, yet 12 masked slots within 3 steps: each step commits at
    least ceil(masked left / steps left), not one a step and the rest all at once at the end."""
    fn, calls = _random_step_fn(50)
    cfg = DenoiseConfig(threshold=0.999, steps=3, pad_run=False)
    out = denoise(fn, Span([(0, 12)]), Vocab(1, 0, [1, 2]), cfg, batch=2)
    assert out.steps_used <= 3 and not (out.tokens == 1).any()
    masked = [int((c == 1).sum(1).max()) for c in calls]  # masked slots before each step
    assert masked[0] == 12 and all(m <= 12 - 4 * i for i, m in enumerate(masked))


def test_sampler_min_tokens_and_single_forward_pass_when_all_confident():
    def confident(x):
        logits = torch.full((x.shape[0], x.shape[1], 20), -10.0)
        logits[..., 7] = 10.0
        logits[..., 0] = 5.0
        return logits

    out = denoise(confident, Span([(0, 5)], min_tokens=[5]), Vocab(1, 0, [1]), DenoiseConfig())
    assert out.tokens.tolist() == [[7, 7, 7, 7, 7]]
    assert out.steps_used == 1


def test_line_break_ends_a_single_line_hole_at_the_frontier():
    """Content 7 7 7, then a line break (id 9) or PAD (0) is likely; a single-line hole ends
    there with no line break in it, and PAD is only committed where the content reaches it."""

    def step(x):
        logits = torch.full((x.shape[0], x.shape[1], 12), -10.0)
        logits[:, :3, 7] = 10.0
        logits[:, 3:, 9] = 4.0  # a line break, then more text: what an unflagged hole keeps
        logits[:, 3:, 0] = 3.5
        logits[:, 3:, 11] = 3.0
        return logits

    cfg = DenoiseConfig(threshold=0.5, pad_at_frontier=True)
    vocab = Vocab(1, 0, [1], newline_ids=[9])
    flagged = denoise(step, Span([(0, 8)], line_holes=[True]), vocab, cfg)
    assert flagged.tokens.tolist() == [[7, 7, 7, 0, 0, 0, 0, 0]]
    assert flagged.steps_used == 2  # the content, then the end at the frontier
    plain = denoise(step, Span([(0, 8)]), vocab, cfg)
    assert plain.tokens[0, 3].item() == 9  # unflagged: the line break is just a token


def test_ended_hole_stops_and_keeps_what_is_committed():
    """`ended` asked after each step: once it says a hole is over, its masked slots become PAD
    (no more passes for it); what was committed stays, the other hole goes on."""
    fn, calls = _random_step_fn(50)

    def no_pad(x):  # random content, never PAD: only `ended` can end a hole early
        logits = fn(x)
        logits[..., 0] = -1e9
        return logits

    def ended(x):
        return torch.tensor([[(x[0, :8] != 1).sum() >= 2, False]])

    cfg = DenoiseConfig(schedule="ltr")  # one slot a step, left to right across the span
    out = denoise(
        no_pad, Span([(0, 8), (8, 12)]), Vocab(1, 0, [1, 2]), cfg, hooks=Hooks(ended=ended)
    )
    row = out.tokens[0].tolist()
    assert 0 not in row[:2] and row[2:8] == [0] * 6  # stopped after two committed slots
    assert 0 not in row[8:] and 1 not in row  # the other hole was filled to its budget
    assert out.steps_used == 2 + 4
    assert torch.equal(out.tokens[0, :2], calls[-1][0, :2])  # committed slots unchanged


def test_should_stop_stops_within_one_step():
    fn, calls = _random_step_fn(50)
    n = {"polls": 0}

    def stop_after_two() -> bool:
        n["polls"] += 1
        return n["polls"] > 2

    with pytest.raises(Cancelled):
        denoise(
            fn,
            Span([(0, 32)]),
            Vocab(1, 0, [1]),
            DenoiseConfig(schedule="ltr"),
            hooks=Hooks(should_stop=stop_after_two),
        )
    assert len(calls) == 2


def test_fixed_seed_is_deterministic(shipped):
    req = InfillRequest(
        ["def square(x):\n    return ", Hole(12), "\n"], candidates=3, temperature=0.8, seed=7
    )
    a = [r.fills for r in shipped.infill(req)]
    b = [r.fills for r in shipped.infill(req)]
    assert a == b


@pytest.mark.parametrize(
    "prefix,suffix",
    [
        ("def is_even(n):\n    return ", "\n"),
        (
            "import os\n\n\ndef list_files(path):\n    result = []\n    for name in os.listdir(path):\n        ",
            "\n    return result\n",
        ),
        ("class Point:\n    def __init__(self, x, y):\n        self.x = x\n        ", "\n"),
    ],
)
def test_shipped_checkpoint_completes_into_parsable_code(shipped, prefix, suffix):
    for schedule in ("threshold", "ltr"):
        res = shipped.infill(InfillRequest([prefix, Hole(24), suffix], schedule=schedule))
        # the server's single-line stop rule (line end) applies to these rest-of-line cursors
        fill = res[0].fills[0].split("\n")[0]
        assert fill.strip(), f"{schedule}: empty fill"
        ast.parse(prefix + fill + suffix)
        assert res[0].steps_used >= 1 and res[0].tokens <= 24


def test_multi_hole_and_trajectory(shipped):
    req = InfillRequest(
        ["x = [1, 2, 3]\ny = ", Hole(8), "\nz = ", Hole(8), "\n"], want_trajectory=True
    )
    res = shipped.infill(req)[0]
    assert len(res.fills) == 2
    assert res.trajectory is not None and len(res.trajectory) == res.steps_used
    assert all(len(step) == 2 for step in res.trajectory)
    assert "\u2591" in "".join(res.trajectory[0])  # masks visible before the last step


def test_infiller_honours_should_stop(shipped):
    with pytest.raises(InfillCancelled):
        shipped.infill(
            InfillRequest(["def f():\n    ", Hole(32), "\n"], schedule="ltr"),
            should_stop=lambda: True,
        )


def test_a_full_context_encode_stops_between_layers(shipped):
    """A superseded request stops inside its context encode (asked before each layer), keeps no
    half-made base, and the next request encodes that context in full as usual."""
    text = "import os\n\n\ndef walk(root):\n    for name in os.listdir(root):\n        "
    req = InfillRequest([text * 4, Hole(8), "\n"], schedule="ltr")
    shipped.forget_contexts()
    asked = []

    def stop_at_third() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(InfillCancelled):
        shipped.infill(req, should_stop=stop_at_third)
    assert len(asked) == 3  # layers 1 and 2 ran; the sampler was never reached
    assert shipped.bases == []
    assert shipped.infill(req)[0].fills
    assert shipped.last_timing["context_reused"] is False and len(shipped.bases) == 1


def test_bad_requests_are_clear_errors(shipped):
    with pytest.raises(ValueError, match="at least one Hole"):
        shipped.infill(InfillRequest(["no hole"]))
    with pytest.raises(ValueError, match="budgets"):
        shipped.infill(InfillRequest(["a", Hole(400), "b"]))
    with pytest.raises(ValueError, match="end_rule"):
        shipped.infill(InfillRequest(["a", Hole(4), "b"], end_rule="soon"))


def _results(rs) -> list[tuple]:
    return [(r.fills, r.score, r.steps_used, r.trajectory, r.tokens, r.ended_by) for r in rs]


def test_infill_is_its_four_public_steps(shipped):
    """layout -> encode -> denoise -> decode, called one by one (as benchmarks do), give what
    `infill` gives: candidates, scores, trajectories, why each fill ended."""
    stop = StopRules(max_lines=1)
    for req in (
        InfillRequest(
            ["def area(w, h):\n    return ", Hole(16, single_line=True), "\n"],
            candidates=3,
            seed=3,
            want_trajectory=True,
        ),
        InfillRequest(["class A:\n    def f(self):\n        ", Hole(64, stop=stop), "\n"]),
    ):
        shipped.forget_contexts()
        want = _results(shipped.infill(req))
        layout = shipped.layout(req)
        assert layout.span.holes == [(0, req.holes[0].max_tokens)]
        cache, reused = shipped.encode(layout, reuse=False, keep=False)
        assert not reused and len(shipped.bases) == 1  # infill's base only
        done = shipped.denoise(layout, cache, req)
        assert _results(shipped.decode(done, layout, req)) == want


def test_decode_options_are_per_call(shipped):
    """Options passed to one call apply to it only; the infiller's own stay the defaults."""
    req = InfillRequest(["def f(a, b):\n", Hole(64), "\n"], schedule="threshold")
    whole = replace(shipped.options, span_block=None, stale_ends=False)
    shipped.infill(req, options=whole)
    assert shipped.last_timing["partial_steps"] == 0  # every step ran the whole span
    shipped.infill(req)
    assert shipped.last_timing["partial_steps"] > 0
    assert shipped.options == DecodeOptions()


def test_a_loaded_infiller_is_its_owners_alone():
    """load_infiller keeps nothing: two loads are two infillers (one owner's settings never
    reach another's), the last reference gone frees it, and a failed load raises."""
    a = load_infiller(None, "cpu", "fp32")
    b = load_infiller(WEIGHTS_DIR, "cpu", "fp32")
    assert a is not b and isinstance(a, BuiltinInfiller)
    ref = weakref.ref(a)
    del a
    gc.collect()
    assert ref() is None
    with pytest.raises(CheckpointError):
        load_infiller("/nonexistent/checkpoint")


def _copy_weights(tmp_path: Path) -> Path:
    d = tmp_path / "w"
    shutil.copytree(WEIGHTS_DIR, d)
    return d


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        BuiltinInfiller(tmp_path / "nope")
    d = _copy_weights(tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        BuiltinInfiller(d)


def test_truncated_shard_is_a_clear_error(tmp_path):
    d = _copy_weights(tmp_path)
    shard = min(d.glob("*.safetensors"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=shard.name):
        BuiltinInfiller(d)


def test_corrupt_and_mismatched_checkpoint_are_clear_errors(tmp_path):
    d = _copy_weights(tmp_path)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        validate_checkpoint(d)
    d2 = _copy_weights(tmp_path / "b")
    cfg = (d2 / "config.json").read_text().replace('"hidden_size": 384', '"hidden_size": 256')
    (d2 / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        BuiltinInfiller(d2)


def test_int8_layers_equal_torch_ao_dynamic_quantization():
    """model/quantize.py's Int8Linear builds its layers itself (one weight pack, 0.14 s less
    start-up) and must give what torch.ao's quantize_dynamic with per-channel weights gives, to
    the bit: on the shipped network's own layers (the LM head and a block's), a layer with a bias,
    and a weight row of zeros, for inputs of 1 to 300 rows at very different scales."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from model.network import ParafillNet
    from model.quantize import Int8Linear, available

    if not available():
        pytest.skip("no quantized CPU engine in this torch build")
    net = ParafillNet.load_checkpoint(WEIGHTS_DIR)
    odd = torch.nn.Linear(384, 40)
    with torch.no_grad():
        odd.weight[3] = 0.0
    layers = [net.lm_head, net.blocks[0].qkv, net.blocks[7].down, odd]
    g = torch.Generator().manual_seed(5)
    for layer in layers:
        ours = Int8Linear.from_linear(layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices
            # (on a copy: quantize_dynamic swaps the modules of what it is given)
            ref = quantize_dynamic(
                _with_weights(layer),
                {torch.nn.Linear: per_channel_dynamic_qconfig},
                dtype=torch.qint8,
            )[0]
        for rows, scale in [(1, 1.0), (16, 0.01), (24, 30.0), (300, 1.0)]:
            x = torch.randn(1, rows, layer.in_features, generator=g) * scale
            assert torch.equal(ours(x), ref(x))
        w, bias = ours.int8_weights()
        assert torch.equal(w.int_repr(), ref.weight().int_repr())
        assert (bias is None) == (layer.bias is None)


def _with_weights(layer: torch.nn.Linear) -> torch.nn.Sequential:
    copy = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        copy.weight.copy_(layer.weight)
        if layer.bias is not None:
            copy.bias.copy_(layer.bias)
    return torch.nn.Sequential(copy)


def test_int8_weights_track_fp32_and_bad_precision_is_clear(shipped):
    """int8 (the CPU default) keeps the network's predictions: over three stretches of stdlib
    code (fixed text, unlike this project's own files), the LM-head distributions of the same
    cached span step stay close to fp32's and nearly all argmaxes agree."""
    fp32 = BuiltinInfiller(None, "cpu", "fp32")
    assert shipped.precision == "int8" and fp32.precision == "fp32"
    texts = [
        Path(textwrap.__file__).read_text()[:1500],
        Path(subprocess.__file__).read_text()[3000:4500],
        Path(argparse.__file__).read_text()[:1500],
    ]
    tv, agree = [], []
    for text in texts:
        ids = shipped.tok.encode(text)
        ctx, pos = torch.tensor([ids]), torch.arange(len(ids))[None]
        span = torch.tensor([[shipped.tok.mask_id] * 16])
        span_pos = torch.arange(len(ids), len(ids) + 16)[None]
        probs = []
        for m in (shipped, fp32):
            with torch.inference_mode():
                cache = m.net.encode_context(ctx, pos)
                probs.append(m.net.span_forward(span, span_pos, cache).softmax(-1))
        tv.append(float((0.5 * (probs[0] - probs[1]).abs().sum(-1)).mean()))
        agree.append(float((probs[0].argmax(-1) == probs[1].argmax(-1)).float().mean()))
    assert sum(tv) / len(tv) < 0.1, tv
    assert sum(agree) / len(agree) >= 0.8, agree
    with pytest.raises(CheckpointError, match="precision"):
        BuiltinInfiller(None, "cpu", "int4")
