"""The in-job handle on an Optuna trial: report intermediate values and ask the pruner.

The sweeper runs each trial as a Hydra job (possibly in another process or machine). The job's
overrides are exactly its search values plus the user's own, so that `.hydra/overrides.yaml`
re-runs the trial as it ran; the trial's identity reaches the job through the environment
variable ``GRPO_OPTUNA_TRIAL`` instead, set for the job's duration (by the sweeper's task
wrapper, worker.TrialTask, in whatever process the launcher runs the job). It holds JSON::

    {"study_name": "rce_grpo", "storage": "postgresql+psycopg://optuna@db/optuna",
     "number": 7, "direction": "maximize", "pruner": {"_target_": "optuna.pruners.MedianPruner", ...},
     "metric_names": ["val/accuracy", "time/total"],        # multi-objective: what to return
     "parent_run_id": "<MLflow run id of the study>", "tags": {"optuna_study": "rce_grpo", ...},
     "params": {"algorithm.kl_beta": 0.21, ...},              # the trial's searched values
     "log_params": ["algorithm.kl_beta", ...]}                # those searched on a log scale

The storage URL never carries a password: the job's process inherits it from the worker's
environment (storage.py). Optuna does not store the pruner in the study, which is why its
config travels with the trial. In the job::

    reporter = TrialReporter.from_env()       # None outside a sweep
    for step in ...:
        metric = evaluate()
        if reporter is not None:
            reporter.report(metric, step)
            if reporter.should_prune():
                reporter.prune()          # raises optuna.TrialPruned; let it propagate
    return metric                          # the objective the sweeper tells the study

The sweeper records a job that raised ``optuna.TrialPruned`` as PRUNED (value: the last
reported intermediate value), not as failed. ``reporter.run_tags()`` are the tags of the
trial's MLflow run (study, trial number, the host the trial ran on, its state) and
``reporter.parent_run_id`` the study's parent run to nest it under.

Optuna is imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any, NoReturn

from grpo.db_retry import retry_on_lock
from grpo.sweep.storage import DEFAULT_STORAGE_TIMEOUT, make_storage, mask_url

log = logging.getLogger(__name__)

# The environment variable of the protocol above; worker.TrialTask sets it, from_env reads it.
PROTOCOL_ENV = "GRPO_OPTUNA_TRIAL"


def encode_context(context: Mapping[str, Any]) -> str:
    """The JSON of PROTOCOL_ENV; `$` escaped, so that no config layer reads an interpolation."""
    return json.dumps(dict(context), sort_keys=True).replace("$", "\\u0024")


class TrialReporter:
    """Report intermediate values of one running trial and ask the study's pruner."""

    def __init__(
        self,
        *,
        study_name: str,
        storage: str,
        number: int,
        pruner: Mapping[str, Any] | None = None,
        direction: Any = None,
        storage_timeout: float = DEFAULT_STORAGE_TIMEOUT,
        metric_names: list[str] | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        log_params: list[str] | None = None,
    ) -> None:
        self.study_name = study_name
        self.storage = storage
        self.number = int(number)
        self.pruner_config = dict(pruner) if pruner else None
        self.direction = direction
        self.storage_timeout = float(storage_timeout)
        self.metric_names = [str(m) for m in metric_names] if metric_names else None
        self.parent_run_id = parent_run_id
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.params = dict(params or {})
        self.log_params = [str(k) for k in log_params or ()]
        self._study: Any = None
        self._trial: Any = None
        self._multi_objective = False
        self._last: tuple[int, float] | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrialReporter | None:
        """The trial this job runs, from ``GRPO_OPTUNA_TRIAL``; None outside an Optuna sweep."""
        text = (os.environ if environ is None else environ).get(PROTOCOL_ENV)
        if not text:
            return None
        try:
            context = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{PROTOCOL_ENV} is not the JSON the Optuna sweeper writes: {e}") from e
        return cls.from_config(context)

    @classmethod
    def from_config(cls, context: Any) -> TrialReporter | None:
        """Build from a mapping with the keys of the protocol (see the module docstring); None
        when it is null or empty (the job is not part of an Optuna sweep)."""
        if context is None:
            return None
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(context, DictConfig):
                context = OmegaConf.to_container(context, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        if not context:
            return None
        if not isinstance(context, Mapping):
            raise TypeError(f"{PROTOCOL_ENV} must hold a mapping, got {context!r}")
        missing = [k for k in ("study_name", "storage", "number") if context.get(k) is None]
        if missing:
            raise ValueError(
                f"{PROTOCOL_ENV} is set but lacks {', '.join(missing)}: it is filled in by the "
                "Optuna sweeper (hydra/sweeper=optuna), not by hand"
            )
        return cls(
            study_name=str(context["study_name"]),
            storage=str(context["storage"]),
            number=int(context["number"]),
            pruner=context.get("pruner"),
            direction=context.get("direction"),
            storage_timeout=float(context.get("storage_timeout") or DEFAULT_STORAGE_TIMEOUT),
            metric_names=context.get("metric_names"),
            parent_run_id=context.get("parent_run_id"),
            tags=context.get("tags"),
            params=context.get("params"),
            log_params=context.get("log_params"),
        )

    # -- what the job's tracking and return value need
    def run_tags(self) -> dict[str, str]:
        """Tags of the trial's MLflow run: its name (`#3 kl_beta=0.21 ...`: trials differ in name),
        study, trial number, the host it runs on, its state (RUNNING until the sweeper sets how it
        ended) and the params searched on a log scale (`optuna_log_params`, for plots)."""
        from grpo.config.derived import trial_run_name

        tags = {
            **self.tags,
            "mlflow.runName": trial_run_name(self.number, self.params),
            "optuna_study": self.study_name,
            "optuna_trial": str(self.number),
            "optuna_worker": socket.gethostname(),
            "optuna_state": "RUNNING",
        }
        if self.log_params:
            tags["optuna_log_params"] = ",".join(self.log_params)
        return tags

    def objective(self, metrics: Mapping[str, float]) -> list[float] | None:
        """The values of ``metric_names`` (a multi-objective study's objectives, in order), or
        None when the study names none (then the job returns its one objective itself)."""
        if not self.metric_names:
            return None
        missing = [m for m in self.metric_names if m not in metrics]
        if missing:
            raise KeyError(
                f"hydra.sweeper.metric_names: {', '.join(missing)} not among the final metrics "
                f"({', '.join(sorted(metrics))})"
            )
        return [float(metrics[m]) for m in self.metric_names]

    # -- lazy connection
    def _make_pruner(self) -> Any:
        import optuna

        if not self.pruner_config:
            return optuna.pruners.NopPruner()
        from hydra.utils import instantiate

        return instantiate(self.pruner_config)

    @property
    def trial(self) -> Any:
        """The live ``optuna.trial.Trial`` (loaded on first use)."""
        if self._trial is None:
            import optuna

            storage = make_storage(self.storage, timeout=self.storage_timeout, skip_table_creation=True)
            # The job never samples (its params came as overrides): a RandomSampler keeps
            # Trial() from doing any sampler work.
            study = retry_on_lock(
                lambda: optuna.load_study(
                    study_name=self.study_name,
                    storage=storage,
                    pruner=self._make_pruner(),
                    sampler=optuna.samplers.RandomSampler(),
                )
            )
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = retry_on_lock(lambda: storage.get_trial_id_from_study_id_trial_number(study_id, self.number))
            self._study = study
            self._multi_objective = len(study.directions) > 1
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    @property
    def study(self) -> Any:
        _ = self.trial
        return self._study

    def _skip_multi(self, what: str) -> bool:
        if self._multi_objective:
            if not self._warned:
                log.warning("Optuna: %s is not supported for multi-objective studies; skipped", what)
                self._warned = True
            return True
        return False

    # -- the protocol
    def report(self, value: float, step: int) -> None:
        """Store an intermediate objective value at `step` (an int >= 0, increasing)."""
        trial = self.trial
        if self._skip_multi("report"):
            return
        value = float(value)
        step = int(step)
        retry_on_lock(lambda: trial.report(value, step))
        self._last = (step, value)

    def should_prune(self) -> bool:
        """Ask the pruner whether this trial should stop, given what was reported so far."""
        trial = self.trial
        if self._skip_multi("should_prune"):
            return False
        return bool(retry_on_lock(trial.should_prune))

    def prune(self) -> NoReturn:
        """Stop the trial: raises ``optuna.TrialPruned``; let it propagate out of the task."""
        import optuna

        where = ""
        if self._last is not None:
            where = f" at step {self._last[0]} (intermediate value {self._last[1]:.6g})"
        pruner = (self.pruner_config or {}).get("_target_", "NopPruner").rsplit(".", 1)[-1]
        raise optuna.TrialPruned(f"trial {self.number} pruned{where} by {pruner}")

    def set_user_attr(self, key: str, value: Any) -> None:
        """Attach a JSON-serialisable value to the trial (e.g. the MLflow run id)."""
        trial = self.trial
        retry_on_lock(lambda: trial.set_user_attr(key, value))

    def __repr__(self) -> str:
        return (
            f"TrialReporter(study_name={self.study_name!r}, number={self.number}, storage={mask_url(self.storage)!r})"
        )
