"""`grpo.diff` on the real config tree: the seeds' comparison tables, generated.

Compositions are real (no mocks); two subprocess runs check the exit codes a CI guard relies on.
"""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from grpo.diff import change, compose_arg, diff_rows, diff_table, hydra_overrides, main
from grpo.tables import render

REPO = Path(__file__).resolve().parents[1]


def rows_by_key(*args, show_all=False):
    return {r.key: r for r in diff_rows([compose_arg(a) for a in args], show_all=show_all)}


@pytest.fixture(scope="module")
def minimal_vs_full():
    return diff_rows([compose_arg("preset=minimal"), compose_arg("preset=full")])


def test_minimal_vs_full_is_the_complete_difference(minimal_vs_full):
    # Seed 000 listed max_steps and save_every; warm-up, totals and the run name differ too (I-000-5).
    assert [r.key for r in minimal_vs_full] == [
        "trainer.max_steps",
        "trainer.save_every",
        "derived.warmup_steps",
        "derived.total_samples",
        "derived.run_name",
    ]
    values = {r.key: r.values for r in minimal_vs_full}
    assert values["trainer.max_steps"] == [10, 500]
    assert values["trainer.save_every"] == [5, 25]
    assert values["derived.warmup_steps"] == [2, 100]  # 20% of the steps, derived (000: 10/500*100)
    assert values["derived.total_samples"] == [240, 12000]  # 000: 10 x 4 x 6 and 500 x 4 x 6
    assert values["derived.run_name"][0].endswith("-minimal") and values["derived.run_name"][1].endswith("-full")


def test_full_vs_reference_restored_is_seed_001s_sync_table():
    rows = rows_by_key("preset=full", "preset=reference_restored")
    assert rows["rollout.batch_size"].values == [4, 5]
    assert rows["schedule.temperature.enabled"].values == [False, True]
    # Equal values, shown because they take effect only where the schedule is on.
    assert rows["schedule.temperature.initial"].values == [0.5, 0.5]
    assert rows["schedule.temperature.final"].values == [0.15, 0.15]
    assert rows["schedule.temperature.initial"].note == "schedule.temperature.enabled"
    assert rows["derived.total_samples"].values == [12000, 15000]
    assert "lora.rank" not in rows and "generation.top_p" not in rows


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (5e-5, 2e-5, "↓ ×0.4"),  # seed I-000-1: the LR went down, not up
        (10, 500, "↑ ×50"),
        (500, 10, "↓ ×0.02"),
        (4, 5, "↑ ×1.25"),
        (0, 3, "↑ from 0"),
        (7, 7, "="),
        (-1, 2, "↑"),  # a sign change has no meaningful ratio
        (True, False, ""),  # booleans and strings are not quantities
        ("a", "b", ""),
        (None, 4, ""),
    ],
)
def test_change_direction_and_ratio(old, new, expected):
    assert change(old, new) == expected


def test_group_arguments_get_the_plus_hydra_needs():
    assert hydra_overrides("preset=full lora.rank=128") == ["+preset=full", "lora.rank=128"]
    assert hydra_overrides("+preset=full") == ["+preset=full"]
    assert hydra_overrides("experiment=numgame_tiny sweep=x") == ["+experiment=numgame_tiny", "+sweep=x"]
    assert hydra_overrides("'lora.target_modules=[q_proj, v_proj]'") == ["lora.target_modules=[q_proj, v_proj]"]


def test_overrides_and_derived_lora_scaling():
    rows = rows_by_key("preset=full", "preset=full lora.rank=128 schedule.grpo_lr=5e-5")
    assert rows["lora.rank"].values == [64, 128]
    assert rows["derived.lora_scaling"].values == [1.0, 0.5]
    table = diff_table(["a", "b"], list(rows.values()))
    changes = {row[0]: row[-1] for row in table.rows}
    assert changes["schedule.grpo_lr"] == "↑ ×2.5"
    assert changes["derived.lora_scaling"] == "↓ ×0.5"


def test_switched_off_group_shows_its_keys():
    rows = rows_by_key("preset=full", "preset=full lora=none")
    assert rows["lora.enabled"].values == [True, False]
    assert rows["lora.rank"].note == "lora.enabled"
    assert rows["derived.lora_scaling"].values == [1.0, None]


def test_grpo_steps_shown_only_when_not_a_restatement_of_max_steps(minimal_vs_full):
    assert "derived.grpo_steps" not in {r.key for r in minimal_vs_full}
    rows = rows_by_key("preset=minimal", "preset=minimal trainer.max_steps=null schedule.grpo_epochs=2")
    assert rows["derived.grpo_steps"].values == [10, 128]  # 2 epochs x ceil(256 / 4) steps


def test_all_lists_every_key():
    rows = rows_by_key("preset=minimal", "preset=full", show_all=True)
    assert {"lora.rank", "generation.top_p", "derived.grpo_steps", "derived.steps_per_epoch"} <= set(rows)
    assert not rows["lora.rank"].differs


def test_three_columns_compare_against_the_first():
    rows = diff_rows([compose_arg(a) for a in ("preset=minimal", "preset=full", "preset=guide_optimized")])
    table = diff_table(["minimal", "full", "guide"], rows)
    assert table.columns == ["key", "minimal", "full", "guide", "change full", "change guide"]
    max_steps = next(row for row in table.rows if row[0] == "trainer.max_steps")
    assert max_steps == ["trainer.max_steps", 10, 500, 500, "↑ ×50", "↑ ×50"]


def test_formats(minimal_vs_full):
    table = diff_table(["preset=minimal", "preset=full"], minimal_vs_full)
    md = render(table, "markdown").splitlines()
    assert md[0] == "| key | preset=minimal | preset=full | change |"
    assert "| trainer.max_steps | 10 | 500 | ↑ ×50 |" in md
    records = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert [r["key"] for r in records] == [r.key for r in minimal_vs_full]
    data = json.loads(render(table, "json"))
    assert data[2] == {"key": "derived.warmup_steps", "preset=minimal": 2, "preset=full": 100, "change": "↑ ×50"}
    text = render(table, "table")
    assert "trainer.save_every" in text and "↑ ×5" in text and "lora.rank" not in text


def test_identical_compositions_exit_0(capsys):
    assert main(["preset=minimal", "+preset=minimal"]) == 0
    assert "identical" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_exit_codes_and_output():
    cmd = [sys.executable, "-m", "grpo.diff"]
    different = subprocess.run(
        [*cmd, "preset=minimal", "preset=full", "--format", "markdown"], capture_output=True, text=True, cwd=REPO
    )
    assert different.returncode == 1, different.stderr
    body = different.stdout.splitlines()[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in body] == [
        "trainer.max_steps",
        "trainer.save_every",
        "derived.warmup_steps",
        "derived.total_samples",
        "derived.run_name",
    ]
    bad = subprocess.run([*cmd, "preset=minimal", "preset=full lora.rnak=3"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2
    assert bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: preset=full lora.rnak=3:") and "rnak" in lines[0]


def test_unknown_preset_is_one_line_with_the_options(capsys):
    assert main(["preset=minimal", "preset=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nope" in err and "minimal" in err
