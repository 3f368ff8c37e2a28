"""One flattening of a composed config into dotted keys, shared by every reader of it.

The MLflow params of a run, the config a checkpoint records for its resume check, and the rows of
`grpo.diff` all come from `flat_config`, so they agree key for key. Lists and empty mappings are
leaves: one value each, as MLflow logs them (an empty `reward.custom` is `{}`, not absent).
"""

from __future__ import annotations

from typing import Any


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys of a nested mapping; lists and empty mappings are leaves."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def flat_config(raw) -> dict[str, Any]:
    """The resolved composition (an OmegaConf node without `hydra`) as dotted keys."""
    from omegaconf import OmegaConf

    return flatten(OmegaConf.to_container(raw, resolve=True))
