"""MLflow tracking: one run per training job, nested under a sweep's parent when given.

Uses an explicit MlflowClient (not the fluent global state), so a sweep in one process and
runs in others cannot step on each other's active run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from grpo.config.schema import LoggerConfig
from grpo.db_retry import CREATION_RACE, retry_on

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
MAX_TAG_LEN = 8000  # MLflow's limit on a tag value
# The experiment tag MLflow 3's UI reads to choose an experiment's page: without it, an experiment
# with no runs yet opens on GenAI traces; "custom_model_development" is its "Machine learning" kind.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# The run tag listing a run's table artifacts ({"path", "type": "table"}), as mlflow.log_table sets
# it: the UI then shows them as tables ("View as table", the experiment's artifact/evaluation view).
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"


def _artifact_root(uri: str) -> str | None:
    """Beside a SQLite store, artifacts go to `mlartifacts/` next to the .db (not ./mlruns in the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None  # a server decides where its artifacts live
    db_dir = os.path.dirname(os.path.abspath(uri[len("sqlite:///") :]))
    os.makedirs(db_dir, exist_ok=True)
    return os.path.join(db_dir, "mlartifacts")


def experiment_id(client, uri: str, name: str) -> str:
    """The experiment's id, created (with its artifacts beside a SQLite store) when missing.
    Two processes that find it missing both create it: the loser's retry finds the winner's."""
    return retry_on(lambda: _get_or_create_experiment(client, uri, name), CREATION_RACE, attempts=4, delay=0.2)


def _get_or_create_experiment(client, uri: str, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before this tag: a kind the user chose stays
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    artifact_root = _artifact_root(uri)
    return client.create_experiment(
        name,
        artifact_location=os.path.join(artifact_root, name) if artifact_root else None,
        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
    )


class RetryingClient:
    """An MlflowClient whose every call is retried when it loses a creation race with another run
    of the same store: a row (an experiment, a dataset) that the other run inserted between
    MLflow's check and its own insert. Not on a lock: MLflow's SQLite connections already wait
    for one (about 20 s a call), and a store held longer is a failure to report, not to wait out."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if not callable(method):
            return method
        return lambda *args, **kwargs: retry_on(lambda: method(*args, **kwargs), CREATION_RACE, attempts=4, delay=0.2)


def table_json(rows: list[dict]) -> str:
    """MLflow's table format (pandas' "split" orient, what mlflow.log_table writes): {"columns", "data"}."""
    columns = list(rows[0]) if rows else []
    return json.dumps({"columns": columns, "data": [[r.get(c) for c in columns] for r in rows]})


def register_tables(registered: list[dict], path: str) -> str:
    """The loggedArtifacts tag value with `path` added; the oldest entries give way past MLflow's
    tag length (about 140 tables: the newest keep "View as table", every file stays)."""
    entry = {"path": path, "type": "table"}
    if entry not in registered:
        registered.append(entry)
    while len(registered) > 1 and len(json.dumps(registered)) > MAX_TAG_LEN:
        registered.pop(0)
    return json.dumps(registered)


class MlflowTracker:
    """`tags` may name the run (`mlflow.runName`: a sweep trial's name) over `run_name`; `parent_run_id`
    and `in_experiment` (an experiment id; grpo.eval: under the evaluated run, in its own) win over `cfg`'s."""

    def __init__(
        self,
        cfg: LoggerConfig,
        run_name: str,
        tags: Mapping[str, str],
        resume_run_id: str | None = None,
        parent_run_id: str | None = None,
        in_experiment: str | None = None,
    ):
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        client = MlflowClient(tracking_uri=cfg.tracking_uri)
        self.experiment_id = in_experiment or experiment_id(client, cfg.tracking_uri, cfg.experiment)
        self.client = RetryingClient(client)
        self.existing_params: dict[str, str] = {}
        self.tables: list[dict] = []
        if resume_run_id:  # a resumed run continues its own MLflow run
            run = self.client.get_run(resume_run_id)
            self.client.update_run(resume_run_id, status="RUNNING")
            self.run_id = resume_run_id
            self.existing_params = dict(run.data.params)
            self.tables = json.loads(run.data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
            return
        all_tags = {MLFLOW_RUN_NAME: run_name, **{k: str(v) for k, v in tags.items()}, **dict(cfg.tags)}
        if parent_run_id or cfg.parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id or cfg.parent_run_id
        name = all_tags[MLFLOW_RUN_NAME]
        self.run_id = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id

    def logged_until(self) -> dict[str, int]:
        """metric -> last step this run already holds (what a resumed run must not log again)."""
        run = self.client.get_run(self.run_id)
        return {key: max(m.step for m in self.client.get_metric_history(self.run_id, key)) for key in run.data.metrics}

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        # Params are immutable in MLflow: a resumed run logs only the ones its run lacks.
        items = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items() if k not in self.existing_params]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def log_table(self, rows: list[dict], path: str) -> None:
        """`rows` as a table artifact at `path` (.json), registered as mlflow.log_table registers it,
        without its read-back of the run and the artifact listing at every call."""
        self.client.log_text(self.run_id, table_json(rows), path)
        self.client.set_tag(self.run_id, LOGGED_ARTIFACTS_TAG, register_tables(self.tables, path))

    def log_artifacts(self, local_dir: str, path: str) -> None:
        self.client.log_artifacts(self.run_id, local_dir, path)

    def log_datasets(self, sources) -> None:
        """Each source (grpo.tasks.lineage.DataSource) as a dataset input, its role as the context."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for s in sources:
            config = {k: str(v) for k, v in s.config.items()}
            where = {"uri": s.source} if s.source_type == "local" else {"tags": {"generator": s.source, **config}}
            dataset = Dataset(
                s.name, s.digest, s.source_type, json.dumps(where), profile=json.dumps({"records": s.records, **config})
            )
            inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", s.role)]))
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
