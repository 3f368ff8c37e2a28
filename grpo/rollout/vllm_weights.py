"""The policy's weights as vLLM reads them: a base model folder, a LoRA adapter folder, merged or
full weights to push in memory, and the fingerprint that says whether they changed.

Names are transformers' (`model.layers.0.self_attn.q_proj.weight`): vLLM's loaders map them onto
their fused layers (qkv_proj, gate_up_proj) themselves. peft's wrappers are looked through: the
base weights are `...q_proj.base_layer.weight` in a LoRA model and come out as `...q_proj.weight`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch

ADAPTER = "default"  # peft's adapter name in our models


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under peft's wrappers (LoRA layers still injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def _clean(name: str) -> str | None:
    """transformers' name of a parameter of a (possibly LoRA-injected) model; None for LoRA's own."""
    if ".lora_" in name or name.startswith("lora_"):
        return None
    return name.replace(".base_layer.", ".")


def _lora_layers(lm: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    for name, module in lm.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "lora_A") and ADAPTER in module.lora_A:
            yield name, module


def base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of the base model (LoRA excluded, tied weights once), by transformers' name."""
    out: dict[str, torch.Tensor] = {}
    for name, p in causal_lm(model).named_parameters():  # tied weights are listed once
        clean = _clean(name)
        if clean is not None:
            out[clean] = p.detach()
    return out


def merged_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights a LoRA adapter changes, merged: W + scale * B @ A (peft's own delta)."""
    with torch.no_grad():
        for name, module in _lora_layers(causal_lm(model)):
            delta = module.get_delta_weight(ADAPTER)
            yield f"{name}.weight", (module.base_layer.weight + delta).detach()


def full_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every weight (full fine-tuning: all of them train)."""
    yield from base_weights(model).items()


def fingerprint(model: torch.nn.Module) -> tuple:
    """Changes whenever a trainable weight changes in place (optimizer steps, loads) or is replaced.

    torch counts in-place writes per tensor (`_version`); reading it costs nothing, so an engine
    can sync before every rollout and skip the push when nothing moved since the last one.
    """
    return tuple((id(p), p._version) for p in model.parameters() if p.requires_grad)


def export_base(model: torch.nn.Module, path: str) -> str:
    """A folder vLLM can load: config.json and model.safetensors of the base weights (no tokenizer:
    the engine takes token ids). Returns `path`."""
    from safetensors.torch import save_file

    lm = causal_lm(model)
    os.makedirs(path, exist_ok=True)
    config = lm.config.to_dict()
    config["architectures"] = [type(lm).__name__]
    config.pop("_name_or_path", None)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    tensors = {k: v.contiguous().clone() for k, v in base_weights(model).items()}
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return path


def save_adapter(model: torch.nn.Module, path: str) -> str:
    """The LoRA adapter alone (adapter_config.json + adapter_model.safetensors), as peft saves it."""
    model.save_pretrained(path, selected_adapters=[ADAPTER])
    return path


@contextmanager
def preserved_rng(cuda: bool | None = None) -> Iterator[None]:
    """vLLM seeds the caller's global generators (random, numpy, torch) and sets torch's thread
    count when it starts a worker: whatever it does inside, the run's streams and threads come
    out as they went in."""
    import numpy as np

    cuda = torch.cuda.is_available() if cuda is None else cuda
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    gpus = torch.cuda.get_rng_state_all() if cuda and torch.cuda.is_initialized() else None
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads  # vLLM's CPU worker replaces the setter
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if gpus is not None:
            torch.cuda.set_rng_state_all(gpus)
        torch.set_num_threads = set_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
