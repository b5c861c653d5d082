"""Bidirectional transformer for masked diffusion, as a transformers PreTrainedModel.

Owns: the config class, the network, its attention layout and the exact context K/V cache.

Attention layout (what makes the cache exact): every token carries a group id. Group 0 is
context; a token may attend to key j when j is context (group 0) or when both are in the same
group. So context attends to context only, and span tokens (group >= 1) attend to the context and
to their own span. Several groups at the same positions are independent noisy copies of one span
over a shared context (used in training). At inference the context's K/V are computed once per
request (`encode_context`) and each denoising step is a forward over the span tokens only
(`span_forward`), with results identical to a full forward under the same layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
)

from model.interface import InfillCancelled
from model.length import LengthHead


class ParafillConfig(PretrainedConfig):
    """The network's shape and special tokens (config.json). The defaults are a starting point;
    the shipped checkpoint's own values are in model/weights/config.json (d 384, 8 layers, 6
    heads, SwiGLU 1024, 10,240 tokens)."""

    model_type = "parafill_mdlm"

    def __init__(
        self,
        vocab_size: int = 10240,  # tokens of the tokenizer (model/tokenizer.py), specials included
        hidden_size: int = 512,  # width of the residual stream (embedding dimension)
        num_hidden_layers: int = 6,  # transformer blocks
        num_attention_heads: int = 8,  # heads per block; head size is hidden_size / heads
        intermediate_size: int = 1408,  # hidden width of each block's SwiGLU feed-forward
        # not read by the network (rotary positions need no table); kept as transformers expects
        max_position_embeddings: int = 1024,
        rope_theta: float = 10000.0,  # base of the rotary embedding's frequencies
        rms_norm_eps: float = 1e-6,  # added to the mean square in every RMSNorm
        pad_token_id: int = 0,  # PAD: the slots after a fill's end (a committed PAD ends it)
        mask_token_id: int = 1,  # MASK: a slot still to be filled (the absorbing state)
        sep_token_id: int = 2,  # SEP: between files in the training stream; never generated
        train_seq_len: int = 512,  # tokens per training sequence: the window at inference
        tie_word_embeddings: bool = True,  # the LM head shares the token embedding's weights
        length_head_hidden: int = 0,  # the length signal's hidden width (model/length.py); 0: none
        # the denoising step whose end curve the length head reads (bench/length_signal.py fit)
        length_head_step: int = 1,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        self.sep_token_id = sep_token_id
        self.train_seq_len = train_seq_len
        self.length_head_hidden = length_head_hidden
        self.length_head_step = length_head_step
        super().__init__(
            pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs
        )


@dataclass
class ContextCache:
    """Per-layer K/V of the context tokens: lists of (B, H, Lc, Dh) tensors."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    _bufs: dict = None  # (batch, span_len) -> per-layer [ctx | span] K and V buffers

    def buffers(self, batch: int, span_len: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Preallocated K/V buffers holding the context followed by room for the span, so a step
        writes the span's K/V in place instead of concatenating the whole context again."""
        if self._bufs is None:
            self._bufs = {}
        key = (batch, span_len)
        if key not in self._bufs:
            kb, vb = [], []
            for k, v in zip(self.keys, self.values):
                _, h, lc, dh = k.shape
                kk = k.new_empty(batch, h, lc + span_len, dh)
                vv = v.new_empty(batch, h, lc + span_len, dh)
                kk[:, :, :lc] = k
                vv[:, :, :lc] = v
                kb.append(kk)
                vb.append(vv)
            self._bufs = {key: (kb, vb)}
        return self._bufs[key]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0


def shift_keys(k: torch.Tensor, delta: torch.Tensor, theta: float) -> torch.Tensor:
    """Keys rotated for positions p re-rotated for p + delta (B, L): rotary rotations compose."""
    return _rope(k, delta, theta)


def _rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding on (B, H, L, Dh) with positions (B, L)."""
    return _rotate(x, rope_tables(pos, x.shape[-1], theta, x.dtype))


def rope_tables(
    pos: torch.Tensor, dh: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, 1, L, Dh/2) for positions (B, L): computed once per forward, used by
    every layer's queries and keys."""
    inv = 1.0 / (theta ** (torch.arange(0, dh, 2, device=pos.device, dtype=torch.float32) / dh))
    ang = pos.to(torch.float32)[:, None, :, None] * inv  # B,1,L,Dh/2
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _rotate(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    cos, sin = rot
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not self.training
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled(x.device.type)
        ):
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # one fused op (inference)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight.to(x.dtype)


class Block(nn.Module):
    def __init__(self, cfg: ParafillConfig):
        super().__init__()
        d, self.h = cfg.hidden_size, cfg.num_attention_heads
        self.norm1 = RMSNorm(d, cfg.rms_norm_eps)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.norm2 = RMSNorm(d, cfg.rms_norm_eps)
        self.gate_up = nn.Linear(d, 2 * cfg.intermediate_size, bias=False)
        self.down = nn.Linear(cfg.intermediate_size, d, bias=False)

    def qkv_heads(self, x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]):
        """Queries, keys (rotated by `rot`, from rope_tables) and values: (B, H, L, Dh) each."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        return _rotate(q, rot), _rotate(k, rot), v

    def finish(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        b, h, n, dh = att.shape
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, h * dh))
        g, u = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class ParafillPreTrainedModel(PreTrainedModel):
    config_class = ParafillConfig
    base_model_prefix = "parafill"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Block"]  # noqa: RUF012 (transformers convention)

    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "_is_residual_out", False):
                module.weight.data.mul_(1.0 / (2 * self.config.num_hidden_layers) ** 0.5)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)


class ParafillForMaskedDiffusion(ParafillPreTrainedModel):
    """Embeddings -> blocks -> norm -> tied LM head. No time input (absorbing-state MDLM)."""

    _tied_weights_keys = {"lm_head.weight": "embed.weight"}  # noqa: RUF012

    def __init__(self, config: ParafillConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        for b in self.blocks:
            b.proj._is_residual_out = True
            b.down._is_residual_out = True
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # reads the first denoising step's end probabilities of a line hole (model/length.py)
        hidden = int(getattr(config, "length_head_hidden", 0) or 0)
        self.length_head = LengthHead(hidden) if hidden else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def _rot(self, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return rope_tables(pos, c.hidden_size // c.num_attention_heads, c.rope_theta, dtype)

    # -------------------------------------------------------------- full forward (training)
    @staticmethod
    def layout_mask(group: torch.Tensor) -> torch.Tensor:
        """(B, 1, L, L) bool: query i may attend key j iff group[j]==0 or group[i]==group[j]."""
        gq, gk = group[:, :, None], group[:, None, :]
        return ((gk == 0) | (gq == gk))[:, None]

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        group_ids: torch.Tensor | None = None,
        hidden_only: bool = False,
        **_: object,
    ) -> torch.Tensor:
        """Logits (B, L, V) under the group layout; group_ids None means plain bidirectional."""
        b, n = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(n, device=input_ids.device).expand(b, n)
        mask = None if group_ids is None else self.layout_mask(group_ids)
        x = self.embed(input_ids)
        rot = self._rot(position_ids, x.dtype)
        for blk in self.blocks:
            q, k, v = blk.qkv_heads(x, rot)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = blk.finish(x, att)
        x = self.norm(x)
        return x if hidden_only else self.lm_head(x)

    # -------------------------------------------------------------- cached inference
    @torch.no_grad()
    def encode_context(
        self,
        ctx_ids: torch.Tensor,
        ctx_pos: torch.Tensor,
        known: ContextCache | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ContextCache:
        """K/V of context tokens (which attend to context only), per layer. With `known`, the
        tokens also attend to other context tokens whose K/V are taken as given (not recomputed),
        and only the new tokens' K/V are returned: see model/context_reuse.py. `should_stop` is
        asked before each layer; when it says so the encode raises InfillCancelled (a newer
        request superseded this one: a full encode of 400 tokens is 8 layers of 10-20 ms)."""
        keys, values = [], []
        x = self.embed(ctx_ids)
        rot = self._rot(ctx_pos, x.dtype)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            if should_stop is not None and should_stop():
                raise InfillCancelled()
            q, k, v = blk.qkv_heads(x, rot)
            keys.append(k)
            values.append(v)
            if i == last:  # the last layer's output is never read: only its K/V are
                break
            if known is not None and known.length:
                k = torch.cat([known.keys[i], k], 2)
                v = torch.cat([known.values[i], v], 2)
            x = blk.finish(x, F.scaled_dot_product_attention(q, k, v))
        return ContextCache(keys, values)

    @torch.no_grad()
    def span_forward(
        self,
        span_ids: torch.Tensor,
        span_pos: torch.Tensor,
        cache: ContextCache,
        slots: torch.Tensor | None = None,
        span_len: int | None = None,
    ) -> torch.Tensor:
        """Logits (B, n, V) for n span tokens attending to the cached context plus the span.

        Without `slots` the tokens are the whole span (n = span length). With `slots` ((n,) slot
        indices into a span of `span_len`) they are some of its slots: their K/V replace those
        slots' K/V in the cache's span buffers, and they attend to the other span slots through
        the K/V those slots got in an earlier call (stale by design: model/span_step.py)."""
        x = self.embed(span_ids)
        b, n = span_ids.shape
        total = n if slots is None else span_len
        kb, vb = cache.buffers(b, total)
        lc = cache.length
        rot = self._rot(span_pos, x.dtype)
        where = None if slots is None else slots + lc
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv_heads(x, rot)
            if where is None:
                kb[i][:, :, lc:] = k
                vb[i][:, :, lc:] = v
            else:
                kb[i].index_copy_(2, where, k)
                vb[i].index_copy_(2, where, v)
            x = blk.finish(x, F.scaled_dot_product_attention(q, kb[i], vb[i]))
        return self.lm_head(self.norm(x))


AutoConfig.register(ParafillConfig.model_type, ParafillConfig, exist_ok=True)
AutoModel.register(ParafillConfig, ParafillForMaskedDiffusion, exist_ok=True)
AutoModelForMaskedLM.register(ParafillConfig, ParafillForMaskedDiffusion, exist_ok=True)
