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


def _allowed_keys(parent_path: str) -> list[str]:
    """Field names of the schema node at `parent_path` ("" is the root)."""
    import typing

    from grpo.config.schema import RunConfig

    node: Any = RunConfig
    for part in filter(None, parent_path.split(".")):
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        node = hints.get(part)
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def explain(exc: BaseException) -> str:
    """The one line a user needs for a composition or validation failure."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    for cause in _causes(exc):
        if isinstance(cause, ConfigError):
            return str(cause)
        if isinstance(cause, MissingConfigException):
            options = ", ".join(cause.options or []) or "none"
            missing = getattr(cause, "missing_cfg_file", None) or ""
            group, _, name = missing.rpartition("/")
            return f"no config '{name}' in group '{group or 'conf'}' (available: {options})"
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
            key = cause.full_key
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            allowed = _allowed_keys(parent)
            if not allowed and parent:  # a mapping (weights, domain_ratios): new keys need Hydra's '+'
                name = key.rsplit(".", 1)[-1]
                return f"'{parent}' has no key '{name}': add a new key to a mapping with a leading '+' (+{key}=VALUE)"
            hint = f" ({parent or 'the root config'} has: {', '.join(allowed)})" if allowed else ""
            return f"unknown key '{key}'{hint}: check the spelling, or see conf/ for the keys of each group"
        if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
            first = str(cause.msg).splitlines()[0] if getattr(cause, "msg", None) else str(cause).splitlines()[0]
            return f"{cause.full_key}: {first}"
        if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            first = str(getattr(cause, "msg", cause)).splitlines()[0]
            return f"{cause.full_key}: {first}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__
