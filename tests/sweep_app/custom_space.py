"""custom_search_space example: hydra.sweeper.custom_search_space=custom_space.suggest_y"""

from typing import Any

from omegaconf import DictConfig


def suggest_y(cfg: DictConfig, trial: Any) -> None:
    """Suggest y as an int in [0, 3]; the sweeper passes it to the job as y=<value>."""
    trial.suggest_int("y", 0, 3)
