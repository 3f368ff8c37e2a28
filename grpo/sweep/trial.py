"""The in-job handle on an Optuna trial: report intermediate values and ask the pruner.

The sweeper runs each trial as a Hydra job (possibly in another process or machine) and
tells it which trial it is through overrides under the top-level key ``optuna_trial``::

    ++optuna_trial.study_name=<study name>
    ++optuna_trial.storage=<RDB URL, absolute; e.g. sqlite:////abs/outputs/optuna.db>
    ++optuna_trial.number=<trial number>
    ++optuna_trial.direction=minimize            # or [minimize,maximize]
    ++optuna_trial.pruner={_target_:optuna.pruners.MedianPruner,n_startup_trials:5,...}
    ++optuna_trial.storage_timeout=<s>           # only when not the default 30

(values are quoted where the override grammar needs it; ``pruner`` is absent when the sweep
has no pruner). So the job's config must accept a top-level ``optuna_trial`` (null by
default, any mapping when set).

Optuna does not store the pruner in the study, which is why its config travels with the
trial. In the job::

    reporter = TrialReporter.from_config(cfg.get("optuna_trial"))   # None outside a sweep
    for step in ...:
        metric = evaluate()
        if reporter is not None:
            reporter.report(metric, step)
            if reporter.should_prune():
                reporter.prune()          # raises optuna.TrialPruned; let it propagate
    return metric                          # the objective the sweeper tells the study

The sweeper records a job that raised ``optuna.TrialPruned`` as PRUNED (value: the last
reported intermediate value), not as failed.

Optuna is imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn

from grpo.sweep.storage import DEFAULT_STORAGE_TIMEOUT, make_storage, mask_url, retry_on_lock

log = logging.getLogger(__name__)

# The top-level config key of the protocol above; the sweeper writes it, from_config reads it.
PROTOCOL_KEY = "optuna_trial"


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
    ) -> None:
        self.study_name = study_name
        self.storage = storage
        self.number = int(number)
        self.pruner_config = dict(pruner) if pruner else None
        self.direction = direction
        self.storage_timeout = float(storage_timeout)
        self._study: Any = None
        self._trial: Any = None
        self._multi_objective = False
        self._last: tuple[int, float] | None = None
        self._warned = False

    @classmethod
    def from_config(cls, optuna_trial_cfg: Any) -> TrialReporter | None:
        """Build from the job's ``optuna_trial`` node; None when it is null, empty or absent
        (the job is not part of an Optuna sweep)."""
        if optuna_trial_cfg is None:
            return None
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(optuna_trial_cfg, DictConfig):
                optuna_trial_cfg = OmegaConf.to_container(optuna_trial_cfg, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        if not optuna_trial_cfg:
            return None
        if not isinstance(optuna_trial_cfg, Mapping):
            raise TypeError(f"{PROTOCOL_KEY} must be a mapping, got {optuna_trial_cfg!r}")
        missing = [k for k in ("study_name", "storage", "number") if optuna_trial_cfg.get(k) is None]
        if missing:
            raise ValueError(
                f"{PROTOCOL_KEY} is set but lacks {', '.join(missing)}: it is filled in by the "
                "Optuna sweeper (hydra/sweeper=optuna), not by hand"
            )
        return cls(
            study_name=str(optuna_trial_cfg["study_name"]),
            storage=str(optuna_trial_cfg["storage"]),
            number=int(optuna_trial_cfg["number"]),
            pruner=optuna_trial_cfg.get("pruner"),
            direction=optuna_trial_cfg.get("direction"),
            storage_timeout=float(optuna_trial_cfg.get("storage_timeout") or DEFAULT_STORAGE_TIMEOUT),
        )

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
