"""LoRA through peft, and the KL reference without a second copy of the weights."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from transformers import PreTrainedModel

from grpo.config.errors import ConfigError
from grpo.config.schema import LoraConfig


def apply_lora(model: PreTrainedModel, cfg: LoraConfig) -> torch.nn.Module:
    if not cfg.enabled:
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise ConfigError(
            "lora.target_modules", list(cfg.target_modules), f"the model has no module named {', '.join(missing)}"
        )
    peft_cfg = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def reference_context(
    policy: torch.nn.Module, lora_enabled: bool, place: Callable[[torch.nn.Module], torch.nn.Module] | None = None
) -> Callable[[], AbstractContextManager[torch.nn.Module]]:
    """A factory of contexts that yield the reference model for the KL term.

    With LoRA it is the policy itself with the adapter disabled (no second copy). For full
    fine-tuning a frozen copy is made here, once: call this only when a KL term needs it; `place`
    puts it where the policy goes (a device, or FSDP shards: grpo/parallel/).
    """
    if lora_enabled:
        # peft's disable_adapter() inspects every module's status on each call (2-5 ms per step on
        # the CPU models); the adapter layers are known up front, so switch them directly.
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in policy.modules() if isinstance(m, BaseTunerLayer)]

        @contextlib.contextmanager
        def disabled_adapter():
            for layer in layers:
                layer.enable_adapters(False)
            try:
                yield policy
            finally:
                for layer in layers:
                    layer.enable_adapters(True)

        return disabled_adapter
    frozen = copy.deepcopy(policy).eval().requires_grad_(False)
    if place is not None:
        frozen = place(frozen)

    @contextlib.contextmanager
    def frozen_copy():
        yield frozen

    return frozen_copy
