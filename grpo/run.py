"""`python -m grpo.run [overrides]`: compose, validate, train, return the objective.

A single run is composed and checked once before Hydra starts it, so a typo'd key or a value
out of range ends in one line and no run (exit 2). Under `-m` each job checks itself and a
bad job fails alone.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from grpo.compose import CONF_DIR, finish, register
from grpo.config.errors import ConfigError, explain
from grpo.launch import launch_error, launch_overrides

log = logging.getLogger("grpo")

# Flags of Hydra's CLI that take a value, so the pre-flight check can skip both.
_FLAGS_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
    "--info",
    "-i",
}
_SKIP_PRECHECK = {"-m", "--multirun", "-h", "--help", "--hydra-help", "--shell-completion", "-sc", "--info", "-i"}


def cli_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a single run, or None when the pre-flight check does not apply."""
    if any(a in _SKIP_PRECHECK for a in argv):
        return None
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-") and not arg.lstrip("+~").startswith(("hydra.", "hydra/")):
            out.append(arg)
    return out


def precheck(argv: list[str]) -> str | None:
    """Compose and validate the single run `argv` describes; the error line, or None."""
    overrides = cli_overrides(argv)
    if overrides is None:
        return None
    from grpo.compose import compose

    try:
        compose(overrides)
    except Exception as exc:  # any failure to compose is the user's to fix: one line
        return explain(exc)
    return None


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def train(cfg: DictConfig) -> float | list[float]:
    """Train one composed configuration; returns the value of `optimized_metric` (in a
    multi-objective sweep, the values of the sweep's metric_names)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from grpo.recipe import Recipe
    from grpo.sweep.trial import TrialReporter

    hc = HydraConfig.get()
    choices = OmegaConf.to_container(hc.runtime.choices)
    comp = finish(cfg, choices, list(hc.overrides.task))
    tags = {
        "preset": str(choices.get("preset") or ""),
        "experiment": str(choices.get("experiment") or ""),
        "sweep": str(choices.get("sweep") or ""),
        "model": comp.cfg.model.name,
        "algorithm": comp.cfg.algorithm.name,
        "git_commit": git_commit(),
        "overrides": " ".join(hc.overrides.task),
    }
    trial = TrialReporter.from_env()  # an Optuna sweep's trial (grpo/sweep/trial.py); None otherwise
    if trial is not None:  # nest under the study's parent run, tagged with study, trial, host, state
        tags.update(trial.run_tags())
        comp.cfg.logger.parent_run_id = comp.cfg.logger.parent_run_id or trial.parent_run_id
    recipe = Recipe(comp, run_dir=hc.runtime.output_dir, tags={k: v for k, v in tags.items() if v}, trial=trial)
    recipe.setup()
    status = "FAILED"
    try:
        metrics = recipe.train()
        status = "FINISHED"
    except BaseException as exc:
        status = "KILLED" if type(exc).__name__ == "TrialPruned" or isinstance(exc, KeyboardInterrupt) else "FAILED"
        raise
    finally:
        recipe.cleanup(status)
    if trial is not None and trial.metric_names:  # a multi-objective study: one value per direction
        return trial.objective(metrics)
    value = metrics.get(comp.cfg.optimized_metric)
    if value is None:
        raise ConfigError(
            "optimized_metric", comp.cfg.optimized_metric, f"not among the final metrics ({', '.join(sorted(metrics))})"
        )
    return float(value) if math.isfinite(value) else float("nan")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return train(cfg)
    except ConfigError as exc:  # found only at run time (weights, data files, process count)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep records the failed job and goes on
        if int(os.environ.get("RANK", "0")) == 0:  # one line, not one per process
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _secondary_rank_overrides() -> list[str]:
    """Under `accelerate launch`, only rank 0 owns the run directory; the others get a scratch one."""
    import tempfile

    if int(os.environ.get("RANK", "0")) == 0:
        return []
    scratch = tempfile.mkdtemp(prefix=f"grpo-rank{os.environ['RANK']}-")
    return [f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


def main() -> None:
    register()
    sys.argv += launch_overrides(sys.argv[1:])
    error = precheck(sys.argv[1:]) or launch_error(sys.argv[1:])
    if error:
        if int(os.environ.get("RANK", "0")) == 0:  # one line, not one per process
            print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.argv += _secondary_rank_overrides()
    try:
        _hydra_main()
    finally:
        close_process_group()


def close_process_group() -> None:
    """Under `accelerate launch`, leave the process group before exiting: a gloo group torn down
    at interpreter exit can abort the process ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
