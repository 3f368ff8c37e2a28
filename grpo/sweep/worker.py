"""One worker of a sweep: it asks the study for a trial when it is free, runs it through the
launcher while recording the trial's heartbeat, and stops when the study holds ``n_trials``
finished trials, counting every worker's.

Several workers (the same command started on several machines, or several times on one, or
as a SLURM array) share one study in one storage. None waits for another: each asks for its
next trial as soon as its own has ended. Together they stop at ``n_trials``:

* a worker asks only while finished + RUNNING trials (all workers') < n_trials;
* two workers asking for the last slot at the same moment agree on who got it by trial
  number (study.is_surplus); the loser's trial is ended unrun, flagged ``surplus``;
* with heartbeats on, a worker whose remaining slots are all RUNNING elsewhere waits
  (looking every 2 s, or every heartbeat interval if shorter) instead of leaving: if one of those workers stops, its
  trial goes stale after the grace period, is failed and queued again (study.RetryStaleTrial),
  and the waiting worker runs the retry. Without heartbeats it cannot tell a slow worker from
  a dead one, so it leaves.

A seeded sampler is made anew for each trial with seed + trial number (``reseed``): the
workers, which all start from the same seed, do not propose the same points, and trial k's
proposal depends on the seed, k and the study's history, not on which worker asked. The grid
keeps its seed (it orders the cells); two workers that draw the same cell at the same moment
agree by trial number, and the later one's trial is ended unrun.

``n_jobs`` > 1 in one worker asks for that many trials at once and hands them to the launcher
as one batch (joblib runs them in parallel); Hydra's launchers return a batch only when all
its jobs have ended, so within one worker a batch waits for its slowest trial. Several
workers with ``n_jobs=1`` never wait for each other.

The trial's identity reaches the job through ``GRPO_OPTUNA_TRIAL`` (trial.py), set by
TrialTask, the task function the sweeper hands the launcher: it travels with the job to
whatever process or machine the launcher runs it on (pickled by joblib and submitit), so the
job's overrides stay exactly its search values plus the user's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from grpo.db_retry import retry_on_lock
from grpo.sweep.study import count_trials, fail_surplus_trial, is_surplus, same_grid_cell
from grpo.sweep.trial import PROTOCOL_ENV

log = logging.getLogger(__name__)


def worker_id() -> str:
    """How trials name the worker that ran them: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class TrialTask:
    """The app's task function, run with ``GRPO_OPTUNA_TRIAL`` set to its trial's context.

    `contexts` maps a job's number (``hydra.job.num``, which the sweeper chooses through the
    launcher's ``initial_job_idx``) to the encoded context of its trial; it is filled before
    each launch, so the launcher pickles the current one with the job."""

    def __init__(self, task_function: Callable[[Any], Any]) -> None:
        self.task_function = task_function
        self.contexts: dict[int, str] = {}

    def __call__(self, cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig

        text = self.contexts.get(int(HydraConfig.get().job.num))
        if text is None:
            return self.task_function(cfg)
        before = os.environ.get(PROTOCOL_ENV)
        os.environ[PROTOCOL_ENV] = text
        try:
            return self.task_function(cfg)
        finally:
            if before is None:
                os.environ.pop(PROTOCOL_ENV, None)
            else:
                os.environ[PROTOCOL_ENV] = before


class Heartbeats:
    """Record the heartbeat of the given trials now and then every `interval` seconds, in a
    thread, while the block runs (a worker killed mid-trial stops beating)."""

    def __init__(self, storage: Any, trial_ids: list[int], interval: float | None) -> None:
        self.storage = storage
        self.trial_ids = trial_ids
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        for trial_id in self.trial_ids:
            try:
                retry_on_lock(lambda t=trial_id: self.storage.record_heartbeat(t))
            except Exception as e:  # noqa: BLE001 - a missed beat is not the trial's failure
                log.warning("could not record the heartbeat of trial id %d: %s", trial_id, e)

    def _run(self) -> None:
        assert self.interval is not None
        try:
            while not self._stop.wait(self.interval):
                self.beat()
        finally:
            remove = getattr(self.storage, "remove_session", None)
            if remove is not None:
                remove()  # this thread's connection

    def __enter__(self) -> Heartbeats:
        if self.interval:
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def fail_dead_trials(study: Any) -> None:
    """Optuna's heartbeat check: RUNNING trials without a heartbeat for the grace period are
    failed and handed to the storage's stale-trial callback (study.RetryStaleTrial)."""
    import optuna

    retry_on_lock(lambda: optuna.storages.fail_stale_trials(study))


class TrialSource:
    """Where a worker gets its next trials (see the module docstring)."""

    def __init__(
        self,
        study: Any,
        distributions: Mapping[str, Any],
        target: int,
        n_jobs: int,
        heartbeat_interval: float | None,
        reseed: Callable[[int], Any] | None = None,
    ) -> None:
        self.study = study
        self.reseed = reseed
        self.distributions = dict(distributions)
        self.target = target
        self.n_jobs = n_jobs
        self.heartbeat_interval = heartbeat_interval
        self.poll = min(float(heartbeat_interval), 2.0) if heartbeat_interval else 0.0
        self.worker = worker_id()
        self.waited = 0.0  # seconds spent waiting for other workers' trials

    def next_batch(self) -> list[Any]:
        """Up to n_jobs new trials, each with its first heartbeat recorded; [] when the study
        needs no more from this worker."""
        announced = False
        while True:
            if self.heartbeat_interval:
                fail_dead_trials(self.study)
            counts = count_trials(self.study)
            if counts["finished"] >= self.target:
                return []
            free = self.target - counts["finished"] - counts["running"]
            if free > 0:
                trials = self._ask(min(self.n_jobs, free))
                if trials:
                    return trials
                continue
            if not self.heartbeat_interval:
                log.info("The study's remaining trials are running on other workers; this worker stops")
                return []
            if not announced:
                log.info(
                    "The study's remaining %d trial(s) are running on other workers: waiting, to retry any "
                    "whose worker stops (heartbeat check every %.0fs)",
                    counts["running"],
                    self.poll,
                )
                announced = True
            time.sleep(self.poll)
            self.waited += self.poll

    def _ask(self, n: int) -> list[Any]:
        from grpo.sweep.search_space import suggest_all

        trials = []
        for _ in range(n):
            trial = retry_on_lock(self.study.ask)
            if self.heartbeat_interval:
                retry_on_lock(lambda t=trial: self.study._storage.record_heartbeat(t._trial_id))
            if self.reseed is not None:  # seed + trial number: no two workers draw the same point
                self.study.sampler = self.reseed(trial.number)
            retry_on_lock(lambda t=trial: suggest_all(t, self.distributions))
            retry_on_lock(lambda t=trial: t.set_user_attr("worker", self.worker))
            if is_surplus(self.study, trial.number, self.target):
                fail_surplus_trial(self.study, trial)
                break
            twin = same_grid_cell(self.study, trial)
            if twin is not None:  # another worker drew the same cell: draw differently next time
                fail_surplus_trial(self.study, trial, f"grid cell already taken by trial {twin}; not run")
                self.study.sampler.reseed_rng()
                break
            trials.append(trial)
        return trials
