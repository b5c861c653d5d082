"""Bidirectional transformer for masked diffusion, in plain torch (no transformers import: the
server and the CLI start without it; training/hf.py wraps the same network as a transformers
PreTrainedModel for training and `save_pretrained`, with the same weight names).

Owns: the network's config, the network and its loading from a checkpoint directory
(`ParafillNet.load_checkpoint`: config.json and safetensors shards), its attention layout and the
exact context K/V cache.

Attention layout (what makes the cache exact): every token carries a group id. Group 0 is
context; a token may attend to key j when j is context (group 0) or when both are in the same
group. So context attends to context only, and span tokens (group >= 1) attend to the context and
to their own span. Several groups at the same positions are independent noisy copies of one span
over a shared context (used in training). At inference the context's K/V are computed once per
request (`encode_context`) and each denoising step is a forward over the span tokens only
(`span_forward`), with results identical to a full forward under the same layout.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model.interface import CheckpointError, InfillCancelled
from model.length import LengthHead


@dataclass
class NetConfig:
    """The network's shape and special tokens (config.json). The defaults are a starting point;
    the shipped checkpoint's own values are in model/weights/config.json (d 384, 8 layers, 6
    heads, SwiGLU 1024, 10,240 tokens). training/hf.py's ParafillConfig carries the same fields."""

    vocab_size: int = 10240  # tokens of the tokenizer (model/tokenizer.py), specials included
    hidden_size: int = 512  # width of the residual stream (embedding dimension)
    num_hidden_layers: int = 6  # transformer blocks
    num_attention_heads: int = 8  # heads per block; head size is hidden_size / heads
    intermediate_size: int = 1408  # hidden width of each block's SwiGLU feed-forward
    # not read by the network (rotary positions need no table); kept as transformers expects
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0  # base of the rotary embedding's frequencies
    rms_norm_eps: float = 1e-6  # added to the mean square in every RMSNorm
    pad_token_id: int = 0  # PAD: the slots after a fill's end (a committed PAD ends it)
    mask_token_id: int = 1  # MASK: a slot still to be filled (the absorbing state)
    sep_token_id: int = 2  # SEP: between files in the training stream; never generated
    train_seq_len: int = 512  # tokens per training sequence: the window at inference
    tie_word_embeddings: bool = True  # the LM head shares the token embedding's weights
    length_head_hidden: int = 0  # the length signal's hidden width (model/length.py); 0: none
    # the denoising step whose end curve the length head reads (bench/length_signal.py fit)
    length_head_step: int = 1

    @classmethod
    def from_pretrained(cls, path: str | Path) -> NetConfig:
        """The fields of a checkpoint's config.json (others, transformers' own, are ignored)."""
        data = json.loads((Path(path) / "config.json").read_text())
        return cls(**{f.name: data[f.name] for f in fields(cls) if data.get(f.name) is not None})


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
    return rotate(x, rope_tables(pos, x.shape[-1], theta, x.dtype))


def rope_tables(
    pos: torch.Tensor, dh: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, 1, L, Dh/2) for positions (B, L): computed once per forward, used by
    every layer's queries and keys."""
    inv = 1.0 / (theta ** (torch.arange(0, dh, 2, device=pos.device, dtype=torch.float32) / dh))
    ang = pos.to(torch.float32)[:, None, :, None] * inv  # B,1,L,Dh/2
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rotate(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(B, H, L, Dh) rotated by `rope_tables`' cos and sin."""
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
    def __init__(self, cfg: NetConfig):
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
        return rotate(q, rot), rotate(k, rot), v

    def finish(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        b, h, n, dh = att.shape
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, h * dh))
        g, u = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


_INIT_LOCK = threading.Lock()


@contextmanager
def uninitialised_layers() -> Iterator[None]:
    """Linear and embedding layers built inside skip their random initialisation (for layers
    whose weights are loaded next; other threads' layers too, while it lasts)."""
    with _INIT_LOCK:
        saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters
        nn.Linear.reset_parameters = nn.Embedding.reset_parameters = _skip_init
        try:
            yield
        finally:
            nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved


