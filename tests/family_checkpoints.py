"""Tiny random checkpoints in the published layouts of the diffusion coders Parafill runs.

Each builder writes a directory the way ``hf download <repo> --local-dir DIR`` leaves the real
checkpoint: ``config.json`` with the published field names and values (sizes aside),
``generation_config.json`` where the real repository has one, the weights under their
published names in safetensors, and the tokenizer files the real repository ships, with its
special tokens.  Everything is deterministic in the seed: the same call writes the same bytes.

The tokenizer is a real byte-level BPE (GPT-2 byte alphabet, Qwen2's pre-tokenizer): the 256
byte symbols, then merges learned deterministically from ``_CORPUS`` below, then the family's
added tokens in the published order.  Ids are therefore small; config fields that name token
ids (``bos_token_id``, ``mask_token_id``...) hold the tiny ids of the tokens with the published
names, so a loader that finds tokens by name and one that reads the config agree.

The ``.py`` files a published ``auto_map`` points at are written as stubs that raise on import:
a loader that executes checkpoint code fails loudly.

Public API: ``build_dream``, ``build_open_dcoder``, ``build_llada``, ``build_remote_code_only``,
``SHAPES``, ``tiny_tokenizer``, ``safetensors_sha256``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from functools import lru_cache
from pathlib import Path

import regex
import torch
from safetensors.torch import save_file

__all__ = [
    "SHAPES",
    "build_dream",
    "build_llada",
    "build_open_dcoder",
    "build_remote_code_only",
    "safetensors_sha256",
    "tiny_tokenizer",
]

# Real shapes, for benchmarks that want random weights at the published size.  The tokenizer
# files stay tiny; config's vocab_size only has to cover the ids.
SHAPES: dict[str, dict] = {
    # Qwen2.5-0.5B / Qwen2.5-Coder-0.5B, which Open-dCoder-0.5B is trained from.
    "open-dcoder-0.5b": {
        "hidden": 896,
        "layers": 24,
        "heads": 14,
        "kv_heads": 2,
        "intermediate": 4864,
        "vocab": 151936,
        "max_positions": 32768,
        "tie_embeddings": True,
    },
    # Qwen2.5-7B, which Dream / Dream-Coder / DiffuCoder / DreamOn are trained from.
    "dream-7b": {
        "hidden": 3584,
        "layers": 28,
        "heads": 28,
        "kv_heads": 4,
        "intermediate": 18944,
        "vocab": 152064,
        "max_positions": 131072,
        "tie_embeddings": False,
    },
    # LLaDA-8B (its own field names; the builder maps these).
    "llada-8b": {
        "hidden": 4096,
        "layers": 32,
        "heads": 32,
        "kv_heads": 32,
        "intermediate": 12288,
        "vocab": 126464,
        "max_positions": 4096,
        "tie_embeddings": False,
    },
}

_TINY = {
    "hidden": 64,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "intermediate": 128,
    "vocab": None,
    "max_positions": None,
    "dtype": "bfloat16",
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# ---------------------------------------------------------------------------------------------
# Tokenizer: byte-level BPE learned from a small embedded code text
# ---------------------------------------------------------------------------------------------

# Qwen2's pre-tokenizer split (the same pattern transformers' Qwen2Tokenizer uses).
_PRETOKENIZE = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_CORPUS = '''\
import os
import sys
from typing import List, Optional


def read_lines(path: str) -> List[str]:
    """Return the lines of a file without their newlines."""
    with open(path, "r", encoding="utf-8") as handle:
        return [line.rstrip("\\n") for line in handle]


def count_words(text: str) -> dict:
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()

    def __len__(self):
        return len(self.items)


def binary_search(values: List[int], target: int) -> Optional[int]:
    low, high = 0, len(values) - 1
    while low <= high:
        middle = (low + high) // 2
        if values[middle] == target:
            return middle
        if values[middle] < target:
            low = middle + 1
        else:
            high = middle - 1
    return None


def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def is_prime(number: int) -> bool:
    if number < 2:
        return False
    for divisor in range(2, int(number ** 0.5) + 1):
        if number % divisor == 0:
            return False
    return True


def main(argv: List[str]) -> int:
    if len(argv) < 2:
        print("usage: tool FILE")
        return 1
    for line in read_lines(argv[1]):
        total = sum(count_words(line).values())
        print(f"{total}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''

_N_MERGES = 200


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (as Qwen2's vocab uses)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


@lru_cache(maxsize=4)
def _learn_bpe(n_merges: int = _N_MERGES) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(base vocabulary in id order, merges in rank order), deterministically from _CORPUS."""
    b2u = _byte_to_unicode()
    base = tuple(b2u[b] for b in range(256))
    words: dict[tuple[str, ...], int] = {}
    for piece in regex.findall(_PRETOKENIZE, _CORPUS):
        symbols = tuple(b2u[b] for b in piece.encode("utf-8"))
        words[symbols] = words.get(symbols, 0) + 1
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: dict[tuple[str, str], int] = {}
        for symbols, count in words.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] = pairs.get(pair, 0) + count
        if not pairs:
            break
        # most frequent; ties broken by the pair's text so the result never depends on order
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for symbols, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged
    return base, tuple(merges)


