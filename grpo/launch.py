"""Which `accelerate launch` strategies the recipe runs, checked before anything starts.

Data parallel (conf/accelerate/ddp.yaml, one process per GPU or CPU processes over gloo) is
supported and tested. Sharded strategies (FSDP, DeepSpeed ZeRO) are refused with one line
instead of failing deep inside `Accelerator.prepare`: accelerate needs the model and its one
optimizer prepared together for FSDP2 and ZeRO, while the recipe builds an optimizer per stage
(RCE, then GRPO); sampling and checkpointing would also need the sharded weights gathered.
docs/performance.md ("Sharded training") has the details.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# What `accelerate launch` exports for a config file's distributed_type.
SHARDED = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DEEPSPEED"}


def sharded_strategy(env: Mapping[str, str] | None = None) -> str | None:
    """FSDP or DEEPSPEED when this process was launched with such a config, else None."""
    env = os.environ if env is None else env
    for var, name in SHARDED.items():
        if env.get(var, "false").strip().lower() in ("1", "true", "yes"):
            return name
    return None


def requested_cpu_processes(launcher_argv: list[str]) -> int:
    """`--num_processes N` (or `--num-processes=N`) from an `accelerate launch` command line; 1 if absent."""
    for i, arg in enumerate(launcher_argv):
        for flag in ("--num_processes", "--num-processes"):
            if arg == flag and i + 1 < len(launcher_argv) and launcher_argv[i + 1].isdigit():
                return int(launcher_argv[i + 1])
            if arg.startswith(flag + "=") and arg.split("=", 1)[1].isdigit():
                return int(arg.split("=", 1)[1])
    return 1


def _parent_argv() -> list[str]:
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:  # not Linux, or no /proc: nothing to say
        return []


def single_cpu_process_note(env: Mapping[str, str] | None = None, launcher_argv: list[str] | None = None) -> str | None:
    """A warning when `accelerate launch --cpu --num_processes N>1` started this one process alone.

    accelerate's CPU launcher starts N processes only through mpirun (`--mpirun_hostfile`); without
    it, one process trains the whole global batch. The run is still right, just not parallel.
    """
    env = os.environ if env is None else env
    if env.get("ACCELERATE_USE_CPU", "false").lower() != "true" or "WORLD_SIZE" in env:
        return None
    argv = _parent_argv() if launcher_argv is None else launcher_argv
    if not any("accelerate" in a for a in argv) or not any(a == "launch" or a.endswith(".launch") for a in argv):
        return None  # `accelerate launch ...` or `python -m accelerate.commands.launch ...`
    wanted = requested_cpu_processes(argv)
    if wanted <= 1:
        return None
    return (
        f"accelerate launch --cpu --num_processes {wanted} started 1 process (its CPU launcher needs mpirun for more); "
        f"this process trains the whole batch. For {wanted} CPU processes over gloo: "
        f"accelerate launch --config_file conf/accelerate/ddp.yaml --num_processes {wanted} -m grpo.run ..."
    )


def launch_error(env: Mapping[str, str] | None = None) -> str | None:
    """One line when this launch asks for a strategy the recipe does not run; None when it is fine."""
    strategy = sharded_strategy(env)
    if not strategy:
        return None
    return (
        f"accelerate distributed_type={strategy}: sharded training is not supported by grpo.run yet "
        "(it builds one optimizer per stage); launch data-parallel: "
        "accelerate launch --config_file conf/accelerate/ddp.yaml -m grpo.run ..."
    )
