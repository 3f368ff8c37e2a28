"""Schedules as pure functions of the (0-based) step: learning-rate multiplier, linear
temperature decay, early/late top-k. No torch: the loop multiplies the base values itself.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

LR_DECAYS = ("constant", "linear", "cosine")


def lr_multiplier(
    step: int, *, total_steps: int, warmup_steps: int, decay: str = "cosine", min_ratio: float = 0.0
) -> float:
    """Factor in [min_ratio, 1] to multiply the base learning rate by at optimizer step `step`.

    Args:
        step: 0-based optimizer step (the first update is step 0).
        total_steps: number of optimizer steps in the stage.
        warmup_steps: linear warm-up length (0 = none).
        decay: "constant", "linear" or "cosine" after the warm-up.
        min_ratio: floor reached at total_steps, as a fraction of the base rate.
    """
    if decay not in LR_DECAYS:
        raise ValueError(f"unknown lr decay {decay!r}; choose one of {LR_DECAYS}")
    if warmup_steps < 0 or total_steps < 0:
        raise ValueError(f"steps must be >= 0, got {total_steps=} {warmup_steps=}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    # 1) linear warm-up: (step+1)/warmup, so the first update already moves and the last warm-up step hits 1
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    # 2) constant: stay at the base rate
    if decay == "constant":
        return 1.0
    # 3) past total_steps (or no decay phase at all): stay at the floor
    decay_steps = total_steps - warmup_steps
    if step >= total_steps or decay_steps <= 0:
        return min_ratio
    # 4) in between: decay from 1 at the end of warm-up to min_ratio at total_steps
    progress = (step - warmup_steps) / decay_steps  # in [0, 1)
    shape = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


def warmup_steps_from_ratio(total_steps: int, ratio: float) -> int:
    """Warm-up length as a fraction of the stage, rounded to the nearest step, halves up.

    500*0.2 = 100, 10*0.2 = 2, 15*0.2 = 3, 1*0.2 -> 0, 5*0.1 -> 1 (0.5 rounds up). The product is
    taken in decimal on the ratio as written, so 15*0.2 is exactly 3 (binary floats give
    3.0000000000000004, which would break a ceil and could break other roundings).
    """
    if total_steps < 0 or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"need total_steps >= 0 and ratio in [0, 1], got {total_steps=} {ratio=}")
    exact = Decimal(repr(float(ratio))) * total_steps
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def linear_schedule(step: int, *, initial: float, final: float, decay_steps: int) -> float:
    """Linear from `initial` at step 0 to `final` at `decay_steps`, then `final` (seed 003's
    temperature schedule). decay_steps <= 0 means `final` from the start."""
    if decay_steps <= 0 or step >= decay_steps:
        return final
    return initial + (final - initial) * max(step, 0) / decay_steps


def step_schedule(step: int, *, early: int, late: int, switch_step: int) -> int:
    """`early` before `switch_step`, `late` from it on (seed 004's early/late top-k)."""
    return early if step < switch_step else late