def tiny_tokenizer(added: list[str]) -> tuple[dict[str, int], list[str], dict[str, int]]:
    """(vocab of the BPE tokens, merges as 'a b' lines, added token -> id) for a tiny tokenizer.

    Added tokens take the ids right after the BPE vocabulary, in the order given.
    """
    base, merges = _learn_bpe()
    vocab: dict[str, int] = {}
    for symbol in base:
        vocab[symbol] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    added_ids = {}
    for token in added:
        added_ids[token] = len(vocab) + len(added_ids)
    return vocab, [f"{a} {b}" for a, b in merges], added_ids


def _added_token_entry(content: str, special: bool = True) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def _tokenizer_json(vocab, merges, added_ids, specials_not_special=()) -> dict:
    """A tokenizer.json with Qwen2's normalizer / pre-tokenizer / decoder around the BPE."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    tok = Tokenizer(
        BPE(
            vocab=dict(vocab),
            merges=[tuple(m.split(" ")) for m in merges],
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens(
        [
            AddedToken(t, special=t not in specials_not_special, normalized=False)
            for t in sorted(added_ids, key=added_ids.get)
        ]
    )
    data = json.loads(tok.to_str())
    assert all(a["id"] == added_ids[a["content"]] for a in data["added_tokens"])
    return data


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_bpe_files(path: Path, vocab: dict[str, int], merges: list[str]) -> None:
    _write_json(path / "vocab.json", vocab)
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


def _shape(overrides: dict) -> dict:
    unknown = set(overrides) - set(_TINY) - {"tie_embeddings"}
    if unknown:
        raise TypeError(f"unknown shape arguments: {sorted(unknown)}")
    shape = dict(_TINY)
    shape.update({k: v for k, v in overrides.items() if v is not None})
    if shape["hidden"] % shape["heads"] or shape["heads"] % shape["kv_heads"]:
        raise ValueError("hidden must divide by heads and heads by kv_heads")
    return shape


class _Init:
    """Deterministic random tensors: one generator, drawn in the order the names are asked."""

    def __init__(self, seed: int, std: float):
        self.gen = torch.Generator().manual_seed(seed)
        self.std = std

    def normal(self, *shape: int, std: float | None = None) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * (self.std if std is None else std)

    def norm_weight(self, n: int) -> torch.Tensor:
        # ones, slightly perturbed so that a loader mixing up norms is caught
        return 1.0 + self.normal(n, std=0.05)


def _save_weights(path: Path, tensors: dict[str, torch.Tensor], dtype: str, shards: int) -> None:
    """model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json."""
    torch_dtype = _DTYPES[dtype]
    tensors = {k: v.to(torch_dtype).contiguous() for k, v in tensors.items()}
    metadata = {"format": "pt"}
    if shards <= 1:
        save_file(tensors, str(path / "model.safetensors"), metadata=metadata)
        return
    names = list(tensors)
    per = -(-len(names) // shards)
    weight_map = {}
    total = 0
    for i in range(shards):
        chunk = names[i * per : (i + 1) * per]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k] for k in chunk}, str(path / fname), metadata=metadata)
        for k in chunk:
            weight_map[k] = fname
            total += tensors[k].numel() * tensors[k].element_size()
    _write_json(
        path / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )


def safetensors_sha256(path: str | Path) -> str:
    """One sha256 over every *.safetensors file of a checkpoint (sorted by name)."""
    digest = hashlib.sha256()
    for file in sorted(Path(path).glob("*.safetensors")):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _scale_rows(
    head: torch.Tensor, bias_tokens: dict[str, float] | None, ids: dict[str, int]
) -> None:
    """bias_tokens: {token name: factor}; multiplies that token's output-embedding row.

    A random tiny model rarely commits a given token; scaling its row spreads its logit, so
    at some positions it wins with a peaked (low-entropy) distribution.  Used by the DreamOn
    reference fixture so that <|expand|> and <|endoftext|> get committed in the span.
    """
    for name, factor in (bias_tokens or {}).items():
        if name not in ids:
            raise KeyError(f"bias_tokens: {name!r} is not a token of this checkpoint")
        head[ids[name]] *= float(factor)


def _qwen2_tensors(shape: dict, vocab_size: int, init: _Init, *, tie: bool, qkv_bias: bool):
    """Qwen2 layout (Dream's DreamModel and Qwen2ForCausalLM share these names)."""
    h, inter = shape["hidden"], shape["intermediate"]
    head_dim = h // shape["heads"]
    kv = shape["kv_heads"] * head_dim
    t: dict[str, torch.Tensor] = {"model.embed_tokens.weight": init.normal(vocab_size, h)}
    for i in range(shape["layers"]):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = init.normal(h, h)
        if qkv_bias:
            t[p + "self_attn.q_proj.bias"] = init.normal(h)
        t[p + "self_attn.k_proj.weight"] = init.normal(kv, h)
        if qkv_bias:
            t[p + "self_attn.k_proj.bias"] = init.normal(kv)
        t[p + "self_attn.v_proj.weight"] = init.normal(kv, h)
        if qkv_bias:
            t[p + "self_attn.v_proj.bias"] = init.normal(kv)
        t[p + "self_attn.o_proj.weight"] = init.normal(h, h)
        t[p + "mlp.gate_proj.weight"] = init.normal(inter, h)
        t[p + "mlp.up_proj.weight"] = init.normal(inter, h)
        t[p + "mlp.down_proj.weight"] = init.normal(h, inter)
        t[p + "input_layernorm.weight"] = init.norm_weight(h)
        t[p + "post_attention_layernorm.weight"] = init.norm_weight(h)
    t["model.norm.weight"] = init.norm_weight(h)
    if not tie:
        t["lm_head.weight"] = init.normal(vocab_size, h)
    return t


def _stub(path: Path, name: str, what: str) -> None:
    (path / name).write_text(
        f'"""Test stub standing in for the published {what}.\n\n'
        "Parafill must never import checkpoint code (no trust_remote_code).\n"
        '"""\n\n'
        f'raise ImportError("{name} is a test stub: checkpoint code must not be executed")\n',
        encoding="utf-8",
    )


def _vocab_size(shape: dict, n_tokens: int) -> int:
    if shape["vocab"] is None:
        return n_tokens
    if shape["vocab"] < n_tokens:
        raise ValueError(f"vocab {shape['vocab']} < the tokenizer's {n_tokens} tokens")
    return shape["vocab"]


# ---------------------------------------------------------------------------------------------
# Dream family: Dream, Dream-Coder, DiffuCoder, DreamOn
# ---------------------------------------------------------------------------------------------

# Qwen2.5's added tokens in id order (151643 ... 151664), then Dream's two (151665, 151666),
# then DreamOn's expand token (151667).  Special flags as in Qwen2.5's tokenizer_config.
_QWEN25_ADDED = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
_QWEN25_ADDITIONAL = [t for t, _ in _QWEN25_ADDED[1:14]]  # <|im_start|> ... <|video_pad|>
_DREAM_ADDED = [("<|beginoftext|>", True), ("<|mask|>", True)]
_DREAMON_ADDED = [("<|expand|>", True)]

_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Per-variant values of config.json / generation_config.json that are not sizes.  Token fields
# hold token *names* here and are turned into the tiny ids when written.
_DREAM_VARIANTS = {
    # Dream-org/Dream-v0-Base-7B (and -Instruct-7B)
    "dream": {
        "repo": "Dream-org/Dream-v0-Base-7B",
        "bos": "<|endoftext|>",
        "max_positions": 131072,
        "transformers_version": "4.46.2",
        "use_cache": True,
        "extra": {},
        "generation": {
            "alg": "origin",
            "alg_temp": None,
            "eps": 0.001,
            "mask_token_id": None,
            "output_history": False,
            "steps": 512,
            "temperature": 0.0,
            "top_k": None,
            "top_p": None,
        },
    },
    # Dream-org/Dream-Coder-v0-Base-7B (and -Instruct-7B)
    "dream-coder": {
        "repo": "Dream-org/Dream-Coder-v0-Instruct-7B",
        "bos": "<|beginoftext|>",
        "max_positions": 32768,
        "transformers_version": "4.46.2",
        "use_cache": True,
        "extra": {},
        "generation": {},
    },
    # apple/DiffuCoder-7B-Instruct (-Base, -cpGRPO share the layout)
    "diffucoder": {
        "repo": "apple/DiffuCoder-7B-Instruct",
        "bos": "<|endoftext|>",
        "max_positions": 131072,
        "transformers_version": "4.51.3",
        "use_cache": False,
        "extra": {"use_mrope": False},
        "generation": {},
    },
    # Dream-org/DreamOn-v0-7B (trained from Dream-Coder)
    "dreamon": {
        "repo": "Dream-org/DreamOn-v0-7B",
        "bos": "<|beginoftext|>",
        "max_positions": 32768,
        "transformers_version": "4.46.2",
        "use_cache": True,
        "extra": {},
        "generation": {},
    },
}


def build_dream(
    path,
    *,
    variant: str = "dreamon",
    seed: int = 0,
    init_std: float = 0.02,
    bias_tokens: dict[str, float] | None = None,
    shards: int = 1,
    **shape,
) -> Path:
    """A Dream-family checkpoint (model_type "Dream", architectures ["DreamModel"]).

    Mirrors (field names and non-size values):
      config.json      apple/DiffuCoder-7B-Instruct config.json (read in full: the Hugging Face
                       page), whose fields are DreamConfig's (Dream-org/Dream-Coder-v0-Instruct-7B
                       configuration_dream.py): architectures ["DreamModel"], auto_map
                       {AutoConfig: configuration_dream.DreamConfig, AutoModel:
                       modeling_dream.DreamModel}, model_type "Dream", mask_token_id,
                       bos/eos/pad_token_id, rope_theta 1e6, rms_norm_eps 1e-6, ...
      bos_token_id     dream / diffucoder: 151643 <|endoftext|> (DiffuCoder's config.json;
                       Dream-v0-Instruct's generation_config.json); dream-coder / dreamon:
                       151665 <|beginoftext|> (Dream-Coder-v0-Instruct's generation_config.json,
                       seen through a duplicate repository).  eos = pad = 151643 <|endoftext|>,
                       mask_token_id = 151666 <|mask|> in all four.
      generation_config.json  dream: Dream-v0-Instruct-7B's (alg "origin", steps 512, ...);
                       dream-coder / dreamon: Dream-Coder's (bos/eos/pad only).
      weights          Qwen2 names (model.embed_tokens, model.layers.N.self_attn.{q,k,v}_proj
                       .{weight,bias}, o_proj.weight, mlp.{gate,up,down}_proj.weight,
                       input_layernorm, post_attention_layernorm, model.norm, lm_head): DreamModel
                       is Qwen2's module tree; untied embeddings (tie_word_embeddings false).
      tokenizer        DreamTokenizer = Qwen2's byte-level BPE files (vocab.json, merges.txt, no
                       tokenizer.json), tokenizer_config.json with added_tokens_decoder,
                       "tokenizer_class": "DreamTokenizer", auto_map AutoTokenizer
                       [tokenization_dream.DreamTokenizer, null], bos "<|beginoftext|>",
                       eos = pad "<|endoftext|>", mask "<|mask|>"; special_tokens_map.json.
      DreamOn          <|expand|> is id 151667, right after <|mask|>: DreamLM/DreamOn
                       eval/evaluate.py (expand_id = 151667) and src/trainer/sft_expand_dataset.py
                       (expand_token_id = 151667).  DreamOn deletes with <|endoftext|> (its
                       sampler and training data use eos_token_id); no <|delete|> token appears
                       anywhere in its code, so none is written.
    Not confirmed (no copy of the file could be read): config.json of Dream-v0, Dream-Coder and
    DreamOn themselves (taken as DiffuCoder's fields with the values above; max_position_
    embeddings 32768 for Dream-Coder/DreamOn comes from a Dream-Coder fine-tune's config), the
    exact tokenizer_config.json of any of them (shape taken from Qwen2.5's with Dream's tokens
    added), whether DreamOn's tokenizer_config lists <|expand|> by name (its code hard-codes the
    id), DiffuCoder's / DreamOn's generation_config.json.

    bias_tokens: {token name: factor} scales those rows of lm_head (see _scale_rows).
    shards > 1 writes model-0000i-of-0000n.safetensors + model.safetensors.index.json as the
    7B repositories do; the default writes one model.safetensors.
    """
    if variant not in _DREAM_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(_DREAM_VARIANTS)}")
    spec = _DREAM_VARIANTS[variant]
    s = _shape(shape)
    tie = bool(s.pop("tie_embeddings", False))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    added = _QWEN25_ADDED + _DREAM_ADDED + (_DREAMON_ADDED if variant == "dreamon" else [])
    vocab, merges, ids = tiny_tokenizer([t for t, _ in added])
    n_tokens = len(vocab) + len(ids)
    vocab_size = _vocab_size(s, n_tokens)
    max_positions = s["max_positions"] or spec["max_positions"]

    init = _Init(seed, init_std)
    tensors = _qwen2_tensors(s, vocab_size, init, tie=tie, qkv_bias=True)
    head = tensors["model.embed_tokens.weight" if tie else "lm_head.weight"]
    _scale_rows(head, bias_tokens, ids)
    _save_weights(path, tensors, s["dtype"], shards)

    bos, eos = ids[spec["bos"]], ids["<|endoftext|>"]
    config = {
        "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": s["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": s["intermediate"],
        "mask_token_id": ids["<|mask|>"],
        "max_position_embeddings": max_positions,
        "max_window_layers": s["layers"],
        "model_type": "Dream",
        "num_attention_heads": s["heads"],
        "num_hidden_layers": s["layers"],
        "num_key_value_heads": s["kv_heads"],
        "pad_token_id": eos,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": tie,
        "torch_dtype": s["dtype"],
        "transformers_version": spec["transformers_version"],
        "use_cache": spec["use_cache"],
        **spec["extra"],
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    _write_json(path / "config.json", dict(sorted(config.items())))
    generation = {
        "_from_model_config": True,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "transformers_version": spec["transformers_version"],
        **spec["generation"],
    }
    _write_json(path / "generation_config.json", dict(sorted(generation.items())))

    _write_bpe_files(path, vocab, merges)
    special = dict(added)
    tok_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(ids[t]): _added_token_entry(t, special[t]) for t in sorted(ids, key=ids.get)
        },
        "additional_special_tokens": _QWEN25_ADDITIONAL,
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|beginoftext|>",
        "chat_template": _CHATML,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "mask_token": "<|mask|>",
        "model_max_length": max_positions,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "DreamTokenizer",
        "unk_token": None,
    }
    _write_json(path / "tokenizer_config.json", tok_config)
    entry = {k: v for k, v in _added_token_entry("").items() if k != "special"}
    _write_json(
        path / "special_tokens_map.json",
        {
            "additional_special_tokens": _QWEN25_ADDITIONAL,
            "bos_token": {**entry, "content": "<|beginoftext|>"},
            "eos_token": {**entry, "content": "<|endoftext|>"},
            "mask_token": {**entry, "content": "<|mask|>"},
            "pad_token": {**entry, "content": "<|endoftext|>"},
        },
    )
    _stub(path, "configuration_dream.py", "DreamConfig (configuration_dream.py)")
    _stub(path, "modeling_dream.py", "DreamModel (modeling_dream.py)")
    _stub(path, "generation_utils.py", "Dream diffusion_generate (generation_utils.py)")
    _stub(path, "tokenization_dream.py", "DreamTokenizer (tokenization_dream.py)")
    return path


