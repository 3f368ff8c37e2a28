"""`python -m grpo.bench`'s layers, one job per module.

    workload     the fixed workload: config overrides, the phases, the ladder's rungs, peak RSS
    report       one run's medians, medians over runs, the tables printed
    ours         our step (`grpo_step` on `Recipe.setup`'s components), timed by its own timer
    trl_trainer  TRL's `GRPOTrainer` on the same workload, timed by a callback
    sharding     `--parallel`: DDP against FSDP2 (lora=none) in one launch of 2 gloo processes,
                 per-rank bytes of parameters, gradients, optimizer state and the sampler copy

Each imports only the ones above it (sharding none of them); `grpo.bench` is the command line and
spawns the runs. torch, trl and transformers are imported inside the functions that run a step, so
the parent process, which only spawns and reports, stays light.
"""
