"""Model + tokenizer from the `model` config: the tiny offline model, or weights on disk."""

from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from grpo.config.errors import ConfigError
from grpo.config.schema import ModelConfig
from grpo.models.tiny import build_tiny_model
from grpo.models.tokenizer import build_char_tokenizer


def load_model(cfg: ModelConfig, init_seed: int | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`init_seed`: the tiny model's init (a run passes derived.model_init_seed); else
    `cfg.init_seed`, else 0. Weights on disk ignore it."""
    if cfg.name_or_path is None:
        tokenizer = build_char_tokenizer()
        seed = init_seed if init_seed is not None else cfg.init_seed
        model = build_tiny_model(cfg.tiny, tokenizer, seed if seed is not None else 0)
    else:
        tokenizer, model = _load_pretrained(cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # re-enabled for generation by generate() itself
    return model, tokenizer


def _load_pretrained(cfg: ModelConfig):
    path = cfg.name_or_path
    local = os.path.isdir(path)
    kwargs = dict(trust_remote_code=cfg.trust_remote_code, local_files_only=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.bfloat16 if cfg.bf16 else torch.float32, **kwargs
        )
    except (OSError, ValueError) as exc:
        where = (
            "that directory holds no loadable model"
            if local
            else "no local copy of that hub id is cached and nothing is downloaded at run time"
        )
        raise ConfigError(
            "model.name_or_path",
            path,
            f"{where}; put the weights in a directory "
            f"(e.g. `huggingface-cli download {path} --local-dir DIR` on a machine with network) "
            f"and pass model.name_or_path=DIR ({type(exc).__name__})",
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer, model


def context_length(model: PreTrainedModel) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
