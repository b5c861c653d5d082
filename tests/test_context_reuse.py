"""Context reuse across requests (model/context_reuse.py): the region rule, key re-rotation, and
how close a reused cache stays to a full encode on the shipped model."""

from __future__ import annotations

import pytest
import torch

from model.context_reuse import Base, kept_pairs, reuse
from model.infill import WEIGHTS_DIR, load_infiller
from model.interface import Hole, InfillRequest
from model.network import _rope, shift_keys

OLD = list(range(100, 160))


def _runs(pairs):
    """Kept pairs as runs (old start, new start, length)."""
    runs = []
    for i, j in pairs:
        if runs and runs[-1][0] + runs[-1][2] == i and runs[-1][1] + runs[-1][2] == j:
            runs[-1][2] += 1
        else:
            runs.append([i, j, 1])
    return [tuple(r) for r in runs]


@pytest.mark.parametrize(
    ("new", "want"),
    [
        (OLD, [(0, 0, 60)]),  # identical: everything kept
        (OLD[:30] + [7, 8] + OLD[30:], [(0, 0, 26), (34, 36, 26)]),  # typed mid-context, margin 4
        (OLD[:30] + OLD[31:], [(0, 0, 26), (35, 34, 25)]),  # one token deleted
        (OLD[5:40] + [9] + OLD[40:], [(5, 0, 31), (44, 40, 16)]),  # the window slid by 5
        (OLD[:15] + [1] + OLD[15:45] + [2] + OLD[45:], [(0, 0, 11), (19, 20, 22), (49, 51, 11)]),
        (OLD[:10] + list(range(20)) + OLD[30:], None),  # 28 to re-encode > limit 24
        (list(range(60)), None),  # nothing in common
    ],
)
def test_kept_pairs(new, want):
    pairs = kept_pairs(OLD, new, margin=4, limit=24)
    assert (None if pairs is None else _runs(pairs)) == want
    if pairs is not None:
        assert all(OLD[i] == new[j] for i, j in pairs)


def test_shift_keys_composes_rotations():
    x = torch.randn(1, 2, 5, 8)
    p = torch.arange(3, 8)[None]
    d = torch.tensor([[4, 4, -2, 0, 7]])
    assert torch.allclose(shift_keys(_rope(x, p, 1e4), d, 1e4), _rope(x, p + d, 1e4), atol=1e-5)


@pytest.fixture(scope="module")
def shipped():
    return load_infiller()


def _probs(m, cache, n_ctx):
    span = torch.tensor([[m.tok.mask_id] * 12])
    with torch.inference_mode():
        return m.net.span_forward(span, torch.arange(n_ctx, n_ctx + 12)[None], cache).softmax(-1)


def test_reused_cache_tracks_a_full_encode(shipped):
    """After a few typed tokens the reused cache predicts the span like a full encode does."""
    text = (WEIGHTS_DIR.parent / "sampler.py").read_text()
    ids = shipped.tok.encode(text[:1200])
    typed = ids[:-20] + shipped.tok.encode("x = foo(") + ids[-20:]

    def full(t):
        with torch.inference_mode():
            return shipped.net.encode_context(torch.tensor([t]), torch.arange(len(t))[None])

    base = Base(ids, list(range(len(ids))), full(ids))
    with torch.inference_mode():
        same = reuse(shipped.net, base, ids, base.pos, margin=16, limit=96)
        cache = reuse(shipped.net, base, typed, list(range(len(typed))), margin=16, limit=96)
    assert same is not None and cache is not None
    assert same.keys == base.cache.keys and same.values == base.cache.values  # unchanged: the base
    exact, approx = _probs(shipped, full(typed), len(typed)), _probs(shipped, cache, len(typed))
    tv = 0.5 * (exact - approx).abs().sum(-1)
    assert float(tv.mean()) < 0.1, tv
    assert float((exact.argmax(-1) == approx.argmax(-1)).float().mean()) >= 0.75


def test_infiller_reuses_the_last_full_encode_and_refreshes_it(shipped):
    src = "def area(width, height):\n    result = width * height\n    return result\n" * 8
    pre, suf = src + "\ndef volume(w, h, d):\n    ", "\n    return v\n"
    shipped.forget_contexts()
    shipped.infill(InfillRequest([pre, Hole(16), suf]))
    assert shipped.last_timing["context_reused"] is False
    res = shipped.infill(InfillRequest([pre + "v = ", Hole(16), suf]))
    assert shipped.last_timing["context_reused"] is True and res[0].fills[0].strip()
    shipped.infill(InfillRequest(["import os\n" * 40, Hole(16), "\n"]))  # another file
    assert shipped.last_timing["context_reused"] is False
    shipped.reuse_context = False
    try:
        shipped.infill(InfillRequest(["import os\n" * 40 + "x", Hole(16), "\n"]))
        assert shipped.last_timing["context_reused"] is False
    finally:
        shipped.reuse_context = True


def test_infiller_keeps_several_bases_so_switching_places_stays_warm(shipped):
    from model.infill import REUSE_BASES

    files = [
        f"import mod{k}\n" + f"def f{k}(a, b):\n    return a * {k} + b\n" * 12 for k in range(5)
    ]
    shipped.forget_contexts()
    for k in range(REUSE_BASES):  # REUSE_BASES places, each encoded in full
        shipped.infill(InfillRequest([files[k], Hole(8), "\n"]))
        assert shipped.last_timing["context_reused"] is False
    shipped.infill(InfillRequest([files[0] + "x = ", Hole(8), "\n"]))  # back to the first place
    assert shipped.last_timing["context_reused"] is True
    shipped.infill(InfillRequest([files[4], Hole(8), "\n"]))  # one more: the oldest goes (files[1])
    assert shipped.last_timing["context_reused"] is False
    assert len(shipped.bases) == REUSE_BASES
    shipped.infill(InfillRequest([files[1] + "y", Hole(8), "\n"]))
    assert shipped.last_timing["context_reused"] is False
    shipped.forget_contexts()
    assert shipped.bases == []
