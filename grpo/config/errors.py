"""One-line explanations of bad configurations.

Hydra and OmegaConf report a bad key over several lines with stack traces; a user needs one
line that names the key, the value and what is allowed. `explain` turns their exceptions
(and ours) into that line.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A value breaks a rule: names the key, the value and the rule in one line."""

    def __init__(self, key: str, value: Any, rule: str):
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"{key}={value!r}: {rule}")


def _allowed_keys(object_type: Any) -> list[str]:
    if dataclasses.is_dataclass(object_type):
        return [f.name for f in dataclasses.fields(object_type)]
    return []


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def explain(exc: BaseException) -> str:
    """The one line a user needs for a composition or validation failure."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    for cause in _causes(exc):
        if isinstance(cause, ConfigError):
            return str(cause)
        if isinstance(cause, MissingConfigException):
            options = ", ".join(cause.options or []) or "none"
            group = cause.config_name.rsplit("/", 1)[0] if cause.config_name and "/" in cause.config_name else "the config tree"
            name = (cause.config_name or "").rsplit("/", 1)[-1]
            return f"no config '{name}' in group '{group}' (available: {options})"
        if isinstance(cause, ConfigKeyError) and getattr(cause, "full_key", None):
            key = cause.full_key
            parent = key.rsplit(".", 1)[0] if "." in key else "the root config"
            allowed = _allowed_keys(getattr(cause, "object_type", None))
            hint = f" ({parent} has: {', '.join(allowed)})" if allowed else ""
            return f"unknown key '{key}'{hint}: check the spelling, or see conf/ for the keys of each group"
        if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
            first = str(cause.msg).splitlines()[0] if getattr(cause, "msg", None) else str(cause).splitlines()[0]
            return f"{cause.full_key}: {first}"
        if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            first = str(getattr(cause, "msg", cause)).splitlines()[0]
            return f"{cause.full_key}: {first}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__
