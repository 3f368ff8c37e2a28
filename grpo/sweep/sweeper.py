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

Module-level imports are Hydra/OmegaConf only: optuna and mlflow load inside methods,
because Hydra imports every plugin at every start of every app.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shlex
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

PROTOCOL_KEY = "optuna_trial"
RESULTS_FILE = "optimization_results.yaml"
_SQLITE_PREFIX = "sqlite:///"
DEFAULT_STORAGE_TIMEOUT = 30.0


class SweepError(CompactHydraException):
    """A sweep-level error; Hydra prints its one-line message without a traceback."""


class SweepFailureRateExceeded(SweepError):
    """Raised when failed trials exceed max_failure_rate."""


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def _is_trial_pruned(exc: BaseException) -> bool:
    return any(c.__name__ == "TrialPruned" and c.__module__.startswith("optuna") for c in type(exc).__mro__)


def _tell(study: Any, trial: Any, **kwargs: Any) -> None:
    """study.tell that tolerates GridSampler's study.stop() outside optimize(): Optuna
    stores the trial's state before the error surfaces (a `finally` in _tell)."""
    from grpo.sweep.trial import retry_on_lock

    def call() -> None:
        try:
            study.tell(trial, skip_if_finished=True, **kwargs)
        except RuntimeError as e:
            if "Study.stop" not in str(e):
                raise

    retry_on_lock(call)


