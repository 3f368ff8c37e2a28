"""The run's optimizer and LR schedule (one per stage: each stage starts its own, with its own LR)."""

from __future__ import annotations

import functools

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


def build_scheduler(optimizer, *, total_steps: int, warmup_steps: int, decay: str, min_ratio: float):
    schedule = functools.partial(
        lr_multiplier, total_steps=total_steps, warmup_steps=warmup_steps, decay=decay, min_ratio=min_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
