"""The search algorithms of a sweep: the Optuna sampler and pruner made from the sweeper's
``sampler`` and ``pruner`` settings.

Optuna (and search_space.py, which imports it) load inside the functions: the sweeper
imports this module, and Hydra imports the sweeper at every start of every app.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)

# Samplers that hydra-optuna-sweeper offered and Optuna no longer has: name -> the message.
REMOVED_SAMPLERS = {
    "motpe": (
        "hydra/sweeper/sampler=motpe: MOTPESampler was removed in Optuna 4.0; use "
        "hydra/sweeper/sampler=tpe, whose TPESampler handles multi-objective studies "
        "(direction: [maximize, minimize]) since Optuna 3.2"
    ),
}


def removed_sampler(name: str, **_: Any) -> None:
    """The target of a removed sampler's config (config.py): never called, only recognised."""
    raise ValueError(REMOVED_SAMPLERS.get(name, f"sampler {name!r} was removed from Optuna"))


def check_sampler(sampler: Any) -> None:
    """A one-line SweepError for a sampler Optuna removed (``hydra/sweeper/sampler=motpe``)."""
    from grpo.sweep.study import SweepError

    if isinstance(sampler, functools.partial) and sampler.func is removed_sampler:
        name = str(sampler.keywords.get("name", "?"))
        raise SweepError(REMOVED_SAMPLERS.get(name, f"sampler {name!r} was removed from Optuna"))
    if isinstance(sampler, (DictConfig, dict)) and str(sampler.get("_target_", "")).endswith(".removed_sampler"):
        name = str(sampler.get("name", "?"))
        raise SweepError(REMOVED_SAMPLERS.get(name, f"sampler {name!r} was removed from Optuna"))


def build_sampler(
    sampler: Any, sampler_config: dict[str, Any] | None, space: Any, seed_offset: int = 0
) -> tuple[Any, int | None]:
    """The sampler and, for a grid, its size. A seeded sampler is made afresh with seed +
    seed_offset: the sweep makes one per trial, offset by the trial's number, so that
    workers and resumed runs do not draw the same points again, and stay reproducible."""
    import optuna
    from hydra.utils import instantiate

    from grpo.sweep import search_space as ss

    cfg = sampler_config
    if isinstance(cfg, dict) and cfg.get("seed") is not None:
        sampler = instantiate({**cfg, "seed": int(cfg["seed"]) + int(seed_offset)})
    if isinstance(sampler, (DictConfig, dict)):  # hydra-core >= 1.4: not instantiated
        sampler = instantiate(sampler)
    if sampler is None:
        return optuna.samplers.TPESampler(), None
    grid_total = None
    is_grid = isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler
    if is_grid:
        grid = {k: ss.grid_choices(d, k) for k, d in space.distributions.items()}
        grid_total = ss.grid_size(space.distributions)
        sampler = sampler(search_space=grid)
    elif isinstance(sampler, optuna.samplers.GridSampler):
        grid_total = math.prod(len(v) for v in sampler._search_space.values())
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise TypeError(f"hydra.sweeper.sampler did not give an Optuna sampler: {sampler!r}")
    return sampler, grid_total


def build_pruner(
    pruner: Any, pruner_config: dict[str, Any] | None, n_objectives: int
) -> tuple[Any, dict[str, Any] | None]:
    """The pruner and the config that travels to every trial (None when there is nothing to
    prune with: Optuna cannot prune multi-objective studies)."""
    import optuna
    from hydra.utils import instantiate

    if isinstance(pruner, (DictConfig, dict)):
        pruner = instantiate(pruner)
    if pruner is None:
        pruner = optuna.pruners.NopPruner()
    if n_objectives > 1 and not isinstance(pruner, optuna.pruners.NopPruner):
        log.warning("Optuna cannot prune multi-objective studies: pruner ignored")
        return optuna.pruners.NopPruner(), None
    return pruner, pruner_config
