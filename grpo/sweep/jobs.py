"""What each job of a sweep gets: its overrides (exactly its search values plus the user's) and
the context of its trial (GRPO_OPTUNA_TRIAL, trial.py), and how the sweep's settings become
the storage's heartbeat.

Cheap to import (no optuna): the sweeper imports it, and Hydra imports the sweeper at every
start of every app.
"""

from __future__ import annotations

import logging
from typing import Any

from grpo.sweep.storage import DEFAULT_STORAGE_TIMEOUT, Heartbeat
from grpo.sweep.study import RetryStaleTrial

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL = 60  # seconds, for a database server when heartbeat_interval is null
DEFAULT_SUBDIR = "${hydra.job.num}"


def heartbeat_settings(
    storage_url: str, interval: int | None, grace_period: int | None, max_retry: int | None
) -> Heartbeat | None:
    """None (off) for SQLite unless asked for, DEFAULT_HEARTBEAT_INTERVAL for a database
    server; 0 turns it off. The grace period defaults to Optuna's 2 x interval."""
    if interval is None:
        interval = 0 if storage_url.startswith("sqlite") else DEFAULT_HEARTBEAT_INTERVAL
    if not interval:
        return None
    grace = int(grace_period) if grace_period else 2 * int(interval)
    return Heartbeat(int(interval), grace, RetryStaleTrial(max_retry, grace))


def job_overrides(trial: Any, space: Any, custom: Any, config: Any) -> list[str]:
    """One job's overrides: the fixed ones and the trial's params (custom ones included)."""
    for key, value in space.fixed.items():
        trial.set_user_attr(key, value)
    if custom is not None:
        custom(config, trial)
    return space.overrides_for(trial.params)


def batch_overrides(trials: list[Any], space: Any, custom: Any, config: Any) -> list[list[str]]:
    """The overrides of a batch. Job dirs follow hydra.job.num = first trial number + position;
    when another worker's trial took a number in between, the default subdir is set to the
    trial's number instead (a hydra.* override: not among the job's own)."""
    batch = [job_overrides(t, space, custom, config) for t in trials]
    first = trials[0].number
    subdir = config.hydra.sweep._get_node("subdir")._value()
    for i, trial in enumerate(trials):
        if trial.number != first + i and subdir == DEFAULT_SUBDIR:
            batch[i].append(f"hydra.sweep.subdir={trial.number}")
    return batch


def job_context(
    trial: Any,
    *,
    study_name: str,
    storage_url: str,
    directions: list[str],
    storage_timeout: float,
    pruner_config: dict[str, Any] | None,
    metric_names: list[str] | None,
    parent_run_id: str | None,
) -> dict[str, Any]:
    """What the job reads from GRPO_OPTUNA_TRIAL (trial.py). The URL carries no password."""
    context: dict[str, Any] = {
        "study_name": study_name,
        "storage": storage_url,
        "number": trial.number,
        "direction": directions[0] if len(directions) == 1 else directions,
    }
    if trial.params:  # what the run's name shows, and which of them a plot puts on a log axis
        context["params"] = dict(trial.params)
        context["log_params"] = [k for k, d in trial.distributions.items() if getattr(d, "log", False)]
    if storage_timeout != DEFAULT_STORAGE_TIMEOUT:
        context["storage_timeout"] = storage_timeout
    if pruner_config:
        context["pruner"] = pruner_config
    if metric_names:
        context["metric_names"] = metric_names
    if parent_run_id:
        context["parent_run_id"] = parent_run_id
        context["tags"] = {"optuna_study": study_name}
    return context


def job_config(hydra_context: Any, config: Any, fixed_overrides: list[str]) -> Any:
    """The config a job with the sweep's fixed overrides composes (None when it does not:
    validate_batch_is_legal then reports why). The sweeper reads its logger.* from it."""
    try:
        cfg = hydra_context.config_loader.load_sweep_config(config, list(fixed_overrides))
    except Exception as e:  # noqa: BLE001
        log.debug("could not compose the job config: %s", e)
        return None
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)  # `${hydra:...}` in logger.* must resolve
    return cfg
