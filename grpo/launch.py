"""Which `accelerate launch` strategies the recipe runs, checked before anything starts.

Data parallel (conf/accelerate/ddp.yaml) and FSDP2 (conf/accelerate/fsdp.yaml) run, one process
per GPU or CPU processes over gloo. A launch with distributed_type FSDP means `trainer.parallel=fsdp`
(added to the overrides when not given), and the sharding is ours (grpo/parallel/fsdp.py), not
accelerate's, so GPUs and CPUs run one code path: accelerate only starts the processes and the
process group. DeepSpeed is refused in one line that names the sharded strategy that runs.
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


def _parallel_override(argv: list[str]) -> str | None:
    """The value of a `trainer.parallel=...` override on the command line, if any."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "trainer.parallel":
            return value
    return None


def launch_overrides(argv: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """What the launch itself says about the config: an FSDP launch trains with trainer.parallel=fsdp."""
    if sharded_strategy(env) == "FSDP" and _parallel_override(argv) is None:
        return ["trainer.parallel=fsdp"]
    return []


def launch_error(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """One line when this launch asks for a strategy the recipe does not run; None when it is fine."""
    strategy = sharded_strategy(env)
    if strategy == "DEEPSPEED":
        return (
            "accelerate distributed_type=DEEPSPEED is not supported by grpo.run; for sharded training use FSDP2: "
            "accelerate launch --config_file conf/accelerate/fsdp.yaml -m grpo.run ... (trainer.parallel=fsdp)"
        )
    chosen = _parallel_override(argv or [])
    if strategy == "FSDP" and chosen not in (None, "fsdp"):
        return (
            f"trainer.parallel={chosen} under an FSDP launch (conf/accelerate/fsdp.yaml): drop the override "
            "(the launch means trainer.parallel=fsdp) or launch with conf/accelerate/ddp.yaml"
        )
    return None


def sharding_is_ours(env: dict[str, str] | None = None) -> None:
    """trainer.parallel=fsdp shards with our own `fully_shard` calls: accelerate must not wrap the model
    in its FSDP as well, so its switch is taken out of this process's environment."""
    env = os.environ if env is None else env
    env.pop("ACCELERATE_USE_FSDP", None)
