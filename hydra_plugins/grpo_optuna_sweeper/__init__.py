"""Hydra plugin shim: `hydra/sweeper=optuna` -> grpo.sweep.sweeper.OptunaSweeper.

Hydra instantiates plugins only when their class is *defined* under `hydra_plugins.`, so this
is a subclass, not a re-export. Importing this module (Hydra does, at every app start)
registers the sweeper's structured configs and must stay cheap: no optuna, no mlflow.
`hydra_plugins/` has no __init__.py on purpose (PEP 420 namespace shared with other plugins).
"""

from grpo.sweep.config import register_configs
from grpo.sweep.sweeper import OptunaSweeper as _OptunaSweeper

register_configs()


class OptunaSweeper(_OptunaSweeper):
    """Optuna >= 4 sweeper with pruning and resume; implemented in grpo.sweep.sweeper."""
