"""Runs that start together on one MLflow store: every one is tracked whole.

Runs of a sweep (or a user's runs started side by side) create the same experiment and log
the same dataset at the same moment. MLflow checks for the row, then inserts it, so the loser
of that race gets a uniqueness error. A run that lost it used to stop tracking for the rest of
its life (its MLflow run stayed RUNNING, with no final metrics).
"""

import multiprocessing as mp

import pytest

from grpo.config.schema import LoggerConfig
from grpo.db_retry import CREATION_RACE, is_lock_error, retry_on_lock
from grpo.tasks.lineage import DataSource

PROCESSES = 4


def start_together(uri: str, barrier, results, index: int) -> None:
    from grpo.tracking.mlflow_run import MlflowTracker

    cfg = LoggerConfig(tracking_uri=uri, experiment="races")
    source = DataSource("train", "numgame-train", "0123456789abcdef", "grpo.tasks.numgame(seed=0)", "code", 64)
    try:
        barrier.wait(timeout=120)
        tracker = MlflowTracker(cfg, f"run-{index}", tags={})  # the experiment does not exist yet
        barrier.wait(timeout=120)
        tracker.log_datasets([source])  # neither does the dataset
        tracker.log_metrics({"train/reward": float(index)}, step=1)
        tracker.finish()
        results.put((index, "ok"))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put((index, f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_runs_starting_together_create_one_experiment_and_one_dataset_and_finish(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri).search_experiments()  # the tables, so the processes race on rows only
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=start_together, args=(uri, barrier, results, i)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert outcomes == {i: "ok" for i in range(PROCESSES)}

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("races")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == PROCESSES
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all([d.dataset.name for d in r.inputs.dataset_inputs] == ["numgame-train"] for r in runs)
    assert sorted(r.data.metrics["train/reward"] for r in runs) == [0.0, 1.0, 2.0, 3.0]


def test_a_lost_race_is_retried_and_other_errors_are_not():
    calls = []

    def insert_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.name")
        return "row"

    assert retry_on_lock(insert_once, delay=0.01, also=CREATION_RACE) == "row" and len(calls) == 2
    assert is_lock_error(RuntimeError("(sqlite3.OperationalError) database is locked"))
    assert not is_lock_error(RuntimeError("no such table: runs"), also=CREATION_RACE)
    with pytest.raises(RuntimeError, match="no such table"):
        retry_on_lock(lambda: (_ for _ in ()).throw(RuntimeError("no such table: runs")), delay=0.01)
