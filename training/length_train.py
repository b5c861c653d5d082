"""Training side of the length head (model/length.py), used by training/train.py's recipe.

Owns: fitting helpers (the feature standardisation, the ordinal targets), turning a batch of infill-shaped training examples into the head's examples (each hole's
first slots with every span slot masked, as the first denoising step sees a line hole; the true
length is the number of tokens before the hole's first line break or PAD), and the head's loss.

The network is frozen for this loss (its forward runs without gradients): the head learns to
read the network's end probabilities, it does not teach the network to produce them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.length import N_FEATURES, SLOTS, LengthHead, end_curve, features
from model.sampler import fold_newlines

FIRST_COPY = 1  # the group of an example's first noisy copy of its holes


def standardise(head: LengthHead, feats: torch.Tensor) -> None:
    """Set the head's feature shift and scale from a sample of features (before fitting)."""
    flat = feats.reshape(-1, N_FEATURES).float()
    with torch.no_grad():
        head.shift.copy_(flat.mean(0))
        head.scale.copy_(1.0 / flat.std(0).clamp_min(1e-3))


def ordinal_targets(lengths: torch.Tensor, slots: int) -> torch.Tensor:
    """(B,) true lengths in tokens -> (B, slots) 1.0 where the fill has ended by that slot."""
    return (torch.arange(slots, device=lengths.device)[None, :] >= lengths[:, None]).float()


def hole_slots(pos: torch.Tensor, grp: torch.Tensor, slots: int = SLOTS):
    """(B, L) positions and groups -> (index (H, slots) into the flattened batch, valid (H,
    slots) bool): the first `slots` slots of every hole of the first copy. A hole is a run of
    first-copy slots whose positions rise by one."""
    b, n = pos.shape
    in_copy = grp == FIRST_COPY
    prev_in = torch.cat([torch.zeros_like(in_copy[:, :1]), in_copy[:, :-1]], 1)
    prev_pos = torch.cat([torch.full_like(pos[:, :1], -2), pos[:, :-1]], 1)
    start = in_copy & ~(prev_in & (pos == prev_pos + 1))
    flat = torch.arange(b * n, device=pos.device).view(b, n)
    starts = flat[start]  # (H,) flat index of each hole's first slot
    idx = starts[:, None] + torch.arange(slots, device=pos.device)[None, :]
    idx = idx.clamp(max=b * n - 1)
    # a slot belongs to the hole while the run goes on: same row, first copy, positions + 1
    row_ok = (idx // n) == (starts // n)[:, None]
    fpos, fgrp = pos.reshape(-1), grp.reshape(-1)
    run = row_ok & (fgrp[idx] == FIRST_COPY)
    run &= fpos[idx] == fpos[starts][:, None] + torch.arange(slots, device=pos.device)[None, :]
    valid = run.int().cumprod(1).bool()
    return idx, valid


def head_loss(
    model, tok: torch.Tensor, pos: torch.Tensor, grp: torch.Tensor, newline_ids: list[int]
) -> tuple[torch.Tensor, dict]:
    """The length head's loss on infill examples (tok, pos, grp: (B, L), targets unmasked):
    every span slot masked, one forward without gradients, the end curves of each hole's first
    SLOTS slots (line breaks folded onto PAD), binary cross-entropy of "ended by this slot"."""
    cfg = model.config
    span = (grp >= 1) & (grp <= 4)
    inp = torch.where(span, torch.full_like(tok, cfg.mask_token_id), tok)
    idx, valid = hole_slots(pos, grp)
    if not bool(valid.any()):
        return torch.zeros((), device=tok.device), {"length_holes": 0}
    with torch.no_grad():
        h = model(inp, position_ids=pos, group_ids=grp, hidden_only=True)
        h = h.reshape(-1, h.shape[-1])[idx]  # (H, SLOTS, d)
        logits = model.lm_head(h).float()
        banned = [cfg.mask_token_id, cfg.sep_token_id]
        if getattr(cfg, "expand_token_id", None) is not None:  # trained with --expand-delete
            banned.append(cfg.expand_token_id)
        logits[..., banned] = -torch.inf
        line = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
        nl = torch.tensor(newline_ids, dtype=torch.long, device=logits.device)
        logits = fold_newlines(logits, line, nl, cfg.pad_token_id)
        end, top = end_curve(logits, cfg.pad_token_id)
        target = tok.reshape(-1)[idx]
        is_end = (target == cfg.pad_token_id) | torch.isin(target, nl) | ~valid
        ended = is_end.int().cummax(1).values.float()
    pred = model.length_head(features(end, top))
    loss = F.binary_cross_entropy_with_logits(pred[valid], ended[valid])
    return loss, {"length_holes": int(idx.shape[0])}