def _skip_init(module: nn.Module) -> None:
    """(`uninitialised_layers`: the weights keep torch.empty's contents.)"""


class ParafillNet(nn.Module):
    """Embeddings -> blocks -> norm -> tied LM head. No time input (absorbing-state MDLM)."""

    def __init__(self, config: NetConfig):
        nn.Module.__init__(self)
        self.config = config
        self.build(config)
        if getattr(config, "tie_word_embeddings", True):  # (training/hf.py's post_init ties it)
            self.lm_head.weight = self.embed.weight

    @classmethod
    def load_checkpoint(
        cls, path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"
    ) -> ParafillNet:
        """The network of a checkpoint directory: config.json and its safetensors shards
        (model.safetensors, or those model.safetensors.index.json names) put in its parameters;
        CheckpointError when a weight is missing or unknown."""
        from safetensors.torch import load_file

        path = Path(path)
        config = NetConfig.from_pretrained(path)
        index = path / "model.safetensors.index.json"
        shards = ["model.safetensors"]
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(path / shard, device=device))
        # built on the CPU without the random initialisation the weights replace (0.09 s; on the
        # meta device torch's initialisers import torch._dynamo, 1 s)
        with uninitialised_layers():
            net = cls(config)
        state = {k: v.to(dtype) for k, v in state.items()}
        tied = bool(config.tie_word_embeddings)
        missing, unexpected = net.load_state_dict(state, strict=False, assign=True)
        head = [k for k in missing if k.startswith("length_head.")]
        if (
            head
            and net.length_head is not None
            and len(head) == len(list(net.length_head.state_dict()))
        ):  # the length head's shard is gone: the signal is off, as without one
            net.length_head = None
        missing = [k for k in missing if not k.startswith("length_head.") or net.length_head]
        missing = [k for k in missing if not (tied and k == "lm_head.weight")]
        # a head the config does not declare is not read (the signal stays off)
        unexpected = [k for k in unexpected if not k.startswith("length_head.")]
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: weights missing {missing[:5]} / unexpected {unexpected[:5]}"
            )
        if tied:
            net.lm_head.weight = net.embed.weight
        return net.eval()

    def build(self, config) -> None:
        """The layers (training/hf.py's PreTrainedModel builds the same ones)."""
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
    def encode_into(
        self, ctx_ids: torch.Tensor, ctx_pos: torch.Tensor, cache: ContextCache, at: int
    ) -> None:
        """The K/V of new context tokens written into `cache`'s per-layer tensors from `at` on
        (room for exactly those tokens): they attend to the tokens before `at`, whose K/V are
        taken as given, and to each other. The same K/V as `encode_context` with the tokens
        before `at` as `known`, without concatenating them at every layer
        (model/context_reuse.py)."""
        x = self.embed(ctx_ids)
        rot = self._rot(ctx_pos, x.dtype)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv_heads(x, rot)
            kb, vb = cache.keys[i], cache.values[i]
            kb[:, :, at:] = k
            vb[:, :, at:] = v
            if i == last:  # the last layer's output is never read: only its K/V are
                break
            x = blk.finish(x, F.scaled_dot_product_attention(q, kb, vb))

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

    # -------------------------------------------------------------- batched inference
    def _qkv(self, blk: Block, x: torch.Tensor, rot, segs: list[tuple[int, int]]):
        """Block.qkv_heads over packed tokens (1, N, d): (1, H, N, Dh) each."""
        b, n, d = x.shape
        qkv = _linear(blk.qkv, blk.norm1(x), segs)
        q, k, v = qkv.view(b, n, 3, blk.h, d // blk.h).permute(2, 0, 3, 1, 4)
        return rotate(q, rot), rotate(k, rot), v

    def _finish(self, blk: Block, x: torch.Tensor, att: torch.Tensor, segs) -> torch.Tensor:
        """Block.finish over packed tokens; `att` (1, H, N, Dh)."""
        b, h, n, dh = att.shape
        x = x + _linear(blk.proj, att.transpose(1, 2).reshape(b, n, h * dh), segs)
        g, u = _linear(blk.gate_up, blk.norm2(x), segs).chunk(2, dim=-1)
        return x + _linear(blk.down, F.silu(g) * u, segs)

    @torch.no_grad()
    def encode_contexts(
        self,
        ctx_ids: list[list[int]],
        ctx_pos: list[list[int]],
        attention: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        pack: bool | None = None,
    ) -> list[ContextCache]:
        """`encode_context` for several contexts at once: one ContextCache per context, each
        equal to encoding it alone. The tokens of all contexts go through the weights together
        (packed, so no weight product runs on padding; int8 weights quantize each context's
        activations by themselves, as a call of its own would: `_linear`). Attention (`attention`,
        None: ATTENTION's default for the device) is "each", per context over its own tokens
        (exact, and on a CPU faster than padding), or "padded", one call over the contexts padded
        to the longest with a key mask, so padded positions are never attended (one kernel on a
        GPU). Positions are each context's own. `should_stop` is asked before each layer.
        `pack` False encodes each context with a call of its own (None: packed on a GPU, one call
        each on a CPU: there a context of hundreds of tokens already keeps the cores busy, and
        packing measured slower, 8 contexts of about 450 tokens: 858 against 680-800 ms int8,
        997 against 936 ms fp32, from the copies it adds)."""
        dev = self.embed.weight.device
        if not (dev.type != "cpu" if pack is None else pack):
            return [
                self.encode_context(
                    torch.tensor([i], dtype=torch.long, device=dev),
                    torch.tensor([p], dtype=torch.long, device=dev),
                    should_stop=should_stop,
                )
                for i, p in zip(ctx_ids, ctx_pos)
            ]
        segs = _segments([len(i) for i in ctx_ids])
        ids = torch.tensor([t for row in ctx_ids for t in row], dtype=torch.long, device=dev)
        pos = torch.tensor([p for row in ctx_pos for p in row], dtype=torch.long, device=dev)
        x = self.embed(ids[None])
        rot = self._rot(pos[None], x.dtype)
        mode = attention or _default_attention(dev)
        live = [(a, b) for a, b in segs if b > a]  # empty contexts have no tokens to run
        keys: list[list[torch.Tensor]] = [[] for _ in segs]
        values: list[list[torch.Tensor]] = [[] for _ in segs]
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            if should_stop is not None and should_stop():
                raise InfillCancelled()
            q, k, v = self._qkv(blk, x, rot, live)
            for g, (a, b) in enumerate(segs):
                keys[g].append(k[:, :, a:b].contiguous())
                values[g].append(v[:, :, a:b].contiguous())
            if i == last:  # the last layer's output is never read: only its K/V are
                break
            qs = [q[:, :, a:b] for a, b in live]
            kv = [(keys[g][i], values[g][i]) for g, (a, b) in enumerate(segs) if b > a]
            att = _attend(qs, kv, mode)
            x = self._finish(blk, x, torch.cat(att, 2) if att else q, live)
        return [ContextCache(k, v) for k, v in zip(keys, values)]

    @torch.no_grad()
    def span_forward_batch(
        self, parts: list[SpanPart], attention: str | None = None
    ) -> list[torch.Tensor]:
        """`span_forward` for several requests at once: for each part (one request's rows, its
        own context cache, span and slots) the logits (c, n, V) that `span_forward(part.ids,
        part.pos, part.cache, part.slots, part.span_len)` gives, and its K/V written into its
        cache's span buffers as that call writes them. The tokens of every part go through the
        weights together (packed: each row has its own slots and span length, and no weight
        product runs on padding); attention as in `encode_contexts` ("each": per part over its
        own context and span; "padded": one call, the parts padded to the longest context+span
        with a key mask)."""
        segs = _segments([p.ids.numel() for p in parts])
        ids = torch.cat([p.ids.reshape(-1) for p in parts])[None]
        pos = torch.cat([p.pos.reshape(-1) for p in parts])[None]
        x = self.embed(ids)
        rot = self._rot(pos, x.dtype)
        mode = attention or _default_attention(ids.device)
        bufs = [p.cache.buffers(p.ids.shape[0], p.span_len) for p in parts]
        where = [None if p.slots is None else p.slots + p.cache.length for p in parts]
        h = self.config.num_attention_heads
        for i, blk in enumerate(self.blocks):
            q, k, v = self._qkv(blk, x, rot, segs)
            qs, kv = [], []
            for p, (a, b), (kb, vb), w in zip(parts, segs, bufs, where):
                c, n = p.ids.shape
                kp, vp = (_rows(t[:, :, a:b], c, n, h) for t in (k, v))
                if w is None:
                    kb[i][:, :, p.cache.length :] = kp
                    vb[i][:, :, p.cache.length :] = vp
                else:
                    kb[i].index_copy_(2, w, kp)
                    vb[i].index_copy_(2, w, vp)
                qs.append(_rows(q[:, :, a:b], c, n, h))
                kv.append((kb[i], vb[i]))
            att = [_tokens(t) for t in _attend(qs, kv, mode)]
            x = self._finish(blk, x, torch.cat(att, 2), segs)
        logits = _linear(self.lm_head, self.norm(x), segs)
        return [logits[0, a:b].view(*p.ids.shape, -1) for p, (a, b) in zip(parts, segs)]


@dataclass
class SpanPart:
    """One request in a batched span step (`span_forward_batch`): its rows' span ids and
    positions (c, n), its context cache (with the span buffers its steps write), which span slots
    the n tokens are ((n,) indices into a span of `span_len` slots; None: the whole span)."""

    ids: torch.Tensor
    pos: torch.Tensor
    cache: ContextCache
    slots: torch.Tensor | None
    span_len: int


ATTENTION = ("each", "padded")


def _default_attention(device: torch.device) -> str:
    """Per request on a CPU (exact, and faster than padding there); padded on a GPU."""
    return "padded" if torch.device(device).type == "cuda" else "each"


def _segments(lengths: list[int]) -> list[tuple[int, int]]:
    out, o = [], 0
    for n in lengths:
        out.append((o, o + n))
        o += n
    return out


def _rows(t: torch.Tensor, c: int, n: int, h: int) -> torch.Tensor:
    """(1, H, c*n, Dh) packed tokens of one part -> (c, H, n, Dh), contiguous."""
    return t[0].reshape(h, c, n, -1).transpose(0, 1).contiguous()


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """(c, H, n, Dh) -> (1, H, c*n, Dh): the inverse of `_rows`."""
    c, h, n, dh = t.shape
    return t.transpose(0, 1).reshape(1, h, c * n, dh)


def _attend(
    qs: list[torch.Tensor], kv: list[tuple[torch.Tensor, torch.Tensor]], mode: str
) -> list[torch.Tensor]:
    """Attention of each group's queries (c, H, n, Dh) over its own keys and values
    (c, H, T, Dh): one call per group ("each"), or one call over the groups padded to the
    longest T (and n) with a mask that hides every padded key ("padded")."""
    if mode == "each" or len(qs) == 1:
        return [F.scaled_dot_product_attention(q, k, v) for q, (k, v) in zip(qs, kv)]
    if mode != "padded":
        raise ValueError(f"unknown attention {mode!r}; expected one of {ATTENTION}")
    rows = [q.shape[0] for q in qs]
    n_max = max(q.shape[2] for q in qs)
    t_max = max(k.shape[2] for k, _ in kv)
    q0, k0 = qs[0], kv[0][0]
    r, h, dh = sum(rows), q0.shape[1], q0.shape[3]
    qp = q0.new_zeros(r, h, n_max, dh)
    kp, vp = k0.new_zeros(r, h, t_max, dh), k0.new_zeros(r, h, t_max, dh)
    keep = torch.zeros(r, 1, 1, t_max, dtype=torch.bool, device=q0.device)
    o = 0
    for q, (k, v), c in zip(qs, kv, rows):
        qp[o : o + c, :, : q.shape[2]] = q
        kp[o : o + c, :, : k.shape[2]] = k
        vp[o : o + c, :, : k.shape[2]] = v
        keep[o : o + c, ..., : k.shape[2]] = True
        o += c
    att = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=keep)
    out, o = [], 0
    for q, c in zip(qs, rows):
        out.append(att[o : o + c, :, : q.shape[2]])
        o += c
    return out


