"""Optimizer and LR schedule of one stage (each stage starts its own, with its own LR)."""

from __future__ import annotations

import functools

import torch

from grpo.config.schema import OptimConfig
from grpo.schedules import lr_multiplier


def build_optimizer(params, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    trainable = [p for p in params if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_scheduler(optimizer, *, total_steps: int, warmup_steps: int, decay: str, min_ratio: float):
    schedule = functools.partial(
        lr_multiplier, total_steps=total_steps, warmup_steps=warmup_steps, decay=decay, min_ratio=min_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
