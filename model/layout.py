"""Laying a request out in the model's window: pure functions shared by training and inference.

Owns: how much prefix and suffix context is kept around the holes, where each hole's slots sit
among the context positions, and the span-relative view of those slots. The training examples
(`training/data.py`) and the infiller (`model/infill.py`) both use these, so the model is trained
on exactly the layout it meets at inference.
"""

from __future__ import annotations


def trim_context(pre: list[int], suf: list[int], room: int) -> tuple[list[int], list[int]]:
    """Keep the tokens nearest the holes within `room`: the suffix keeps at least a third of the
    room (more when the prefix is short), the prefix the rest."""
    keep_suf = min(len(suf), max(room // 3, room - len(pre)))
    keep_pre = min(len(pre), room - keep_suf)
    return pre[len(pre) - keep_pre :], suf[:keep_suf]


def text_pieces(req) -> list[str]:
    """An InfillRequest's text around its holes: [before the first hole, between holes...,
    after the last] (adjacent text segments merged)."""
    texts: list[str] = [""]
    for s in req.segments:
        if isinstance(s, str):
            texts[-1] += s
        else:
            texts.append("")
    return texts


def fit_pieces(pieces: list[list[int]], room: int) -> list[list[int]]:
    """Text pieces [prefix, middles..., suffix] cut to `room` tokens: middle pieces (between
    holes) cut around their centres once they would take more than half of it, then the prefix
    and suffix trimmed around the holes (`trim_context`)."""
    pre, mids, suf = pieces[0], pieces[1:-1], pieces[-1]
    mid_n = sum(len(m) for m in mids)
    if mid_n > room // 2:
        per = max(2, (room // 2) // max(1, len(mids)))
        mids = [m if len(m) <= per else m[: per // 2] + m[len(m) - per // 2 :] for m in mids]
        mid_n = sum(len(m) for m in mids)
    pre, suf = trim_context(pre, suf, room - mid_n)
    return [pre, *mids, suf]


def header_tokens(alone: list[int], piece: list[int], trimmed: int) -> int:
    """How many of a first piece's kept tokens are its header: the leading tokens it shares
    with the header tokenized `alone` (from the first token that differs on, a token that
    straddles the header's end among them, they count as the file's), less the `trimmed`
    tokens `fit_pieces` cut from the piece's start."""
    n = 0
    for a, b in zip(alone, piece):
        if a != b:
            break
        n += 1
    return max(0, n - trimmed)


def place(
    pieces: list[list[int]], budgets: list[int]
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Context ids and positions for text pieces with a hole of `budgets[k]` slots after piece k;
    returns (ctx_ids, ctx_pos, hole slot ranges [a, b) in positions)."""
    ctx_ids: list[int] = []
    ctx_pos: list[int] = []
    slots: list[tuple[int, int]] = []
    p = 0
    for k, piece in enumerate(pieces):
        ctx_ids += piece
        ctx_pos += range(p, p + len(piece))
        p += len(piece)
        if k < len(budgets):
            slots.append((p, p + budgets[k]))
            p += budgets[k]
    return ctx_ids, ctx_pos, slots


def span_slots(slots: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[int]]:
    """The holes as ranges of the span (the holes' slots back to back) and the span's positions."""
    rel, o = [], 0
    for a, b in slots:
        rel.append((o, o + b - a))
        o += b - a
    return rel, [p for a, b in slots for p in range(a, b)]
