"""Checkpoints: weights in the standard format plus everything needed to continue exactly.

A checkpoint `<output_dir>/checkpoints/step_N/` holds
  adapter_model.safetensors + adapter_config.json   (peft; or the full model for `lora=none`)
  tokenizer files
  trainer_state.json   step, stage, MLflow run id, best validation, early stopping, config
  training_state.pt    optimizer (data parallel), LR schedule, RNG states (python, numpy, torch), data order
  sharded/             trainer.parallel=fsdp: torch.distributed.checkpoint shards of the trained
                       weights and the optimizer state, loadable on any number of processes
It is written into a temporary directory and renamed into place, and `trainer_state.json` is
the last file written: a directory without it is never used, so a crash during a save leaves
the previous checkpoint as the latest.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from typing import Any

import numpy as np
import torch

from grpo.config.errors import ConfigError

STATE_FILE = "trainer_state.json"
TRAINING_FILE = "training_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")

# Keys (prefixes of flattened keys) that may change when a run is resumed: budgets, cadences, tracking
# and output places, and how the same servers are reached.
RESUMABLE_CHANGES = (
    "trainer.max_steps",
    "trainer.resume",
    "trainer.output_dir",
    "trainer.save_every",
    "trainer.save_limit",
    "trainer.threads",
    "trainer.max_bad_steps",
    "eval.",
    "logger.",
    "paths.",
    "optuna_trial",
    # where and how the same executor LLM is reached (not what it is asked: model, temperature, max_tokens)
    "reward.executor.base_url",
    "reward.executor.api_key_env",
    "reward.executor.timeout",
    "reward.executor.max_retries",
    "reward.executor.max_concurrency",
    "reward.executor.cache",
    "reward.executor.cache_path",
    "reward.executor.price_per_million_",  # what it costs: bookkeeping only
    # where and how the same vLLM server is reached (rollout.engine=vllm_server)
    "rollout.server_url",
    "rollout.server_timeout",
    "rollout.server_retries",
    # where sharded state lives and when it is gathered: the same numbers (a resume reshards anyway)
    "trainer.fsdp.",
    "trainer.offload.",
    "trainer.ref.",
)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def staging_dir(root: str, step: int) -> str:
    """Where step_`step` is written before it is renamed into place: one path every process agrees on
    (sharded checkpoints are written by all of them)."""
    return os.path.join(root, f".step_{step}.staging")


def reset_dir(path: str) -> None:
    """An empty directory at `path` (what a crash left there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def save_checkpoint(
    root: str,
    step: int,
    model,
    tokenizer,
    state: dict[str, Any],
    training: dict[str, Any],
    staging: str | None = None,
) -> str:
    """Write step_`step` atomically; returns its path. `staging`: a directory the other processes
    already wrote their shards into (grpo/parallel/), renamed into place with the rest."""
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"step_{step}")
    tmp = staging or tempfile.mkdtemp(prefix=f".step_{step}.", dir=root)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(training, os.path.join(tmp, TRAINING_FILE))
    _fault_point("save", step)
    with open(os.path.join(tmp, STATE_FILE), "w") as f:  # last: marks the directory complete
        json.dump(state, f, indent=2, default=str)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _fault_point(where: str, step: int) -> None:
    """Fault injection for the crash tests: GRPO_FAULT=save:N dies mid-save at step N."""
    if os.environ.get("GRPO_FAULT") == f"{where}:{step}":
        os._exit(137)


def complete_checkpoints(root: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint under `root`, oldest first."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        if match and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: str) -> str | None:
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def read_state(path: str, key: str = "trainer.resume") -> dict[str, Any]:
    state_file = os.path.join(path, STATE_FILE)
    if not os.path.isfile(state_file):
        raise ConfigError(key, path, f"not a complete checkpoint (no {STATE_FILE})")
    with open(state_file) as f:
        return json.load(f)


def read_init_from(path: str) -> tuple[str, dict[str, Any]]:
    """`trainer.init_from`: (the checkpoint, its state). A checkpoint directory, or a run's output
    directory (its latest complete checkpoint); anything else is one line."""
    if not os.path.isdir(path):
        raise ConfigError(
            "trainer.init_from",
            path,
            "no such checkpoint directory (give a checkpoints/step_N of an earlier run, or its run directory)",
        )
    if not os.path.isfile(os.path.join(path, STATE_FILE)):
        path = latest_checkpoint(os.path.join(path, "checkpoints")) or path
    return path, read_state(path, "trainer.init_from")


def load_training(path: str) -> dict[str, Any]:
    return torch.load(os.path.join(path, TRAINING_FILE), weights_only=False)


WEIGHT_FILES = {True: "adapter_model.safetensors", False: "model.safetensors"}  # lora enabled -> file


def check_adapter_base(path: str, state: dict[str, Any], model_init_seed: int) -> None:
    """A LoRA adapter fits only the base weights it was trained on: for the tiny model, its init.
    (A checkpoint without an adapter is `load_weights`'s to refuse.)"""
    if not os.path.isfile(os.path.join(path, WEIGHT_FILES[True])):
        return
    saved = state.get("seeds", {}).get("model_init_seed")
    if saved is not None and saved != model_init_seed:
        raise ConfigError(
            "trainer.init_from",
            path,
            f"its LoRA adapter was trained on the tiny model initialised with seed {saved} and this run's init "
            f"seed is {model_init_seed}: set model.init_seed={saved}",
        )


def load_weights(model, path: str, lora: bool, key: str = "trainer.resume") -> None:
    """Load the checkpoint's trained weights into `model` (peft adapter or full model); `key` is
    the setting that named the checkpoint, for the one-line error."""
    from safetensors.torch import load_file

    if not os.path.isfile(os.path.join(path, WEIGHT_FILES[lora])):
        kinds = {True: "a LoRA adapter", False: "a full model (lora=none)"}
        saved = kinds[not lora] if os.path.isfile(os.path.join(path, WEIGHT_FILES[not lora])) else "no weights"
        raise ConfigError(key, path, f"this run needs {kinds[lora]} but the checkpoint holds {saved}")
    if lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(os.path.join(path, WEIGHT_FILES[True])))
        return
    state = load_file(os.path.join(path, WEIGHT_FILES[False]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise ConfigError(
            key,
            path,
            f"weights do not fit the model (missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})",
        )


def incompatible_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Flattened config keys whose values differ and may not change across a resume."""
    keys = set(saved) | set(current)
    return sorted(k for k in keys if saved.get(k) != current.get(k) and not k.startswith(RESUMABLE_CHANGES))


def prune_checkpoints(root: str, keep_last: int | None, keep_steps: set[int]) -> list[str]:
    """Delete all but the newest `keep_last` checkpoints and those in `keep_steps` (the best)."""
    if keep_last is None:
        return []
    found = complete_checkpoints(root)
    doomed = [(s, p) for s, p in found[:-keep_last] if s not in keep_steps]
    for _, path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return [p for _, p in doomed]


def check_writable(directory: str) -> None:
    """Fail before training, in one line, when checkpoints could not be written."""
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(
            "trainer.output_dir", directory, f"cannot write there ({exc.strerror}); choose another directory"
        ) from exc
