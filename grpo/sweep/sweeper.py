"""A Hydra Sweeper on Optuna >= 4 (ask/tell), with pruning, resume and an MLflow parent run.

Drop-in for hydra-optuna-sweeper's configuration (``hydra/sweeper=optuna``; see config.py):
``sampler`` (+ seed), ``direction``, ``study_name``, ``storage``, ``n_trials``, ``n_jobs``,
``max_failure_rate``, ``params``, ``custom_search_space``; plus ``pruner``,
``load_if_exists``, ``fail_stale_trials`` and ``storage_timeout``.

How a sweep runs
----------------
1. ``params`` and the command line's overrides (merged after, so they win) become Optuna
   distributions (sweeps) and fixed overrides (everything else), see search_space.py.
2. The study ``study_name`` is created in ``storage`` or, when it exists, resumed. Defaults:
   storage ``sqlite:///<cwd>/outputs/optuna.db``; study name ``<job name>`` or
   ``<job name>-<sweep choice>`` (``+sweep=rce_grpo`` gives ``run-rce_grpo``), so the same
   command twice continues the same study.
3. Trials a killed sweep left RUNNING are marked FAIL (user_attrs ``interrupted``,
   ``fail_reason``) and their params are queued again (``retry_of``); they do not count.
4. ``n_trials`` is a target for the study: the sweep asks for trials until the study holds
   ``n_trials`` finished ones (COMPLETE + PRUNED + FAIL, interrupted ones excluded). A
   rerun after a kill therefore runs only what is missing, and trial numbers go on.
   With the grid sampler the target is capped at the grid size.
5. Trials are asked in batches of ``n_jobs`` and launched through the configured Hydra
   launcher (basic: one after the other; joblib: in parallel). Job dirs are numbered by
   trial number. Each job gets the overrides of its params, the fixed overrides and the
   ``optuna_trial.*`` protocol keys (see trial.py) so it can report and be pruned.
6. Outcome per job: a number -> COMPLETE; ``optuna.TrialPruned`` raised -> PRUNED; any
   other exception, ``None`` or NaN -> FAIL with ``fail_reason`` (and ``traceback``).
   When the failed trials exceed ``max_failure_rate`` x (trials planned in this
   invocation), the sweep stops with one line naming the count and the last error.
7. At the end: the best trial, its params and the command that re-runs it are printed,
   ``optimization_results.yaml`` is written to the sweep dir (and ``multirun.yaml`` at the
   start), and the MLflow parent run, if any, gets the best value and params.

MLflow: when the composed job config has ``logger.backend: mlflow``, the sweeper opens one
parent run per study (name = study name; reused on resume) in ``logger.tracking_uri`` /
``logger.experiment`` and passes each job ``++logger.parent_run_id=<id>``,
``++logger.tags.optuna_study=<study>`` and ``++logger.tags.optuna_trial=<number>``.

This class only orchestrates; the pieces live in study.py (the study and its bookkeeping),
algorithms.py (sampler, pruner), mlflow_parent.py (the parent run), results.py (the results
file, the re-run command), storage.py (storage URL, retries on locks) and trial.py (the job's
side). None of them imports optuna or mlflow at module level, because Hydra imports every
plugin at every start of every app.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

from grpo.sweep.algorithms import build_pruner, build_sampler
from grpo.sweep.mlflow_parent import MlflowParentRun
from grpo.sweep.results import summarize, write_results
from grpo.sweep.storage import DEFAULT_STORAGE_TIMEOUT, mask_url, resolve_storage_url
from grpo.sweep.study import (
    FailureRate,
    abandon_trial,
    count_trials,
    fail_stale_trials,
    open_study,
    parse_directions,
    record_outcome,
)
from grpo.sweep.trial import PROTOCOL_KEY

log = logging.getLogger(__name__)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


class OptunaSweeper(Sweeper):
    """Hydra Sweeper driving an Optuna study with ask/tell (see module docstring)."""

    def __init__(
        self,
        sampler: Any = None,
        direction: Any = "minimize",
        study_name: str | None = None,
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        params: Mapping[str, Any] | None = None,
        custom_search_space: str | None = None,
        pruner: Any = None,
        load_if_exists: bool = True,
        fail_stale_trials: bool = True,
        storage_timeout: float = DEFAULT_STORAGE_TIMEOUT,
        search_space: Mapping[str, Any] | None = None,
    ) -> None:
        if search_space:
            raise ValueError(
                "hydra.sweeper.search_space was removed (as in hydra-optuna-sweeper 1.4): "
                "write the same entries under hydra.sweeper.params"
            )
        if int(n_trials) < 0:
            raise ValueError(f"hydra.sweeper.n_trials must be >= 0, got {n_trials}")
        if int(n_jobs) < 1:
            raise ValueError(f"hydra.sweeper.n_jobs must be >= 1, got {n_jobs}")
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate must be in [0, 1], got {max_failure_rate}")
        self.sampler = sampler
        self.direction = _to_plain(direction)
        self.study_name = study_name
        self.storage = storage
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.max_failure_rate = float(max_failure_rate)
        self.params: dict[str, Any] = dict(_to_plain(params) or {})
        self.custom_search_space = custom_search_space
        self.pruner = pruner
        self.load_if_exists = bool(load_if_exists)
        self.fail_stale_trials = bool(fail_stale_trials)
        self.storage_timeout = float(storage_timeout)

        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.pruner_config: dict[str, Any] | None = None
        self.sampler_config: dict[str, Any] | None = None
        self.storage_url: str | None = None
        self.resolved_study_name: str | None = None
        self.directions: list[str] = []
        self.results: dict[str, Any] = {}
        self.rerun_command: str | None = None
        self._parent: MlflowParentRun | None = None

    # ------------------------------------------------------------------ Hydra API
    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        # hydra-core 1.3 instantiates the plugin config recursively, so sampler and pruner
        # arrive as objects; keep their configs too (the pruner's travels to every trial).
        sweeper_cfg = config.hydra.sweeper
        self.pruner_config = _to_plain(sweeper_cfg.get("pruner"))
        self.sampler_config = _to_plain(sweeper_cfg.get("sampler"))
        self.directions = self._parse_directions(self.direction)
        self.storage_url = self._resolve_storage(self.storage)
        self.resolved_study_name = self.study_name or self._default_study_name()

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from grpo.sweep.search_space import parse_search_space

        assert self.config is not None and self.hydra_context is not None
        assert self.launcher is not None and self.storage_url is not None

        space = parse_search_space(self.params, arguments, config_loader=self.hydra_context.config_loader)
        custom = self._load_custom_search_space()
        if not space.distributions and custom is None:
            log.warning("Optuna sweeper: no sweep parameter in params or on the command line")
        study, grid_total = self._open_study(space)

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        self._start_mlflow_parent(study, space)  # first: closing stale trials also closes their MLflow runs
        if self.fail_stale_trials:
            fail_stale_trials(study, close_run=self._close_run)
        planned = self._plan(study, space, grid_total)

        status = "FINISHED"
        try:
            return self._run_trials(study, space, custom, planned)
        except Exception:  # the failure rate exceeded, a composition error, a launcher crash ...
            status = "FAILED"
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit
            status = "KILLED"
            raise
        finally:
            try:
                self._finish(study, space, sweep_dir, status)
            except Exception:  # noqa: BLE001 - never hide the sweep's own outcome
                if status == "FINISHED":
                    raise
                log.exception("Optuna sweeper: could not write the results")

    # ------------------------------------------------------------------ settings
    _parse_directions = staticmethod(parse_directions)  # the study's rule, reachable from the sweeper

    def _cwd(self) -> str:
        assert self.config is not None
        return str(OmegaConf.select(self.config, "hydra.runtime.cwd") or os.getcwd())

    def _resolve_storage(self, storage: str | None) -> str:
        return resolve_storage_url(storage, self._cwd())

    def _default_study_name(self) -> str:
        assert self.config is not None
        name = str(OmegaConf.select(self.config, "hydra.job.name") or "sweep")
        choice = OmegaConf.select(self.config, "hydra.runtime.choices.sweep")
        return f"{name}-{choice}" if choice else name

    def _load_custom_search_space(self) -> Any:
        if not self.custom_search_space:
            return None
        from hydra.utils import get_method

        return get_method(self.custom_search_space)

    # ------------------------------------------------------------------ the study
    def _open_study(self, space: Any) -> tuple[Any, int | None]:
        """The study, created or resumed, and the grid size (None unless a grid sampler)."""
        assert self.resolved_study_name is not None and self.storage_url is not None
        sampler, grid_total = build_sampler(self.sampler, self.sampler_config, space)
        pruner, self.pruner_config = build_pruner(self.pruner, self.pruner_config, len(self.directions))
        study = open_study(
            self.resolved_study_name,
            self.storage_url,
            storage_timeout=self.storage_timeout,
            sampler=sampler,
            pruner=pruner,
            directions=self.directions,
            load_if_exists=self.load_if_exists,
        )
        n_existing = len(study.get_trials(deepcopy=False))
        if n_existing:  # resumed: a seeded sampler must not draw the first run's points again
            study.sampler, _ = build_sampler(self.sampler, self.sampler_config, space, seed_offset=n_existing)
        return study, grid_total

    def _plan(self, study: Any, space: Any, grid_total: int | None) -> int:
        """How many trials this invocation runs: what the study lacks to reach n_trials."""
        counts = count_trials(study)
        target = self.n_trials if grid_total is None else min(self.n_trials, grid_total)
        planned = max(0, target - counts["finished"])
        log.info(
            "Optuna study '%s' in %s: %d finished trials (%d complete, %d pruned, %d failed); "
            "running %d more to reach n_trials=%d%s",
            self.resolved_study_name,
            mask_url(str(self.storage_url)),
            counts["finished"],
            counts["complete"],
            counts["pruned"],
            counts["failed"],
            planned,
            target,
            "" if grid_total is None else f" (grid of {grid_total})",
        )
        log.info("Search space: %s", {k: str(v) for k, v in space.distributions.items()})
        return planned

    def _run_trials(self, study: Any, space: Any, custom: Any, planned: int) -> list[Sequence[JobReturn]]:
        """Ask, launch and record trials in batches of n_jobs until `planned` have run."""
        returns: list[Sequence[JobReturn]] = []
        failures = FailureRate(str(self.resolved_study_name), planned, self.max_failure_rate)
        ran = 0
        while ran < planned:
            batch_size = min(self.n_jobs, planned - ran)
            trials = [study.ask(fixed_distributions=dict(space.distributions)) for _ in range(batch_size)]
            returns.append(self._launch(study, trials, space, custom, failures))
            ran += batch_size
            failures.check()
        return returns

    def _launch(
        self, study: Any, trials: list[Any], space: Any, custom: Any, failures: FailureRate
    ) -> Sequence[JobReturn]:
        """Run one batch of trials through the launcher and record each outcome. Trials left
        without one are marked FAIL; on Ctrl-C they get another chance on resume."""
        in_flight = list(trials)
        try:
            batch = [self._job_overrides(t, space, custom) for t in trials]
            self.validate_batch_is_legal(batch)
            rets = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, rets):
                state, reason = record_outcome(study, trial, ret, len(self.directions))
                in_flight.remove(trial)
                failures.add(trial.number, state, reason)
        except Exception as e:  # composition error, launcher crash, ...
            for trial in in_flight:
                why = f"{type(e).__name__}: {e}"
                abandon_trial(study, trial.number, why, interrupted=False, close_run=self._close_run)
            raise
        except BaseException:  # Ctrl-C
            for trial in in_flight:
                why = "sweep interrupted while running"
                abandon_trial(study, trial.number, why, close_run=self._close_run)
            raise
        return rets

    # ------------------------------------------------------------------ job overrides
    def _protocol_overrides(self, number: int) -> list[str]:
        """The ``optuna_trial.*`` keys a job reads with TrialReporter.from_config (trial.py)."""
        from grpo.sweep.search_space import format_value

        assert self.storage_url is not None and self.resolved_study_name is not None
        direction = self.directions[0] if len(self.directions) == 1 else self.directions
        p = f"++{PROTOCOL_KEY}"
        out = [
            f"{p}.study_name={format_value(self.resolved_study_name)}",
            f"{p}.storage={format_value(self.storage_url)}",
            f"{p}.number={number}",
            f"{p}.direction={format_value(direction)}",
        ]
        if self.storage_timeout != DEFAULT_STORAGE_TIMEOUT:
            out.append(f"{p}.storage_timeout={format_value(self.storage_timeout)}")
        if self.pruner_config:
            # one dict-valued override: the whole pruner config, _target_ included
            out.append(f"{p}.pruner={format_value(self.pruner_config)}")
        return out

    def _job_overrides(self, trial: Any, space: Any, custom: Any) -> list[str]:
        for key, value in space.fixed.items():
            trial.set_user_attr(key, value)
        if custom is not None:
            custom(self.config, trial)
        overrides = space.overrides_for(trial.params) + self._protocol_overrides(trial.number)
        if self._parent is not None:
            overrides += self._parent.job_overrides(str(self.resolved_study_name), trial.number)
        return overrides

    # ------------------------------------------------------------------ MLflow
    def _job_config(self, space: Any) -> DictConfig | None:
        assert self.hydra_context is not None and self.config is not None
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(space.fixed_overrides()))
        except Exception as e:  # noqa: BLE001 - validate_batch_is_legal reports it properly
            log.debug("could not compose the job config: %s", e)
            return None
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)  # `${hydra:...}` in logger.* must resolve
        return cfg

    def _start_mlflow_parent(self, study: Any, space: Any) -> None:
        name = str(self.resolved_study_name)
        self._parent = MlflowParentRun.start(
            self._job_config(space),
            study,
            study_name=name,
            sweep=str(OmegaConf.select(self.config, "hydra.runtime.choices.sweep") or name),
            storage_url=str(self.storage_url),
            directions=self.directions,
            sampler_config=self.sampler_config,
            pruner_config=self.pruner_config,
        )

    def _close_run(self, run_id: str) -> None:
        if self._parent is not None:
            self._parent.kill_child(run_id)

    # ------------------------------------------------------------------ results
    def _finish(self, study: Any, space: Any, sweep_dir: Path, status: str) -> None:
        try:
            self.results, self.rerun_command = summarize(
                study,
                space,
                n_objectives=len(self.directions),
                study_name=self.resolved_study_name,
                storage_url=self.storage_url,
            )
            write_results(self.results, sweep_dir)
        finally:
            if self._parent is not None:
                self._parent.log_results(study, self.results, self.rerun_command, status)
