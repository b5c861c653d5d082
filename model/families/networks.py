"""The published diffusion coders as transformers' own classes, attending both ways.

Owns: building the network of a family from its config.json and safetensors (Qwen2 for the
Dream family and Open-dCoder; the Llama layout, with LLaDA's weight names renamed, for LLaDA),
never through `trust_remote_code`; bidirectional attention (`config.is_causal = False`); the
precision (bf16 on CUDA, fp32 or int8 weights on the CPU); and `BidirectionalLM`, the two kinds
of pass the decoding loop runs:
  logits_at(ids, pos, at)                 exact: the whole window, logits at slots `at`
  context(ids, pos, keep) / logits_cached(cache, ...)   Fast-dLLM's dual cache: the context's
                                          keys and values from one exact pass, reused by passes
                                          over the span (and the token before each hole) only
Families initialised from an autoregressive model read a slot's logits from the position before
it (`shift`); the LM head runs only where logits are read (a 150k vocabulary over a 600-token
window would cost more than the layers).
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.interface import CheckpointError

# LLaDA's own weight names -> the Llama layout (model.layers.N...), per block and at the top
LLADA_BLOCK = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ff_norm": "post_attention_layernorm",
}
LLADA_TOP = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}


def qwen2_config(cfg: dict):
    """A transformers Qwen2Config from a Dream / Open-dCoder config.json (the fields a Qwen2
    network needs; DreamModel's are Qwen2's)."""
    from transformers import Qwen2Config

    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
        "rope_scaling",
        "tie_word_embeddings",
        "hidden_act",
    )
    kw = {k: cfg[k] for k in keys if cfg.get(k) is not None}
    out = Qwen2Config(**kw)
    out.use_sliding_window = False
    return out


def llama_config(cfg: dict):
    """A transformers LlamaConfig from LLaDA's config.json (its own field names)."""
    from transformers import LlamaConfig

    heads = int(cfg["n_heads"])
    return LlamaConfig(
        vocab_size=int(cfg.get("embedding_size") or cfg["vocab_size"]),
        hidden_size=int(cfg["d_model"]),
        intermediate_size=int(cfg.get("mlp_hidden_size") or cfg["d_model"] * cfg["mlp_ratio"]),
        num_hidden_layers=int(cfg["n_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("n_kv_heads") or heads),
        max_position_embeddings=int(cfg.get("max_sequence_length", 4096)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        tie_word_embeddings=bool(cfg.get("weight_tying", False)),
        attention_bias=bool(cfg.get("include_bias", False) or cfg.get("include_qkv_bias", False)),
        hidden_act="silu",
    )


def llada_names(name: str) -> str:
    """One LLaDA weight name in the Llama layout (unknown names are returned as they are)."""
    if name in LLADA_TOP:
        return LLADA_TOP[name]
    prefix = "model.transformer.blocks."
    if name.startswith(prefix):
        idx, rest = name[len(prefix) :].split(".", 1)
        part, kind = rest.rsplit(".", 1)
        if part in LLADA_BLOCK:
            return f"model.layers.{idx}.{LLADA_BLOCK[part]}.{kind}"
    return name


def read_weights(shards: list[Path], rename=None) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for s in shards:
        try:
            part = load_file(str(s))
        except Exception as e:  # noqa: BLE001 - safetensors' own errors
            raise CheckpointError(f"checkpoint file is corrupt: {s} ({e})") from None
        for k, v in part.items():
            state[rename(k) if rename else k] = v
    return state


def build(family: str, cfg: dict, shards: list[Path], dtype: torch.dtype):
    """The family's network with the checkpoint's weights (CheckpointError on a mismatch)."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    if family == "llada":
        config, cls, rename = llama_config(cfg), LlamaForCausalLM, llada_names
    else:
        config, cls, rename = qwen2_config(cfg), Qwen2ForCausalLM, None
    config.is_causal = False  # bidirectional: masked diffusion reads both ways
    config._attn_implementation = "sdpa"
    state = read_weights(shards, rename)
    with torch.device("meta"):
        net = cls(config)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = set(shapes)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        expected.discard("lm_head.weight")
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise CheckpointError(
            f"{shards[0].parent}: weights do not match the {family} layout "
            f"(missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {extra[:4]}{'...' if len(extra) > 4 else ''})"
        )
    for k, v in state.items():
        if tuple(v.shape) != shapes[k]:
            raise CheckpointError(
                f"{shards[0].parent}: weight {k} has shape {tuple(v.shape)}, config says {shapes[k]}"
            )
    for k in list(state):  # one tensor at a time: the peak is the model plus one weight
        state[k] = state[k].to(dtype)
    net.load_state_dict(state, assign=True, strict=False)
    if config.tie_word_embeddings:
        net.lm_head.weight = net.model.embed_tokens.weight
    # buffers computed at construction (rotary frequencies) were made on the meta device
    net.model.rotary_emb = type(net.model.rotary_emb)(config=config)
    return net.eval()


class BidirectionalLM:
    """One network's passes, as the decoding loop asks for them. `shift`: a slot's logits are
    read at the position before it (models initialised from an autoregressive one)."""

    def __init__(self, net, shift: bool, device: torch.device):
        self.net, self.shift, self.device = net, shift, device
        self.base = net.model
        self.window = int(net.config.max_position_embeddings)

    def read(self, hidden: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Logits at hidden-state rows `at` ((B, n) indices into the sequence axis)."""
        idx = at[..., None].expand(*at.shape, hidden.shape[-1])
        return self.net.lm_head(torch.gather(hidden, 1, idx)).float()

    def read_index(self, at: torch.Tensor) -> torch.Tensor:
        """The sequence indices whose hidden states give the logits of slots `at`."""
        return (at - 1).clamp(min=0) if self.shift else at

    def logits_at(
        self,
        ids: torch.Tensor,
        pos: torch.Tensor,
        at: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Exact pass over the whole window: (B, T) ids and positions -> (B, n, V) logits of
        the slots at sequence indices `at` (B, n); `mask` (B, T): 0 for padding no position
        attends to."""
        hidden = self.base(input_ids=ids, position_ids=pos, attention_mask=mask).last_hidden_state
        return self.read(hidden, self.read_index(at))

    def context(self, ids: torch.Tensor, pos: torch.Tensor, keep: list[int]):
        """An exact pass; returns the keys and values at sequence indices `keep` (the context
        the span passes reuse) as a cache, and the pass's hidden states."""
        from transformers import DynamicCache

        full = DynamicCache(config=self.net.config)
        out = self.base(input_ids=ids, position_ids=pos, cache=full, use_cache=True)
        sel = torch.tensor(keep, dtype=torch.long, device=ids.device)
        kept = DynamicCache(config=self.net.config)
        for i, layer in enumerate(full.layers):
            kept.update(layer.keys[:, :, sel], layer.values[:, :, sel], i)
        return kept, out.last_hidden_state

    def logits_cached(
        self, cache, ids: torch.Tensor, pos: torch.Tensor, at: torch.Tensor
    ) -> torch.Tensor:
        """A pass over query tokens `ids` (B, q) at positions `pos` that attend to themselves
        and the cached context; logits read at query indices `at` (B, n) (already shifted by
        the caller). The cache is left as it was."""
        n = cache.get_seq_length()
        try:
            hidden = self.base(
                input_ids=ids, position_ids=pos, cache=cache, use_cache=True
            ).last_hidden_state
        finally:
            added = cache.get_seq_length() - n
            if added:
                cache.crop(-added)
        return self.read(hidden, at)
