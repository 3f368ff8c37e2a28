"""The tracker interface the recipe talks to; `build_tracker` picks the backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from grpo.config.schema import LoggerConfig
from grpo.tracking.mlflow_run import MlflowTracker  # imports mlflow only when a run starts
from grpo.tracking.safe import SafeTracker


class Tracker(Protocol):
    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_text(self, text: str, path: str) -> None: ...
    def log_table(self, rows: list[dict], path: str) -> None: ...
    def log_artifacts(self, local_dir: str, path: str) -> None: ...
    def log_datasets(self, sources: Sequence[Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    run_id = None

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step):
        pass

    def log_text(self, text, path):
        pass

    def log_table(self, rows, path):
        pass

    def log_artifacts(self, local_dir, path):
        pass

    def log_datasets(self, sources):
        pass

    def set_tags(self, tags):
        pass

    def finish(self, status="FINISHED"):
        pass


def build_tracker(
    cfg: LoggerConfig, run_name: str, tags: Mapping[str, str], local_dir: str, resume_run_id: str | None = None
) -> Tracker:
    """The configured backend wrapped in SafeTracker (local JSONL copy, failure-tolerant)."""
    if cfg.backend == "none":
        return SafeTracker(NullTracker(), local_dir)
    inner = MlflowTracker(cfg, run_name, tags, resume_run_id=resume_run_id)
    return SafeTracker(inner, local_dir, logged_until=inner.logged_until() if resume_run_id else None)
