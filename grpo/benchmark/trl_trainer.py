"""TRL's side of the bench: `GRPOTrainer` on our workload (same model, data, LoRA and loss), timed by a callback."""

from __future__ import annotations

import argparse
import tempfile
import time

from grpo.benchmark.report import summarize
from grpo.benchmark.workload import overrides


def run_trl(args: argparse.Namespace) -> dict:
    """TRL's GRPOTrainer on the same model, data, LoRA and loss; steps timed by a callback."""
    import torch

    from grpo.compose import compose

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="grpo-bench-trl-") as out_dir:
        cfg = compose(overrides(args, out_dir)).cfg
        torch.manual_seed(cfg.seed)  # before the model is built: its initial weights come from the seed
        trainer = build_trainer(args, cfg, out_dir)
        steps = time_steps(trainer, args)
    tokens = [args.prompts * args.group * args.new_tokens] * len(steps)
    return summarize("trl", steps, tokens)


def build_trainer(args: argparse.Namespace, cfg, out_dir: str):
    """A `GRPOTrainer` on the model, tokenizer, task and LoRA that `cfg` (our composed config) names."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOTrainer

    from grpo.models.load import load_model
    from grpo.rewards.components import correctness
    from grpo.tasks.registry import build_task

    model, tokenizer = load_model(cfg.model)
    task = build_task(cfg.task)
    data = Dataset.from_list(
        [{"prompt": ex.prompt, "answer": ex.answer, "answer_pattern": task.answer_pattern} for ex in task.train]
    )
    lora = cfg.lora
    peft_cfg = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )

    def reward(prompts, completions, answer, answer_pattern, **_):
        return correctness(prompts, completions, answer=answer, answer_pattern=answer_pattern)

    return GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=trl_config(args, cfg, out_dir),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_cfg,
    )


def trl_config(args: argparse.Namespace, cfg, out_dir: str):
    """`GRPOConfig` for the workload: our KL, clip, loss, schedule and optimizer in TRL's terms."""
    from trl import GRPOConfig

    a = cfg.algorithm
    return GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group,
        gradient_accumulation_steps=1,
        max_completion_length=args.new_tokens,
        generation_kwargs={"min_new_tokens": args.new_tokens},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=a.kl_beta,
        epsilon=a.clip_range,
        loss_type="grpo",
        scale_rewards="group",
        num_iterations=1,
        learning_rate=cfg.schedule.grpo_lr,
        lr_scheduler_type=cfg.schedule.lr_scheduler,
        warmup_steps=0,
        max_grad_norm=cfg.trainer.max_grad_norm,
        optim="adamw_torch",
        weight_decay=0.0,
        max_steps=args.warmup + args.steps,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
    )


def time_steps(trainer, args: argparse.Namespace) -> list[dict]:
    """Train, and return each step after the warm-up: its seconds and the seconds spent in `generate`."""
    from transformers import TrainerCallback

    spent = {"generation": 0.0}
    generate = trainer.model.generate

    # TRL has no generation phase of its own to read: wrap the model's generate to time it.
    def timed_generate(*a, **kw):
        t = time.perf_counter()
        out = generate(*a, **kw)
        spent["generation"] += time.perf_counter() - t
        return out

    trainer.model.generate = timed_generate

    steps: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            spent["generation"] = 0.0
            self.t0 = time.perf_counter()

        def on_step_end(self, _args, state, *__, **___):
            total = time.perf_counter() - self.t0
            if state.global_step > args.warmup:
                steps.append({"step": total, "generation": spent["generation"], "other": total - spent["generation"]})

    trainer.add_callback(StepTimer())
    trainer.train()
    return steps
