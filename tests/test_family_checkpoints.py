"""The tiny published-layout checkpoints of tests/family_checkpoints.py are well formed."""

import importlib.util
import json
import struct
from pathlib import Path

import pytest
from family_checkpoints import (
    SHAPES,
    build_dream,
    build_llada,
    build_open_dcoder,
    build_remote_code_only,
    safetensors_sha256,
)
from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "dreamon_reference.json"
CODE = "def area(width, height):\n    return width * height  # 2 ü\n"


def _header(file: Path) -> dict:
    """The JSON header of a safetensors file, read by hand (8-byte little-endian length)."""
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert 8 + n + end == len(raw), "the data section must end where the last tensor ends"
    return header


def _tensors(path: Path) -> dict[str, dict]:
    out = {}
    files = sorted(path.glob("*.safetensors"))
    assert files
    for file in files:
        header = _header(file)
        assert header.pop("__metadata__") == {"format": "pt"}
        out.update(header)
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        assert set(weight_map) == set(out)
    return out


def _qwen2_names(layers: int, *, tied: bool) -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not tied:
        names.add("lm_head.weight")
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in "qkv":
            names |= {p + f"self_attn.{proj}_proj.weight", p + f"self_attn.{proj}_proj.bias"}
        names |= {
            p + "self_attn.o_proj.weight",
            p + "mlp.gate_proj.weight",
            p + "mlp.up_proj.weight",
            p + "mlp.down_proj.weight",
            p + "input_layernorm.weight",
            p + "post_attention_layernorm.weight",
        }
    return names


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


