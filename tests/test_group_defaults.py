"""The default option of each group repeats grpo/config/schema.py's defaults: keep the two equal.

conf/config.yaml's defaults list picks one file per group (model: tiny, lora: default, ...); those
files restate the schema dataclass's defaults key by key, for readers of conf/. Every value such a
file sets (nested dicts walked) must equal the schema default of that key, after OmegaConf loading,
numbers compared as numbers (16 == 16.0). conf/config.yaml's own values (seed, paths, ...) are held
to RunConfig's root defaults the same way. Other options (algorithm/dapo.yaml, lora/none.yaml, ...)
are variants and are not compared.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from grpo.compose import CONF_DIR, register
from grpo.config.schema import RunConfig

# Keys whose value in the default YAML differs from the schema default on purpose, and why.
# Each entry must still differ (a stale entry fails), and must name the same place once resolved.
ALLOWED = {
    # conf/logger/mlflow.yaml: `sqlite:///${paths.outputs}/mlflow.db` follows paths.outputs, which
    # conf/config.yaml makes absolute, so a run started from any directory, and `paths.outputs=...`,
    # reach the same store. The schema's literal `sqlite:///outputs/mlflow.db` is the same file only
    # from the project root (what a RunConfig() built in Python would use).
    "logger.tracking_uri": "interpolates ${paths.outputs}; the schema's literal is relative to the cwd",
    # conf/config.yaml: `${abspath:outputs}` pins the outputs folder at start-up, so Hydra's run
    # directory, MLflow and Optuna agree on it whatever the job's working directory becomes; the
    # schema's `outputs` is that folder relative to the cwd.
    "paths.outputs": "made absolute by the ${abspath:} resolver; the schema's value is relative to the cwd",
}

MISSING = object()


def root_defaults() -> dict[str, str]:
    """{group: default option} from conf/config.yaml's defaults list."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").defaults)
    return {k: v for d in defaults if isinstance(d, dict) for k, v in d.items()}


def default_files() -> list[tuple[str, Path]]:
    """(key prefix, file) for every default option, and for conf/config.yaml's own values."""
    files = [(group, CONF_DIR / group / f"{option}.yaml") for group, option in root_defaults().items()]
    return [("", CONF_DIR / "config.yaml"), *files]


def values_of(path: Path) -> dict:
    """What the file sets, as OmegaConf loads it (interpolations left as written)."""
    cfg = OmegaConf.load(path)
    assert "# @package" not in path.read_text(), f"{path}: a default option with a package header"
    data = OmegaConf.to_container(cfg, resolve=False)
    data.pop("defaults", None)  # composition, not values
    data.pop("hydra", None)  # Hydra's own settings (conf/config.yaml), no schema key
    return data


def schema_node(prefix: str) -> Any:
    node: Any = RunConfig()
    for part in filter(None, prefix.split(".")):
        node = getattr(node, part)
    return node


def child(node: Any, key: str) -> Any:
    if dataclasses.is_dataclass(node):
        return getattr(node, key, MISSING)
    if isinstance(node, dict):
        return node.get(key, MISSING)
    return MISSING


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def same(value: Any, default: Any) -> bool:
    if is_number(value) and is_number(default):
        return float(value) == float(default)
    if isinstance(value, list) and isinstance(default, list):
        return len(value) == len(default) and all(same(a, b) for a, b in zip(value, default))
    if isinstance(value, dict) and isinstance(default, dict):
        return value.keys() == default.keys() and all(same(value[k], default[k]) for k in value)
    return type(value) is type(default) and value == default


def differences(values: dict, schema: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    """(key, YAML value, schema default) for every value the YAML sets that the schema does not."""
    out = []
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        default = child(schema, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            out += differences(value, default, name)  # a nested group: compare key by key
        elif default is MISSING or not same(value, default):
            out.append((name, value, "<not in the schema>" if default is MISSING else default))
    return out


def report(diffs) -> str:
    return "\n".join(f"  {key}: YAML {value!r} != schema default {default!r}" for key, value, default in diffs)


@pytest.mark.parametrize(
    "prefix,path", default_files(), ids=[p.relative_to(CONF_DIR).as_posix() for _, p in default_files()]
)
def test_default_option_repeats_the_schema(prefix, path):
    diffs = [d for d in differences(values_of(path), schema_node(prefix), prefix) if d[0] not in ALLOWED]
    assert not diffs, (
        f"{path.relative_to(CONF_DIR)} differs from grpo/config/schema.py (change one of the two, "
        f"or list the key in ALLOWED with the reason):\n{report(diffs)}"
    )


def test_the_defaults_compared_cover_the_groups():
    """Every group of the defaults list is compared, and each compared file sets something."""
    groups = root_defaults()
    assert {"model", "lora", "algorithm", "task", "trainer", "eval", "logger"} <= set(groups)
    compared = 0
    for prefix, path in default_files():
        assert path.is_file(), path
        compared += len(leaves(values_of(path), schema_node(prefix)))
    assert compared > 100  # the ~110 keys that restate the schema


def leaves(values: dict, schema: Any) -> list:
    out = []
    for key, value in values.items():
        default = child(schema, key)
        out += leaves(value, default) if isinstance(value, dict) and dataclasses.is_dataclass(default) else [key]
    return out


def location(value: str) -> str:
    """The folder or file a value names: sqlite URLs unwrapped, relative paths made absolute."""
    path = value.removeprefix("sqlite:///")
    return os.path.abspath(path)


def test_allowed_differences_still_differ_and_name_the_same_place():
    """Each ALLOWED key differs as written, and resolves (paths.outputs at its schema default
    `outputs`, relative to the cwd) to the place the schema default names."""
    register()  # the abspath resolver
    found = {}
    for prefix, path in default_files():
        for key, value, default in differences(values_of(path), schema_node(prefix), prefix):
            found[key] = (value, default)
    assert set(ALLOWED) <= set(found), f"stale ALLOWED entries: {sorted(set(ALLOWED) - set(found))}"
    outputs = RunConfig().paths.outputs
    for key in ALLOWED:
        value, default = found[key]
        resolved = OmegaConf.create({"paths": {"outputs": outputs}, "v": value}).v
        assert location(resolved) == location(default), (key, value, resolved, default)
