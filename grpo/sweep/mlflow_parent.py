"""The MLflow parent run of a sweep: one per study (name = study name; reused on resume),
under which every trial's run nests, and which gets the sweep's results at the end. With
several workers on one study, the worker that created the study creates the parent run; the
others find it in the study's user attrs; the last worker to finish closes it.

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


PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attr that names its parent run
PARENT_WAIT_S = 30.0  # how long a worker waits for the study's creator to create the parent
PARENT_CLAIM_SETTLE_S = 1.0


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
        created: bool,
        study_name: str,
        sweep: str,
        storage_url: str,
        directions: list[str],
        metric_names: list[str] | None = None,
        sampler_config: dict[str, Any] | None,
        pruner_config: dict[str, Any] | None,
    ) -> MlflowParentRun | None:
        """Open (or reopen) the study's parent run when the job config logs to MLflow; None
        otherwise. One per study, whatever the number of workers: the worker that created the
        study creates it and names it in the study's user attrs; the others find it there."""
        if job_cfg is None or OmegaConf.select(job_cfg, "logger.backend") != "mlflow":
            return None
        from mlflow.tracking import MlflowClient

        from grpo.tracking.mlflow_run import experiment_id

        uri = OmegaConf.select(job_cfg, "logger.tracking_uri")
        experiment = OmegaConf.select(job_cfg, "logger.experiment") or "Default"
        client = MlflowClient(tracking_uri=uri)
        exp_id = experiment_id(client, uri, experiment)

        def create() -> str:
            tags = {
                "study_name": study_name,
                "sweep": sweep,
                "optuna_storage": mask_url(storage_url),
                "optuna_directions": ",".join(directions),
            }
            if metric_names:
                tags["optuna_metric_names"] = ",".join(metric_names)
            if sampler_config:
                tags["optuna_sampler"] = str(sampler_config.get("_target_"))
            if pruner_config:
                tags["optuna_pruner"] = str(pruner_config.get("_target_"))
            run_id = client.create_run(exp_id, run_name=study_name, tags=tags).info.run_id
            log.info("MLflow: parent run %s for study '%s' (experiment '%s')", run_id, study_name, experiment)
            return run_id

        run_id = _reusable_run_id(client, study.user_attrs.get(PARENT_ATTR), exp_id)
        if run_id:
            client.update_run(run_id, status="RUNNING")
            log.info("MLflow: parent run %s of study '%s'", run_id, study_name)
        elif created:
            run_id = create()
            study.set_user_attr(PARENT_ATTR, run_id)
        else:
            run_id = _wait_or_claim(study, lambda rid: _reusable_run_id(client, rid, exp_id), create)
        return cls(client, run_id)

    def tag_child(self, run_id: str | None, state: str) -> None:
        """Say how a trial ended on its run (``optuna_state``); best effort."""
        if not run_id:
            return
        try:
            self.client.set_tag(run_id, "optuna_state", state)
        except Exception as e:  # noqa: BLE001 - the tracking server may be gone; the study has it
            log.warning("MLflow: could not tag run %s with optuna_state=%s: %s", run_id, state, e)

    def kill_child(self, run_id: str) -> None:
        """End a trial's run that its killed job could not close."""
        self.tag_child(run_id, "FAIL")
        try:
            self.client.set_terminated(run_id, status="KILLED")
        except Exception as e:  # noqa: BLE001
            log.warning("MLflow: could not close run %s: %s", run_id, e)

    def log_results(self, study: Any, results: dict[str, Any], rerun_command: str | None, status: str) -> None:
        """Trial counts, best value, params and command; the run ends (with `status`) once no
        trial of the study is left running or queued: the last worker closes it."""
        client, run_id = self.client, self.run_id
        counts = count_trials(study)
        try:
            for k in ("complete", "pruned", "failed"):
                client.log_metric(run_id, f"n_{k}", counts[k])
            best = results.get("best_trial")
            if best is not None and "best_value" in results:
                client.log_metric(run_id, "best_value", float(results["best_value"]))
                client.set_tag(run_id, "best_trial", str(best))
                for k, v in (results.get("best_params") or {}).items():
                    client.set_tag(run_id, f"best_params.{mlflow_key(k)}", str(v))
                self._best_as_params(results.get("best_params") or {})
                self._link_best(study, int(best), float(results["best_value"]))
            if "solutions" in results:
                client.set_tag(run_id, "pareto_trials", ",".join(str(s["number"]) for s in results["solutions"]))
            if rerun_command:
                client.set_tag(run_id, "best_command", rerun_command[:5000])
        finally:
            if counts["running"] == 0 and counts["waiting"] == 0:
                client.set_terminated(run_id, status=status)

    def _best_as_params(self, best_params: dict[str, Any]) -> None:
        """The best trial's params as the parent's params, keyed as in its children. MLflow params
        cannot change: when a resumed study finds a new best, the tags (best_params.*) follow it
        and the params keep the first."""
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        fresh = {mlflow_key(k): str(v) for k, v in best_params.items()}
        changed = sorted(k for k, v in fresh.items() if k in have and have[k] != v)
        if changed:
            log.warning(
                "MLflow: the parent run keeps its earlier best params for %s; tags best_params.* are current",
                ", ".join(changed),
            )
        new = [Param(k, v) for k, v in fresh.items() if k not in have]
        if new:
            self.client.log_batch(self.run_id, params=new)

    def _link_best(self, study: Any, number: int, value: float) -> None:
        """Tag best_run_id, and a description (the UI renders it as markdown) linking the best child."""
        child = next((t.user_attrs.get("mlflow_run_id") for t in study.trials if t.number == number), None)
        if not child:
            return
        self.client.set_tag(self.run_id, "best_run_id", child)
        experiment = self.client.get_run(self.run_id).info.experiment_id
        try:
            name = self.client.get_run(child).info.run_name or child[:8]
        except Exception:  # noqa: BLE001 - the child's run may be in another store
            name = child[:8]
        link = f"[{name}](#/experiments/{experiment}/runs/{child})"
        self.client.set_tag(self.run_id, "mlflow.note.content", f"Best trial: {link}, value {value:.6g}")


def _wait_or_claim(study: Any, reusable: Any, create: Any) -> str:
    """The parent of a study this worker did not create: wait for the creator to name it; if
    none appears (the study was made before MLflow was on, or its creator died), claim the
    job: every claimant writes its token, and after a pause the last one written creates it."""
    import time
    import uuid

    deadline = time.monotonic() + PARENT_WAIT_S
    while time.monotonic() < deadline:
        run_id = reusable(_fresh_attrs(study).get(PARENT_ATTR))
        if run_id:
            return run_id
        time.sleep(0.5)
    token = uuid.uuid4().hex
    study.set_user_attr("mlflow_parent_claim", token)
    time.sleep(PARENT_CLAIM_SETTLE_S)
    if _fresh_attrs(study).get("mlflow_parent_claim") == token:
        run_id = create()
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id
    deadline = time.monotonic() + PARENT_WAIT_S
    while time.monotonic() < deadline:  # another worker's claim won: it is creating the parent now
        run_id = reusable(_fresh_attrs(study).get(PARENT_ATTR))
        if run_id:
            return run_id
        time.sleep(0.5)
    log.warning("MLflow: no parent run appeared for this study; creating one for this worker")
    return create()


def _fresh_attrs(study: Any) -> dict[str, Any]:
    """The study's user attrs as stored now (another worker may have just set one)."""
    return study._storage.get_study_user_attrs(study._study_id)


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
