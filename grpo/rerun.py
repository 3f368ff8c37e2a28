"""`python -m grpo.rerun RUN_ID [overrides...]`: a tracked run, run again from its MLflow record.

    python -m grpo.rerun 3f2a9c1e                         # the same run again (an id or a unique prefix)
    python -m grpo.rerun 3f2a9c1e schedule.grpo_lr=2e-5   # ... with changes on top
    python -m grpo.rerun 3f2a9c1e --strict                # refuse when the code or the data differ
    python -m grpo.rerun 3f2a9c1e --cfg job               # print the recomposed config, run nothing

The run is looked up in the default store (the composed `logger.tracking_uri`) or in the one an
override `logger.tracking_uri=...` names. Its recorded overrides (`config/overrides.json`) are
composed again with today's conf/; where that composes differently from its recorded config
(`config/config.yaml`), the recorded values are put back as overrides. The overrides given here
go on top, and the whole goes through the same checks as `grpo.run` (an unknown key, also one
added with `+`, ends in one line). Then the git commit and the digest of every data file (or
generated split) are compared with the record: what differs is one warning line, or an error
with --strict; changed library versions are one more warning line. The new run is a plain
`python -m grpo.run` with those overrides, in a fresh run directory, tagged `rerun_of=RUN_ID`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from grpo.compose import compose, in_mapping, override_value, tracking_uri_of
from grpo.config.errors import ConfigError, explain
from grpo.config.flatten import flatten
from grpo.run import _FLAGS_WITH_VALUE, git_commit
from grpo.tasks.lineage import PARAM_PREFIX, data_sources
from grpo.tracking.environment import PREFIX as ENV_PREFIX
from grpo.tracking.environment import environment_changes
from grpo.tracking.lookup import RecordError, RunRecord, open_record

# Recorded overrides a rerun leaves out: where the original wrote, what it resumed, its sweep.
DROPPED = (
    "hydra.",
    "hydra/",
    "optuna_trial",
    "logger.parent_run_id",
    "logger.tags.optuna_",
    "logger.tags.rerun_of",
    "trainer.output_dir",
    "trainer.resume",
)
# Recorded values a rerun does not put back: places on disk, bookkeeping of the sweep and the resume.
NOT_RESTORED = ("paths.", "trainer.output_dir", "trainer.resume", "logger.parent_run_id", "optuna_trial", "logger.tags")


class RerunError(Exception):
    """A one-line message for the user (exit code 2)."""


def key_of(override: str) -> str:
    return override.lstrip("~+").split("=", 1)[0]


def split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(overrides, grpo.run's flags with their values)."""
    overrides, flags, value_next = [], [], False
    for arg in args:
        if value_next or arg.startswith("-"):
            flags.append(arg)
            value_next = not value_next and arg in _FLAGS_WITH_VALUE
        else:
            overrides.append(arg)
    return overrides, flags


def config_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides `compose` takes: Hydra's own (`hydra.run.dir=...`) go to grpo.run only."""
    return [o for o in overrides if not key_of(o).startswith(("hydra.", "hydra/"))]


def comparable(tree) -> dict:
    """A config's dotted values that a rerun must match (empty mappings and places on disk aside)."""
    return {
        k: v for k, v in flatten(tree).items() if not k.startswith(NOT_RESTORED) and not (isinstance(v, dict) and not v)
    }


def restore(now: dict, recorded: dict) -> tuple[list[str], list[str]]:
    """(overrides that turn `now` into `recorded`, recorded keys today's schema cannot take)."""
    overrides, lost = [], []
    for key in sorted(set(now) | set(recorded)):
        if key in now and key in recorded:
            if now[key] != recorded[key]:
                overrides.append(f"{key}={override_value(recorded[key])}")
        elif key in recorded:
            (overrides.append(f"+{key}={override_value(recorded[key])}") if in_mapping(key) else lost.append(key))
        elif in_mapping(key):
            overrides.append(f"~{key}")
        # else: a key today's schema added; its default stands
    return overrides, lost


@dataclass
class Plan:
    record: RunRecord
    overrides: list[str]  # for grpo.run
    flags: list[str]
    restored: list[str] = field(default_factory=list)  # recorded values put back over today's conf/
    changes: list[str] = field(default_factory=list)  # code and data that differ from the record
    environment: list[str] = field(default_factory=list)  # library versions that differ
    notes: list[str] = field(default_factory=list)


