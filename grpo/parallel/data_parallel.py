"""Data parallel: every process holds the whole model; accelerate's DDP averages the gradients."""

from __future__ import annotations

import torch


class DataParallel:
    name = "ddp"

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.prepare(model)

    def prepare_frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.accelerator.device)

    def sampler_model(self, policy: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(policy)  # DDP wrappers have no generate()

    def clip_grad_norm(self, policy: torch.nn.Module, max_norm: float) -> float:
        return float(self.accelerator.clip_grad_norm_(policy.parameters(), max_norm))

    def after_update(self, policy: torch.nn.Module) -> None:
        return None  # the sampler is the policy itself

    def watch_optimizer(self, optimizer) -> None:
        return None  # no offloading

    def optimizer_state(self, optimizer) -> dict | None:
        return optimizer.state_dict()

    def save_shards(self, directory: str, policy: torch.nn.Module, optimizer) -> None:
        return None  # nothing is sharded: rank 0 writes the weights and training_state.pt

    def load(self, path: str, policy: torch.nn.Module, optimizer, training: dict) -> None:
        optimizer.load_state_dict(training["optimizer"])  # the weights were loaded before prepare()

    def describe(self) -> str:
        n = self.accelerator.num_processes
        return "ddp (whole model on each process)" if n > 1 else "single process"
