"""The run's one optimizer and its LR schedule over the stages (each stage restarts both, with its own LR)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo.config.schema import OptimConfig
from grpo.schedules import lr_multiplier


def build_optimizer(params, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """`trainer.optim.name`: adamw, adamw_fused (AdamW's fused kernel, same numbers) or sgd."""
    trainable = [p for p in params if p.requires_grad]
    if cfg.name in ("adamw", "adamw_fused"):
        fused = True if cfg.name == "adamw_fused" else None  # None: torch picks foreach or a loop
        return torch.optim.AdamW(trainable, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused)
    if cfg.name == "sgd":
        return torch.optim.SGD(trainable, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # checks.py refuses it before a run starts


@dataclass(frozen=True)
class Stage:
    """One stage's learning rate: its base value, length in optimizer updates and warm-up."""

    lr: float
    total_steps: int
    warmup_steps: int


class StagedSchedule:
    """The run's one LR schedule over its stages (RCE, then GRPO) for the run's one optimizer.

    Sharded training (FSDP, ZeRO) prepares a model with its optimizer once, so the run keeps one
    optimizer for both stages. `begin(stage)` restarts it at a stage boundary: its state (AdamW's
    moments and step count) is cleared and the stage's own schedule starts from update 0, which
    gives the numbers of a fresh optimizer and LambdaLR per stage (tests/test_staged_schedule.py).
    The schedule steps once per optimizer update, whatever the process count.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, stages: dict[str, Stage], *, decay: str, min_ratio: float):
        self.optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the real one
        self.stages, self.decay, self.min_ratio = stages, decay, min_ratio
        self.stage: str | None = None
        self.updates = 0  # optimizer updates in the current stage

    def begin(self, stage: str) -> None:
        """Enter `stage`; entering another stage than the current one restarts optimizer and schedule."""
        if stage != self.stage:
            self.stage, self.updates = stage, 0
            self.optimizer.state.clear()
        self._apply()

    def step(self) -> None:
        self.updates += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _apply(self) -> None:
        s = self.stages[self.stage]
        factor = lr_multiplier(
            self.updates,
            total_steps=s.total_steps,
            warmup_steps=s.warmup_steps,
            decay=self.decay,
            min_ratio=self.min_ratio,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = s.lr * factor

    def state_dict(self) -> dict:
        return {"stage": self.stage, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.stage, self.updates = state["stage"], state["updates"]
        self._apply()


def saved_schedule(training: dict) -> dict:
    """The schedule's state in a checkpoint's training state; a checkpoint written before the run had
    one optimizer holds its stage's LambdaLR instead (its last_epoch counts the stage's updates)."""
    if "schedule" in training:
        return training["schedule"]
    return {"stage": training["stage"], "updates": training["scheduler"]["last_epoch"]}


def run_stages(cfg, derived) -> dict[str, Stage]:
    """Each stage's LR, length and warm-up in optimizer updates (a GRPO step makes num_iterations)."""
    mu = cfg.algorithm.num_iterations
    return {
        "rce": Stage(cfg.schedule.rce_lr, derived.rce_steps, derived.rce_warmup_steps),
        "grpo": Stage(cfg.schedule.grpo_lr, derived.grpo_steps * mu, derived.warmup_steps * mu),
    }
