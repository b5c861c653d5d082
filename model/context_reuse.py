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
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from model.network import ContextCache, shift_keys


@dataclass
class Base:
    """A fully encoded context: its token ids, positions and per-layer K/V."""

    ids: list[int]
    pos: list[int]
    cache: ContextCache


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
    take = torch.tensor([i for i, _ in pairs], dtype=torch.long, device=dev)
    delta = torch.tensor([[pos[j] - base.pos[i] for i, j in pairs]], device=dev)
    moved = bool((delta != 0).any())
    theta = net.config.rope_theta
    kk, vv = [], []
    for k, v in zip(base.cache.keys, base.cache.values):
        k = k.index_select(2, take)
        kk.append(shift_keys(k, delta, theta) if moved else k)
        vv.append(v.index_select(2, take))
    known = ContextCache(kk, vv)
    kept = {j for _, j in pairs}
    fresh = [j for j in range(len(ids)) if j not in kept]
    if not fresh:
        return known
    new = net.encode_context(
        torch.tensor([[ids[j] for j in fresh]], dtype=torch.long, device=dev),
        torch.tensor([[pos[j] for j in fresh]], dtype=torch.long, device=dev),
        known=known,
    )
    # attention is order-free: the kept tokens first, then the re-encoded ones
    keys = [torch.cat([k, f], 2) for k, f in zip(kk, new.keys)]
    values = [torch.cat([v, f], 2) for v, f in zip(vv, new.values)]
    return ContextCache(keys, values)
