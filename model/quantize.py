"""Int8 weights for CPU inference.

Owns: turning the network's linear layers (attention, MLP and the LM head) into `Int8Linear`
layers: int8 weights with per-output-channel scales, activations quantized per call by torch's
dynamic-quantized kernel (`quantized::linear_dynamic`).

Why: a denoising step runs the span's 8-32 tokens through every weight matrix, so on a CPU it is
bound by reading the weights, not by arithmetic. In fp32 the 18M-parameter network is 72 MB, more
than this machine's 32 MB L3 cache, and a 16-token step reads it from DRAM each time (about 23 ms
on one core); in int8 the matrices are 18 MB, stay in cache, and the step takes about 10 ms.
The embedding table stays fp32 (a lookup, not a matmul); the LM head gets its own int8 copy of
the tied weights. If this torch build lacks the quantized engine, the network is left in fp32.

`Int8Linear` computes what `torch.ao.quantization.quantize_dynamic` with
`per_channel_dynamic_qconfig` builds, to the bit (tests/test_model.py), but packs each layer's
weights once: torch.ao's conversion packs every layer three times (an empty layer's, then the
real weights twice) and sets up observers, 0.21 s of the CLI's start against 0.07 s here.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

QMIN, QMAX = -128, 127  # the weights' int8 range (torch.ao's per-channel symmetric observer)


def available() -> bool:
    """Whether this torch build has a CPU int8 dynamic-quantization engine."""
    engines = torch.backends.quantized.supported_engines
    return hasattr(torch.ops.quantized, "linear_dynamic") and any(
        e in engines for e in ("x86", "fbgemm")
    )


def channel_scales(weight: torch.Tensor) -> torch.Tensor:
    """Per output channel: the largest |weight| over half the int8 range, at least float32's
    eps (torch.ao's PerChannelMinMaxObserver, qint8, per_channel_symmetric)."""
    w = weight.detach().float()
    lo = torch.clamp(w.amin(dim=1), max=0.0)
    hi = torch.clamp(w.amax(dim=1), min=0.0)
    scale = torch.maximum(-lo, hi) / (float(QMAX - QMIN) / 2)
    return torch.clamp(scale, min=torch.finfo(torch.float32).eps)


class Int8Linear(nn.Module):
    """A bias-optional linear layer with int8 weights (per-channel symmetric scales) and fp32
    activations quantized per call to 7 bits (reduce_range), as torch.ao's dynamic Linear."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        scales = channel_scales(weight)
        zeros = torch.zeros(self.out_features, dtype=torch.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deprecation notice: the kernels still ship
            q = torch.quantize_per_channel(
                weight.detach().float(), scales.double(), zeros, 0, torch.qint8
            )
        b = None if bias is None else bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack(q, b)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    def int8_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The quantized weight (a per-channel qint8 tensor, out x in) and the fp32 bias."""
        return torch.ops.quantized.linear_unpack(self.packed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=True).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(net: nn.Module) -> nn.Module:
    """Return `net` with its nn.Linear layers replaced by `Int8Linear` ones (in place). A tied LM
    head gets its own int8 copy; the fp32 embedding table is kept for lookups."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear.from_linear(child))
    return net