@pytest.mark.parametrize("variant", ["dream", "dream-coder", "diffucoder", "dreamon"])
def test_dream_layout(tmp_path, variant):
    path = build_dream(tmp_path / variant, variant=variant, seed=3)
    config = _config(path)
    assert config["model_type"] == "Dream"
    assert config["architectures"] == ["DreamModel"]
    assert config["auto_map"] == {
        "AutoConfig": "configuration_dream.DreamConfig",
        "AutoModel": "modeling_dream.DreamModel",
    }
    assert config["tie_word_embeddings"] is False
    assert (path / "generation_config.json").exists()
    for name in ("configuration_dream.py", "modeling_dream.py", "tokenization_dream.py"):
        assert (path / name).exists()
    assert not (path / "tokenizer.json").exists()  # Dream ships vocab.json + merges.txt only

    tensors = _tensors(path)
    assert set(tensors) == _qwen2_names(2, tied=False)
    h, v = config["hidden_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * h // config["num_attention_heads"]
    assert tensors["model.embed_tokens.weight"]["shape"] == [v, h]
    assert tensors["lm_head.weight"]["shape"] == [v, h]
    assert tensors["model.layers.1.self_attn.k_proj.weight"]["shape"] == [kv, h]
    assert tensors["model.layers.0.mlp.down_proj.weight"]["shape"] == [
        h,
        config["intermediate_size"],
    ]
    assert {t["dtype"] for t in tensors.values()} == {"BF16"}

    tok_config = json.loads((path / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "DreamTokenizer"
    assert tok_config["auto_map"] == {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}

    tok = Qwen2Tokenizer.from_pretrained(path)
    by_name = tok.convert_tokens_to_ids
    assert tok.mask_token == "<|mask|>" and tok.bos_token == "<|beginoftext|>"
    assert tok.eos_token == "<|endoftext|>"
    assert config["mask_token_id"] == by_name("<|mask|>")
    assert config["eos_token_id"] == config["pad_token_id"] == by_name("<|endoftext|>")
    bos = "<|beginoftext|>" if variant in ("dream-coder", "dreamon") else "<|endoftext|>"
    assert config["bos_token_id"] == by_name(bos)
    for name in ("<|im_start|>", "<|im_end|>", "<|beginoftext|>"):
        assert by_name(name) != tok.unk_token_id and by_name(name) is not None
    expand = tok.get_vocab().get("<|expand|>")
    if variant == "dreamon":
        assert expand == by_name("<|mask|>") + 1
    else:
        assert expand is None
    assert len(tok) == v  # vocab None: config covers exactly the tokenizer's ids
    ids = tok.encode(CODE, add_special_tokens=False)
    assert tok.decode(ids) == CODE
    assert len(ids) < len(CODE.encode())  # merges were learned
    # special tokens are atomic in text
    assert tok.encode("a<|mask|>b", add_special_tokens=False)[1] == by_name("<|mask|>")


def test_dream_is_deterministic_and_seeded(tmp_path):
    a = build_dream(tmp_path / "a", seed=1)
    b = build_dream(tmp_path / "b", seed=1)
    c = build_dream(tmp_path / "c", seed=2)
    for name in ("config.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes() == (c / name).read_bytes()
    assert safetensors_sha256(a) == safetensors_sha256(b) != safetensors_sha256(c)


def test_dream_sharded_and_shaped(tmp_path):
    path = build_dream(
        tmp_path / "s",
        variant="dream",
        shards=3,
        hidden=32,
        layers=3,
        heads=4,
        kv_heads=1,
        intermediate=48,
        vocab=512,
        dtype="float32",
    )
    config = _config(path)
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (
        32,
        3,
        512,
    )
    assert len(list(path.glob("model-*-of-00003.safetensors"))) == 3
    tensors = _tensors(path)
    assert set(tensors) == _qwen2_names(3, tied=False)
    assert {t["dtype"] for t in tensors.values()} == {"F32"}


def test_bias_tokens_scale_rows(tmp_path):
    from safetensors.torch import load_file

    plain = build_dream(tmp_path / "p", dtype="float32")
    scaled = build_dream(tmp_path / "s", dtype="float32", bias_tokens={"<|expand|>": 3.0})
    expand = Qwen2Tokenizer.from_pretrained(plain).convert_tokens_to_ids("<|expand|>")
    a = load_file(plain / "model.safetensors")["lm_head.weight"]
    b = load_file(scaled / "model.safetensors")["lm_head.weight"]
    assert (b[expand] - 3.0 * a[expand]).abs().max() < 1e-6
    b[expand] = a[expand]
    assert (a == b).all()
    with pytest.raises(KeyError):
        build_dream(tmp_path / "x", bias_tokens={"<|nope|>": 2.0})


def test_open_dcoder_layout(tmp_path):
    path = build_open_dcoder(tmp_path / "odc")
    config = _config(path)
    assert config["model_type"] == "qwen2"
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["tie_word_embeddings"] is True
    assert "auto_map" not in config and "mask_token_id" not in config
    tensors = _tensors(path)
    assert set(tensors) == _qwen2_names(2, tied=True)
    for cls in (Qwen2Tokenizer, PreTrainedTokenizerFast):  # vocab/merges and tokenizer.json
        tok = cls.from_pretrained(path)
        assert tok.mask_token == "<M>"
        assert tok.mask_token_id == tok.convert_tokens_to_ids("<M>")
        assert tok.eos_token_id == config["eos_token_id"]
        assert tok.decode(tok.encode(CODE, add_special_tokens=False)) == CODE
    slow = Qwen2Tokenizer.from_pretrained(path).encode(CODE, add_special_tokens=False)
    assert (
        PreTrainedTokenizerFast.from_pretrained(path).encode(CODE, add_special_tokens=False) == slow
    )


def test_llada_layout(tmp_path):
    path = build_llada(tmp_path / "llada")
    config = _config(path)
    assert config["architectures"] == ["LLaDAModelLM"]
    assert config["model_type"] == "llada"
    assert config["block_type"] == "llama" and config["weight_tying"] is False
    tensors = _tensors(path)
    names = {
        "model.transformer.wte.weight",
        "model.transformer.ln_f.weight",
        "model.transformer.ff_out.weight",
    }
    for i in range(config["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        names |= {
            p + n + ".weight"
            for n in ("attn_norm", "ff_norm", "q_proj", "k_proj", "v_proj", "attn_out")
            + ("ff_proj", "up_proj", "ff_out")
        }
    assert set(tensors) == names
    d, m = config["d_model"], config["mlp_hidden_size"]
    assert tensors["model.transformer.blocks.0.ff_proj.weight"]["shape"] == [m, d]
    assert tensors["model.transformer.blocks.0.ff_out.weight"]["shape"] == [d, m]
    assert tensors["model.transformer.wte.weight"]["shape"] == [config["embedding_size"], d]

    tok = PreTrainedTokenizerFast.from_pretrained(path)
    assert tok.bos_token == "<|startoftext|>" and tok.eos_token == "<|endoftext|>"
    assert config["mask_token_id"] == tok.convert_tokens_to_ids("<|mdm_mask|>")
    assert config["eos_token_id"] == tok.eos_token_id
    for name in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
        assert tok.convert_tokens_to_ids(name) is not None
    assert tok.decode(tok.encode(CODE, add_special_tokens=False)) == CODE
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["bos_token_id"] == tok.bos_token_id


def test_remote_code_only(tmp_path):
    path = build_remote_code_only(tmp_path / "r")
    config = _config(path)
    from transformers import CONFIG_MAPPING

    assert config["model_type"] not in CONFIG_MAPPING
    assert set(config["auto_map"].values()) <= {
        "configuration_holo.HoloConfig",
        "modeling_holo.HoloDiffusionLM",
    }
    _tensors(path)
    Qwen2Tokenizer.from_pretrained(path)


def test_stubs_refuse_to_run(tmp_path):
    path = build_dream(tmp_path / "d")
    spec = importlib.util.spec_from_file_location("modeling_dream", path / "modeling_dream.py")
    with pytest.raises(ImportError):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_real_shapes():
    assert SHAPES["open-dcoder-0.5b"] == {
        "hidden": 896,
        "layers": 24,
        "heads": 14,
        "kv_heads": 2,
        "intermediate": 4864,
        "vocab": 151936,
        "max_positions": 32768,
        "tie_embeddings": True,
    }
    dream = SHAPES["dream-7b"]
    assert (dream["hidden"], dream["layers"], dream["heads"], dream["kv_heads"]) == (
        3584,
        28,
        28,
        4,
    )
    assert (dream["intermediate"], dream["vocab"], dream["tie_embeddings"]) == (
        18944,
        152064,
        False,
    )


@pytest.mark.skipif(not FIXTURE.exists(), reason="no DreamOn reference fixture yet")
def test_dreamon_fixture_checkpoint_is_what_the_builder_makes(tmp_path):
    """The reference token ids were made with one checkpoint; a builder change that alters it
    invalidates the fixture (regenerate it with the harness named in its "about")."""
    checkpoint = json.loads(FIXTURE.read_text())["checkpoint"]
    assert checkpoint["builder"] == "build_dream"
    path = build_dream(
        tmp_path / "ref",
        variant=checkpoint["variant"],
        seed=checkpoint["seed"],
        **checkpoint.get("kwargs", {}),
        **checkpoint["shape"],
    )
    assert safetensors_sha256(path) == checkpoint["safetensors_sha256"]


@pytest.mark.skipif(not FIXTURE.exists(), reason="no DreamOn reference fixture yet")
def test_dreamon_fixture_is_consistent(tmp_path):
    """The fixture's inputs are what the tiny tokenizer makes of its texts, and its fields agree
    with one another (the ids themselves come from the authors' sampler)."""
    fixture = json.loads(FIXTURE.read_text())
    checkpoint = fixture["checkpoint"]
    path = build_dream(tmp_path / "ref", variant="dreamon", seed=checkpoint["seed"])
    tok = Qwen2Tokenizer.from_pretrained(path)
    bos, eos, mask = (
        tok.convert_tokens_to_ids(t) for t in ("<|beginoftext|>", "<|endoftext|>", "<|mask|>")
    )
    settings = fixture["about"]["settings"]
    cases = fixture["cases"]
    assert {c["top_p"] for c in cases} == {None, 0.9}
    assert any(c["grew"] for c in cases) and any(c["shrank"] for c in cases)
    for case in cases:
        prefix = [bos, *tok.encode(case["prefix"], add_special_tokens=False)]
        suffix = [*tok.encode(case["suffix"], add_special_tokens=False), eos]
        assert case["input_ids"] == prefix + [mask] * settings["min_gen_len"] + suffix
        assert case["prefix_len"] == len(prefix)
        n = case["num_generation_tokens"]
        out = case["output_ids"]
        assert (
            len(out) == len(case["input_ids"]) + settings["max_gen_len"] - settings["min_gen_len"]
        )
        assert out[len(prefix) : len(prefix) + n] == case["middle_ids"]
        window = len(case["input_ids"]) - settings["min_gen_len"] + n
        assert out[:window] == case["trajectory"][-1]
        assert out[window - len(suffix) : window] == suffix
        assert len(case["trajectory"]) == case["steps_used"]
