"""A cheap Hydra app for the Optuna sweeper's tests (and an example of a sweepable app).

Objective: (x - 1)^2 + (y - 2)^2, minimum 0 at x=1, y=2. It reports `steps` intermediate
values through the trial handle, so pruning can be exercised, and can be made to misbehave:

    raise_if_x_above=T   raise ValueError when x > T        (failed trials)
    nan_if_x_above=T     return NaN when x > T              (failed trials)
    bad_if_x_above=T     report huge intermediate values    (pruned trials)
    return_none=true     return None                        (failed trials)
    two_objectives=true  return [objective, x^2]            (multi-objective; logged as objective, x_squared)
    sleep=S              sleep S seconds per step           (kill/resume)
    slow_trial=N         trial N sleeps slow_sleep s per step instead (a slow trial among fast ones)

    python tests/sweep_app/app.py -m +sweep=quadratic
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # grpo and hydra_plugins without an install
    sys.path.insert(0, str(_ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from grpo.sweep.trial import TrialReporter  # noqa: E402


def objective(x: float, y: float) -> float:
    return (x - 1.0) ** 2 + (y - 2.0) ** 2


def _above(value: float, threshold: float | None) -> bool:
    return threshold is not None and value > threshold


def train(cfg: DictConfig, reporter: TrialReporter | None) -> Any:
    x, y = float(cfg.x), float(cfg.y)
    if _above(x, cfg.raise_if_x_above):
        raise ValueError(f"x={x} is above raise_if_x_above={cfg.raise_if_x_above}")
    value = objective(x, y)
    slow = reporter is not None and cfg.slow_trial is not None and reporter.number == int(cfg.slow_trial)
    for step in range(int(cfg.steps)):
        time.sleep(float(cfg.slow_sleep if slow else cfg.sleep))
        # converges to the objective from above; "bad" trials report far worse values
        intermediate = value + (cfg.steps - step) / cfg.steps
        if _above(x, cfg.bad_if_x_above):
            intermediate += 100.0
        if reporter is not None:
            reporter.report(intermediate, step)
            if reporter.should_prune():
                reporter.prune()
    if cfg.return_none:
        return None
    if _above(x, cfg.nan_if_x_above):
        return float("nan")
    if cfg.two_objectives:
        return [value, x * x]
    return value


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Any:
    reporter = TrialReporter.from_env()  # None outside an Optuna sweep
    if cfg.logger.backend != "mlflow":
        return train(cfg, reporter)

    import mlflow

    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    mlflow.set_experiment(cfg.logger.experiment)
    tags = {str(k): str(v) for k, v in (cfg.logger.tags or {}).items()}
    parent = cfg.logger.parent_run_id
    if reporter is not None:  # the study's parent run and the trial's tags
        tags.update(reporter.run_tags())
        parent = parent or reporter.parent_run_id
    with mlflow.start_run(parent_run_id=parent, tags=tags) as run:
        if reporter is not None:
            reporter.set_user_attr("mlflow_run_id", run.info.run_id)
        mlflow.log_params({"x": cfg.x, "y": cfg.y})
        value = train(cfg, reporter)
        if isinstance(value, float) and not math.isnan(value):
            mlflow.log_metric("objective", value)
        elif isinstance(value, list):  # two_objectives
            mlflow.log_metrics({"objective": value[0], "x_squared": value[1]})
        return value


if __name__ == "__main__":
    main()
