"""A small randomly initialised decoder built from a transformers config."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase, Qwen2Config

from grpo.config.schema import TinyArchConfig

_CONFIGS = {"qwen2": Qwen2Config, "llama": LlamaConfig}


def build_tiny_model(arch: TinyArchConfig, tokenizer: PreTrainedTokenizerBase, init_seed: int) -> PreTrainedModel:
    config = _CONFIGS[arch.architecture](
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    # The weights depend on init_seed only, so every process and every run starts alike.
    devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(init_seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
