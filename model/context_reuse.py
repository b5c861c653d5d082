"""Reusing a context encoding across requests (keystrokes): the editor's latency lever.

Owns: matching a request's context tokens against the last fully encoded context (the base),
deciding which tokens to re-encode, and assembling the K/V cache from the base's kept tokens
(re-rotated where their positions moved) plus the re-encoded region.

Encoding the context is most of a completion's cost on a CPU (about 200 ms for 480 tokens in int8
on one core, against about 10 ms per denoising step), yet between two keystrokes the context
changes in a few tokens around the cursor. The region that differs from the base (the common
prefix and suffix removed), widened by `margin` tokens on each side, is encoded afresh attending
to the kept tokens; the kept tokens keep the K/V they had in the base. That is an approximation:
exactly, every context token would see the edit. It is bounded: kept tokens are always those of
the last full encode (staleness never compounds), and once the region outgrows `limit` tokens the
whole context is encoded again and becomes the new base. bench/context_reuse.py measures how often
the fill differs from a full encode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.network import ContextCache, shift_keys


@dataclass
class Base:
    """A fully encoded context: its token ids, positions and per-layer K/V."""

    ids: list[int]
    pos: list[int]
    cache: ContextCache


PROBE = 8  # tokens of the new context's start looked for in the base (the window may slide)
SEARCH = 256  # how far into the base the new start may be found


def region(old: list[int], new: list[int], margin: int, limit: int) -> tuple[int, int, int] | None:
    """(start in `old`, kept prefix, kept suffix): `new` begins at old[start:] (the window slid
    by `start` tokens), shares a prefix and a suffix with it, and the rest widened by `margin` is
    re-encoded. None when that region is over `limit` tokens or more than what is kept."""
    start = next(
        (d for d in range(min(SEARCH, len(old))) if old[d : d + PROBE] == new[:PROBE]), None
    )
    if start is None:
        return None
    n = min(len(old) - start, len(new))
    p = 0
    while p < n and old[start + p] == new[p]:
        p += 1
    s = 0
    while s < n - p and old[-1 - s] == new[-1 - s]:
        s += 1
    keep_pre, keep_suf = max(0, p - margin), max(0, s - margin)
    fresh = len(new) - keep_pre - keep_suf
    if fresh > limit or fresh > keep_pre + keep_suf:  # mostly new: another file or a big edit
        return None
    return start, keep_pre, keep_suf


def reuse(
    net, base: Base, ids: list[int], pos: list[int], margin: int, limit: int
) -> ContextCache | None:
    """The context cache for (ids, pos) built from `base`, or None when too much changed."""
    if ids == base.ids and pos == base.pos:
        return ContextCache(base.cache.keys, base.cache.values)
    kept = region(base.ids, ids, margin, limit)
    if kept is None:
        return None
    start, keep_pre, keep_suf = kept
    old_n, new_n = len(base.ids), len(ids)
    old_idx = list(range(start, start + keep_pre)) + list(range(old_n - keep_suf, old_n))
    new_idx = list(range(keep_pre)) + list(range(new_n - keep_suf, new_n))
    dev = base.cache.keys[0].device if base.cache.keys else "cpu"
    take = torch.tensor(old_idx, dtype=torch.long, device=dev)
    delta = torch.tensor([[pos[j] - base.pos[i] for i, j in zip(old_idx, new_idx)]], device=dev)
    moved = bool((delta != 0).any())
    theta = net.config.rope_theta
    kk, vv = [], []
    for k, v in zip(base.cache.keys, base.cache.values):
        k = k.index_select(2, take)
        kk.append(shift_keys(k, delta, theta) if moved else k)
        vv.append(v.index_select(2, take))
    known = ContextCache(kk, vv)
    if keep_pre + keep_suf == new_n:
        return known
    mid = slice(keep_pre, new_n - keep_suf)
    fresh = net.encode_context(
        torch.tensor([ids[mid]], dtype=torch.long, device=dev),
        torch.tensor([pos[mid]], dtype=torch.long, device=dev),
        known=known,
    )
    # attention is order-free: keep the kept tokens first and the re-encoded region after them
    keys = [torch.cat([k, f], 2) for k, f in zip(kk, fresh.keys)]
    values = [torch.cat([v, f], 2) for v, f in zip(vv, fresh.values)]
    return ContextCache(keys, values)
