"""The bench's fixed workload: what both implementations run, whatever the flags."""

from __future__ import annotations

import argparse
import resource

PHASES = ("generation", "replay", "reference_forward", "policy_forward", "backward", "optimizer", "other")

# --ladder: each rung adds one change to the rung before it; all rungs run in one process, a step
# of each in turn, so the machine's drift hits them alike. The last rung is off by default.
LADDER = {
    "before": "HFGenerateEngine; policy/reference forwards through transformers + peft; peft disable_adapter()",
    "adapter-switch": "+ the reference switches the LoRA layers off directly (grpo/models/lora.py)",
    "plain-decoder": "+ policy and reference forwards on the plain decoder (grpo/rollout/merged.py)",
    "shared-prompts": "+ a group's prompt runs once in forwards without dropout (the reference)",
    "merged-engine": "+ MergedEngine: LoRA merged, KV-cached plain loop, prompts prefilled once (the default)",
    "share-dropout": "+ prompts shared under LoRA dropout too (not the default: rows of a group share masks)",
}


CONTEXT = {"tiny": 64, "tiny_vllm": 64, "small": 128}  # conf/model's max_position_embeddings
PROMPT_ROOM = 32  # a number-game prompt is ~12 tokens


def overrides(args: argparse.Namespace, out_dir: str) -> list[str]:
    """The workload as config overrides of `python -m grpo.run`. A length past the model's context
    widens the context (random weights: only the rotary table grows), so every token is generated."""
    context = CONTEXT.get(args.model, 0)
    return [
        f"model={args.model}",
        *(
            [f"model.tiny.max_position_embeddings={args.new_tokens + PROMPT_ROOM}"]
            if args.new_tokens + PROMPT_ROOM > context
            else []
        ),
        *([f"rollout.engine={args.engine}"] if args.engine != "recipe" else []),
        "task=numgame",
        "logger=none",
        "trainer.resume=never",
        f"trainer.output_dir={out_dir}",
        f"rollout.batch_size={args.prompts}",
        f"rollout.group_size={args.group}",
        f"generation.max_new_tokens={args.new_tokens}",
        "generation.temperature=1.0",
        "generation.top_p=1.0",
        "generation.top_k=0",
        f"lora.rank={args.lora_rank}",
        f"lora.alpha={2 * args.lora_rank}",
        "lora.target_modules=[q_proj,k_proj,v_proj,o_proj]",
        "algorithm.use_kl_loss=true",
        f"algorithm.kl_beta={0.04 if args.kl else 0.0}",
        "algorithm.kl_estimator=k3",
        "algorithm.clip_range=0.2",
        "algorithm.loss_agg=seq-mean-token-mean",
        "schedule.rce_epochs=0",
        "schedule.temperature.enabled=false",
        f"trainer.max_steps={args.warmup + args.steps}",
        "trainer.gradient_accumulation_steps=1",
        *([f"trainer.threads={args.threads}"] if args.threads else []),
        *([f"lora.dropout={args.lora_dropout}"] if args.lora_dropout is not None else []),
    ]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