def _mlflow_key(name: str) -> str:
    """A tag/param-safe key: MLflow allows alphanumerics, _ - . / and spaces."""
    name = name.lstrip("+~")
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


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
        storage_timeout: float = 30.0,
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
        self._mlflow: tuple[Any, str] | None = None  # (client, parent run id)

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
        import optuna
        from optuna.trial import TrialState

        from grpo.sweep import search_space as ss
        from grpo.sweep.trial import make_storage, mask_url, retry_on_lock

        assert self.config is not None and self.hydra_context is not None
        assert self.launcher is not None and self.storage_url is not None
        study_name = self.resolved_study_name
        assert study_name is not None

        space = ss.parse_search_space(self.params, arguments, config_loader=self.hydra_context.config_loader)
        custom = self._load_custom_search_space()
        if not space.distributions and custom is None:
            log.warning("Optuna sweeper: no sweep parameter in params or on the command line")

        sampler, grid_total = self._build_sampler(space)
        pruner = self._build_pruner()
        storage = make_storage(self.storage_url, timeout=self.storage_timeout)
        try:
            study = retry_on_lock(
                lambda: optuna.create_study(
                    study_name=study_name,
                    storage=storage,
                    sampler=sampler,
                    pruner=pruner,
                    directions=self.directions,
                    load_if_exists=self.load_if_exists,
                )
            )
        except optuna.exceptions.DuplicatedStudyError as e:
            raise SweepError(
                f"Study '{study_name}' already exists in {mask_url(self.storage_url)}; set "
                "hydra.sweeper.load_if_exists=true to resume it, or pick another study_name"
            ) from e
        n_existing = len(study.get_trials(deepcopy=False))
        if n_existing:
            study.sampler, _ = self._build_sampler(space, seed_offset=n_existing)
        have = [d.name.lower() for d in study.directions]
        if have != self.directions:
            raise SweepError(
                f"Study '{study_name}' in {mask_url(self.storage_url)} has directions {have}, "
                f"the sweep asks for {self.directions}: use another study_name"
            )

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        self._start_mlflow_parent(study, space)  # first: closing stale trials also closes their MLflow runs
        if self.fail_stale_trials:
            self._fail_stale_trials(study)
        counts = self._counts(study)
        target = self.n_trials if grid_total is None else min(self.n_trials, grid_total)
        planned = max(0, target - counts["finished"])
        log.info(
            "Optuna study '%s' in %s: %d finished trials (%d complete, %d pruned, %d failed); "
            "running %d more to reach n_trials=%d%s",
            study_name,
            mask_url(self.storage_url),
            counts["finished"],
            counts["complete"],
            counts["pruned"],
            counts["failed"],
            planned,
            target,
            "" if grid_total is None else f" (grid of {grid_total})",
        )
        log.info("Search space: %s", {k: str(v) for k, v in space.distributions.items()})

        returns: list[Sequence[JobReturn]] = []
        failures = 0
        ran = 0
        last_failure: str | None = None
        status = "FINISHED"
        try:
            while ran < planned:
                batch_size = min(self.n_jobs, planned - ran)
                trials = [study.ask(fixed_distributions=dict(space.distributions)) for _ in range(batch_size)]
                in_flight = list(trials)
                try:
                    batch = [self._job_overrides(t, space, custom) for t in trials]
                    self.validate_batch_is_legal(batch)
                    rets = self.launcher.launch(batch, initial_job_idx=trials[0].number)
                    for trial, ret in zip(trials, rets):
                        state, reason = self._record(study, trial, ret)
                        in_flight.remove(trial)
                        if state == TrialState.FAIL:
                            failures += 1
                            last_failure = f"trial {trial.number}: {reason}"
                except Exception as e:  # composition error, launcher crash, ...
                    for trial in in_flight:
                        self._abandon(study, trial.number, f"{type(e).__name__}: {e}", interrupted=False)
                    raise
                except BaseException:  # Ctrl-C: the trials get another chance on resume
                    for trial in in_flight:
                        self._abandon(study, trial.number, "sweep interrupted while running")
                    raise
                returns.append(rets)
                ran += batch_size
                if failures > self.max_failure_rate * planned:
                    status = "FAILED"
                    raise SweepFailureRateExceeded(
                        f"Optuna sweep '{study_name}' stopped: {failures} of the {planned} "
                        f"trials planned in this run failed ({failures / planned:.0%}), more "
                        f"than max_failure_rate={self.max_failure_rate:g}. Last failure: "
                        f"{last_failure}"
                    )
        except SweepFailureRateExceeded:
            raise
        except Exception:
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
        return returns

    # ------------------------------------------------------------------ settings
    @staticmethod
    def _parse_directions(direction: Any) -> list[str]:
        items = list(direction) if isinstance(direction, (list, tuple)) else [direction]
        out = []
        for d in items:
            name = getattr(d, "name", d)
            name = str(name).lower()
            if name not in ("minimize", "maximize"):
                raise ValueError(f"hydra.sweeper.direction: '{d}' is not minimize or maximize")
            out.append(name)
        if not out:
            raise ValueError("hydra.sweeper.direction is empty")
        return out

    def _cwd(self) -> str:
        assert self.config is not None
        return str(OmegaConf.select(self.config, "hydra.runtime.cwd") or os.getcwd())

    def _resolve_storage(self, storage: str | None) -> str:
        """The storage URL every process uses: relative SQLite paths made absolute (jobs
        may chdir) and the SQLite file's folder created."""
        cwd = self._cwd()
        url = str(storage) if storage else f"{_SQLITE_PREFIX}{cwd}/outputs/optuna.db"
        if url.startswith(_SQLITE_PREFIX):
            path = url[len(_SQLITE_PREFIX) :]
            if path and not path.startswith(":memory:") and not path.startswith("file:"):
                db, sep, query = path.partition("?")
                p = Path(db)
                if not p.is_absolute():
                    p = Path(cwd) / p
                p.parent.mkdir(parents=True, exist_ok=True)
                url = f"{_SQLITE_PREFIX}{p}{sep}{query}"
        return url

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

    def _build_sampler(self, space: Any, seed_offset: int = 0) -> tuple[Any, int | None]:
        """The sampler and, for a grid, its size. A resumed study (seed_offset = trials it
        already has) gets seed + seed_offset, so that a seeded sampler does not draw the
        first run's points again, and the resumed run is still reproducible."""
        import optuna
        from hydra.utils import instantiate

        from grpo.sweep import search_space as ss

        sampler = self.sampler
        cfg = self.sampler_config
        if seed_offset and isinstance(cfg, dict) and cfg.get("seed") is not None:
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

    def _build_pruner(self) -> Any:
        import optuna
        from hydra.utils import instantiate

        pruner = self.pruner
        if isinstance(pruner, (DictConfig, dict)):
            pruner = instantiate(pruner)
        if pruner is None:
            pruner = optuna.pruners.NopPruner()
        if len(self.directions) > 1 and not isinstance(pruner, optuna.pruners.NopPruner):
            log.warning("Optuna cannot prune multi-objective studies: pruner ignored")
            self.pruner_config = None
            pruner = optuna.pruners.NopPruner()
        return pruner

    # ------------------------------------------------------------------ trials
    @staticmethod
    def _counts(study: Any) -> dict[str, int]:
        from optuna.trial import TrialState

        c = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0, "running": 0}
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE:
                c["complete"] += 1
            elif t.state == TrialState.PRUNED:
                c["pruned"] += 1
            elif t.state == TrialState.FAIL:
                c["interrupted" if t.user_attrs.get("interrupted") else "failed"] += 1
            elif t.state == TrialState.RUNNING:
                c["running"] += 1
        c["finished"] = c["complete"] + c["pruned"] + c["failed"]
        return c

    def _abandon(self, study: Any, number: int, why: str, interrupted: bool = True) -> None:
        """Mark a trial that produced no outcome FAIL. Interrupted ones (killed sweep,
        Ctrl-C) are flagged, not counted, and their params are queued again."""
        from optuna.trial import TrialState

        from grpo.sweep.trial import retry_on_lock

        try:
            frozen = study.get_trials(deepcopy=False)[number]
            if frozen.number != number:  # pragma: no cover - numbers are list positions
                frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
            if frozen.state != TrialState.RUNNING:
                return
            storage = study._storage
            if interrupted:
                retry_on_lock(lambda: storage.set_trial_user_attr(frozen._trial_id, "interrupted", True))
            retry_on_lock(lambda: storage.set_trial_user_attr(frozen._trial_id, "fail_reason", why[:2000]))
            _tell(study, number, state=TrialState.FAIL)
            run_id = frozen.user_attrs.get("mlflow_run_id")
            if run_id and self._mlflow:  # the killed job could not close its own MLflow run
                self._mlflow[0].set_terminated(run_id, status="KILLED")
            if interrupted and frozen.params:
                study.enqueue_trial(dict(frozen.params), user_attrs={"retry_of": number})
                log.warning("Trial %d marked FAIL (%s); its params are queued again", number, why)
            else:
                log.warning("Trial %d marked FAIL (%s)", number, why)
        except Exception as e:  # noqa: BLE001 - best effort while shutting down
            log.warning("Could not mark trial %d as interrupted: %s", number, e)

    def _fail_stale_trials(self, study: Any) -> None:
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self._abandon(study, t.number, "left RUNNING by an earlier sweep process that stopped")

    def _protocol_overrides(self, number: int) -> list[str]:
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

    def _mlflow_overrides(self, number: int) -> list[str]:
        from grpo.sweep.search_space import format_value

        if self._mlflow is None:
            return []
        _, run_id = self._mlflow
        return [
            f"++logger.parent_run_id={format_value(str(run_id))}",
            f"++logger.tags.optuna_study={format_value(str(self.resolved_study_name))}",
            f"++logger.tags.optuna_trial={format_value(str(number))}",
        ]

    def _job_overrides(self, trial: Any, space: Any, custom: Any) -> list[str]:
        for key, value in space.fixed.items():
            trial.set_user_attr(key, value)
        if custom is not None:
            custom(self.config, trial)
        return (
            space.overrides_for(trial.params)
            + self._protocol_overrides(trial.number)
            + self._mlflow_overrides(trial.number)
        )

    def _values(self, value: Any) -> tuple[list[float] | None, str | None]:
        """(values, None) for a usable objective, else (None, why not)."""
        n = len(self.directions)
        if value is None:
            return None, "the task returned None (it must return the objective value)"
        items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
        if len(items) != n:
            return None, f"the task returned {value!r}; {n} objective value(s) expected"
        out = []
        for v in items:
            try:
                f = float(v)
            except (TypeError, ValueError):
                return None, f"the task returned {value!r}, not a number"
            if math.isnan(f):
                return None, "the objective is NaN"
            out.append(f)
        return out, None

    def _record(self, study: Any, trial: Any, ret: JobReturn) -> tuple[Any, str]:
        from optuna.trial import TrialState

        from grpo.sweep.trial import retry_on_lock

        output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
        if output_dir:
            retry_on_lock(lambda: trial.set_user_attr("output_dir", str(output_dir)))

        values: list[float] | None = None
        reason = ""
        if ret.status == JobStatus.COMPLETED:
            values, why = self._values(ret._return_value)
            state = TrialState.COMPLETE if values is not None else TrialState.FAIL
            reason = why or ""
        else:
            exc = ret._return_value
            if isinstance(exc, BaseException) and _is_trial_pruned(exc):
                state = TrialState.PRUNED
                reason = str(exc) or "pruned"
            else:
                state = TrialState.FAIL
                reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
                if isinstance(exc, BaseException) and exc.__traceback__ is not None:
                    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                    retry_on_lock(lambda: trial.set_user_attr("traceback", tb[-4000:]))
                    log.debug("Trial %d traceback:\n%s", trial.number, tb)

        if state == TrialState.FAIL:
            retry_on_lock(lambda: trial.set_user_attr("fail_reason", reason[:2000]))
        elif state == TrialState.PRUNED:
            retry_on_lock(lambda: trial.set_user_attr("prune_reason", reason[:2000]))
        try:
            _tell(study, trial, values=values, state=state)
        except ValueError as e:  # e.g. an objective Optuna refuses
            state, reason = TrialState.FAIL, f"Optuna refused the objective: {e}"
            retry_on_lock(lambda: trial.set_user_attr("fail_reason", reason))
            _tell(study, trial, state=state)

        if state == TrialState.COMPLETE:
            shown = values[0] if values and len(values) == 1 else values
            log.info("Trial %d COMPLETE: value %s", trial.number, shown)
        elif state == TrialState.FAIL:
            log.warning("Trial %d FAILED: %s (job dir: %s)", trial.number, reason, output_dir)
        elif state == TrialState.PRUNED:
            log.info("Trial %d PRUNED: %s", trial.number, reason)
        return state, reason

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
        cfg = self._job_config(space)
        if cfg is None or OmegaConf.select(cfg, "logger.backend") != "mlflow":
            return
        from mlflow.tracking import MlflowClient

        from grpo.sweep.trial import mask_url

        uri = OmegaConf.select(cfg, "logger.tracking_uri")
        experiment = OmegaConf.select(cfg, "logger.experiment") or "Default"
        client = MlflowClient(tracking_uri=uri)
        from grpo.tracking.mlflow_run import experiment_id

        exp_id = experiment_id(client, uri, experiment)

        name = str(self.resolved_study_name)
        sweep = OmegaConf.select(self.config, "hydra.runtime.choices.sweep") or name
        run_id = study.user_attrs.get("mlflow_parent_run_id")
        if run_id:
            try:
                run = client.get_run(run_id)
                if run.info.experiment_id != exp_id or run.info.lifecycle_stage != "active":
                    run_id = None
            except Exception:  # noqa: BLE001 - another tracking store, or deleted
                run_id = None
        if run_id:
            client.update_run(run_id, status="RUNNING")
            log.info("MLflow: resuming parent run %s of study '%s'", run_id, name)
        else:
            tags = {
                "study_name": name,
                "sweep": str(sweep),
                "optuna_storage": mask_url(str(self.storage_url)),
                "optuna_directions": ",".join(self.directions),
            }
            if self.sampler_config:
                tags["optuna_sampler"] = str(self.sampler_config.get("_target_"))
            if self.pruner_config:
                tags["optuna_pruner"] = str(self.pruner_config.get("_target_"))
            run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
            study.set_user_attr("mlflow_parent_run_id", run_id)
            log.info("MLflow: parent run %s for study '%s' (experiment '%s')", run_id, name, experiment)
        self._mlflow = (client, run_id)

    def _log_mlflow_results(self, study: Any, status: str) -> None:
        if self._mlflow is None:
            return
        client, run_id = self._mlflow
        try:
            counts = self._counts(study)
            for k in ("complete", "pruned", "failed"):
                client.log_metric(run_id, f"n_{k}", counts[k])
            best = self.results.get("best_trial")
            if best is not None and "best_value" in self.results:
                client.log_metric(run_id, "best_value", float(self.results["best_value"]))
                client.set_tag(run_id, "best_trial", str(best))
                for k, v in (self.results.get("best_params") or {}).items():
                    client.set_tag(run_id, f"best_params.{_mlflow_key(k)}", str(v))
            if self.rerun_command:
                client.set_tag(run_id, "best_command", self.rerun_command[:5000])
        finally:
            client.set_terminated(run_id, status=status)

    # ------------------------------------------------------------------ results
    def _command_prefix(self) -> list[str]:
        orig = list(getattr(sys, "orig_argv", []) or [])
        n_args = len(sys.argv) - 1
        if orig and len(orig) > n_args:
            prefix = orig[: len(orig) - n_args]
            if prefix and os.path.basename(prefix[0]).startswith("python"):
                prefix[0] = "python"
            return prefix
        return ["python", sys.argv[0] if sys.argv else "<app>"]

    def _finish(self, study: Any, space: Any, sweep_dir: Path, status: str) -> None:
        from optuna.trial import TrialState

        from grpo.sweep.search_space import params_to_overrides
        from grpo.sweep.trial import mask_url

        try:
            results: dict[str, Any] = {"name": "optuna"}
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(self.directions) == 1:
                if complete:
                    best = study.best_trial
                    results["best_params"] = dict(best.params)
                    results["best_value"] = best.value
                    results["best_trial"] = best.number
                    args = space.fixed_overrides() + params_to_overrides(best.params, space.raw)
                    args.append("hydra.mode=RUN")
                    self.rerun_command = " ".join(shlex.quote(a) for a in self._command_prefix() + args)
                    results["command"] = self.rerun_command
                    log.info("Best trial: #%d, value %s", best.number, best.value)
                    log.info(
                        "Best params: %s",
                        " ".join(params_to_overrides(best.params, space.raw)),
                    )
                    log.info("Re-run it with: %s", self.rerun_command)
                else:
                    results["best_params"] = None
                    results["best_value"] = None
                    log.warning("No trial completed: no best trial")
            else:
                results["solutions"] = [
                    {"number": t.number, "params": dict(t.params), "values": list(t.values)} for t in study.best_trials
                ]
                log.info("Number of Pareto-optimal trials: %d", len(results["solutions"]))
                for t in study.best_trials:
                    log.info("  #%d values %s params %s", t.number, t.values, t.params)
            results["study_name"] = self.resolved_study_name
            results["storage"] = mask_url(str(self.storage_url))
            counts = self._counts(study)
            results["n_trials"] = {k: counts[k] for k in ("complete", "pruned", "failed")}
            self.results = results
            OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        finally:
            self._log_mlflow_results(study, status)
