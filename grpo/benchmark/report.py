"""The bench's results: one run's medians, the medians over runs, and the tables printed."""

from __future__ import annotations

import argparse
import json
import statistics

from grpo.benchmark.workload import LADDER, PHASES, peak_rss_mib
from grpo.tables import Table, to_markdown


def summarize(impl: str, steps: list[dict], tokens: list[float]) -> dict:
    med = statistics.median
    step = med(s["step"] for s in steps)
    phases = {k: med(s[k] for s in steps) for k in PHASES if k in steps[0]}
    gen_tokens = med(tokens)
    return {
        "impl": impl,
        "steps": len(steps),
        "step_time_s": step,
        "step_times_s": [s["step"] for s in steps],
        "phases_s": phases,
        "generated_tokens_per_step": gen_tokens,
        "tokens_per_s": gen_tokens / step,
        "generation_tokens_per_s": gen_tokens / phases["generation"] if phases.get("generation") else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def aggregate(runs: list[dict]) -> dict:
    med = statistics.median
    phases = {k: med(r["phases_s"][k] for r in runs) for k in runs[0]["phases_s"]}
    return {
        "runs": len(runs),
        "step_time_s": med(r["step_time_s"] for r in runs),
        "run_step_times_s": [r["step_time_s"] for r in runs],
        "tokens_per_s": med(r["tokens_per_s"] for r in runs),
        "generation_tokens_per_s": med(r["generation_tokens_per_s"] for r in runs)
        if runs[0]["generation_tokens_per_s"]
        else None,
        "phases_s": phases,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        **({"engine": runs[0]["engine"]} if "engine" in runs[0] else {}),
    }


def workload_line(result: dict) -> str:
    w = result["workload"]
    return (
        f"workload: model={w['model']} prompts={w['prompts']} group={w['group']} new_tokens={w['new_tokens']} "
        f"lora_rank={w['lora_rank']} kl={w['kl']} steps={w['steps']} (+{w['warmup']} warm-up) repeats={w['repeats']} "
        f"threads={w['threads'] or 'default'} lora_dropout={'conf' if w['lora_dropout'] is None else w['lora_dropout']}"
        + (" share_prompt_dropout" if w["share_prompt_dropout"] else "")
        + (f" engine={w['engine']}" if w["engine"] != "recipe" else "")
    )


def table(result: dict) -> str:
    impls = [k for k in ("ours", "trl") if k in result]
    # One row per quantity, each in its own unit: cells are formatted here, not by column.
    md = Table(columns=["", *impls])

    def row(label, fn):
        md.rows.append([label, *(fn(result[k]) for k in impls)])

    def ms(x):
        return "-" if x is None else f"{1000 * x:.1f} ms"

    row("median step", lambda r: ms(r["step_time_s"]))
    row("generated tokens/s (step)", lambda r: f"{r['tokens_per_s']:.0f}")
    row(
        "generated tokens/s (generation)",
        lambda r: "-" if not r["generation_tokens_per_s"] else f"{r['generation_tokens_per_s']:.0f}",
    )
    for phase in PHASES:
        row(f"  {phase.replace('_', ' ')}", lambda r, phase=phase: ms(r["phases_s"].get(phase)))
    row("peak RSS", lambda r: f"{r['peak_rss_mib']:.0f} MiB")
    lines = [workload_line(result), "", to_markdown(md).rstrip("\n")]
    if "pairs" in result:
        lines += [
            "",
            "ours / trl pair by pair: " + ", ".join(f"{p['ratio']:.3f}" for p in result["pairs"]),
            f"median ratio: {result['median_ratio']:.3f}  (TRL / ours: {1 / result['median_ratio']:.2f}x)",
        ]
    return "\n".join(lines)


def ladder_table(result: dict) -> str:
    rungs = result["ladder"]
    first = next(iter(rungs.values()))["step_time_s"]
    columns = {  # column -> phase, in ms
        "generation": "generation",
        "reference": "reference_forward",
        "policy fwd": "policy_forward",
        "backward": "backward",
    }
    md = Table(columns=["rung", "median step", "vs before", *columns, "change"])
    md.formatters = {
        "median step": lambda s: f"{1000 * s:.1f} ms",
        "vs before": lambda x: f"{x:.2f}",
        **{column: (lambda s: f"{1000 * s:.1f}") for column in columns},
    }
    for rung, r in rungs.items():
        phases = [r["phases_s"][k] for k in columns.values()]
        md.rows.append([rung, r["step_time_s"], r["step_time_s"] / first, *phases, LADDER[rung]])
    return workload_line(result) + "\n\n" + to_markdown(md).rstrip("\n")


def report(args: argparse.Namespace, model: str, runs: dict[str, list[dict]]) -> dict:
    """One model's result: the workload, each implementation's medians, the ratios pair by pair."""
    workload = {
        k: getattr(args, k)
        for k in (
            "prompts",
            "group",
            "new_tokens",
            "lora_rank",
            "kl",
            "steps",
            "warmup",
            "repeats",
            "threads",
            "engine",
            "plain_decoder",
            "lora_dropout",
            "share_prompt_dropout",
            "ladder",
        )
    }
    result: dict = {"workload": {"model": model, **workload}}
    if args.ladder:
        result["ladder"] = {rung: aggregate([run["ladder"][rung] for run in runs["ours"]]) for rung in LADDER}
        return result
    for impl, impl_runs in runs.items():
        result[impl] = aggregate(impl_runs)
    if "trl" in runs:
        result["pairs"] = [
            {"ours_s": o["step_time_s"], "trl_s": t["step_time_s"], "ratio": o["step_time_s"] / t["step_time_s"]}
            for o, t in zip(runs["ours"], runs["trl"])
        ]
        result["median_ratio"] = statistics.median(p["ratio"] for p in result["pairs"])
    return result


def grid_cell(args: argparse.Namespace, cell: tuple[str, int, str], runs: list[dict]) -> dict:
    """One (model, new tokens, engine) of a side-by-side run: its medians over runs."""
    model, new_tokens, engine = cell
    return {"model": model, "new_tokens": new_tokens, "engine_choice": engine, **aggregate(runs)}


def grid_table(result: dict) -> str:
    """Engines side by side: a row per model and length, generation tokens/s and step time per engine."""
    cells = result["grid"]
    engines = list(dict.fromkeys(c["engine_choice"] for c in cells))
    md = Table(columns=["model", "new tokens", *(f"{e} gen tok/s" for e in engines), *(f"{e} step" for e in engines)])
    rows: dict[tuple, dict] = {}
    for c in cells:
        rows.setdefault((c["model"], c["new_tokens"]), {})[c["engine_choice"]] = c
    for (model, new_tokens), by_engine in rows.items():
        gen = [by_engine[e]["generation_tokens_per_s"] if e in by_engine else None for e in engines]
        step = [by_engine[e]["step_time_s"] if e in by_engine else None for e in engines]
        md.rows.append(
            [model, new_tokens, *("-" if g is None else f"{g:.0f}" for g in gen)]
            + ["-" if t is None else f"{1000 * t:.1f} ms" for t in step]
        )
    return to_markdown(md).rstrip("\n")


def emit(result: dict, json_path: str | None) -> dict:
    """The machine-readable last line of a bench's output, and the same JSON in a file when asked."""
    print(json.dumps(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return result
