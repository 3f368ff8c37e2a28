"""A Hydra Sweeper on Optuna >= 4 (ask/tell), with pruning, resume, workers on several machines
and an MLflow parent run. docs/sweeps.md is the user's guide; this is the reference.

Drop-in for hydra-optuna-sweeper's configuration (``hydra/sweeper=optuna``; config.py):
``sampler`` (+ seed), ``direction``, ``study_name``, ``storage``, ``n_trials``, ``n_jobs``,
``max_failure_rate``, ``params``, ``custom_search_space``; plus ``pruner``, ``load_if_exists``,
``fail_stale_trials``, ``storage_timeout``, ``heartbeat_interval``, ``grace_period``,
``max_retry`` and ``metric_names``.

1. ``params`` and the command line's overrides (merged after, so they win) become Optuna
   distributions (sweeps) and fixed overrides (everything else), see search_space.py.
2. The study ``study_name`` is created in ``storage`` or resumed (workers starting at once on
   an empty database: one creates it, the others load it). Defaults: storage
   ``sqlite:///<cwd>/outputs/optuna.db``, study ``<job name>[-<sweep choice>]``. The URL
   carries no password (storage.py: ``$OPTUNA_STORAGE_PASSWORD``).
3. Heartbeats (``heartbeat_interval``: on by default for a database server, off for SQLite):
   a RUNNING trial without one for ``grace_period`` s (its worker was killed or preempted) is
   failed by the next worker that looks, flagged ``interrupted`` and queued again
   (``max_retry`` times). Heartbeats off (one sweep process per study): trials a killed sweep
   left RUNNING are failed and queued again when it restarts (``fail_stale_trials``).
4. ``n_trials`` is a target for the study: workers ask for trials until it holds ``n_trials``
   finished ones (COMPLETE + PRUNED + FAIL, interrupted ones excluded), every worker's
   counted; a rerun runs only what is missing. Grid: capped at the grid size. worker.py.
5. A free worker asks for ``n_jobs`` trials and launches them through the Hydra launcher
   (basic, joblib, submitit). Job dirs are trial numbers. A job's overrides are exactly its
   search values plus the user's; its trial, MLflow parent and tags travel in
   ``GRPO_OPTUNA_TRIAL`` (trial.py, jobs.py).
6. A number (one per direction) -> COMPLETE; ``optuna.TrialPruned`` -> PRUNED; any other
   exception, ``None`` or NaN -> FAIL with ``fail_reason``. When this worker's failures exceed
   ``max_failure_rate`` x (the trials the study lacked when it started), it stops, one line.
7. At the end: the best trial (or the Pareto front), its params and re-run command are
   printed and written to ``optimization_results.yaml`` (``multirun.yaml`` at the start).

MLflow (``logger.backend: mlflow``): one parent run per study, created by the worker that
created the study and found by the others (mlflow_parent.py); each trial's run nests under
it, tagged ``optuna_study``, ``optuna_trial``, ``optuna_worker`` (host), ``optuna_state``.

This class orchestrates study.py, worker.py, jobs.py, algorithms.py, mlflow_parent.py,
results.py, storage.py and trial.py (the job's side); none imports optuna or mlflow at
module level, because Hydra imports every plugin at every start of every app.
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

from grpo.sweep.algorithms import build_pruner, build_sampler, check_sampler
from grpo.sweep.jobs import batch_overrides, heartbeat_settings, job_config, job_context
from grpo.sweep.mlflow_parent import MlflowParentRun
from grpo.sweep.results import summarize, write_results
from grpo.sweep.storage import (
    DEFAULT_STORAGE_TIMEOUT,
    Heartbeat,
    keep_password_out,
    make_storage,
    mask_url,
    resolve_storage_url,
    warn_if_network_sqlite,
)
from grpo.sweep.study import (
    FailureRate,
    RetryStaleTrial,
    abandon_trial,
    count_trials,
    fail_stale_trials,
    open_study,
    parse_directions,
    record_outcome,
)
from grpo.sweep.trial import encode_context
from grpo.sweep.worker import Heartbeats, TrialSource, TrialTask

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
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        max_retry: int | None = 3,
        metric_names: Sequence[str] | None = None,
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
        for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
            if value is not None and int(value) < 0:
                raise ValueError(f"hydra.sweeper.{name} must be >= 0 seconds, got {value}")
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
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = None if max_retry is None else int(max_retry)
        self.metric_names = [str(m) for m in _to_plain(metric_names)] if metric_names else None

        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.task: TrialTask | None = None
        self.pruner_config: dict[str, Any] | None = None
        self.sampler_config: dict[str, Any] | None = None
        self.storage_url: str | None = None
        self.resolved_study_name: str | None = None
        self.directions: list[str] = []
        self.heartbeat: Heartbeat | None = None
        self.results: dict[str, Any] = {}
        self.rerun_command: str | None = None
        self._parent: MlflowParentRun | None = None
        self._storage: Any = None

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
        self.task = TrialTask(task_function)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=self.task, config=config
        )
        # hydra-core 1.3 instantiates the plugin config recursively, so sampler and pruner
        # arrive as objects; keep their configs too (the pruner's travels to every trial).
        sweeper_cfg = config.hydra.sweeper
        self.pruner_config = _to_plain(sweeper_cfg.get("pruner"))
        self.sampler_config = _to_plain(sweeper_cfg.get("sampler"))
        check_sampler(self.sampler)
        self.directions = self._parse_directions(self.direction)
        if self.metric_names and len(self.metric_names) != len(self.directions):
            raise ValueError(
                f"hydra.sweeper.metric_names has {len(self.metric_names)} names for "
                f"{len(self.directions)} direction(s): name one metric per direction"
            )
        self.storage_url = keep_password_out(self._resolve_storage(self.storage))
        warn_if_network_sqlite(self.storage_url)
        self.heartbeat = heartbeat_settings(
            self.storage_url, self.heartbeat_interval, self.grace_period, self.max_retry
        )
        self.resolved_study_name = self.study_name or self._default_study_name()

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from grpo.sweep.search_space import parse_search_space

        assert self.config is not None and self.hydra_context is not None
        assert self.launcher is not None and self.storage_url is not None

        space = parse_search_space(self.params, arguments, config_loader=self.hydra_context.config_loader)
        custom = self._load_custom_search_space()
        if not space.distributions and custom is None:
            log.warning("Optuna sweeper: no sweep parameter in params or on the command line")
        study, created, grid_total = self._open_study(space)

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        self._start_mlflow_parent(study, space, created)  # first: closing stale trials closes their runs
        if self.fail_stale_trials and self.heartbeat is None:
            fail_stale_trials(study, close_run=self._close_run)
        target, planned = self._plan(study, space, grid_total)

        status = "FINISHED"
        try:
            return self._run_trials(study, space, custom, target, planned)
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
    def _open_study(self, space: Any) -> tuple[Any, bool, int | None]:
        """The study (created or resumed), whether this worker created it, and the grid size
        (None unless a grid sampler)."""
        assert self.resolved_study_name is not None and self.storage_url is not None
        sampler, grid_total = build_sampler(self.sampler, self.sampler_config, space)
        pruner, self.pruner_config = build_pruner(self.pruner, self.pruner_config, len(self.directions))
        self._storage = make_storage(self.storage_url, timeout=self.storage_timeout, heartbeat=self.heartbeat)
        study, created = open_study(
            self.resolved_study_name,
            self._storage,
            storage_url=self.storage_url,
            sampler=sampler,
            pruner=pruner,
            directions=self.directions,
            load_if_exists=self.load_if_exists,
            metric_names=self.metric_names or OmegaConf.select(self.config, "optimized_metric", default=None),
        )
        return study, created, grid_total

    def _reseed(self, space: Any) -> Any:
        """seed + trial number for a seeded sampler; None for QMC and grid (their seed orders a shared sequence)."""
        cfg = self.sampler_config
        shared_seed = any(k in str((cfg or {}).get("_target_")) for k in ("QMC", "GridSampler"))
        if not isinstance(cfg, dict) or cfg.get("seed") is None or shared_seed:
            return None
        return lambda number: build_sampler(self.sampler, cfg, space, seed_offset=number)[0]

    def _plan(self, study: Any, space: Any, grid_total: int | None) -> tuple[int, int]:
        """(the study's target, what it lacks now)."""
        counts = count_trials(study)
        target = self.n_trials if grid_total is None else min(self.n_trials, grid_total)
        planned = max(0, target - counts["finished"])
        log.info(
            "Optuna study '%s' in %s: %d finished trials (%d complete, %d pruned, %d failed); "
            "running %d more to reach n_trials=%d%s%s",
            self.resolved_study_name,
            mask_url(str(self.storage_url)),
            counts["finished"],
            counts["complete"],
            counts["pruned"],
            counts["failed"],
            planned,
            target,
            "" if grid_total is None else f" (grid of {grid_total})",
            f", with any other worker on it ({counts['running']} trial(s) running now)" if counts["running"] else "",
        )
        log.info("Search space: %s", {k: str(v) for k, v in space.distributions.items()})
        return target, planned

    def _run_trials(self, study: Any, space: Any, custom: Any, target: int, planned: int) -> list[Sequence[JobReturn]]:
        """Ask n_jobs trials whenever free, launch and record them, until the study is done."""
        interval = self.heartbeat.interval if self.heartbeat else None
        source = TrialSource(study, space.distributions, target, self.n_jobs, interval, self._reseed(space))
        failures = FailureRate(str(self.resolved_study_name), planned, self.max_failure_rate)
        returns: list[Sequence[JobReturn]] = []
        while trials := source.next_batch():
            with Heartbeats(self._storage, [t._trial_id for t in trials], interval):
                returns.append(self._launch(study, trials, space, custom, failures))
            failures.check()
        log.info("This worker ran %d trial(s)", sum(len(r) for r in returns))
        return returns

    def _launch(
        self, study: Any, trials: list[Any], space: Any, custom: Any, failures: FailureRate
    ) -> Sequence[JobReturn]:
        """Run one batch of trials through the launcher and record each outcome. Trials left
        without one are marked FAIL; on Ctrl-C they get another chance on resume."""
        assert self.task is not None
        in_flight = list(trials)
        try:
            batch = batch_overrides(trials, space, custom, self.config)
            self.validate_batch_is_legal(batch)
            first = trials[0].number
            self.task.contexts = {first + i: encode_context(self._job_context(t)) for i, t in enumerate(trials)}
            rets = self.launcher.launch(batch, initial_job_idx=first)
            for trial, ret in zip(trials, rets):
                state, reason = record_outcome(study, trial, ret, len(self.directions))
                in_flight.remove(trial)
                failures.add(trial.number, state, reason)
                if self._parent is not None:  # the job stored its run id: read the storage, not the handle
                    attrs = study._storage.get_trial_user_attrs(trial._trial_id)
                    self._parent.tag_child(attrs.get("mlflow_run_id"), state.name)
        except Exception as e:  # composition error, launcher crash, ...
            for trial in in_flight:
                why = f"{type(e).__name__}: {e}"
                abandon_trial(study, trial.number, why, interrupted=False, close_run=self._close_run)
            raise
        except BaseException:  # Ctrl-C
            for trial in in_flight:
                why = "sweep interrupted while running"
                abandon_trial(study, trial.number, why, interrupted=True, close_run=self._close_run)
            raise
        return rets

    def _job_context(self, trial: Any) -> dict[str, Any]:
        return job_context(
            trial,
            study_name=str(self.resolved_study_name),
            storage_url=str(self.storage_url),
            directions=self.directions,
            storage_timeout=self.storage_timeout,
            pruner_config=self.pruner_config,
            metric_names=self.metric_names,
            parent_run_id=self._parent.run_id if self._parent is not None else None,
        )

    # ------------------------------------------------------------------ MLflow
    def _start_mlflow_parent(self, study: Any, space: Any, created: bool) -> None:
        name = str(self.resolved_study_name)
        self._parent = MlflowParentRun.start(
            job_config(self.hydra_context, self.config, space.fixed_overrides()),
            study,
            created=created,
            study_name=name,
            sweep=str(OmegaConf.select(self.config, "hydra.runtime.choices.sweep") or name),
            storage_url=str(self.storage_url),
            directions=self.directions,
            metric_names=self.metric_names,
            sampler_config=self.sampler_config,
            pruner_config=self.pruner_config,
        )
        if self.heartbeat is not None and isinstance(self.heartbeat.callback, RetryStaleTrial):
            self.heartbeat.callback.close_run = self._close_run

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
