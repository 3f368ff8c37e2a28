"""FSDP2 checkpoints across process counts: argv MODE DIR, MODE one of save | load.

save (2 processes): the tiny model with LoRA, sharded by grpo/parallel/fsdp.py, trains 2 AdamW
steps, writes its shards into DIR, and rank 0 writes the whole trained weights and optimizer
state (gathered) to DIR/expected.pt. load (any process count): a fresh model and optimizer take
the shards and must hold exactly what was saved; the result goes to DIR/loaded{RANK}.json.
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

from grpo.config.schema import LoraConfig, ModelConfig, TrainerConfig
from grpo.models.load import load_model
from grpo.models.lora import apply_lora
from grpo.parallel.fsdp import FullyShardedDataParallel

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def build(acc):
    model, _ = load_model(ModelConfig(), init_seed=7)
    strategy = FullyShardedDataParallel(acc, TrainerConfig(parallel="fsdp"), lora=True)
    policy = strategy.prepare(apply_lora(model, LoraConfig()))
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    return strategy, policy, optimizer


def whole(policy, optimizer) -> dict:
    """The trained weights and the optimizer's moments, gathered whole (on rank 0)."""
    model = get_model_state_dict(policy, options=FULL)
    optim = get_optimizer_state_dict(policy, optimizer, options=FULL).get("state", {})  # rank 0 alone holds it
    return {"model": model, "exp_avg": {k: v["exp_avg"] for k, v in optim.items()}}


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    acc = Accelerator(cpu=True)
    strategy, policy, optimizer = build(acc)
    if mode == "save":
        torch.manual_seed(acc.process_index)
        for _ in range(2):
            policy(input_ids=torch.randint(0, 90, (2, 12))).logits.pow(2).mean().backward()
            strategy.clip_grad_norm(policy, 1.0)
            optimizer.step()
            optimizer.zero_grad()
        strategy.save_shards(str(out), policy, optimizer)
        expected = whole(policy, optimizer)
        if acc.is_main_process:
            torch.save(expected, out / "expected.pt")
    else:
        strategy.load(str(out), policy, optimizer, training={})
        got, expected = whole(policy, optimizer), torch.load(out / "expected.pt")
        if acc.is_main_process:
            report = {
                "model": all(torch.equal(got["model"][k], v) for k, v in expected["model"].items()),
                "exp_avg": all(torch.equal(got["exp_avg"][k], v) for k, v in expected["exp_avg"].items()),
                "sampler": all(torch.equal(strategy.sampler.state_dict()[k], v) for k, v in expected["model"].items()),
                "keys": len(expected["model"]),
            }
            (out / f"loaded{acc.num_processes}.json").write_text(json.dumps(report))
    if acc.num_processes > 1:
        torch.distributed.destroy_process_group()  # a gloo group left to interpreter exit can abort the process
