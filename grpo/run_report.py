"""The run header (what was composed, derived values, where outputs go) and closing summary."""

from __future__ import annotations

from grpo.compose import Composition
from grpo.context import RunContext
from grpo.models.load import context_length

GROUPS = ("preset", "experiment", "model", "lora", "task", "reward", "algorithm", "logger")


def header(comp: Composition, *, run_dir: str, ctx: RunContext, tracker) -> str:
    cfg, d, task, max_new_tokens = comp.cfg, comp.derived, ctx.task, ctx.max_new_tokens
    chosen = "  ".join(f"{g}={comp.choices[g]}" for g in GROUPS if comp.choices.get(g))
    bound = ""
    if max_new_tokens < cfg.generation.max_new_tokens:
        asked, context = cfg.generation.max_new_tokens, context_length(ctx.sampler_model)
        bound = f" (generation.max_new_tokens={asked} bounded by the model's context of {context} tokens)"
    parameters = list(ctx.policy.parameters())
    total, trainable = sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad)
    lines = [
        f"run {d.run_name}",
        f"  composed   {chosen}",
        f"  model      {cfg.model.name}: {total:,} params, {trainable:,} trainable"
        + (
            f" (LoRA r={cfg.lora.rank} alpha={cfg.lora.alpha:g} scaling={d.lora_scaling:g})"
            if cfg.lora.enabled
            else " (full fine-tuning)"
        ),
        f"  task       {task.name}: {len(task.train)} train / {len(task.val)} val prompts, "
        f"domains {', '.join(task.domains)}",
        f"  RCE        {d.rce_steps} steps (lr {cfg.schedule.rce_lr:g}, warm-up {d.rce_warmup_steps})"
        if d.rce_steps
        else "  RCE        off",
        f"  GRPO       {d.grpo_steps} steps x {cfg.rollout.batch_size} prompts x {cfg.rollout.group_size} samples "
        f"= {d.total_samples:,} completions (lr {cfg.schedule.grpo_lr:g}, "
        f"warm-up {d.warmup_steps} steps, {cfg.schedule.lr_scheduler})",
        f"  sampling   up to {max_new_tokens} new tokens{bound}",
        engine_line(cfg, ctx),
        seeds_line(comp),
        f"  processes  {comp_processes()}: {ctx.parallel.describe()}",
        f"  outputs    {run_dir}",
        f"  tracking   {cfg.logger.backend}"
        + (f" {cfg.logger.tracking_uri} (run {tracker.run_id})" if tracker.run_id else ""),
    ]
    if cfg.trainer.init_from:
        lines.insert(
            3, f"  weights    {cfg.trainer.init_from} (trainer.init_from: weights only; new optimizer and steps)"
        )
    return "\n".join(lines)


def engine_line(cfg, ctx: RunContext) -> str:
    """Which engine samples, and why: the key that chose it (or that it is the default)."""
    from grpo.config.schema import RolloutConfig

    name = cfg.rollout.engine
    why = "the default" if name == RolloutConfig.engine else "chosen"
    describe = getattr(ctx.engine, "describe", None)
    what = describe(ctx.sampler_model) if describe else type(ctx.engine).__name__
    line = f"  engine     {name}: {what} (rollout.engine={name}, {why})"
    if cfg.rollout.is_correction != "none":
        line += f"; sampler/trainer mismatch corrected: {cfg.rollout.is_correction} at {cfg.rollout.is_cap:g}"
    return line


def seeds_line(comp: Composition) -> str:
    """What `seed` drives in this run, and what stays fixed on purpose whatever the seed."""
    cfg, d = comp.cfg, comp.derived
    fixed = [f"task.seed={cfg.task.seed} (which prompts are train and held out)"]
    if cfg.model.name_or_path is not None:
        fixed.append("the pretrained weights")
        init = ""
    elif cfg.model.init_seed is not None:
        fixed.append(f"model.init_seed={cfg.model.init_seed} (the model's init)")
        init = ""
    else:
        init = f"model init {d.model_init_seed}, "
    return (
        f"  seeds      seed {cfg.seed}: {init}data order {d.data_seed}, sampling {cfg.seed} + rank; fixed: "
        + ", ".join(fixed)
    )


def comp_processes() -> str:
    from accelerate.state import PartialState

    state = PartialState()
    return f"{state.num_processes} ({state.distributed_type.value.lower()}, {state.device})"


def summary(
    comp: Composition,
    metrics: dict[str, float],
    output_dir: str,
    checkpoints: list[str],
    tracker,
    logger_cfg,
    best=None,
    stop_reason=None,
    executor_totals: dict[str, float] | None = None,
) -> str:
    shown = "  ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()) if k.startswith("val/"))
    lines = [f"done {comp.derived.run_name} in {metrics.get('time/total', 0.0):.1f}s", f"  final      {shown}"]
    if stop_reason:
        lines.append(f"  stopped    {stop_reason}")
    if best and best[1] is not None:
        metric, value, step, path = best
        lines.append(f"  best       {metric}={value:.3f} at step {step}: {path}")
    if checkpoints:
        lines.append(f"  checkpoint {checkpoints[-1]}")
    lines.append(f"  run dir    {output_dir}")
    if executor_totals:
        cost = f", ${executor_totals['cost_usd']:.4f}" if "cost_usd" in executor_totals else ""
        used = f"{executor_totals['calls']:,.0f} calls, {executor_totals['tokens']:,.0f} tokens{cost}"
        lines.append(f"  executor   {used} (cache hits are free)")
    if getattr(tracker, "failed", None):
        lines.append(f"  tracking   FAILED mid-run ({tracker.failed}); every metric is in {tracker.local_path}")
    elif getattr(tracker, "recovered", None):
        lines.append(
            f"  tracking   failed mid-run ({tracker.recovered}), back at the end: what it missed was logged then"
        )
    if tracker.run_id and logger_cfg.tracking_uri.startswith("sqlite:"):
        lines.append(f"  mlflow     mlflow ui --backend-store-uri {logger_cfg.tracking_uri}   (run {tracker.run_id})")
    elif tracker.run_id:
        lines.append(f"  mlflow     {logger_cfg.tracking_uri} (run {tracker.run_id})")
    return "\n".join(lines)