# ---------------------------------------------------------------------------------------------
# Open-dCoder
# ---------------------------------------------------------------------------------------------


def build_open_dcoder(
    path,
    *,
    seed: int = 0,
    init_std: float = 0.02,
    bias_tokens: dict[str, float] | None = None,
    shards: int = 1,
    **shape,
) -> Path:
    """fredzzp/open-dcoder-0.5B: a plain qwen2 config (Qwen2ForCausalLM) with a mask token.

    Mirrors:
      The model is Qwen2.5-Coder-0.5B trained as a masked diffusion LM (pengzhangzhi/Open-dLLM
      configs/pretrain/qwen2_5_coder_500M.yaml: model_path Qwen/Qwen2.5-Coder-0.5B), uploaded
      from the trainer's hf_ckpt folder (README "Uploading Checkpoints").  Its README loads it
      with Qwen2ForCausalLM; config.json is therefore Qwen2.5-Coder-0.5B's: model_type "qwen2",
      architectures ["Qwen2ForCausalLM"], bos = eos = 151643 <|endoftext|>, tie_word_embeddings
      true, q/k/v biases, rope_theta 1e6, vocab 151936 (SHAPES["open-dcoder-0.5b"]).
      Mask token: Open-dLLM tasks/train_torch.py adds mask_token "<M>" when the tokenizer has
      none (so it lands at 151665, after Qwen2.5's 22 added tokens); eval/eval_infill/
      eval_infill.py requires tokenizer.mask_token to be set and uses tokenizer.mask_token_id.
      Tokenizer files: Qwen2.5-Coder's set (vocab.json, merges.txt, tokenizer.json,
      tokenizer_config.json with "tokenizer_class": "Qwen2Tokenizer", special_tokens_map.json,
      added_tokens.json), as save_pretrained writes them.
    Not confirmed (no copy of the uploaded files could be read): that the mask token in the
    uploaded tokenizer is "<M>" (the eval scripts add "[MASK]" when none is present, which
    would only happen for a tokenizer without one), whether config.json carries a mask_token_id
    field (not written here: Parafill must find the mask token by name), the exact
    generation_config.json (Qwen2.5-Coder-0.5B's written), torch_dtype.
    """
    shape.setdefault("tie_embeddings", True)
    s = _shape(shape)
    tie = bool(s.pop("tie_embeddings"))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    added = _QWEN25_ADDED + [("<M>", True)]
    vocab, merges, ids = tiny_tokenizer([t for t, _ in added])
    vocab_size = _vocab_size(s, len(vocab) + len(ids))
    max_positions = s["max_positions"] or 32768

    init = _Init(seed, init_std)
    tensors = _qwen2_tensors(s, vocab_size, init, tie=tie, qkv_bias=True)
    _scale_rows(tensors["model.embed_tokens.weight" if tie else "lm_head.weight"], bias_tokens, ids)
    _save_weights(path, tensors, s["dtype"], shards)

    eos = ids["<|endoftext|>"]
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": s["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": s["intermediate"],
        "max_position_embeddings": max_positions,
        "max_window_layers": s["layers"],
        "model_type": "qwen2",
        "num_attention_heads": s["heads"],
        "num_hidden_layers": s["layers"],
        "num_key_value_heads": s["kv_heads"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": tie,
        "torch_dtype": s["dtype"],
        "transformers_version": "4.46.3",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    _write_json(path / "config.json", config)
    _write_json(
        path / "generation_config.json",
        {
            "bos_token_id": eos,
            "do_sample": False,
            "eos_token_id": eos,
            "max_new_tokens": 2048,
            "transformers_version": "4.46.3",
        },
    )
    _write_bpe_files(path, vocab, merges)
    special = dict(added)
    _write_json(
        path / "tokenizer.json",
        _tokenizer_json(vocab, merges, ids, {t for t, sp in added if not sp}),
    )
    _write_json(path / "added_tokens.json", dict(sorted(ids.items())))
    _write_json(
        path / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(ids[t]): _added_token_entry(t, special[t]) for t in sorted(ids, key=ids.get)
            },
            "additional_special_tokens": _QWEN25_ADDITIONAL,
            "bos_token": None,
            "chat_template": _CHATML,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>",
            "errors": "replace",
            "mask_token": "<M>",
            "model_max_length": max_positions,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )
    entry = {k: v for k, v in _added_token_entry("").items() if k != "special"}
    _write_json(
        path / "special_tokens_map.json",
        {
            "additional_special_tokens": _QWEN25_ADDITIONAL,
            "eos_token": {**entry, "content": "<|endoftext|>"},
            "mask_token": {**entry, "content": "<M>"},
            "pad_token": {**entry, "content": "<|endoftext|>"},
        },
    )
    return path