# ---- int8 weights over packed tokens of several requests --------------------------------------
# A dynamically quantized linear (model/quantize.py) quantizes its whole input with one scale, so
# running two requests' tokens through one call would change both results. `_linear` runs each
# request's tokens with their own scale and zero point, computed exactly as torch's fbgemm kernel
# computes them for a call of their own (ATen's ChooseQuantizationParams with reduce_range, then
# round(x / scale + zero point) as one fused multiply-add), and the int8 product with torch._int_mm: the same integers, so
# the same floats. Each layer checks this once against the layer itself on real input; where it
# differs (another quantized engine) the requests run one call each.
_QMAX = 127  # reduce_range: activations use 7 bits
_SMALL_M = 16  # fp32 on a CPU: below this many rows a product takes another kernel
_INT8_MIN_REQUESTS, _INT8_MAX_TOKENS = 4, 96  # `_int8_pays`
_SMALL_SCALE = 6.1e-5
_INT8: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> its weights, or None


def _linear(mod: nn.Module, x: torch.Tensor, segs: list[tuple[int, int]]) -> torch.Tensor:
    """`mod(x)` for packed tokens (1, N, K) of several requests (`segs`: each one's tokens),
    each request's rows as they would come out of a call of their own."""
    from model.quantize import Int8Linear

    if len(segs) <= 1:
        return mod(x)
    if not isinstance(mod, Int8Linear):
        if x.device.type != "cpu":
            return mod(x)
        # fp32 on a CPU: a product of fewer than _SMALL_M rows takes another kernel (its rows
        # differ in the last bits from the same rows in a larger product): such requests run
        # alone, the others together
        small = [(a, b) for a, b in segs if b - a < _SMALL_M]
        if not small:
            return mod(x)
        out = x.new_empty(*x.shape[:-1], mod.out_features)
        for a, b in small:
            out[:, a:b] = mod(x[:, a:b])
        big = [torch.arange(a, b, device=x.device) for a, b in segs if b - a >= _SMALL_M]
        if big:
            idx = torch.cat(big)
            out[:, idx] = mod(x[:, idx])
        return out
    weights = None
    if _int8_pays(mod, segs):
        if mod not in _INT8:
            _INT8[mod] = _int8_weights(mod, x[:, segs[0][0] : segs[0][1]])
        weights = _INT8[mod]
    if weights is None:
        return torch.cat([mod(x[:, a:b]) for a, b in segs], 1)
    return _int8_rows(x, segs, *weights)


