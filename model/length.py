"""How long a line fill will be, read from the first denoising step: the length signal.

Owns: the per-slot features of the first step's distribution (the probability that the fill has
ended at each slot, and the most likely content token's), the `LengthHead` that turns them into
a calibrated distribution of the fill's length (an ordinal model: for every slot, the
probability that the fill has ended by then), and the estimate the sampler decodes with.

Why this shape: with all slots masked the model's own end signal (the first slot where P(end)
beats every other token) predicts short lines well and cuts long ones short, because far from
the prefix content is uncertain and spread over many tokens while the end is one event. Its
probabilities still carry the length; they need calibrating, not replacing. A head on the
all-masked hidden states, which differ by position only, did worse (docs/length.md). So the
head reads the end-probability curve and is small (a few hundred weights): thousands of lines
of unseen code fit it, and the GPU recipe trains it at corpus scale with the network frozen
for its loss.

Pure tensor functions and one small nn.Module; no I/O.
"""

from __future__ import annotations

import torch
from torch import nn

N_FEATURES = 7
SLOTS = 24  # positions are scaled by the line budget the head was fitted at
EPS = 1e-5


def end_curve(logits: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, V) logits of one step (banned ids at -inf, a line hole's breaks folded onto PAD as
    the sampler folds them) -> (P(end) at each slot, P of the most likely other token), (B, S)."""
    p = torch.softmax(logits.float(), -1)
    end = p[..., pad_id]
    top = p.clone()
    top[..., pad_id] = 0.0
    return end, top.amax(-1)


def features(end: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """(B, S) curves -> (B, S, N_FEATURES): for each slot, the log-odds of the end there, of
    the end anywhere up to there, of the end at the slot before; log P(top content); the log
    probability of no end before the slot (slots taken as independent); the slot's place."""
    end = end.clamp(EPS, 1 - EPS)
    logit = torch.log(end) - torch.log1p(-end)
    upto = end.cummax(-1).values
    prev = torch.cat([torch.full_like(logit[..., :1], -12.0), logit[..., :-1]], -1)
    survive = torch.log1p(-end).cumsum(-1) - torch.log1p(-end)
    place = torch.arange(end.shape[-1], device=end.device, dtype=end.dtype) / SLOTS
    return torch.stack(
        [
            logit,
            torch.log(upto) - torch.log1p(-upto),
            prev,
            torch.log(top.clamp_min(EPS)),
            survive,
            place.expand_as(end),
            place.expand_as(end) ** 2,
        ],
        -1,
    )


class LengthHead(nn.Module):
    """Features of each slot -> log-odds that the fill has ended by that slot (the slot is
    the end or after it): a linear term plus a small tanh layer. Monotone along the slots at
    inference (`cdf` takes the running max). Plain parameters, not nn.Linear, so the int8
    conversion of the network's linear layers (model/quantize.py) leaves it in fp32."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        # feature standardisation, fitted (training/length_train.py's standardise)
        self.shift = nn.Parameter(torch.zeros(N_FEATURES))
        self.scale = nn.Parameter(torch.ones(N_FEATURES))
        self.w_lin = nn.Parameter(torch.zeros(N_FEATURES))
        self.w_in = nn.Parameter(torch.randn(hidden, N_FEATURES) * 0.3)
        self.b_in = nn.Parameter(torch.zeros(hidden))
        self.w_out = nn.Parameter(torch.zeros(hidden))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = (feats.float() - self.shift) * self.scale
        hidden = torch.tanh(x @ self.w_in.T + self.b_in)
        return x @ self.w_lin + hidden @ self.w_out + self.bias

    def cdf(self, end: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """(B, S): P(the fill has ended by slot i), non-decreasing along the slots."""
        return torch.sigmoid(self(features(end, top))).cummax(-1).values


def quantile_length(cdf: torch.Tensor, q: float) -> torch.Tensor:
    """(B, S) CDF -> (B,) the first slot where it reaches q (S where it never does): a length
    the fill reaches with probability about 1 - q."""
    reached = cdf >= q
    n = cdf.shape[-1]
    idx = torch.arange(n, device=cdf.device)
    return torch.where(reached, idx, torch.full_like(idx, n)).amin(-1)