def recomposed(record: RunRecord, base: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(overrides restoring the recorded config over today's composition of `base`, recorded keys
    that cannot be restored, overrides that keep the rerun out of the original's directory).

    A conf/ file that sets `trainer.output_dir` is overridden: a rerun writes to a fresh run
    directory, never into the original's (where `trainer.resume=auto` would continue it)."""
    from omegaconf import OmegaConf

    now = compose(base)
    fresh = ["trainer.output_dir=null"] if now.cfg.trainer.output_dir else []
    text = record.config_yaml()
    if text is None:
        return [], [], fresh
    recorded = comparable(OmegaConf.to_container(OmegaConf.create(text), resolve=False))
    restored, lost = restore(comparable(OmegaConf.to_container(now.raw, resolve=True)), recorded)
    if restored:  # check that they do restore it
        again = comparable(OmegaConf.to_container(compose(base + restored).raw, resolve=True))
        lost += [k for k in recorded if k in again and again[k] != recorded[k]]
    return restored, lost, fresh


def data_changes(record: RunRecord, comp) -> list[str]:
    """`train data PATH digest OLD -> NEW` for each data source chosen as recorded but whose content differs."""
    params, changes = record.params, []
    for source in data_sources(comp.cfg.task):
        digest = params.get(f"{PARAM_PREFIX}{source.role}.digest")
        chosen_alike = all(params.get(k) == str(v) for k, v in source.config.items())
        if digest and chosen_alike and digest != source.digest:
            changes.append(f"{source.role} data {source.source} digest {digest} -> {source.digest}")
    return changes


def make_plan(run_id: str, args: Sequence[str]) -> Plan:
    extras, flags = split_args(args)
    if any(f in ("-m", "--multirun") for f in flags):
        raise RerunError("a rerun is one run: drop -m (sweep again with `python -m grpo.run -m ...`)")
    record = open_record(run_id, tracking_uri_of(config_overrides(extras)))
    base = [o for o in record.overrides() if not key_of(o).startswith(DROPPED)]
    restored, lost, fresh = recomposed(record, config_overrides(base))
    final = [*base, *restored, *fresh, *extras, f"++logger.tags.rerun_of={record.run_id}"]
    comp = compose(config_overrides(final))
    plan = Plan(record, final, flags, restored=[key_of(o) for o in restored])
    before, now = record.tags.get("git_commit"), git_commit()
    if before and before != now:
        plan.changes.append(f"git commit {before} -> {now}")
    plan.changes += data_changes(record, comp)
    if lost:
        plan.changes.append(f"recorded values today's config cannot take: {', '.join(lost)}")
    if any(k.startswith(ENV_PREFIX) for k in record.params):
        plan.environment = environment_changes(record.params)
    if not any(k.startswith(PARAM_PREFIX) for k in record.params):
        plan.notes.append("the record holds no data digests (a run from before they were logged): data not checked")
    if not record.tags.get("git_commit"):
        plan.notes.append("the record holds no git commit: code not checked")
    return plan


def report(plan: Plan, strict: bool) -> str | None:
    """Print what the rerun is and what differs; the error line when --strict refuses it."""
    err = sys.stderr
    print(
        f"rerun of {plan.record.run_id} ({plan.record.name}): python -m grpo.run {' '.join(plan.overrides)}", file=err
    )
    if plan.restored:
        names = ", ".join(plan.restored[:8]) + (f" (+{len(plan.restored) - 8} more)" if len(plan.restored) > 8 else "")
        print(f"note: today's conf/ composes this run differently; restored from its record: {names}", file=err)
    for note in plan.notes:
        print(f"note: {note}", file=err)
    if plan.changes:
        what = "; ".join(plan.changes)
        if strict:
            return f"differs from the record of run {plan.record.run_id} (--strict): {what}"
        print(f"warning: differs from the record of run {plan.record.run_id}: {what}", file=err)
    if plan.environment:
        print(f"warning: the environment differs from the record: {'; '.join(plan.environment)}", file=err)
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m grpo.rerun",
        description="Run a tracked run again from its MLflow record (config, overrides, data digests, commit).",
        epilog="Other arguments are overrides on top of the recorded ones (key=value), or grpo.run's flags "
        "(--cfg job prints the composition and runs nothing).",
    )
    parser.add_argument("run_id", help="the MLflow run id, or a unique prefix of it")
    parser.add_argument("--strict", action="store_true", help="refuse when the git commit or a data digest differs")
    args, rest = parser.parse_known_args(argv)
    try:
        plan = make_plan(args.run_id, rest)
        error = report(plan, args.strict)
    except (RecordError, RerunError, ConfigError) as exc:
        error = explain(exc) if isinstance(exc, ConfigError) else str(exc)
    except Exception as exc:  # composition failures arrive as Hydra/OmegaConf errors: one line too
        from omegaconf.errors import OmegaConfBaseException

        if not (isinstance(exc, OmegaConfBaseException) or type(exc).__module__.startswith("hydra")):
            raise
        error = explain(exc)
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    from grpo.run import main as run_main

    sys.argv = [sys.argv[0], *plan.overrides, "hydra.mode=RUN", *plan.flags]
    run_main()


if __name__ == "__main__":
    main()