def _int8_pays(mod: nn.Module, segs: list[tuple[int, int]]) -> bool:
    """Whether one product over every request (`_int8_rows`) beats a call of torch's kernel per
    request. Measured on the 2-core development machine (AMD EPYC, AVX2): the kernel's call is
    so cheap (its int8 weights stay in the L3 cache) that the per-request quantizing of
    `_int8_rows`, a dozen tensor operations, pays only for the LM head (10,240 x 384), the
    largest matrix, with 4 or more requests of span tokens (8 requests of 16 tokens: 3.2 ms
    against 4.6 ms); the other layers (0.07-0.12 ms a call for 16 tokens) and contexts (hundreds
    of tokens) are faster one call each."""
    return (
        mod.out_features >= 8 * mod.in_features
        and len(segs) >= _INT8_MIN_REQUESTS
        and max(b - a for a, b in segs) <= _INT8_MAX_TOKENS
    )


def _int8_weights(mod: nn.Module, probe: torch.Tensor) -> tuple | None:
    """The layer's int8 weights (K, O), per-channel scales and bias, if `_int8_rows`
    reproduces the layer exactly on `probe` (one request's tokens); None otherwise."""
    try:
        w, bias = mod.int8_weights()
        if w.qscheme() not in (torch.per_channel_affine, torch.per_channel_symmetric):
            return None
        if bool((w.q_per_channel_zero_points() != 0).any()):
            return None
        wi = w.int_repr()
        weights = (wi.t().contiguous(), w.q_per_channel_scales().to(torch.float32), bias)
        n = probe.shape[1]
        if n and not torch.equal(_int8_rows(probe, [(0, n)], *weights), mod(probe)):
            return None
    except (AttributeError, RuntimeError):
        return None
    return weights


