"""Hydra plugin shim: `hydra/sweeper=optuna` -> grpo.sweep.sweeper.OptunaSweeper, and the
`hydra/launcher=submitit_slurm|submitit_local` presets (grpo/sweep/launchers.py).

Hydra instantiates plugins only when their class is *defined* under `hydra_plugins.`, so these
are subclasses, not re-exports. Importing this module (Hydra does, at every app start)
registers the sweeper's structured configs and must stay cheap: no optuna, no mlflow.
`hydra_plugins/` has no __init__.py on purpose (PEP 420 namespace shared with other plugins).
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from grpo.sweep.config import register_configs
from grpo.sweep.launchers import register_launchers
from grpo.sweep.sweeper import OptunaSweeper as _OptunaSweeper

register_configs()


class OptunaSweeper(_OptunaSweeper):
    """Optuna >= 4 sweeper with pruning and resume; implemented in grpo.sweep.sweeper."""


class LauncherPresets(SearchPathPlugin):
    """Adds no search path. Hydra calls it after every plugin module has run, so the launcher
    presets registered here replace hydra-submitit-launcher's own entries of the same names,
    whichever order Hydra's plugin scan ran the two plugins in."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        register_launchers()
