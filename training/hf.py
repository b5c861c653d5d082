"""The network as a transformers PreTrainedModel: for training, `save_pretrained` (sharded
safetensors + config.json) and the Auto classes. Inference never imports this (model/network.py's
`ParafillNet.load_checkpoint` reads the same files without transformers, 2 s less start-up).

`ParafillForMaskedDiffusion` is `ParafillNet` (same layers, same weight names, same methods)
with transformers' machinery: the weight initialisation, tied embeddings, saving and loading.
"""

from __future__ import annotations

from dataclasses import fields

from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
)

from model.network import NetConfig, ParafillNet, RMSNorm

# the fields transformers' PretrainedConfig takes itself
_OWN = ("pad_token_id", "tie_word_embeddings")


class ParafillConfig(PretrainedConfig):
    """model/network.py's NetConfig (its fields, defaults and comments) as a PretrainedConfig."""

    model_type = "parafill_mdlm"

    def __init__(self, **kwargs):
        for f in fields(NetConfig):
            if f.name not in _OWN:
                setattr(self, f.name, kwargs.pop(f.name, f.default))
        kwargs.setdefault("pad_token_id", NetConfig.pad_token_id)
        kwargs.setdefault("tie_word_embeddings", NetConfig.tie_word_embeddings)
        super().__init__(**kwargs)


class ParafillForMaskedDiffusion(ParafillNet, PreTrainedModel):
    """ParafillNet under transformers: initialised as for training, saved and loaded by it."""

    config_class = ParafillConfig
    base_model_prefix = "parafill"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Block"]  # noqa: RUF012 (transformers convention)
    _tied_weights_keys = {"lm_head.weight": "embed.weight"}  # noqa: RUF012

    def __init__(self, config: ParafillConfig):
        PreTrainedModel.__init__(self, config)
        self.build(config)
        self.post_init()

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


AutoConfig.register(ParafillConfig.model_type, ParafillConfig, exist_ok=True)
AutoModel.register(ParafillConfig, ParafillForMaskedDiffusion, exist_ok=True)
AutoModelForMaskedLM.register(ParafillConfig, ParafillForMaskedDiffusion, exist_ok=True)
