"""Reusing a context encoding across requests (keystrokes): the editor's latency lever.

Owns: matching a request's context tokens against a fully encoded context (a base; the infiller
keeps the last few: model/infill.py), deciding which tokens to re-encode, and assembling the K/V
cache from the base's kept tokens (re-rotated where their positions moved) plus the re-encoded
region.

Encoding the context is most of a completion's cost on a CPU (about 200 ms for 480 tokens in int8
on one core, against about 10 ms per denoising step), yet between two keystrokes the context
changes in a few tokens around the cursor. A token diff against the base finds what changed (one
edit or several, and a window that slid); the changed tokens, widened by `margin` tokens on each
side, are encoded afresh attending to the kept tokens; the kept tokens keep the K/V they had in the
base. That is an approximation: exactly, every context token would see the edits. It is bounded:
kept tokens are always those of the last full encode (staleness never compounds), and once more
than `limit` tokens (or more than are kept) would be re-encoded, the whole context is encoded
again and becomes the new base. bench/context_reuse.py measures how often the fill differs from
a full encode.

A context may open with a header: text from outside the document (the repository context,
lsp_server/context/), `head` tokens at positions 0.. ahead of the file's. Its encoding is reused
as the file's own is, and apart from the file's: `serving_order` tries the bases with the same
header first (their header tokens keep their K/V untouched: same ids, same positions, nothing
re-rotated; only the file's part is diffed into fresh tokens), then those with another header, and
never a base with a header for a context without one or the other way round (every kept token of
such a base saw, or missed, a hundred tokens the request does not have, or does). A context
without a header meets only bases without one, in the order they always had.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from model.network import ContextCache, rope_tables, rotate


@dataclass
class Base:
    """A fully encoded context: its token ids, positions and per-layer K/V; its first `head`
    tokens are the header (0: none)."""

    ids: list[int]
    pos: list[int]
    cache: ContextCache
    head: int = 0


def same_header(base: Base, ids: list[int], head: int) -> bool:
    """Whether `base` opens with the header of a context (`ids`, its first `head` tokens the
    header): the same tokens at the same positions (a header always starts at 0)."""
    return base.head == head and base.ids[:head] == ids[:head]


def serving_order(bases: list[Base], ids: list[int], head: int) -> list[int]:
    """Indices of the `bases` (most recent first) to try for a context: those with its header
    first, then those with another header (a context with one) in their order; bases with a
    header are never tried for a context without one, nor the other way round."""
    same = [k for k, b in enumerate(bases) if same_header(b, ids, head)]
    other = [k for k, b in enumerate(bases) if k not in same and (b.head > 0) == (head > 0)]
    return same + other


def kept_pairs(
    old: list[int], new: list[int], margin: int, limit: int
) -> list[tuple[int, int]] | None:
    """(index in `old`, index in `new`) of the tokens reused from the base: the runs the two share
    (a token diff, so several edits and a sliding window are all found), each shortened by
    `margin` tokens where it borders a change in `new`. None when the tokens left to re-encode
    are over `limit` or outnumber the kept ones (another file, or a big edit)."""
    blocks = difflib.SequenceMatcher(None, old, new, autojunk=False).get_matching_blocks()
    pairs: list[tuple[int, int]] = []
    for a, b, n in blocks:
        lo = 0 if b == 0 else margin
        hi = 0 if b + n == len(new) else margin
        pairs += [(a + i, b + i) for i in range(lo, n - hi)]
    fresh = len(new) - len(pairs)
    if fresh > limit or fresh > len(pairs):
        return None
    return pairs


def reuse(
    net, base: Base, ids: list[int], pos: list[int], margin: int, limit: int
) -> ContextCache | None:
    """The context cache for (ids, pos) built from `base`, or None when too much changed."""
    if ids == base.ids and pos == base.pos:
        return ContextCache(base.cache.keys, base.cache.values)
    pairs = kept_pairs(base.ids, ids, margin, limit)
    if pairs is None:
        return None
    dev = base.cache.keys[0].device if base.cache.keys else "cpu"
    kept = {j for _, j in pairs}
    fresh = [j for j in range(len(ids)) if j not in kept]
    # the kept tokens first, then room for the re-encoded ones (attention is order-free): one
    # copy of each layer's K/V, the room filled by whatever index comes first, then overwritten
    take = [i for i, _ in pairs]
    take = torch.tensor(take + take[:1] * len(fresh), dtype=torch.long, device=dev)
    kk = [k.index_select(2, take) for k in base.cache.keys]
    vv = [v.index_select(2, take) for v in base.cache.values]
    shift_moved(net, kk, [pos[j] - base.pos[i] for i, j in pairs])
    cache = ContextCache(kk, vv)
    if fresh:
        net.encode_into(
            torch.tensor([[ids[j] for j in fresh]], dtype=torch.long, device=dev),
            torch.tensor([[pos[j] for j in fresh]], dtype=torch.long, device=dev),
            cache,
            len(pairs),
        )
    return cache


def shift_moved(net, keys: list[torch.Tensor], delta: list[int]) -> None:
    """Re-rotate, in place, the kept keys (per layer, (B, H, L, Dh)) whose positions moved by
    `delta` (one per kept token): only those (a header and the prefix before an edit stay
    where they were), with one table of rotations for every layer. A key that did not move is
    left as it is, as a rotation by 0 would leave it."""
    moved = [t for t, d in enumerate(delta) if d]
    if not moved or not keys:
        return
    dev, dh = keys[0].device, keys[0].shape[-1]
    lo, hi = moved[0], moved[-1] + 1
    if hi - lo == len(moved):  # one run (typing moves what comes after the cursor): a view
        d = torch.tensor([delta[lo:hi]], device=dev)
        rot = rope_tables(d, dh, net.config.rope_theta, keys[0].dtype)
        for k in keys:
            k[:, :, lo:hi] = rotate(k[:, :, lo:hi], rot)
        return
    at = torch.tensor(moved, dtype=torch.long, device=dev)
    d = torch.tensor([[delta[t] for t in moved]], device=dev)
    rot = rope_tables(d, dh, net.config.rope_theta, keys[0].dtype)
    for k in keys:
        k.index_copy_(2, at, rotate(k.index_select(2, at), rot))
