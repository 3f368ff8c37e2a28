"""What a run records so that it can be re-created and its adapter found again.

- params: the flattened config and derived values (bookkeeping keys left out: `logger.tags.*` are
  tags, `logger.parent_run_id` is the run's parent), `data.<role>.digest|source` of every data
  file or generated split it reads, and `env.*` (Python and library versions);
- dataset inputs: the same data, as MLflow shows it (a digest, a source, a context);
- artifacts: `config/config.yaml` (resolved), `config/overrides.txt` (as typed) and
  `config/overrides.json` (the exact list, what `grpo.rerun` replays), the final checkpoint as
  `adapter/` and the best one as `adapter_best/` when it is another step;
- tags: `final_checkpoint[_uri]`, `best_checkpoint[_uri]`, `final_step`, `best_step` (the local
  directory, and the artifact's `runs:/<id>/...` URI).

`grpo.rerun`, `grpo.eval --run` and `grpo.compare` read them back (grpo/tracking/lookup.py).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from grpo.tracking.environment import environment

CONFIG_ARTIFACT = "config/config.yaml"
OVERRIDES_ARTIFACT = "config/overrides.json"
FINAL_ADAPTER = "adapter"
BEST_ADAPTER = "adapter_best"
NOT_SHARED = ("training_state.pt",)  # optimizer and RNG state: for resuming here, not for loading the adapter
# Config keys that are bookkeeping, not configuration: they become the run's tags and its place
# under a parent (a sweep's, set at run time), never params.
BOOKKEEPING_KEYS = ("logger.parent_run_id", "logger.tags", "optuna_trial")


def is_bookkeeping(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in BOOKKEEPING_KEYS)


def log_run_record(
    tracker,
    params: Mapping[str, Any],
    config_yaml: str,
    overrides: Sequence[str],
    overrides_text: str,
    sources: Sequence[Any],
) -> None:
    """Params (config, derived, data lineage, environment), dataset inputs, config and overrides."""
    lineage = {}
    for s in sources:
        lineage.update(s.params())
    config = {k: v for k, v in params.items() if not is_bookkeeping(k)}
    tracker.log_params({**config, **lineage, **environment()})
    tracker.log_datasets(sources)
    tracker.log_text(config_yaml, CONFIG_ARTIFACT)
    tracker.log_text(overrides_text + "\n", "config/overrides.txt")
    tracker.log_text(json.dumps(list(overrides)) + "\n", OVERRIDES_ARTIFACT)


def step_of(checkpoint: str) -> str:
    found = re.search(r"step_(\d+)$", checkpoint.rstrip("/"))
    return found.group(1) if found else ""


def _log_checkpoint(tracker, checkpoint: str, artifact_path: str) -> None:
    """The checkpoint's files but the training state (symlinked into a scratch directory)."""
    with tempfile.TemporaryDirectory(prefix="grpo-adapter-") as view:
        for name in sorted(os.listdir(checkpoint)):
            if name not in NOT_SHARED:
                os.symlink(os.path.abspath(os.path.join(checkpoint, name)), os.path.join(view, name))
        tracker.log_artifacts(view, artifact_path)


def log_checkpoints(tracker, final: str | None, best: str | None) -> dict[str, str]:
    """The final checkpoint as `adapter/`, the best as `adapter_best/` (the same artifact when
    it is the final one), and tags linking both; returns the tags."""
    final = final if final and os.path.isdir(final) else None
    best = best if best and os.path.isdir(best) else None
    uri = (lambda path: f"runs:/{tracker.run_id}/{path}") if tracker.run_id else (lambda path: "")
    tags: dict[str, str] = {}
    if final:
        _log_checkpoint(tracker, final, FINAL_ADAPTER)
        tags.update(final_step=step_of(final), final_checkpoint=final, final_checkpoint_uri=uri(FINAL_ADAPTER))
    if best:
        same = final is not None and os.path.samefile(best, final)
        if not same:
            _log_checkpoint(tracker, best, BEST_ADAPTER)
        path = FINAL_ADAPTER if same else BEST_ADAPTER
        tags.update(best_step=step_of(best), best_checkpoint=best, best_checkpoint_uri=uri(path))
    tags = {k: v for k, v in tags.items() if v}
    if tags:
        tracker.set_tags(tags)
    return tags
