"""The `trainer` group's schema: steps, checkpoints, the optimizer, the parallel strategy (FSDP2 and
its offloading). Part of grpo/config/schema.py's `RunConfig`; names follow ../shared/SEED_SPEC.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adamw_fused (one fused kernel per step) | sgd
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw's
    momentum: float = 0.0  # sgd's


@dataclass
class FsdpConfig:
    """FSDP2 (`torch.distributed.fsdp.fully_shard`) when trainer.parallel=fsdp; seed 002's worker.actor.fsdp.*."""

    # true: parameters are freed after each layer's forward and gathered again for backward
    # (FSDP2's reshard_after_forward; ZeRO-3). false: kept gathered until backward (ZeRO-2, more memory).
    enable_full_shard: bool = True
    # Parameters, gradients and the optimizer step live on the CPU (FSDP2's CPUOffloadPolicy).
    enable_cpu_offload: bool = False
    # Rank 0 holds the loaded weights and broadcasts them into every rank's shard (one read of the
    # checkpoint; ranks start from identical weights even where loading is not deterministic).
    enable_rank0_init: bool = True
    # (Activation checkpointing is model.gradient_checkpointing, under either strategy.)


@dataclass
class OffloadConfig:
    """Seed 002's worker.actor.offload.*: the sharded state leaves the accelerator while it is idle."""

    offload_params: bool = False  # parameter shards on the CPU during rollout and validation
    offload_optimizer: bool = False  # optimizer state on the CPU between updates


@dataclass
class RefFsdpConfig:
    enable_cpu_offload: bool = False  # the frozen reference copy (lora=none) on the CPU between its forwards


@dataclass
class RefConfig:
    """The KL reference (seed 002's worker.ref.*): the adapter-off policy with LoRA, a frozen copy otherwise."""

    fsdp: RefFsdpConfig = field(default_factory=RefFsdpConfig)


@dataclass
class TrainerConfig:
    max_steps: int | None = 10  # GRPO optimizer steps; null: from schedule.grpo_epochs
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    optim: OptimConfig = field(default_factory=OptimConfig)
    save_every: int = 0  # GRPO steps between checkpoints; 0: only the final one (and the end of RCE)
    save_limit: int | None = None  # keep the newest N checkpoints (plus the best); null keeps all
    # auto: continue from the latest good checkpoint in the output dir; never; or a checkpoint path.
    resume: str = "auto"
    # Weights only from a checkpoint directory (checkpoints/step_N): a new run with its own stages,
    # optimizer, step counter and random streams (e.g. GRPO trials from one finished RCE stage).
    init_from: str | None = None
    max_bad_steps: int = 3  # non-finite losses/gradients in a row before the run stops
    output_dir: str | None = None  # null: the Hydra run directory
    device: str = "auto"  # auto | cpu | cuda | cuda:0 ...
    mixed_precision: str = "no"  # no | bf16 | fp16 (through accelerate)
    threads: int | None = None  # torch intra-op threads; null leaves torch's default
    # ddp: every process holds the whole model (accelerate's DistributedDataParallel). fsdp: parameters,
    # gradients and optimizer state sharded across processes (FSDP2). conf/accelerate/{ddp,fsdp}.yaml.
    parallel: str = "ddp"
    fsdp: FsdpConfig = field(default_factory=FsdpConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    ref: RefConfig = field(default_factory=RefConfig)
