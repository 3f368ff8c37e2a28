"""grpo-suite: Hydra-composed RCE + GRPO post-training with LoRA.

Kept import-free on purpose: Hydra's plugin scan imports `hydra_plugins.*`, which imports
from this package on every start, so nothing heavy (torch, mlflow, optuna) may load here.
"""

__version__ = "0.1.0"
