"""What a sweep leaves behind: the best trial (or the Pareto front), the command that re-runs
the best trial, and ``optimization_results.yaml`` in the sweep dir (the same file name and
top keys as hydra-optuna-sweeper's).

Optuna (and search_space.py, which imports it) load inside the functions: the sweeper
imports this module, and Hydra imports the sweeper at every start of every app.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from grpo.sweep.storage import mask_url
from grpo.sweep.study import count_trials

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


def command_prefix() -> list[str]:
    """How this process was started, up to the app's arguments (``python -m grpo.run``,
    ``python app.py``), with the interpreter spelled ``python``."""
    orig = list(getattr(sys, "orig_argv", []) or [])
    n_args = len(sys.argv) - 1
    if orig and len(orig) > n_args:
        prefix = orig[: len(orig) - n_args]
        if prefix and os.path.basename(prefix[0]).startswith("python"):
            prefix[0] = "python"
        return prefix
    return ["python", sys.argv[0] if sys.argv else "<app>"]


def rerun_command(space: Any, params: dict[str, Any]) -> str:
    """A shell command that runs `params` once (not a sweep) with the sweep's fixed overrides."""
    from grpo.sweep.search_space import params_to_overrides

    args = space.fixed_overrides() + params_to_overrides(params, space.raw)
    args.append("hydra.mode=RUN")
    return " ".join(shlex.quote(a) for a in command_prefix() + args)


def summarize(
    study: Any, space: Any, *, n_objectives: int, study_name: str | None, storage_url: str | None
) -> tuple[dict[str, Any], str | None]:
    """The results mapping (logged as it is built) and the re-run command (None without a
    single best trial)."""
    results: dict[str, Any] = {"name": "optuna"}
    command = None
    if n_objectives == 1:
        command = _best_trial(study, space, results)
    else:
        _pareto_front(study, results)
    results["study_name"] = study_name
    results["storage"] = mask_url(str(storage_url))
    counts = count_trials(study)
    results["n_trials"] = {k: counts[k] for k in ("complete", "pruned", "failed")}
    return results, command


def _best_trial(study: Any, space: Any, results: dict[str, Any]) -> str | None:
    from optuna.trial import TrialState

    from grpo.sweep.search_space import params_to_overrides

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        results["best_params"] = None
        results["best_value"] = None
        log.warning("No trial completed: no best trial")
        return None
    best = study.best_trial
    results["best_params"] = dict(best.params)
    results["best_value"] = best.value
    results["best_trial"] = best.number
    command = rerun_command(space, best.params)
    results["command"] = command
    log.info("Best trial: #%d, value %s", best.number, best.value)
    log.info("Best params: %s", " ".join(params_to_overrides(best.params, space.raw)))
    log.info("Re-run it with: %s", command)
    return command


def _pareto_front(study: Any, results: dict[str, Any]) -> None:
    results["solutions"] = [
        {"number": t.number, "params": dict(t.params), "values": list(t.values)} for t in study.best_trials
    ]
    log.info("Number of Pareto-optimal trials: %d", len(results["solutions"]))
    for t in study.best_trials:
        log.info("  #%d values %s params %s", t.number, t.values, t.params)


def write_results(results: dict[str, Any], sweep_dir: Path) -> None:
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
