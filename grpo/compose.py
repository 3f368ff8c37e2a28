"""Composition outside `@hydra.main`: the same tree, schema and checks that `grpo.run` uses.

`grpo.diff`, the tests and the pre-flight check of `grpo.run` compose through here, so a
composition means the same thing everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from grpo.config.derived import Derived, derive
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


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's own config: a copy without the `hydra` node, still typed by the schema."""
    if "hydra" not in cfg:
        return cfg
    out = cfg.copy()
    with open_dict(out):
        out.pop("hydra")
    return out


def finish(cfg: DictConfig, choices: dict) -> Composition:
    """Typed config + derived values + range checks (raises ConfigError)."""
    from grpo.checks import check
    from grpo.tasks.registry import domains_of

    raw = without_hydra(cfg)
    run_cfg: RunConfig = OmegaConf.to_object(raw)  # type: ignore[assignment]
    derived = derive(run_cfg, tag_from_choices(choices))
    check(run_cfg, grpo_steps=derived.grpo_steps, warmup_steps=derived.warmup_steps, domains_of=domains_of)
    return Composition(cfg=run_cfg, raw=raw, choices=dict(choices), derived=derived)


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
    return finish(cfg, choices)
