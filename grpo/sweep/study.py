"""The Optuna study of a sweep and its bookkeeping: open or resume it, count its trials, tell
it how each job ended, fail what a stopped sweep left running, and the failure-rate rule.

Optuna loads inside the functions: the sweeper imports this module, and Hydra imports the
sweeper at every start of every app.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from omegaconf import ListConfig, OmegaConf

from grpo.db_retry import CREATION_RACE, retry_on_lock
from grpo.sweep.storage import mask_url

log = logging.getLogger(__name__)


class SweepError(CompactHydraException):
    """A sweep-level error; Hydra prints its one-line message without a traceback."""


class SweepFailureRateExceeded(SweepError):
    """Raised when failed trials exceed max_failure_rate."""


# --------------------------------------------------------------------------- the study
def parse_directions(direction: Any) -> list[str]:
    """``hydra.sweeper.direction`` (one or a list; names or StudyDirection) as lowercase names."""
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


def open_study(
    study_name: str,
    storage: Any,
    *,
    storage_url: str,
    sampler: Any,
    pruner: Any,
    directions: list[str],
    load_if_exists: bool,
    metric_names: list[str] | str | None = None,
) -> tuple[Any, bool]:
    """(the study, whether this process created it). Created, or loaded when it exists and
    `load_if_exists`; a clear SweepError when it exists and may not be resumed, or was made for
    other directions. Several workers starting at once on an empty database race to create
    it: the losers load the winner's study. `metric_names` become Optuna's metric names (the
    dashboard's labels); one name (the app's `optimized_metric`) names a single objective only."""
    if isinstance(metric_names, str):
        metric_names = [metric_names] if len(directions) == 1 else None
    import optuna

    def create() -> Any:
        try:
            return optuna.create_study(
                study_name=study_name, storage=storage, sampler=sampler, pruner=pruner, directions=directions
            )
        except optuna.exceptions.DuplicatedStudyError as e:
            return e  # not a race to retry: the study is there

    def load() -> Any:
        return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)

    study = retry_on_lock(create, also=CREATION_RACE)
    created = not isinstance(study, optuna.exceptions.DuplicatedStudyError)
    if not created:
        if not load_if_exists:
            raise SweepError(
                f"Study '{study_name}' already exists in {mask_url(storage_url)}; set "
                "hydra.sweeper.load_if_exists=true to resume it, or pick another study_name"
            ) from study
        study = retry_on_lock(load)
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise SweepError(
            f"Study '{study_name}' in {mask_url(storage_url)} was created with direction {have}, "
            f"the sweep asks for {directions}: use another hydra.sweeper.study_name"
        )
    if metric_names and (created or study.metric_names is None):  # an older study gets its names too
        import warnings

        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what its dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry_on_lock(lambda: study.set_metric_names(list(metric_names)))
    return study, created


def retried_numbers(trials: list[Any]) -> set[int]:
    """Numbers of the trials that were queued again (their retry carries ``retry_of``)."""
    return {int(t.user_attrs["retry_of"]) for t in trials if t.user_attrs.get("retry_of") is not None}


def not_counted(trial: Any, retried: set[int]) -> bool:
    """A FAIL that is not the trial's own outcome: interrupted (its worker stopped) and queued
    again, or surplus (asked in a race for the last slot; never run)."""
    return bool(trial.user_attrs.get("interrupted") or trial.user_attrs.get("surplus") or trial.number in retried)


def count_trials(study: Any) -> dict[str, int]:
    """Trials by outcome; ``finished`` (COMPLETE + PRUNED + FAIL) leaves out interrupted and
    surplus ones, which must not count towards n_trials. ``running`` counts RUNNING trials
    (of every worker), ``waiting`` the queued ones (retries, enqueued params)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    c = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0, "running": 0, "waiting": 0}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["interrupted" if not_counted(t, retried) else "failed"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
    c["finished"] = c["complete"] + c["pruned"] + c["failed"]
    return c


def is_surplus(study: Any, number: int, target: int) -> bool:
    """Whether trial `number` (just asked) lost a race for the last of `target` slots: the
    trials before it that count (finished or RUNNING) already fill them. Workers that ask at
    the same moment agree, because they order the trials by number."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    before = 0
    for t in trials:
        if t.number >= number:
            continue
        if t.state == TrialState.RUNNING or (t.state.is_finished() and not not_counted(t, retried)):
            before += 1
    return before >= target


def tell(study: Any, trial: Any, **kwargs: Any) -> None:
    """study.tell that tolerates GridSampler's study.stop() outside optimize(): Optuna
    stores the trial's state before the error surfaces (a `finally` in _tell)."""

    def call() -> None:
        try:
            study.tell(trial, skip_if_finished=True, **kwargs)
        except RuntimeError as e:
            if "Study.stop" not in str(e):
                raise

    retry_on_lock(call)


# --------------------------------------------------------------------------- trials without an outcome
def abandon_trial(
    study: Any,
    number: int,
    why: str,
    interrupted: bool = True,
    close_run: Callable[[str], None] | None = None,
) -> None:
    """Mark a trial that produced no outcome FAIL. Interrupted ones (killed sweep,
    Ctrl-C) are flagged, not counted, and their params are queued again. `close_run` ends
    the trial's MLflow run, which a killed job could not close itself."""
    from optuna.trial import TrialState

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
        tell(study, number, state=TrialState.FAIL)
        run_id = frozen.user_attrs.get("mlflow_run_id")
        if run_id and close_run is not None:
            close_run(run_id)
        if interrupted and frozen.params:
            study.enqueue_trial(dict(frozen.params), user_attrs={"retry_of": number})
            log.warning("Trial %d marked FAIL (%s); its params are queued again", number, why)
        else:
            log.warning("Trial %d marked FAIL (%s)", number, why)
    except Exception as e:  # noqa: BLE001 - best effort while shutting down
        log.warning("Could not mark trial %d as interrupted: %s", number, e)


def fail_surplus_trial(study: Any, trial: Any, why: str | None = None) -> None:
    """End a trial that lost a race before it ran (not counted): for the study's last slot, or
    for the same grid cell."""
    from optuna.trial import TrialState

    why = why or "asked at the same moment as another worker's trial for the study's last slot; not run"
    retry_on_lock(lambda: trial.set_user_attr("surplus", True))
    retry_on_lock(lambda: trial.set_user_attr("fail_reason", why))
    tell(study, trial, state=TrialState.FAIL)
    log.info("Trial %d not run: %s", trial.number, why)


def same_grid_cell(study: Any, trial: Any) -> int | None:
    """The number of an earlier trial that took the same grid cell (GridSampler's ``grid_id``),
    running or counted; two workers asking at the same moment may draw the same one."""
    from optuna.trial import TrialState

    attrs = study._storage.get_trial_system_attrs(trial._trial_id)
    if "grid_id" not in attrs:
        return None
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for t in trials:
        if t.number >= trial.number or t.system_attrs.get("grid_id") != attrs["grid_id"]:
            continue
        if t.state == TrialState.RUNNING or (t.state.is_finished() and not not_counted(t, retried)):
            return t.number
    return None


# User attrs that belong to one run of a trial, not to its params: a retry starts without them.
_RUN_ATTRS = ("mlflow_run_id", "output_dir", "worker", "fail_reason", "traceback", "interrupted", "prune_reason")


class RetryStaleTrial:
    """Optuna's heartbeat-stale callback: a RUNNING trial whose worker stopped beating (killed,
    preempted, lost) has been failed by Optuna; its MLflow run is closed and Optuna's
    RetryHeartbeatStaleTrialCallback queues its params again (at most `max_retry` times; None:
    always) as a trial with ``retry_of`` and ``retry_reason``. A retried trial does not count
    towards n_trials. The first worker that looks after the grace period does this; any
    worker then runs the retry."""

    def __init__(self, max_retry: int | None, grace_period: int) -> None:
        self.max_retry = max_retry
        self.grace_period = grace_period
        self.close_run: Callable[[str], None] | None = None  # set once the MLflow parent is open

    def __call__(self, study: Any, frozen: Any) -> None:
        import copy

        from optuna.storages import RetryHeartbeatStaleTrialCallback

        # Optuna has already set the trial FAIL (it can no longer be annotated): the reason
        # goes on its retry, whose ``retry_of`` also keeps the failed one from counting.
        worker = frozen.user_attrs.get("worker", "its worker")
        why = f"no heartbeat for {self.grace_period}s: {worker} stopped (killed, preempted or lost)"
        run_id = frozen.user_attrs.get("mlflow_run_id")
        if run_id and self.close_run is not None:
            self.close_run(run_id)
        retry = copy.deepcopy(frozen)
        retry.user_attrs = {
            **{k: v for k, v in frozen.user_attrs.items() if k not in _RUN_ATTRS and k != "retry_reason"},
            "retry_of": frozen.number,
            "retry_reason": why,
        }
        n_before = len(study.get_trials(deepcopy=False))
        RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(study, retry)
        queued = len(study.get_trials(deepcopy=False)) > n_before
        log.warning(
            "Trial %d marked FAIL (%s); %s",
            frozen.number,
            why,
            "its params are queued again" if queued else f"not retried (max_retry={self.max_retry} reached)",
        )


def fail_stale_trials(study: Any, close_run: Callable[[str], None] | None = None) -> None:
    """Abandon the trials an earlier sweep process left RUNNING when it stopped (heartbeats off:
    one sweep process per study)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        abandon_trial(study, t.number, "left RUNNING by an earlier sweep process that stopped", close_run=close_run)


# --------------------------------------------------------------------------- outcomes
def is_trial_pruned(exc: BaseException) -> bool:
    """Whether `exc` is an optuna.TrialPruned, judged by name so optuna need not be loaded."""
    return any(c.__name__ == "TrialPruned" and c.__module__.startswith("optuna") for c in type(exc).__mro__)


def parse_values(value: Any, n_objectives: int) -> tuple[list[float] | None, str | None]:
    """(values, None) for a usable objective, else (None, why not)."""
    if value is None:
        return None, "the task returned None (it must return the objective value)"
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if len(items) != n_objectives:
        return None, f"the task returned {value!r}; {n_objectives} objective value(s) expected"
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


def _judge(trial: Any, ret: JobReturn, n_objectives: int) -> tuple[Any, list[float] | None, str]:
    """(state, values, reason) of a finished job; a failed job's traceback goes to the trial."""
    from optuna.trial import TrialState

    if ret.status == JobStatus.COMPLETED:
        values, why = parse_values(ret._return_value, n_objectives)
        return (TrialState.COMPLETE if values is not None else TrialState.FAIL), values, why or ""
    exc = ret._return_value
    if isinstance(exc, BaseException) and is_trial_pruned(exc):
        return TrialState.PRUNED, None, str(exc) or "pruned"
    reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
    if isinstance(exc, BaseException) and exc.__traceback__ is not None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        retry_on_lock(lambda: trial.set_user_attr("traceback", tb[-4000:]))
        log.debug("Trial %d traceback:\n%s", trial.number, tb)
    return TrialState.FAIL, None, reason


def record_outcome(study: Any, trial: Any, ret: JobReturn, n_objectives: int) -> tuple[Any, str]:
    """Tell the study how the trial's job ended: a number -> COMPLETE, optuna.TrialPruned ->
    PRUNED, anything else -> FAIL with ``fail_reason``. Returns (state, reason)."""
    from optuna.trial import TrialState

    output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    if output_dir:
        retry_on_lock(lambda: trial.set_user_attr("output_dir", str(output_dir)))

    state, values, reason = _judge(trial, ret, n_objectives)
    if state == TrialState.FAIL:
        retry_on_lock(lambda: trial.set_user_attr("fail_reason", reason[:2000]))
    elif state == TrialState.PRUNED:
        retry_on_lock(lambda: trial.set_user_attr("prune_reason", reason[:2000]))
    try:
        tell(study, trial, values=values, state=state)
    except ValueError as e:  # e.g. an objective Optuna refuses
        state, reason = TrialState.FAIL, f"Optuna refused the objective: {e}"
        retry_on_lock(lambda: trial.set_user_attr("fail_reason", reason))
        tell(study, trial, state=state)

    if state == TrialState.COMPLETE:
        shown = values[0] if values and len(values) == 1 else values
        log.info("Trial %d COMPLETE: value %s", trial.number, shown)
    elif state == TrialState.FAIL:
        log.warning("Trial %d FAILED: %s (job dir: %s)", trial.number, reason, output_dir)
    elif state == TrialState.PRUNED:
        log.info("Trial %d PRUNED: %s", trial.number, reason)
    return state, reason


class FailureRate:
    """The max_failure_rate rule: the sweep stops once the failed trials exceed
    max_failure_rate x the trials planned in this invocation."""

    def __init__(self, study_name: str, planned: int, max_failure_rate: float) -> None:
        self.study_name = study_name
        self.planned = planned
        self.max_failure_rate = max_failure_rate
        self.failures = 0
        self.last_failure: str | None = None

    def add(self, number: int, state: Any, reason: str) -> None:
        from optuna.trial import TrialState

        if state == TrialState.FAIL:
            self.failures += 1
            self.last_failure = f"trial {number}: {reason}"

    def check(self) -> None:
        """Raise SweepFailureRateExceeded, naming the count and the last error, when over."""
        if self.failures > self.max_failure_rate * self.planned:
            raise SweepFailureRateExceeded(
                f"Optuna sweep '{self.study_name}' stopped: {self.failures} of the {self.planned} "
                f"trials planned in this run failed ({self.failures / self.planned:.0%}), more "
                f"than max_failure_rate={self.max_failure_rate:g}. Last failure: "
                f"{self.last_failure}"
            )
