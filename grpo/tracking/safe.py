"""A tracker that never takes training down, keeps a local copy, and never logs a step twice.

Every metric also goes to `<run dir>/metrics.jsonl`. If the tracking store fails mid-run (a
locked database, a server down), the failure is reported once and training goes on with the
local file alone. When the run ends, the store is tried once more (`catch_up`): if it answers,
it is given every call it missed (kept in memory: metrics, completion tables, tags), then the
final checkpoints and the run's end, so its MLflow run ends whole instead of RUNNING forever; the summary says which
happened. After a resume, steps that the store already holds are not logged again (a resumed
run replays them deterministically), so a run's history has no duplicated steps.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("grpo")

# Calls kept for a store that is down (a step logs a few): past this, a long outage would hold too
# much memory, so they are dropped and the local file stays the record.
MAX_MISSED_CALLS = 20_000


class SafeTracker:
    def __init__(self, inner, local_dir: str, logged_until: dict[str, int] | None = None):
        self.inner = inner
        self.local_path = os.path.join(local_dir, "metrics.jsonl")
        os.makedirs(local_dir, exist_ok=True)
        self.logged_until = logged_until or {}  # metric -> last step the store already has
        self.failed: str | None = None
        self.recovered: str | None = None  # what failed mid-run, when the store took the missed steps at the end
        self.missed: list[tuple[str, tuple]] | None = []  # the calls the store did not take; None: too many

    @property
    def run_id(self):
        return self.inner.run_id

    def _call(self, what: str, *args) -> None:
        if self.failed:
            self._keep(what, args)
            return
        try:
            getattr(self.inner, what)(*args)
        except Exception as exc:  # noqa: BLE001 - any store failure: keep training
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self._keep(what, args)
            log.warning("tracking failed (%s); training goes on, metrics continue in %s", self.failed, self.local_path)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        fresh = {k: v for k, v in metrics.items() if step > self.logged_until.get(k, -1)}
        if not fresh:
            return
        with open(self.local_path, "a") as f:
            f.write(json.dumps({"step": step, **fresh}) + "\n")
        self._call("log_metrics", fresh, step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", params)

    def log_text(self, text: str, path: str) -> None:
        self._call("log_text", text, path)

    def log_table(self, rows: list[dict], path: str) -> None:
        self._call("log_table", rows, path)

    def log_artifacts(self, local_dir: str, path: str) -> None:
        self._call("log_artifacts", local_dir, path)

    def log_datasets(self, sources) -> None:
        self._call("log_datasets", sources)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("set_tags", tags)

    def finish(self, status: str = "FINISHED") -> None:
        self._call("finish", status)

    def _keep(self, what: str, args: tuple) -> None:
        if self.missed is not None:
            self.missed.append((what, args))
            if len(self.missed) > MAX_MISSED_CALLS:
                self.missed = None

    def catch_up(self) -> None:
        """If the store failed mid-run and answers again, give it what this process logged since the
        failure, in order (metric steps it already holds left out; a directory since deleted, such as
        a pruned checkpoint, skipped), and log to it again."""
        if not self.failed or self.missed is None:
            return
        try:
            held = self.inner.logged_until()
            steps = set()
            for what, args in self.missed:
                if what == "log_metrics":
                    metrics, step = args
                    args = ({k: v for k, v in metrics.items() if step > held.get(k, -1)}, step)
                    if not args[0]:
                        continue
                    steps.add(step)
                if what == "log_artifacts" and not os.path.isdir(args[0]):
                    continue
                getattr(self.inner, what)(*args)
        except Exception:  # noqa: BLE001 - still down: the local file stays the record
            return
        log.warning("tracking is back: %d missed calls logged (%d metric steps)", len(self.missed), len(steps))
        self.recovered, self.failed, self.missed = self.failed, None, []
