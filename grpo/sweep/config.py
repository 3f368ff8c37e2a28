"""Structured configs of the Optuna sweeper, registered in Hydra's ConfigStore.

Groups (the same names as hydra-optuna-sweeper, so users' files work unchanged)::

    hydra/sweeper:          optuna
    hydra/sweeper/sampler:  tpe (default) | random | grid | cmaes | nsgaii | qmc | gp
                            (motpe: a one-line error naming tpe, its replacement since Optuna 4.0)
    hydra/sweeper/pruner:   none (default) | median | successive_halving | hyperband

(``hydra/launcher=submitit_local|submitit_slurm`` presets: launchers.py.)

Registration happens when ``hydra_plugins.grpo_optuna_sweeper`` is imported, which Hydra
does for every app at start-up; so this module imports nothing but dataclasses and Hydra's
ConfigStore (no optuna, no mlflow). Sampler and pruner fields mirror the Optuna >= 4
constructors; fields left at ``None`` mean "Optuna's default".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

SWEEPER_TARGET = "hydra_plugins.grpo_optuna_sweeper.OptunaSweeper"

# Used when `storage` is null. `hydra.runtime.cwd` is the directory the command was started
# from (absolute), so the study lands in ./outputs/optuna.db next to the MLflow store.
DEFAULT_STORAGE = "sqlite:///${hydra.runtime.cwd}/outputs/optuna.db"


# --------------------------------------------------------------------------- samplers
@dataclass
class SamplerConfig:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.TPESampler.html"""

    _target_: str = "optuna.samplers.TPESampler"
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    group: bool = False
    warn_independent_sampling: bool | None = None
    constant_liar: bool = True


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class GridSamplerConfig(SamplerConfig):
    """The grid is built at run time from `params` (choice / stepped range only); n_trials is
    capped at the grid size."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    independent_sampler: Any | None = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: str | None = None
    popsize: int | None = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    source_trials: Any | None = None


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Any | None = None


@dataclass
class QMCSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any | None = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.GPSampler"
    independent_sampler: Any | None = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    warn_independent_sampling: bool = True


# --------------------------------------------------------------------------- pruners
@dataclass
class PrunerConfig:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class NopPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


# --------------------------------------------------------------------------- sweeper
@dataclass
class OptunaSweeperConf:
    """`hydra.sweeper` when `hydra/sweeper=optuna`. See grpo/sweep/sweeper.py for semantics."""

    _target_: str = SWEEPER_TARGET
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "none"}])

    sampler: Any = None
    # "minimize" | "maximize" | a list of them (multi-objective; no pruning then)
    direction: Any = "minimize"
    # null: "<job name>" or "<job name>-<sweep choice>" (e.g. "run-rce_grpo"), so re-running
    # the same command resumes the same study
    study_name: str | None = None
    # any Optuna RDB URL; null means DEFAULT_STORAGE
    storage: str | None = DEFAULT_STORAGE
    # the study is run until it holds n_trials finished (COMPLETE/PRUNED/FAIL) trials
    n_trials: int = 20
    # trials per batch handed to the launcher (run at once by a parallel launcher)
    n_jobs: int = 1
    # stop when failed trials exceed this fraction of the trials this invocation plans to run
    max_failure_rate: float = 0.0
    # key -> Hydra sweep syntax (choice/range/interval/tag/shuffle) or a fixed value
    params: dict[str, Any] | None = None
    # dotpath of a callable(cfg, trial) that suggests more params with trial.suggest_*
    custom_search_space: str | None = None

    # --- additions over hydra-optuna-sweeper
    pruner: Any = None
    # resume the study named study_name if it exists in storage
    load_if_exists: bool = True
    # heartbeats off: on start, mark trials left RUNNING by a killed sweep as FAIL and re-queue
    # their params (one sweep process per study); with heartbeats, only stale trials are
    fail_stale_trials: bool = True
    # SQLite busy timeout / database connect timeout (seconds), sweeper and trials alike
    storage_timeout: float = 30.0
    # seconds between heartbeats of a running trial; null: 60 for a database server
    # (several workers), off for SQLite (one process); 0: off
    heartbeat_interval: int | None = None
    # a RUNNING trial without a heartbeat for this long (s) is failed and retried; null: 2x interval
    grace_period: int | None = None
    # how often a trial whose worker stopped is queued again (null: no limit)
    max_retry: int | None = 3
    # the metric each direction optimises (multi-objective: the job returns their values,
    # e.g. [val/accuracy, time/total]); stored in the study as Optuna's metric names
    metric_names: list[str] | None = None
    # removed in hydra-optuna-sweeper 1.4; kept only to give a clear error
    search_space: dict[str, Any] | None = None


SAMPLERS: dict[str, type] = {
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
    "grid": GridSamplerConfig,
    "cmaes": CmaEsSamplerConfig,
    "nsgaii": NSGAIISamplerConfig,
    "qmc": QMCSamplerConfig,
    "gp": GPSamplerConfig,
}

# hydra-optuna-sweeper's `motpe`: Optuna 4.0 removed MOTPESampler. A plain mapping, not a typed
# config, so that whatever sampler settings a sweep file sets still compose, with MOTPE's own
# fields for the command line; the sweeper then stops with one line naming `tpe`
# (algorithms.check_sampler).
_MOTPE_FIELDS = ("seed", "consider_prior", "prior_weight", "consider_magic_clip", "consider_endpoints")
REMOVED_SAMPLER_NODES: dict[str, dict] = {
    "motpe": {
        "_target_": "grpo.sweep.algorithms.removed_sampler",
        "_partial_": True,
        "name": "motpe",
        **dict.fromkeys((*_MOTPE_FIELDS, "n_startup_trials", "n_ehvi_candidates")),
    },
}

PRUNERS: dict[str, type] = {
    "none": NopPrunerConfig,
    "median": MedianPrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "hyperband": HyperbandPrunerConfig,
}

_PROVIDER = "grpo_optuna_sweeper"


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider=_PROVIDER)
    for name, node in {**SAMPLERS, **REMOVED_SAMPLER_NODES}.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider=_PROVIDER)
    for name, node in PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider=_PROVIDER)