def _int8_rows(x, segs, wt, w_scale, bias) -> torch.Tensor:
    """Each segment of x (1, N, K) through the int8 weights with its own activation scale."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    lens = torch.tensor([b - a for a, b in segs], device=x.device)
    seg = torch.repeat_interleave(torch.arange(len(segs), device=x.device), lens)
    lo, hi = torch.aminmax(x2, dim=1)
    inf = torch.full((len(segs),), math.inf, device=x.device)
    lo = inf.scatter_reduce(0, seg, lo, "amin")
    hi = (-inf).scatter_reduce(0, seg, hi, "amax")
    scale, zero = _qparams(lo, hi)
    # x / scale + zero point as fbgemm's AVX2 kernel computes it: one fused multiply-add (the
    # exact product plus the zero point, rounded to float32 once), then to the nearest integer
    inv = (1.0 / scale).double()[seg, None]
    zp = zero.double()[seg, None]
    q = (x2.double() * inv + zp).to(torch.float32).round_().clamp_(0, _QMAX)
    # less the zero point before the product (within int8): the kernel's integer sums less
    # zero point x column sums, the same integers
    q = q.sub_(zp.to(torch.float32)).to(torch.int8)
    out = torch._int_mm(q, wt).to(torch.float32)
    factor = scale[:, None] * w_scale  # the kernel's activation scale x channel scale
    for g, (a, b) in enumerate(segs):
        out[a:b] *= factor[g]
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], -1)


def _qparams(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment: ATen's ChooseQuantizationParams(min, max, 0, 255, reduce_range=True) (scale
    float32, zero point int32), vectorized."""
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    scale = (hi.double() - lo.double()) / _QMAX
    s32 = scale.float()
    scale = torch.where((s32 == 0) | torch.isinf(1.0 / s32), torch.full_like(scale, 0.1), scale)
    small = scale < _SMALL_SCALE_F
    if bool(small.any()):
        org = scale.float()
        amp = torch.tensor(_SMALL_SCALE_F, dtype=torch.float32) / org
        lo_s = torch.where(hi == 0, torch.full_like(lo, -_SMALL_SCALE_F * _QMAX), lo * amp)
        hi_s = torch.where(lo == 0, torch.full_like(hi, _SMALL_SCALE_F * _QMAX), hi * amp)
        lo_s = torch.where(lo == 0, lo, lo_s)
        lo, hi = torch.where(small, lo_s, lo), torch.where(small, hi_s, hi)
        scale = torch.where(small, torch.full_like(scale, _SMALL_SCALE_F), scale)
    lo_d, hi_d = lo.double(), hi.double()
    from_min, from_max = -lo_d / scale, _QMAX - hi_d / scale
    err_min, err_max = -(lo_d / scale).abs(), _QMAX - (hi_d / scale).abs()
    initial = torch.where(err_min < err_max, from_min, from_max)
    zero = torch.round(initial).clamp(0, _QMAX).to(torch.int32)
    return scale.float(), zero


_SMALL_SCALE_F = float(torch.tensor(_SMALL_SCALE, dtype=torch.float32))
