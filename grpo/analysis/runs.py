"""Querying tracked runs: the MLflow store, which runs to compare, and their metric histories.

A missing store, an unknown experiment or run, or a selection that matches nothing is a
`CompareError` with a one-line message that names what exists instead.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARENT_TAG = "mlflow.parentRunId"
STUDY_TAG = "optuna_study"


class CompareError(Exception):
    """A one-line message for the user (exit code 2)."""


# ------------------------------------------------------------------------------------ store
@dataclass
class Store:
    """An MLflow client plus a cache of metric histories (the table and the plots share them)."""

    client: Any
    uri: str
    histories: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        """(step, value) pairs in step order, non-finite values dropped."""
        key = (run_id, metric)
        if key not in self.histories:
            points = self.client.get_metric_history(run_id, metric)
            self.histories[key] = sorted((m.step, m.value) for m in points if math.isfinite(m.value))
        return self.histories[key]


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def open_store(uri: str) -> Store:
    """A client on `uri`; a missing SQLite file is reported, not silently created."""
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise CompareError(
            f"no MLflow store at {path}: nothing has been tracked there yet "
            "(run `python -m grpo.run ...` first, or pass --tracking-uri)"
        )
    from mlflow.tracking import MlflowClient

    return Store(MlflowClient(tracking_uri=uri), uri)


def experiment_names(store: Store, runs: Sequence) -> str:
    names = sorted(store.client.get_experiment(i).name for i in {r.info.experiment_id for r in runs})
    return ("experiment " if len(names) == 1 else "experiments ") + ", ".join(names)


# -------------------------------------------------------------------------------- selection
def experiment_ids(store: Store, names: Sequence[str]) -> list[str]:
    experiments = {e.name: e.experiment_id for e in store.client.search_experiments()}
    for name in names:
        if name not in experiments:
            if not store_has_runs(store, list(experiments.values())):
                raise CompareError(f"the store {store.uri} has no runs yet (run `python -m grpo.run ...` first)")
            raise CompareError(f"no experiment {name!r} in {store.uri} (existing: {', '.join(sorted(experiments))})")
    return [experiments[n] for n in names]


def store_has_runs(store: Store, ids: list[str]) -> bool:
    return bool(ids) and bool(store.client.search_runs(ids, max_results=1))


def run_filter(parent: str | None, tags: Sequence[str]) -> str:
    """An MLflow filter string: children of `parent`, carrying every `key=value` tag."""
    clauses = [f"tags.`{PARENT_TAG}` = '{parent}'"] if parent else []
    for tag in tags:
        key, value = tag.split("=", 1)
        clauses.append(f"tags.`{key}` = '{value}'")
    return " and ".join(clauses)


def is_eval_run(run) -> bool:
    """A `grpo.eval` run (tagged eval=true; a child of the run it evaluated)."""
    return run.data.tags.get("eval") == "true"


def is_training_run(run, with_eval: bool = False) -> bool:
    """A run that trained (or, `with_eval`, evaluated): not a sweep's parent run, which logs no
    params or only its best trial's (tagged study_name, with no parent of its own)."""
    tags = run.data.tags
    if not run.data.params or ("study_name" in tags and PARENT_TAG not in tags):
        return False
    return with_eval or not is_eval_run(run)


def search(store: Store, ids: list[str], filter_string: str, limit: int | None, with_eval: bool = False) -> list:
    """Newest first, training runs only (and eval runs `with_eval`), at most `limit` (all when None),
    across result pages."""
    runs, token = [], None
    while True:
        page = store.client.search_runs(
            ids,
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        runs += [r for r in page if is_training_run(r, with_eval)]
        token = page.token
        if not token or (limit is not None and len(runs) >= limit):
            return runs[:limit] if limit is not None else runs


def get_run(store: Store, run_id: str):
    """A run by id, or by a unique prefix of its id (the table shows 8 characters)."""
    from mlflow.exceptions import MlflowException

    if len(run_id) == 32:
        try:
            return store.client.get_run(run_id)
        except MlflowException:
            raise CompareError(f"no run {run_id!r} in {store.uri}") from None
    ids = [e.experiment_id for e in store.client.search_experiments()]
    found = (
        store.client.search_runs(ids, filter_string=f"attributes.run_id LIKE '{run_id}%'", max_results=2) if ids else []
    )
    if len(found) != 1:
        raise CompareError(f"{'no' if not found else 'more than one'} run with id {run_id!r}... in {store.uri}")
    return found[0]


def select_runs(
    store: Store,
    *,
    run_ids: Sequence[str] = (),
    parent: str | None = None,
    experiments: Sequence[str] = (),
    tags: Sequence[str] = (),
    limit: int | None = None,
    with_eval: bool = False,
) -> list:
    """`run_ids` themselves; else the children of `parent` (an id or prefix), else the runs of
    `experiments`; either narrowed to those carrying every `key=value` of `tags`, newest `limit`;
    training runs only unless `with_eval` (grpo.eval's runs too)."""
    if run_ids:
        return [get_run(store, r) for r in run_ids]
    if parent:
        found = get_run(store, parent)
        ids, parent = [found.info.experiment_id], found.info.run_id
    else:
        ids = experiment_ids(store, experiments)
    runs = search(store, ids, run_filter(parent, tags), limit, with_eval)
    if not runs:
        raise CompareError(no_runs_message(store, parent, experiments, tags))
    return runs


def study_parent(store: Store, study: str):
    """The MLflow parent run of the Optuna study `study` (the sweeper names it after the study
    and tags it ``study_name``), across all experiments."""
    ids = [e.experiment_id for e in store.client.search_experiments()]
    found = store.client.search_runs(ids, filter_string=f"tags.study_name = '{study}'", max_results=50) if ids else []
    parents = [r for r in found if PARENT_TAG not in r.data.tags]
    if not parents:
        names = sorted(
            {r.data.tags["study_name"] for r in store.client.search_runs(ids, "tags.study_name != ''")}
            if ids
            else set()
        )
        known = f" (studies tracked there: {', '.join(names)})" if names else ""
        raise CompareError(f"no parent run of study {study!r} in {store.uri}{known}")
    if len(parents) > 1:
        listed = ", ".join(f"{p.info.run_id[:8]} (experiment {p.info.experiment_id})" for p in parents)
        raise CompareError(f"study {study!r} has {len(parents)} parent runs in {store.uri}: {listed}; use --parent ID")
    return parents[0]


def no_runs_message(store: Store, parent: str | None, experiments: Sequence[str], tags: Sequence[str]) -> str:
    if not store_has_runs(store, [e.experiment_id for e in store.client.search_experiments()]):
        return f"the store {store.uri} has no runs yet (run `python -m grpo.run ...` first)"
    criteria = ([f"--parent {parent}"] if parent else []) + [f"--tag {t}" for t in tags]
    where = "the parent's experiment" if parent else "experiment " + ", ".join(repr(n) for n in experiments)
    return f"no runs matched {' '.join(criteria) or '(any run)'} in {where} of {store.uri}"


# ------------------------------------------------------------------------------ run values
def parse_param(text: str) -> Any:
    """MLflow stores str(value): give numbers, booleans, None and lists back their type."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def wall_time(run) -> float | None:
    """Seconds from the run's start to its end; None while it runs."""
    if run.info.end_time and run.info.start_time:
        return (run.info.end_time - run.info.start_time) / 1000.0
    return None
