"""The length signal (model/length.py): its curves and estimates, the sampler's use of it, the
shipped head, a checkpoint without one, and the training side's hole extraction."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from model.infill import WEIGHTS_DIR, BuiltinInfiller, load_infiller, mid_line_holes
from model.interface import Hole, InfillRequest
from model.length import LengthHead, end_curve, features, quantile_length
from model.sampler import DenoiseConfig, Hooks, Span, Vocab, denoise
from training.length_train import hole_slots, ordinal_targets, standardise


@pytest.fixture(scope="module")
def shipped():
    return load_infiller()


def test_quantiles_read_the_curve():
    end = torch.tensor([[0.01, 0.1, 0.3, 0.6, 0.95, 0.99]])
    top = torch.tensor([[0.9, 0.8, 0.5, 0.3, 0.04, 0.01]])
    cdf = end.cummax(-1).values
    assert quantile_length(cdf, 0.25).tolist() == [2]
    assert quantile_length(cdf, 0.999).tolist() == [6]  # never reached: the whole hole
    assert features(end, top).shape == (1, 6, 7)
    assert ordinal_targets(torch.tensor([2, 0]), 4).tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_head_cdf_is_monotone_and_fits_a_simple_rule():
    """Lines whose end curve jumps at slot k have length k: the head learns it."""
    torch.manual_seed(0)
    lengths = torch.randint(1, 20, (256,))
    slot = torch.arange(24)[None, :]
    end = torch.where(slot >= lengths[:, None], 0.3, 0.02) + 0.01 * torch.rand(256, 24)
    top = 1 - end
    head = LengthHead(8)
    f = features(end, top)
    standardise(head, f)
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    y = ordinal_targets(lengths, 24)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(head(f), y).backward()
        opt.step()
    with torch.no_grad():
        cdf = head.cdf(end, top)
    assert bool((cdf[:, 1:] >= cdf[:, :-1]).all())
    assert (quantile_length(cdf, 0.5) == lengths).float().mean() > 0.9


def _step_ending_early(x):
    """Content token 7 is likely at slot 0 only; PAD (0) beats it from slot 1 on, line break 9
    is likely too: the PAD budget alone ends the fill after one token."""
    logits = torch.full((x.shape[0], x.shape[1], 12), -10.0)
    logits[:, :, 7] = 2.0
    logits[:, 0, 7] = 10.0
    logits[:, 1:, 0] = 4.0
    logits[:, 1:, 9] = 3.0
    return logits


@pytest.mark.parametrize("estimate", [0, 3, 6, 99])
def test_sampler_min_length_honours_budget_and_single_line(estimate):
    def min_length(logits):
        assert logits[..., 9].max() == -torch.inf  # line breaks folded onto PAD first
        return torch.full((logits.shape[0], 1), estimate)

    cfg = DenoiseConfig(threshold=0.9)
    out = denoise(
        _step_ending_early,
        Span([(0, 6)], min_tokens=[2], line_holes=[True]),
        Vocab(1, 0, [1], newline_ids=[9]),
        cfg,
        batch=2,
        hooks=Hooks(min_length=min_length),
    )
    want = min(6, max(2, estimate))
    for row in out.tokens.tolist():
        assert 9 not in row  # no line break inside a single-line fill
        assert row[:want] == [7] * want and all(t == 0 for t in row[want:])


def test_shipped_checkpoint_has_the_signal_and_its_estimate_stays_in_budget(shipped):
    assert shipped.has_length_signal
    seen = []
    req = InfillRequest(["def area(width, height):\n    return ", Hole(24, single_line=True), "\n"])

    fn = shipped.length_fn(req, [(0, 24)])
    logits = torch.randn(3, 24, shipped.tok.vocab_size)
    est = fn(logits)
    seen += est.flatten().tolist()
    assert all(0 <= v <= 24 for v in seen)
    r = shipped.infill(req)[0]
    assert "\n" not in r.fills[0] and 0 < r.tokens <= 24
    budget = InfillRequest(["x = ", Hole(3, min_tokens=2, single_line=True), "\n"])
    r = shipped.infill(budget)[0]
    assert 2 <= r.tokens <= 3


def test_length_signal_can_be_turned_off_and_long_holes_keep_the_pad_budget(shipped):
    line = InfillRequest(["def f(a, b):\n    return ", Hole(24, single_line=True), "\n"])
    off = InfillRequest(line.segments, length_estimate=False)
    assert shipped.length_fn(line, [(0, 24)]) is not None
    assert shipped.length_fn(off, [(0, 24)]) is None
    block = InfillRequest(["def f(a, b):\n", Hole(64), "\n"])
    assert shipped.length_fn(block, [(0, 64)]) is None
    # at a line start the PAD budget alone decides (the estimate did not help there on dev)
    start = InfillRequest(["def f(a, b):\n    ", Hole(24, single_line=True), "\n"])
    assert shipped.length_fn(start, [(0, 24)]) is None
    every = replace(shipped.options, length_every_line=True)  # benchmarks: at line starts too
    assert shipped.length_fn(start, [(0, 24)], options=every) is not None
    assert mid_line_holes(["x = 1\n  ", Hole(4), "y", Hole(4), "\n", Hole(4)]) == [
        False,
        True,
        False,
    ]
    assert shipped.infill(off)[0].fills  # the PAD-budget path still answers


def test_a_checkpoint_without_a_length_head_still_loads(tmp_path):
    ck = tmp_path / "w"
    shutil.copytree(WEIGHTS_DIR, ck)
    cfg = json.loads((ck / "config.json").read_text())
    cfg.pop("length_head_hidden", None)
    (ck / "config.json").write_text(json.dumps(cfg))
    index = json.loads((ck / "model.safetensors.index.json").read_text())
    index["weight_map"] = {
        k: v for k, v in index["weight_map"].items() if not k.startswith("length_head.")
    }
    (ck / "model.safetensors.index.json").write_text(json.dumps(index))
    (ck / "length_head.safetensors").unlink(missing_ok=True)
    m = BuiltinInfiller(ck)
    assert not m.has_length_signal
    req = InfillRequest(["x = ", Hole(24, single_line=True), "\n"])
    assert m.length_fn(req, [(0, 24)]) is None
    assert m.infill(req)[0].steps_used >= 1


def test_end_curve_is_a_probability_and_hole_slots_find_each_hole():
    logits = torch.randn(2, 5, 11)
    end, top = end_curve(logits, 0)
    p = torch.softmax(logits, -1)
    assert torch.allclose(end, p[..., 0]) and bool((top <= 1 - end + 1e-6).all())
    # context (group 0), first copy with two holes (positions 5-7 and 10-11), a second copy
    grp = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 255]])
    pos = torch.tensor([[0, 1, 2, 5, 6, 7, 10, 11, 5, 6, 7, 10, 11, 0]])
    idx, valid = hole_slots(pos, grp, slots=4)
    assert idx.shape == (2, 4)
    assert idx[0][valid[0]].tolist() == [3, 4, 5] and idx[1][valid[1]].tolist() == [6, 7]


@pytest.mark.parametrize("drop", ["weights", "config"])
def test_a_checkpoint_with_half_a_length_head_loads_with_the_signal_off(tmp_path, drop):
    """The head's shard gone but config.json still naming it, or the shard there but the config
    without it: the model loads, without the signal (a broken head is no reason to refuse)."""
    import json
    import shutil

    from model.infill import WEIGHTS_DIR, BuiltinInfiller

    ck = tmp_path / "w"
    shutil.copytree(WEIGHTS_DIR, ck)
    if drop == "config":
        cfg = json.loads((ck / "config.json").read_text())
        cfg.pop("length_head_hidden")
        (ck / "config.json").write_text(json.dumps(cfg))
    else:
        index = json.loads((ck / "model.safetensors.index.json").read_text())
        index["weight_map"] = {
            k: v for k, v in index["weight_map"].items() if not k.startswith("length_head.")
        }
        (ck / "model.safetensors.index.json").write_text(json.dumps(index))
        (ck / "length_head.safetensors").unlink()
    m = BuiltinInfiller(ck, "cpu", "fp32")
    assert not m.has_length_signal
    line = m.infill(InfillRequest(["x = ", Hole(8, single_line=True), "\n"]))[0]
    assert line.fills[0].strip()
