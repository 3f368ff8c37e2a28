"""The primitives every group's rules are written with: each raises one `ConfigError` line."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from grpo.config.errors import ConfigError


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(key, value, rule)


def one_of(key: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    require(value in allowed, key, value, f"must be one of {', '.join(allowed)}")


def positive(key: str, value: float) -> None:
    require(value is not None and value > 0 and math.isfinite(value), key, value, "must be > 0")


def at_least(key: str, value: float, low: float, why: str = "") -> None:
    require(value is not None and value >= low, key, value, f"must be >= {low}{why}")
