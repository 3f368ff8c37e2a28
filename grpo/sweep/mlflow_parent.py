"""The MLflow parent run of a sweep: one per study (name = study name; reused on resume),
under which every trial's run nests, and which gets the sweep's results at the end.

mlflow (and search_space.py, which imports optuna) load inside the methods: the sweeper
imports this module, and Hydra imports the sweeper at every start of every app.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grpo.sweep.storage import mask_url
from grpo.sweep.study import count_trials

log = logging.getLogger(__name__)


def mlflow_key(name: str) -> str:
    """A tag/param-safe key: MLflow allows alphanumerics, _ - . / and spaces."""
    name = name.lstrip("+~")
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


class MlflowParentRun:
    """An open parent run: its client and run id."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def start(
        cls,
        job_cfg: DictConfig | None,
        study: Any,
        *,
        study_name: str,
        sweep: str,
        storage_url: str,
        directions: list[str],
        sampler_config: dict[str, Any] | None,
        pruner_config: dict[str, Any] | None,
    ) -> MlflowParentRun | None:
        """Open (or, on resume, reopen) the parent run when the job config logs to MLflow;
        None otherwise. The run id is kept in the study's user attrs."""
        if job_cfg is None or OmegaConf.select(job_cfg, "logger.backend") != "mlflow":
            return None
        from mlflow.tracking import MlflowClient

        from grpo.tracking.mlflow_run import experiment_id

        uri = OmegaConf.select(job_cfg, "logger.tracking_uri")
        experiment = OmegaConf.select(job_cfg, "logger.experiment") or "Default"
        client = MlflowClient(tracking_uri=uri)
        exp_id = experiment_id(client, uri, experiment)

        run_id = _reusable_run_id(client, study.user_attrs.get("mlflow_parent_run_id"), exp_id)
        if run_id:
            client.update_run(run_id, status="RUNNING")
            log.info("MLflow: resuming parent run %s of study '%s'", run_id, study_name)
        else:
            tags = {
                "study_name": study_name,
                "sweep": sweep,
                "optuna_storage": mask_url(storage_url),
                "optuna_directions": ",".join(directions),
            }
            if sampler_config:
                tags["optuna_sampler"] = str(sampler_config.get("_target_"))
            if pruner_config:
                tags["optuna_pruner"] = str(pruner_config.get("_target_"))
            run_id = client.create_run(exp_id, run_name=study_name, tags=tags).info.run_id
            study.set_user_attr("mlflow_parent_run_id", run_id)
            log.info("MLflow: parent run %s for study '%s' (experiment '%s')", run_id, study_name, experiment)
        return cls(client, run_id)

    def job_overrides(self, study_name: str, number: int) -> list[str]:
        """What a trial's job needs to nest its run under this one and tag it."""
        from grpo.sweep.search_space import format_value

        return [
            f"++logger.parent_run_id={format_value(str(self.run_id))}",
            f"++logger.tags.optuna_study={format_value(str(study_name))}",
            f"++logger.tags.optuna_trial={format_value(str(number))}",
        ]

    def kill_child(self, run_id: str) -> None:
        """End a trial's run that its killed job could not close."""
        self.client.set_terminated(run_id, status="KILLED")

    def log_results(self, study: Any, results: dict[str, Any], rerun_command: str | None, status: str) -> None:
        """Trial counts, best value, params and command; then end the run with `status`."""
        client, run_id = self.client, self.run_id
        try:
            counts = count_trials(study)
            for k in ("complete", "pruned", "failed"):
                client.log_metric(run_id, f"n_{k}", counts[k])
            best = results.get("best_trial")
            if best is not None and "best_value" in results:
                client.log_metric(run_id, "best_value", float(results["best_value"]))
                client.set_tag(run_id, "best_trial", str(best))
                for k, v in (results.get("best_params") or {}).items():
                    client.set_tag(run_id, f"best_params.{mlflow_key(k)}", str(v))
            if rerun_command:
                client.set_tag(run_id, "best_command", rerun_command[:5000])
        finally:
            client.set_terminated(run_id, status=status)


def _reusable_run_id(client: Any, run_id: str | None, exp_id: str) -> str | None:
    """The study's earlier parent run, if it is still active in this experiment."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
        if run.info.experiment_id != exp_id or run.info.lifecycle_stage != "active":
            return None
    except Exception:  # noqa: BLE001 - another tracking store, or deleted
        return None
    return run_id
