"""FSDP2: each process holds 1/N of the parameters, gradients and optimizer state (`fully_shard`).

Every decoder layer is one FSDP unit and the root holds the rest (embeddings, final norm, head):
a layer's parameters are all-gathered just before its forward and freed after it
(`trainer.fsdp.enable_full_shard`), gradients are reduce-scattered, and the optimizer steps on
its own shard (DTensors). The same code runs on GPUs (NCCL) and on CPUs (gloo).

Sampling needs whole weights, and a rollout on sharded modules would need every process to decode
in lockstep. So over several processes the strategy keeps one whole, unsharded copy for the rollout
engine (what a vLLM engine holds too) and refreshes it after every update by gathering the trained
parameters once (on one process the policy is whole and is its own copy):
with LoRA only the adapter moves, with `lora=none` the whole model. The same copy is what a
checkpoint exports in the standard format (peft's adapter, or the full model), so `grpo.eval`,
`trainer.init_from` and peft load it in one process. Optimizer state and the trained parameters
are written as torch.distributed.checkpoint shards, which load back on any number of processes.
"""

from __future__ import annotations

import copy
import os

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions

from grpo.config.schema import TrainerConfig

SHARDS_DIR = "sharded"  # in a checkpoint: torch.distributed.checkpoint files of model and optimizer


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules transformers itself never splits across devices (`_no_split_modules`): one FSDP unit each."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def _unwrap_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the real one


def move_optimizer_state(optimizer, device: torch.device | str) -> None:
    """Every tensor of the optimizer's state to `device` (AdamW's moments; the step count stays put)."""
    for state in _unwrap_optimizer(optimizer).state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device, non_blocking=True)


class FullyShardedDataParallel:
    name = "fsdp"

    def __init__(self, accelerator, trainer: TrainerConfig, *, lora: bool):
        self.accelerator, self.cfg, self.lora = accelerator, trainer, lora
        self.sharded = accelerator.num_processes > 1  # one process: nothing to split, the same checkpoints
        self.sampler: torch.nn.Module | None = None
        self.idle: list = []  # what runs after each update: the parameter offload, when asked for
        # Offloading moves state between the accelerator and the CPU; on a CPU device it has nowhere to go.
        self.offloads = accelerator.device.type != "cpu"

    # ------------------------------------------------------------------ build
    def _shard_options(self, offload: bool) -> dict:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

        options = {"reshard_after_forward": self.cfg.fsdp.enable_full_shard}
        if offload:
            options["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
        if self.cfg.mixed_precision == "bf16":  # bf16 compute, gradients reduced in fp32
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        return options

    def _shard(self, model: torch.nn.Module, offload: bool) -> torch.nn.Module:
        from torch.distributed.fsdp import fully_shard

        options = self._shard_options(offload)
        for layer in decoder_layers(model):
            fully_shard(layer, **options)
        return fully_shard(model, **options)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.cfg.fsdp.enable_cpu_offload:
            model.to(self.accelerator.device)
        if not self.sharded:  # one process: the policy is whole, it is its own sampler
            self.sampler = model
            return model
        self.sampler = copy.deepcopy(model).to(self.accelerator.device)
        whole = self.sampler.state_dict() if self.accelerator.is_main_process else {}
        policy = self._shard(model, self.cfg.fsdp.enable_cpu_offload)
        if self.cfg.fsdp.enable_rank0_init:  # every shard from rank 0's weights
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            set_model_state_dict(
                policy, whole, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
            )
            self._refresh_sampler(policy)
        if self.cfg.offload.offload_params and self.offloads:
            self._offload_params_while_idle(policy)
        return policy

    def prepare_frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        offload = self.cfg.ref.fsdp.enable_cpu_offload
        if not offload:
            module.to(self.accelerator.device)
        return self._shard(module, offload) if self.sharded else module

    # ------------------------------------------------------------------ train
    def sampler_model(self, policy: torch.nn.Module) -> torch.nn.Module:
        # the policy's mode (dropout): what data parallel's sampler, the policy itself, would be in
        return self.sampler.train(policy.training)

    def _trained_options(self, **kw) -> StateDictOptions:
        return StateDictOptions(ignore_frozen_params=self.lora, **kw)  # LoRA: the adapter only

    def _refresh_sampler(self, policy: torch.nn.Module) -> None:
        """Gather the trained parameters once (a collective) into the whole copy."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        whole = get_model_state_dict(policy, options=self._trained_options(full_state_dict=True))
        self.sampler.load_state_dict(whole, strict=False)

    def clip_grad_norm(self, policy: torch.nn.Module, max_norm: float) -> float:
        params = [p for p in policy.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # over DTensor shards: the global norm
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def after_update(self, policy: torch.nn.Module) -> None:
        if self.sharded:
            self._refresh_sampler(policy)
        for action in self.idle:
            action()

    def watch_optimizer(self, optimizer) -> None:
        """trainer.offload.offload_optimizer: the state waits on the CPU between updates."""
        if not (self.cfg.offload.offload_optimizer and self.offloads):
            return
        device = self.accelerator.device
        real = _unwrap_optimizer(optimizer)
        real.register_step_pre_hook(lambda opt, args, kwargs: move_optimizer_state(opt, device))
        real.register_step_post_hook(lambda opt, args, kwargs: move_optimizer_state(opt, "cpu"))

    def _offload_params_while_idle(self, policy: torch.nn.Module) -> None:
        """trainer.offload.offload_params: shards go to the CPU after each update (the rollout runs on
        the whole copy) and come back before the next forward."""
        device = self.accelerator.device

        def back(module, args):
            if next(module.parameters()).device != device:
                module.to(device)

        policy.register_forward_pre_hook(back)
        self.idle.append(lambda: policy.to("cpu"))

    # ------------------------------------------------------------------ checkpoints
    def optimizer_state(self, optimizer) -> dict | None:
        return None  # in the shards

    def save_shards(self, directory: str, policy: torch.nn.Module, optimizer) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        options = self._trained_options()
        state = {
            "model": get_model_state_dict(policy, options=options),
            "optim": get_optimizer_state_dict(policy, _unwrap_optimizer(optimizer), options=options),
        }
        dcp.save(state, checkpoint_id=os.path.join(directory, SHARDS_DIR))

    def load(self, path: str, policy: torch.nn.Module, optimizer, training: dict) -> None:
        """Reshards on load: the checkpoint may come from another number of processes."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            get_optimizer_state_dict,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        real, options = _unwrap_optimizer(optimizer), self._trained_options()
        state = {
            "model": get_model_state_dict(policy, options=options),
            "optim": get_optimizer_state_dict(policy, real, options=options),  # initialised: DCP fills it in place
        }
        dcp.load(state, checkpoint_id=os.path.join(path, SHARDS_DIR))
        set_model_state_dict(policy, state["model"], options=self._trained_options(strict=False))
        set_optimizer_state_dict(policy, real, state["optim"], options=options)
        self.after_update(policy)

    def describe(self) -> str:
        f, o = self.cfg.fsdp, self.cfg.offload
        parts = [f"fsdp over {self.accelerator.num_processes} process(es)"]
        parts.append("full shard" if f.enable_full_shard else "shard grad+optim (params kept after forward)")
        if f.enable_cpu_offload:
            parts.append("params/grads/optimizer on CPU")
        if (o.offload_params or o.offload_optimizer) and not self.offloads:
            parts.append("trainer.offload.*: nothing to move on a CPU device")
        return ", ".join(parts)
