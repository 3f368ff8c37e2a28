"""Optuna sweeps for Hydra apps: our own Sweeper on Optuna >= 4 (see sweeper.py).

Imports nothing heavy: Hydra imports the plugin shim (hydra_plugins.grpo_optuna_sweeper),
and through it this package, at every start of every app. Names resolve lazily:

    from grpo.sweep import TrialReporter      # the in-job handle (trial.py)
"""

from typing import Any

__all__ = ["OptunaSweeper", "TrialReporter"]


def __getattr__(name: str) -> Any:
    if name == "TrialReporter":
        from grpo.sweep.trial import TrialReporter

        return TrialReporter
    if name == "OptunaSweeper":
        from grpo.sweep.sweeper import OptunaSweeper

        return OptunaSweeper
    raise AttributeError(f"module 'grpo.sweep' has no attribute {name!r}")