# ---------------------------------------------------------------------------------------------
# LLaDA
# ---------------------------------------------------------------------------------------------

# LLaDA's named tokens in their published id order: 126080 <|startoftext|>, 126081
# <|endoftext|>, 126336 <|mdm_mask|>, 126346 <|start_header_id|>, 126347 <|end_header_id|>,
# 126348 <|eot_id|>.  (The reserved tokens between them are not written.)
_LLADA_ADDED = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|mdm_mask|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

_LLADA_CHAT = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)


def build_llada(
    path,
    *,
    seed: int = 0,
    init_std: float = 0.02,
    bias_tokens: dict[str, float] | None = None,
    shards: int = 1,
    **shape,
) -> Path:
    """GSAI-ML/LLaDA-8B-Base / -Instruct layout (architectures ["LLaDAModelLM"]).

    Mirrors:
      config.json      LLaDA-8B-Instruct's (its 54-line config.json in the Hugging Face commit
                       "add LLaDA-8B-Instruct", and a scaled-down copy of it with every field):
                       model_type "llada", auto_map {AutoConfig: configuration_llada.LLaDAConfig,
                       AutoModelForCausalLM / AutoModel: modeling_llada.LLaDAModelLM}, d_model,
                       n_layers, n_heads, n_kv_heads, mlp_hidden_size, mlp_ratio,
                       embedding_size, vocab_size, max_sequence_length, block_type "llama",
                       activation_type "silu", layer_norm_type "rms", rms_norm_eps 1e-5,
                       rope true, include_bias / include_qkv_bias false, weight_tying false,
                       eos_token_id = pad_token_id = 126081, mask_token_id 126336.
      weights          modeling_llada.py's LLaDALlamaBlock / LLaDAModel names:
                       model.transformer.wte.weight, model.transformer.blocks.N.{attn_norm,
                       ff_norm}.weight, .{q_proj,k_proj,v_proj,attn_out}.weight,
                       .{ff_proj (gate), up_proj, ff_out (down)}.weight (x = ff_out(act(ff_proj
                       (x)) * up_proj(x))), model.transformer.ln_f.weight,
                       model.transformer.ff_out.weight (output head, untied).
      tokenizer        tokenizer.json + tokenizer_config.json ("tokenizer_class":
                       "PreTrainedTokenizerFast") + special_tokens_map.json; bos <|startoftext|>
                       (126080), eos <|endoftext|> (126081), mask <|mdm_mask|> (126336, ML-GSAI/
                       LLaDA generate.py mask_id), chat tokens <|start_header_id|>,
                       <|end_header_id|>, <|eot_id|> (126346-126348).
      generation_config.json  bos 126080, eos 126081 (a LLaDA-8B-Instruct copy's).
    Not confirmed: rope_theta (500000.0 written) and max_sequence_length (4096) of the 8B
    config itself (the scaled copy has 10000.0 / 1024), LLaDA's real pre-tokenizer (Qwen2's
    split is used here), the reserved tokens between 126081 and 126336 (not written), whether
    the mask token is listed in tokenizer_config's added_tokens_decoder as special.
    """
    s = _shape(shape)
    s["max_positions"] = s["max_positions"] or 4096
    s.pop("tie_embeddings", None)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    vocab, merges, ids = tiny_tokenizer(_LLADA_ADDED)
    vocab_size = _vocab_size(s, len(vocab) + len(ids))
    h, inter = s["hidden"], s["intermediate"]
    head_dim = h // s["heads"]
    kv = s["kv_heads"] * head_dim

    init = _Init(seed, init_std)
    t: dict[str, torch.Tensor] = {"model.transformer.wte.weight": init.normal(vocab_size, h)}
    for i in range(s["layers"]):
        p = f"model.transformer.blocks.{i}."
        t[p + "attn_norm.weight"] = init.norm_weight(h)
        t[p + "q_proj.weight"] = init.normal(h, h)
        t[p + "k_proj.weight"] = init.normal(kv, h)
        t[p + "v_proj.weight"] = init.normal(kv, h)
        t[p + "attn_out.weight"] = init.normal(h, h)
        t[p + "ff_norm.weight"] = init.norm_weight(h)
        t[p + "ff_proj.weight"] = init.normal(inter, h)
        t[p + "up_proj.weight"] = init.normal(inter, h)
        t[p + "ff_out.weight"] = init.normal(h, inter)
    t["model.transformer.ln_f.weight"] = init.norm_weight(h)
    t["model.transformer.ff_out.weight"] = init.normal(vocab_size, h)
    _scale_rows(t["model.transformer.ff_out.weight"], bias_tokens, ids)
    _save_weights(path, t, s["dtype"], shards)

    eos = ids["<|endoftext|>"]
    config = {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
            "AutoModel": "modeling_llada.LLaDAModelLM",
        },
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": h,
        "embedding_dropout": 0.0,
        "embedding_size": vocab_size,
        "eos_token_id": eos,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": ids["<|mdm_mask|>"],
        "max_sequence_length": s["max_positions"],
        "mlp_hidden_size": inter,
        "mlp_ratio": max(1, inter // h),
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": s["heads"],
        "n_kv_heads": s["kv_heads"],
        "n_layers": s["layers"],
        "pad_token_id": eos,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": 500000.0,
        "scale_logits": False,
        "torch_dtype": s["dtype"],
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": vocab_size,
        "weight_tying": False,
    }
    _write_json(path / "config.json", config)
    _write_json(
        path / "generation_config.json",
        {
            "_from_model_config": True,
            "bos_token_id": ids["<|startoftext|>"],
            "eos_token_id": eos,
            "pad_token_id": eos,
            "transformers_version": "4.46.3",
        },
    )
    _write_json(path / "tokenizer.json", _tokenizer_json(vocab, merges, ids))
    _write_json(
        path / "tokenizer_config.json",
        {
            "added_tokens_decoder": {
                str(ids[tok]): _added_token_entry(tok) for tok in sorted(ids, key=ids.get)
            },
            "bos_token": "<|startoftext|>",
            "chat_template": _LLADA_CHAT,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>",
            "extra_special_tokens": {},
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 1000000000000000019884624838656,
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
    )
    entry = {k: v for k, v in _added_token_entry("").items() if k != "special"}
    _write_json(
        path / "special_tokens_map.json",
        {
            "bos_token": {**entry, "content": "<|startoftext|>"},
            "eos_token": {**entry, "content": "<|endoftext|>"},
            "pad_token": {**entry, "content": "<|endoftext|>"},
        },
    )
    _stub(path, "configuration_llada.py", "LLaDAConfig (configuration_llada.py)")
    _stub(path, "modeling_llada.py", "LLaDAModelLM (modeling_llada.py)")
    return path


# ---------------------------------------------------------------------------------------------
# A checkpoint only its own code can run
# ---------------------------------------------------------------------------------------------


def build_remote_code_only(path, *, seed: int = 0) -> Path:
    """A made-up architecture ("HoloDiffusionLM", model_type "holo_diffusion") that transformers
    does not know and that names only its own .py files in auto_map, for the "this checkpoint
    needs its authors' code" error.  Everything else (tokenizer, safetensors) is well formed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab, merges, ids = tiny_tokenizer(["<|endoftext|>", "<|mask|>"])
    n = len(vocab) + len(ids)
    init = _Init(seed, 0.02)
    tensors = {
        "holo.token_table": init.normal(n, 32),
        "holo.mixer.0.kernel": init.normal(32, 32),
        "holo.readout": init.normal(n, 32),
    }
    _save_weights(path, tensors, "float32", 1)
    _write_json(
        path / "config.json",
        {
            "architectures": ["HoloDiffusionLM"],
            "auto_map": {
                "AutoConfig": "configuration_holo.HoloConfig",
                "AutoModel": "modeling_holo.HoloDiffusionLM",
            },
            "model_type": "holo_diffusion",
            "d_embed": 32,
            "n_mixers": 1,
            "mask_token_id": ids["<|mask|>"],
            "eos_token_id": ids["<|endoftext|>"],
            "vocab_size": n,
            "torch_dtype": "float32",
            "transformers_version": "4.46.2",
        },
    )
    _write_bpe_files(path, vocab, merges)
    _write_json(
        path / "tokenizer_config.json",
        {
            "added_tokens_decoder": {
                str(ids[t]): _added_token_entry(t) for t in sorted(ids, key=ids.get)
            },
            "eos_token": "<|endoftext|>",
            "mask_token": "<|mask|>",
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "Qwen2Tokenizer",
        },
    )
    _stub(path, "configuration_holo.py", "HoloConfig (configuration_holo.py)")
    _stub(path, "modeling_holo.py", "HoloDiffusionLM (modeling_holo.py)")
    return path
