"""A finished run's MLflow metric histories, and comparing two runs step for step."""

import math
from pathlib import Path

TIMING = ("time/", "train/step_time", "train/tokens_per_s")  # wall-clock metrics differ between runs
TOL = 1e-6


def histories(out: Path, experiment: str = "grpo-suite") -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} of the one run in `out`/mlflow.db (no step logged twice)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, f"expected one MLflow run, found {len(runs)}"
    run_ = runs[0]
    out_ = {}
    for key in run_.data.metrics:
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_.info.run_id, key))
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{key} has duplicated steps: {steps}"
        out_[key] = points
    return out_


def assert_same_metrics(a: dict, b: dict, tol: float = TOL) -> None:
    keys = {k for k in a if not k.startswith(TIMING)}
    assert keys == {k for k in b if not k.startswith(TIMING)}
    for key in sorted(keys):
        assert [s for s, _ in a[key]] == [s for s, _ in b[key]], key
        for (step, va), (_, vb) in zip(a[key], b[key]):
            assert (math.isnan(va) and math.isnan(vb)) or abs(va - vb) <= tol, f"{key} at step {step}: {va} != {vb}"
