"""What varies between the families of published diffusion coders: data only.

A `FamilySpec` names a family's special tokens (looked up by name in the checkpoint's own
tokenizer), whether its logits are shifted by one (initialised from an autoregressive model),
how a window is laid out (a begin token before the prefix, an end token after the suffix, as the
authors' code builds it), and its decoding defaults. Which family a checkpoint is comes from
model/families/checkpoint.py.
"""

from __future__ import annotations

from dataclasses import dataclass

# how a published checkpoint's passes run: the whole window each pass (the reference), or
# Fast-dLLM's dual cache (the context's keys and values reused by passes over the holes)
PASS_CACHES = ("exact", "dual")


@dataclass(frozen=True)
class FamilySpec:
    name: str
    mask: tuple[str, ...]
    end: tuple[str, ...]
    begin: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()
    shift: bool = True  # a slot's logits come from the position before it
    begin_in_layout: bool = True  # [begin] prefix holes suffix ...
    end_in_layout: bool = True  # ... suffix [end]
    licence: str = ""


SPECS = {
    # Dream, Dream-Coder, DiffuCoder, DreamOn: DreamModel (Qwen2 weights, logits shifted), the
    # layout of DreamOn's eval/generator.py and quickstart: [BOS] prefix masks suffix [EOS];
    # DreamOn's tokenizer adds <|expand|> (a Dream checkpoint with it decodes with expand/delete)
    "dream": FamilySpec(
        "dream",
        mask=("<|mask|>",),
        end=("<|endoftext|>",),
        begin=("<|beginoftext|>",),
        expand=("<|expand|>",),
    ),
    # Open-dCoder: a Qwen2 checkpoint trained as a masked diffusion model: prefix masks suffix
    "open-dcoder": FamilySpec(
        "open-dcoder",
        mask=("<M>", "<|mask|>", "[MASK]"),
        end=("<|endoftext|>",),
        begin_in_layout=False,
        end_in_layout=False,
    ),
    # LLaDA 8B / 1.5: its own network (Llama layout once renamed), logits not shifted
    "llada": FamilySpec(
        "llada",
        mask=("<|mdm_mask|>",),
        end=("<|endoftext|>", "<|eot_id|>"),
        begin=("<|startoftext|>",),
        shift=False,
        end_in_layout=False,
    ),
}
