"""A tracked run read back from its MLflow store: params, tags, recorded config, overrides, adapter.

`grpo.rerun` and `grpo.eval --run` open a run here. An unknown id or a store that cannot be
reached is a `RecordError`: one line that names the id or the store (exit 2 in the CLIs). A run
id may be given in full or as a unique prefix (`grpo.compare` shows 8 characters).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from grpo.tracking.run_record import BEST_ADAPTER, CONFIG_ARTIFACT, FINAL_ADAPTER, OVERRIDES_ARTIFACT

QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # no progress bar per small download


class RecordError(Exception):
    """A one-line message for the user (exit code 2)."""


@contextlib.contextmanager
def _env(values: dict[str, str]):
    """MLflow settings for one call (`QUICK_HTTP`: a server that is down answers in seconds, not
    after minutes of retries; `QUIET`: downloads without progress bars)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


@dataclass
class RunRecord:
    client: Any
    uri: str
    run: Any  # mlflow.entities.Run

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def params(self) -> dict[str, str]:
        return dict(self.run.data.params)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.run.data.tags)

    @property
    def name(self) -> str:
        return self.run.info.run_name or self.tags.get("mlflow.runName", "")

    def text(self, path: str) -> str | None:
        """A text artifact of the run, or None when it has none at `path`."""
        with tempfile.TemporaryDirectory(prefix="grpo-record-") as tmp:
            try:
                with _env(QUIET):
                    local = self.client.download_artifacts(self.run_id, path, tmp)
            except Exception:  # noqa: BLE001 - absent (older runs) or unreadable: the caller falls back
                return None
            with open(local) as f:
                return f.read()

    def config_yaml(self) -> str | None:
        return self.text(CONFIG_ARTIFACT)

    def overrides(self) -> list[str]:
        """The command line's overrides: the exact list when recorded, else the `overrides` tag split."""
        exact = self.text(OVERRIDES_ARTIFACT)
        if exact is not None:
            return [str(o) for o in json.loads(exact)]
        return self.tags.get("overrides", "").split()

    def adapter_artifact(self, which: str = "best") -> str:
        """The artifact path of the run's best (or final) checkpoint."""
        tags = self.tags
        uri = tags.get(f"{which}_checkpoint_uri") or (tags.get("final_checkpoint_uri") if which == "best" else None)
        if uri:
            return uri.split(f"runs:/{self.run_id}/", 1)[-1]
        names = {a.path for a in self.client.list_artifacts(self.run_id)}
        for path in (BEST_ADAPTER, FINAL_ADAPTER) if which == "best" else (FINAL_ADAPTER,):
            if path in names:
                return path
        raise RecordError(
            f"run {self.run_id} logged no adapter (it ended before its first checkpoint, or tracking failed)"
        )

    def download(self, path: str, dst: str) -> str:
        try:
            with _env(QUIET):
                return self.client.download_artifacts(self.run_id, path, dst)
        except Exception as exc:  # noqa: BLE001 - any store failure: one line
            raise RecordError(
                f"cannot download {path} of run {self.run_id} from {self.uri} ({_first_line(exc)})"
            ) from None


def _find(client, run_id: str, uri: str):
    from mlflow.exceptions import MlflowException

    if len(run_id) == 32:
        try:
            return client.get_run(run_id)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                raise RecordError(f"no run {run_id!r} in {uri}") from None
            raise
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, filter_string=f"attributes.run_id LIKE '{run_id}%'", max_results=2) if ids else []
    if len(found) != 1:
        raise RecordError(f"{'no' if not found else 'more than one'} run with id {run_id!r}... in {uri}")
    return found[0]


def open_record(run_id: str, uri: str) -> RunRecord:
    """The run `run_id` (or a unique prefix of it) in the store at `uri`."""
    if not run_id or not all(c in "0123456789abcdef" for c in run_id.lower()):
        raise RecordError(f"{run_id!r} is not an MLflow run id (32 hex characters, or a unique prefix)")
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///") :]):
        raise RecordError(
            f"no MLflow store at {uri[len('sqlite:///') :]}: nothing has been tracked there "
            "(pass logger.tracking_uri=URI of the store that holds the run)"
        )
    from mlflow.tracking import MlflowClient

    with _env(QUICK_HTTP):
        client = MlflowClient(tracking_uri=uri)
        try:
            run = _find(client, run_id.lower(), uri)
        except RecordError:
            raise
        except Exception as exc:  # noqa: BLE001 - a server down, a corrupt file, no permission: one line
            raise RecordError(f"cannot read the MLflow store at {uri} ({_first_line(exc)})") from None
    return RunRecord(client, uri, run)
