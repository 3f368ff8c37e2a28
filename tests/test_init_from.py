"""`trainer.init_from=PATH`: a new run that starts from a checkpoint's weights only, with its own
stages, optimizer, step counter and random streams (GRPO-stage trials from one finished RCE stage)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo.compose import compose
from grpo.config.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BASE = [
    "+experiment=numgame_tiny",
    "logger=none",
    "trainer.threads=1",
    "rollout.batch_size=8",
    "rollout.group_size=4",
    "task.train_size=64",
    "eval.num_samples=8",
    "eval.eval_every=0",
    "eval.before_train=false",
]


def recipe_for(tmp_path: Path, *overrides: str):
    from grpo.recipe import Recipe

    comp = compose([*BASE, f"trainer.output_dir={tmp_path}", *overrides])
    return Recipe(comp, run_dir=str(tmp_path), tags={})


def train(recipe) -> dict:
    try:
        return recipe.train()
    finally:
        recipe.cleanup()


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def rce_checkpoint(tmp_path_factory) -> Path:
    """A finished RCE stage (6 steps, no GRPO): its checkpoint is checkpoints/step_6."""
    out = tmp_path_factory.mktemp("rce")
    recipe = recipe_for(out, "schedule.rce_steps=6", "trainer.max_steps=0", "seed=3")
    recipe.setup()
    train(recipe)
    path = out / "checkpoints" / "step_6"
    assert (path / "trainer_state.json").is_file()
    return path


def test_init_from_loads_the_weights_only_and_starts_a_new_run(rce_checkpoint, tmp_path):
    from safetensors.torch import load_file

    recipe = recipe_for(tmp_path, f"trainer.init_from={rce_checkpoint}", "schedule.rce_steps=0", "trainer.max_steps=3")
    recipe.setup()
    saved = load_file(str(rce_checkpoint / "model.safetensors"))
    loaded = weights(recipe.accelerator.unwrap_model(recipe.ctx.policy))
    assert saved.keys() <= loaded.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    # A fresh run: step 0, no optimizer or sampler state carried over, its own checkpoints.
    assert recipe.step == 0 and recipe.resume_training is None
    assert recipe.sampler.state_dict()["order"] == {"qa": []}
    train(recipe)
    assert recipe.step == 3
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step_3"]
    assert not torch.equal(weights(recipe.ctx.policy)[next(iter(saved))], saved[next(iter(saved))])


def test_a_run_directory_means_its_latest_checkpoint(rce_checkpoint, tmp_path):
    from grpo.checkpoint import read_init_from

    path, state = read_init_from(str(rce_checkpoint.parent.parent))
    assert path == str(rce_checkpoint) and state["step"] == 6 and state["stage"] == "rce"


def test_a_differing_seed_is_fine_for_full_weights(rce_checkpoint, tmp_path):
    recipe = recipe_for(tmp_path, f"trainer.init_from={rce_checkpoint}", "schedule.rce_steps=0", "seed=11")
    recipe.setup()  # the whole model comes from the checkpoint: its init seed does not matter
    assert recipe.derived.model_init_seed != compose(["seed=3"]).derived.model_init_seed


def test_init_from_is_checked(rce_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="no such checkpoint directory") as missing:
        recipe_for(tmp_path / "a", f"trainer.init_from={tmp_path}/nope").setup()
    assert missing.value.key == "trainer.init_from"
    (tmp_path / "half").mkdir()
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        recipe_for(tmp_path / "b", f"trainer.init_from={tmp_path / 'half'}").setup()
    # The checkpoint holds a full model; a LoRA run needs an adapter.
    with pytest.raises(ConfigError, match="needs a LoRA adapter but the checkpoint holds a full model"):
        recipe_for(tmp_path / "c", f"trainer.init_from={rce_checkpoint}", "lora=default").setup()


def test_a_lora_adapter_needs_its_base_init(tmp_path):
    from grpo.checkpoint import check_adapter_base

    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    check_adapter_base(str(tmp_path), {"seeds": {"model_init_seed": 5}}, 5)
    check_adapter_base(str(tmp_path), {}, 5)  # a checkpoint older than the seeds record: nothing to compare
    with pytest.raises(ConfigError, match="set model.init_seed=5"):
        check_adapter_base(str(tmp_path), {"seeds": {"model_init_seed": 5}}, 6)


@pytest.mark.slow
def test_a_missing_path_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpo.run",
            *BASE,
            f"hydra.run.dir={tmp_path}/run",
            f"trainer.init_from={tmp_path}/nope",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"error: trainer.init_from='{tmp_path}/nope': no such checkpoint directory (give a "
        "checkpoints/step_N of an earlier run, or its run directory)"
    ]
