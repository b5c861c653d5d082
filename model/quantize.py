"""Int8 weights for CPU inference.

Owns: turning the network's linear layers (attention, MLP and the LM head) into dynamically
quantized int8 layers (per-output-channel weight scales, activations quantized per call).

Why: a denoising step runs the span's 8-32 tokens through every weight matrix, so on a CPU it is
bound by reading the weights, not by arithmetic. In fp32 the 18M-parameter network is 72 MB, more
than this machine's 32 MB L3 cache, and a 16-token step reads it from DRAM each time (about 23 ms
on one core); in int8 the matrices are 18 MB, stay in cache, and the step takes about 10 ms.
The embedding table stays fp32 (a lookup, not a matmul); the LM head gets its own int8 copy of
the tied weights. If this torch build lacks the quantized engine, the network is left in fp32.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def available() -> bool:
    """Whether this torch build has a CPU int8 dynamic-quantization engine."""
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm"))


def quantize_int8(net: nn.Module) -> nn.Module:
    """Return `net` with its nn.Linear layers replaced by int8 dynamic-quantized ones (in place).
    A tied LM head is untied first so the fp32 embedding table is kept for lookups."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    head = getattr(net, "lm_head", None)
    if head is not None and head.weight is net.get_input_embeddings().weight:
        untied = nn.Linear(head.in_features, head.out_features, bias=False)
        untied.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        net.lm_head = untied
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices: the kernels still ship
        return quantize_dynamic(
            net, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )
