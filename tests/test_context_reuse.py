"""Context reuse across requests (model/context_reuse.py): the region rule, key re-rotation, and
how close a reused cache stays to a full encode on the shipped model."""

from __future__ import annotations

import pytest
import torch

from model.context_reuse import Base, kept_pairs, reuse
from model.infill import WEIGHTS_DIR, load_infiller
from model.interface import Hole, InfillRequest
from model.network import ContextCache, _rope, shift_keys

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


def test_shift_moved_rotates_as_every_key_rotated_would():
    """Only the moved keys are rotated; the result equals rotating every key by its delta (a
    rotation by 0 leaves a key as it was), one run of moved keys or scattered ones."""
    from model.context_reuse import shift_moved

    net = type("Net", (), {"config": type("Cfg", (), {"rope_theta": 1e4})})()
    for delta in ([0] * 5 + [3] * 4 + [0] * 3, [0, 2, 0, -1, 0, 0, 5, 0, 0, 0, 0, 1], [0] * 12):
        keys = [torch.randn(1, 2, 12, 8) for _ in range(3)]
        want = [shift_keys(k, torch.tensor([delta]), 1e4) for k in keys]
        shift_moved(net, keys, delta)
        assert all(torch.equal(k, w) for k, w in zip(keys, want))


def test_header_tokens_are_the_shared_leading_ones_less_what_was_cut():
    from model.layout import header_tokens

    assert header_tokens([5, 6, 7], [5, 6, 7, 8, 9], 0) == 3
    assert header_tokens([5, 6, 7], [5, 6, 70, 8], 0) == 2  # 70 straddles the header's end
    assert header_tokens([5, 6, 7], [5, 6, 7, 8, 9], 2) == 1  # the window cut two of them
    assert header_tokens([5, 6, 7], [5, 6, 7, 8], 5) == 0
    assert header_tokens([], [5, 6], 0) == 0


def test_serving_order_puts_the_same_header_first_and_never_mixes_kinds():
    from model.context_reuse import serving_order

    def base(ids, head):
        return Base(ids, list(range(len(ids))), None, head)

    bases = [
        base([1, 2, 9, 9], 0),  # no header
        base([7, 8, 5, 5], 2),  # another header
        base([1, 2, 5, 5], 2),  # the request's header
        base([3, 3, 5, 5], 0),  # no header
    ]
    assert serving_order(bases, [1, 2, 5, 6], 2) == [2, 1]
    assert serving_order(bases, [1, 2, 5, 6], 0) == [0, 3]  # as they are, most recent first
    assert serving_order(bases, [7, 8, 5, 6], 2) == [1, 2]


HEADER = "# pkg/shapes.py\ndef area(width, height):\n    ...\nclass Box:\n    size: int\n"


def _typed(header: str, typed: str) -> InfillRequest:
    body = "from pkg.shapes import area\n\n" + "def total(boxes):\n    n = 0\n" * 6
    return InfillRequest(
        [header + body + "    " + typed, Hole(16), "\n    return n\n"], header_chars=len(header)
    )


def test_typing_with_a_header_keeps_its_encoding(shipped):
    """The header is encoded with the first request and kept, untouched, while the file's part
    changes; the engine counts such completions."""
    from lsp_server.engine import Engine

    shipped.forget_contexts()
    head = shipped.layout(_typed(HEADER, "")).head
    assert 0 < head <= shipped.count_tokens(HEADER)
    assert shipped.layout(_typed(HEADER, "")).ctx_ids[:head] == shipped.tok.encode(HEADER)[:head]
    engine = Engine(lambda *_: shipped, cache_size=0)
    engine.load()
    assert engine.wait_ready(30)
    engine.run(_typed(HEADER, ""), timeout=60)
    assert shipped.last_timing["context_reused"] is False
    base = shipped.bases[0]
    assert base.head == head
    kept = [k[:, :, :head].clone() for k in base.cache.keys]
    for typed in ("n +=", "n += area(", "n += area(b."):
        engine.run(_typed(HEADER, typed), timeout=60)
        assert shipped.last_timing["context_reused"] is True
        assert shipped.last_timing["header_kept"] == head
        assert len(shipped.bases) == 1  # nothing encoded in full
    assert engine.stats.context_reused == engine.stats.header_reused == 3
    assert all(torch.equal(k[:, :, :head], c) for k, c in zip(shipped.bases[0].cache.keys, kept))
    engine.close()


def test_a_changed_header_is_not_served_as_the_old_one(shipped):
    shipped.forget_contexts()
    shipped.infill(_typed(HEADER, "n +="))
    other = HEADER.replace("width, height", "w, h, depth")
    shipped.infill(_typed(other, "n +="))  # a small change: the header's tokens re-encoded
    assert shipped.last_timing["context_reused"] is True
    assert shipped.last_timing["header_kept"] == 0
    new = "# pkg/boxes.py\n" + "def volume(box, scale=1.0, *, rounded=False):\n    ...\n" * 3
    shipped.infill(_typed(new, "n +="))  # another header altogether: encoded in full
    assert shipped.last_timing["context_reused"] is False
    assert shipped.bases[0].head == shipped.layout(_typed(new, "")).head
    shipped.infill(_typed(HEADER, "n += 1"))  # back to the first: its base serves it again
    assert shipped.last_timing["header_kept"] == shipped.layout(_typed(HEADER, "")).head


def test_no_header_context_never_meets_a_header_base(shipped):
    """Without a header the layout and the reuse are as before: a context without one reuses
    bases without one only (the same fills with header requests in between as without them),
    and a context with one does not reuse those."""
    plain = [_typed("", "n +="), _typed("", "n += 1")]
    assert plain[0].header_chars == 0 and shipped.layout(plain[0]).head == 0
    shipped.forget_contexts()
    shipped.infill(plain[0])
    alone = shipped.infill(plain[1])
    shipped.forget_contexts()
    shipped.infill(plain[0])
    shipped.infill(_typed(HEADER, "n +="))  # not served by the base without a header
    assert shipped.last_timing["context_reused"] is False
    assert shipped.infill(plain[1]) == alone  # nor this by the one with it
    assert shipped.last_timing["context_reused"] is True
    assert shipped.bases[0].head == 0
    shipped.forget_contexts()


def test_encode_into_writes_what_encode_context_with_known_gives(shipped):
    """The re-encoded tokens written into room after the kept ones: bitwise the K/V that
    encoding them with the kept tokens `known`, then concatenating, gives."""
    ids = shipped.tok.encode((WEIGHTS_DIR.parent / "sampler.py").read_text()[:900])
    n, fresh = len(ids), [5, 6, 7, 8]
    with torch.inference_mode():
        full = shipped.net.encode_context(torch.tensor([ids]), torch.arange(n)[None])
        known = ContextCache([k[:, :, :-4] for k in full.keys], [v[:, :, :-4] for v in full.values])
        want = shipped.net.encode_context(
            torch.tensor([fresh]), torch.arange(n - 4, n)[None], known=known
        )
        room = ContextCache([k.clone() for k in full.keys], [v.clone() for v in full.values])
        shipped.net.encode_into(torch.tensor([fresh]), torch.arange(n - 4, n)[None], room, n - 4)
    for got, kept, new in zip(
        room.keys + room.values, known.keys + known.values, want.keys + want.values
    ):
        assert torch.equal(got, torch.cat([kept, new], 2))
