"""Values computed from the config, never copied into it by hand.

The seeds recomputed these by hand (warm-up 10/500*100 = 2, totals 240 / 12,000, alpha kept
equal to rank); here they follow from the settings and are printed in the run header,
logged as `derived.*` params and shown by `grpo.diff`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

from grpo.config.schema import RunConfig
from grpo.schedules import warmup_steps_from_ratio


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    """A started epoch fraction still needs its step: ceil, with float noise forgiven."""
    return max(0, math.ceil(epochs * steps_per_epoch - 1e-9))


def sub_seed(seed: int, purpose: str) -> int:
    """The seed of one use of a run's randomness (`model.init`, `data.order`), derived from `seed`.

    A hash, not an offset: seed 1's data order is not seed 2's model init, and no use starts
    from the stream that `set_seed(seed)` gives sampling. The same on every machine and process.
    """
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Derived:
    steps_per_epoch: int  # optimizer steps for one pass over the train split
    rce_steps: int
    grpo_steps: int
    rce_warmup_steps: int
    warmup_steps: int  # GRPO stage
    total_samples: int  # GRPO completions: steps x prompts per step x group size
    lora_scaling: float | None  # alpha / rank
    run_name: str
    model_init_seed: int  # model.init_seed when set, else from `seed`: the random init of `tiny`
    data_seed: int  # from `seed`: the order in which training batches walk the train split

    def as_params(self) -> dict[str, object]:
        return {f"derived.{k}": v for k, v in asdict(self).items()}


def generate_run_name(cfg: RunConfig, grpo_steps: int, rce_steps: int, tag: str | None) -> str:
    """Seed 000/001's naming, generated: grpo-500steps-4batch-6samples[-rce64][-tag]."""
    parts = [
        cfg.algorithm.name,
        f"{grpo_steps}steps",
        f"{cfg.rollout.batch_size}batch",
        f"{cfg.rollout.group_size}samples",
    ]
    if rce_steps:
        parts.append(f"rce{rce_steps}")
    if tag:
        parts.append(tag.replace("_", "-").replace("/", "-"))
    return "-".join(parts)


def short_value(value: object) -> str:
    """A searched value in a run name: 2 significant digits (0.055, 2.5e-05), ints and names as they are."""
    if isinstance(value, float):
        return f"{value:.2g}"
    return str(value)[:16]


def trial_run_name(number: int, params: dict[str, object], limit: int = 120) -> str:
    """A sweep trial's run name: `#3 kl_beta=0.21 rce_lr=0.0025 ...`, each searched key by its last
    part (the whole key where two share it), so trials differ in name where they differ in values."""
    last = [k.rsplit(".", 1)[-1] for k in params]
    parts = [f"{s if last.count(s) == 1 else k}={short_value(v)}" for (k, v), s in zip(params.items(), last)]
    name = " ".join([f"#{number}", *parts])
    return name if len(name) <= limit else name[: limit - 1] + "…"


def derive(cfg: RunConfig, tag: str | None = None) -> Derived:
    steps_per_epoch = max(1, math.ceil(cfg.task.train_size / cfg.rollout.batch_size))
    s = cfg.schedule
    rce_steps = s.rce_steps if s.rce_steps is not None else epochs_to_steps(s.rce_epochs, steps_per_epoch)
    if cfg.trainer.max_steps is not None:
        grpo_steps = cfg.trainer.max_steps
    else:
        grpo_steps = epochs_to_steps(s.grpo_epochs or 0, steps_per_epoch)
    warmup = s.warmup_steps if s.warmup_steps is not None else warmup_steps_from_ratio(grpo_steps, s.warmup_ratio)
    return Derived(
        steps_per_epoch=steps_per_epoch,
        rce_steps=rce_steps,
        grpo_steps=grpo_steps,
        rce_warmup_steps=warmup_steps_from_ratio(rce_steps, s.warmup_ratio),
        warmup_steps=warmup,
        total_samples=grpo_steps * cfg.rollout.batch_size * cfg.rollout.group_size,
        lora_scaling=(cfg.lora.alpha / cfg.lora.rank) if cfg.lora.enabled and cfg.lora.rank > 0 else None,
        run_name=cfg.logger.run_name or generate_run_name(cfg, grpo_steps, rce_steps, cfg.run_tag or tag),
        model_init_seed=cfg.model.init_seed if cfg.model.init_seed is not None else sub_seed(cfg.seed, "model.init"),
        data_seed=sub_seed(cfg.seed, "data.order"),
    )
