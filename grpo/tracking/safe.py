"""A tracker that never takes training down, keeps a local copy, and never logs a step twice.

Every metric also goes to `<run dir>/metrics.jsonl`. If the tracking store fails mid-run (a
locked database, a server down), the failure is reported once and training goes on with the
local file alone; the summary says so. After a resume, steps that the store already holds
are not logged again (a resumed run replays them deterministically), so a run's history has
no duplicated steps.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("grpo")


class SafeTracker:
    def __init__(self, inner, local_dir: str, logged_until: dict[str, int] | None = None):
        self.inner = inner
        self.local_path = os.path.join(local_dir, "metrics.jsonl")
        os.makedirs(local_dir, exist_ok=True)
        self.logged_until = logged_until or {}  # metric -> last step the store already has
        self.failed: str | None = None

    @property
    def run_id(self):
        return self.inner.run_id

    def _call(self, what: str, *args) -> None:
        if self.failed:
            return
        try:
            getattr(self.inner, what)(*args)
        except Exception as exc:  # noqa: BLE001 - any store failure: keep training
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
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
