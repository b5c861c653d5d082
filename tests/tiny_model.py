"""A tiny randomly initialised network for unit tests of the network, sampler and span steps."""

from __future__ import annotations

import torch

from training.hf import ParafillConfig, ParafillForMaskedDiffusion


def tiny_model(seed: int = 0) -> ParafillForMaskedDiffusion:
    """Vocabulary 64, width 32, 2 layers, 2 heads; weights from `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    cfg = ParafillConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
    )
    return ParafillForMaskedDiffusion(cfg).eval()
