"""Checkpoints of the trained weights (peft adapter or full model) in the run directory.

Written to a temporary directory and renamed into place, so a crash during a save never
leaves a half-written `step_N`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any


def save_checkpoint(run_dir: str, step: int, model, tokenizer, state: dict[str, Any]) -> str:
    root = os.path.join(run_dir, "checkpoints")
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"step_{step}")
    tmp = tempfile.mkdtemp(prefix=f".step_{step}.", dir=root)
    model.save_pretrained(tmp)  # peft: adapter_config.json + adapter_model.safetensors
    tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
        json.dump(state, f, indent=2, default=str)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
