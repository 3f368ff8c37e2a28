"""How the policy is spread over the processes of a launch: the `ParallelStrategy` seam.

`trainer.parallel` names one: `ddp` (grpo/parallel/data_parallel.py: every process holds the whole
model, accelerate's DistributedDataParallel averages gradients) or `fsdp` (grpo/parallel/fsdp.py:
FSDP2's `fully_shard` splits parameters, gradients and optimizer state across processes, on GPUs
over NCCL and on CPUs over gloo, one code path). The run's other parts only call the methods of
`ParallelStrategy`; a new strategy (ZeRO, tensor parallel) is another class here.
"""

from __future__ import annotations

from typing import Protocol

import torch


class ParallelStrategy(Protocol):
    name: str

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The training policy, placed and wrapped (or sharded) for this launch."""

    def prepare_frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        """A frozen copy (the KL reference of a full fine-tune), placed like the policy."""

    def sampler_model(self, policy: torch.nn.Module) -> torch.nn.Module:
        """The whole model a rollout engine samples from (never a wrapper, never a shard)."""

    def clip_grad_norm(self, policy: torch.nn.Module, max_norm: float) -> float:
        """Clip the gradients of the whole model to `max_norm`; returns their total norm."""

    def after_update(self, policy: torch.nn.Module) -> None:
        """The optimizer stepped (on every process): whatever mirrors the weights catches up."""

    def watch_optimizer(self, optimizer) -> None:
        """The run's one optimizer was built: hook what moves its state (offloading), if anything."""

    def optimizer_state(self, optimizer) -> dict | None:
        """The optimizer's state for training_state.pt, or None when `save_shards` holds it."""

    def save_shards(self, directory: str, policy: torch.nn.Module, optimizer) -> None:
        """Every process: write what is sharded into a checkpoint being written in `directory`."""

    def load(self, path: str, policy: torch.nn.Module, optimizer, training: dict) -> None:
        """Every process: restore the optimizer (and sharded weights) of checkpoint `path`."""

    def describe(self) -> str:
        """One line for the run's header."""


def build_strategy(trainer, accelerator, *, lora: bool) -> ParallelStrategy:
    """The strategy `trainer.parallel` names, on this launch's processes."""
    if trainer.parallel == "fsdp":
        from grpo.parallel.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(accelerator, trainer, lora=lora)
    from grpo.parallel.data_parallel import DataParallel

    return DataParallel(accelerator)
