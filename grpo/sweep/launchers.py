"""Hydra launcher presets for sweeps on a cluster: ``hydra/launcher=submitit_slurm`` and
``hydra/launcher=submitit_local``, hydra-submitit-launcher's launchers (the ``cluster`` extra)
with the settings a long GRPO trial needs.

Requeue: submitit requeues a SLURM job that is preempted (SLURM sends it USR2; submitit
checkpoints Hydra's job and calls ``scontrol requeue``) and, up to ``max_num_timeout`` times,
one that reaches its time limit. The requeued job runs the same trial again in the same job
directory, where ``grpo.run`` resumes from its last checkpoint (``trainer.resume=auto``) in
the same MLflow run; the worker that launched it keeps the trial's heartbeat going meanwhile.

Registered over the plugin's own entries of the same names (its module is imported first,
so a later import by Hydra's plugin scan does not register them again). Importing this
module stays cheap: the plugin's config module holds dataclasses only.

    python -m grpo.run -m +sweep=rce_grpo hydra/launcher=submitit_slurm \\
        hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=240
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_PROVIDER = "grpo_optuna_sweeper"


def register_launchers() -> bool:
    """Store the presets in Hydra's ConfigStore; False when hydra-submitit-launcher is absent."""
    try:
        from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    except ImportError:
        return False
    from hydra.core.config_store import ConfigStore

    @dataclass
    class GrpoSlurmQueueConf(SlurmQueueConf):
        timeout_min: int = 240  # a GRPO trial takes hours on a GPU, not the plugin's 60 minutes
        max_num_timeout: int = 3  # requeue a job that reached its time limit (it resumes its checkpoint)
        signal_delay_s: int = 120  # USR2 this long before the limit: time to leave cleanly
        # sbatch --requeue: a preempted job goes back into the queue
        additional_parameters: dict[str, Any] = field(default_factory=lambda: {"requeue": True})

    @dataclass
    class GrpoLocalQueueConf(LocalQueueConf):
        timeout_min: int = 240

    cs = ConfigStore.instance()
    cs.store(group="hydra/launcher", name="submitit_slurm", node=GrpoSlurmQueueConf, provider=_PROVIDER)
    cs.store(group="hydra/launcher", name="submitit_local", node=GrpoLocalQueueConf, provider=_PROVIDER)
    return True
