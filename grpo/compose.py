"""Composition outside `@hydra.main`: the same tree, schema and checks that `grpo.run` uses.

`grpo.diff`, the tests and the pre-flight check of `grpo.run` compose through here, so a
composition means the same thing everywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from grpo.config.derived import Derived, derive
from grpo.config.errors import ConfigError
from grpo.config.schema import RunConfig, register_schema

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TAG_GROUPS = ("experiment", "preset")  # the group whose choice names the run, in priority order


def register() -> None:
    """Schema and resolvers; safe to call more than once."""
    register_schema()
    if not OmegaConf.has_resolver("abspath"):
        OmegaConf.register_new_resolver("abspath", lambda p: os.path.abspath(p))


def tag_from_choices(choices: dict) -> str | None:
    for group in TAG_GROUPS:
        if choices.get(group):
            return str(choices[group])
    return None


@dataclass
class Composition:
    cfg: RunConfig  # typed, resolved
    raw: DictConfig  # the composed tree without the `hydra` node
    choices: dict  # group -> option chosen (model: tiny, preset: minimal, ...)
    derived: Derived
    overrides: list[str] = field(default_factory=list)  # the command line's overrides (hydra.* aside)


class UnknownKeyError(ConfigError):
    """A key the schema does not have, however it got in (a YAML file, an override, `+key=...`)."""

    def __init__(self, message: str, key: str):
        ValueError.__init__(self, message)
        self.key, self.value, self.rule = key, None, message


def _field_type(hint: typing.Any) -> typing.Any:
    """`X | None` -> X; other hints as they are."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else hint


def unknown_keys(tree: dict, schema: type = RunConfig, prefix: str = "") -> list[tuple[str, list[str]]]:
    """(dotted key, the keys its parent has) of every key of `tree` the schema lacks.

    Mapping-typed fields (`reward.weights`, `task.domain_ratios`, `logger.tags`) take any key and
    `Any` fields (`optuna_trial`) anything, so a `+key` there is legitimate."""
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    found = []
    for key, value in tree.items():
        if key not in hints:
            found.append((f"{prefix}{key}", names))
            continue
        kind = _field_type(hints[key])
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            found += unknown_keys(value, kind, f"{prefix}{key}.")
    return found


def in_mapping(key: str, schema: type = RunConfig) -> bool:
    """Whether dotted `key` lies inside a mapping-typed (or `Any`) field, where `+` may add it and `~` remove it."""
    node: typing.Any = schema
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            return True  # below a dict[...] or Any field
        hints = typing.get_type_hints(node)
        if part not in hints:
            return False
        node = _field_type(hints[part])
        if node is typing.Any or typing.get_origin(node) is dict:
            node = None
    return False


def override_value(value: typing.Any) -> str:
    """`value` in Hydra's override grammar, read back as the same value (strings always quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    # Hydra reads backslashes as escapes only before a quote or the closing quote: double those runs.
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value))
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"  # a literal ${, not an interpolation


def check_keys(raw: DictConfig) -> None:
    """Refuse a composition that holds a key the schema lacks: one line naming it and its siblings."""
    found = unknown_keys(OmegaConf.to_container(raw, resolve=False))
    if not found:
        return
    key, allowed = found[0]
    parent, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean '{parent + '.' if parent else ''}{close[0]}'? " if close else ""
    more = f" (and {len(found) - 1} more: {', '.join(k for k, _ in found[1:4])})" if len(found) > 1 else ""
    raise UnknownKeyError(
        f"unknown key '{key}'{more} ({hint}{parent or 'the root config'} has: {', '.join(allowed)}): check the "
        "spelling, or see conf/ for the keys of each group ('+' adds keys to mappings only)",
        key,
    )


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's own config: a copy without the `hydra` node, still typed by the schema."""
    if "hydra" not in cfg:
        return cfg
    out = cfg.copy()
    with open_dict(out):
        out.pop("hydra")
    return out


def finish(cfg: DictConfig, choices: dict, overrides: Sequence[str] = ()) -> Composition:
    """Typed config + derived values + range checks (raises ConfigError); unknown keys are refused."""
    from grpo.checks import check
    from grpo.tasks.registry import domains_of

    raw = without_hydra(cfg)
    check_keys(raw)
    run_cfg: RunConfig = OmegaConf.to_object(raw)  # type: ignore[assignment]
    derived = derive(run_cfg, tag_from_choices(choices))
    check(run_cfg, grpo_steps=derived.grpo_steps, warmup_steps=derived.warmup_steps, domains_of=domains_of)
    return Composition(cfg=run_cfg, raw=raw, choices=dict(choices), derived=derived, overrides=list(overrides))


def tracking_uri_of(overrides: Sequence[str]) -> str:
    """The store these overrides log to: the last `logger.tracking_uri=` among them, else the default's."""
    for o in reversed(overrides):
        if o.lstrip("+").split("=", 1)[0] == "logger.tracking_uri" and "=" in o:
            return o.split("=", 1)[1].strip("'\"")
    return compose([]).cfg.logger.tracking_uri


def compose(overrides: Sequence[str] = ()) -> Composition:
    """Compose `conf/config.yaml` with overrides, exactly as `python -m grpo.run` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices) if "hydra" in cfg else {}
    return finish(cfg, choices, [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))])
