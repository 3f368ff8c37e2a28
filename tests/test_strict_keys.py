"""Keys the schema lacks are refused however they get in, also with Hydra's `+`; legitimate `+` uses work.

`+` adds a key where Hydra would otherwise refuse it; the schema still says which keys exist, so
`+lora.rnak=8` (a typo) and `+foo=1` end in one line and start no run, while `+preset=...`,
`+experiment=...`, `+sweep=...`, new keys of mapping fields and Hydra's own `+hydra.*` compose.
"""

import os
import subprocess
import sys

import pytest

from grpo.compose import compose, in_mapping, override_value, unknown_keys
from grpo.config.errors import explain


def error_line(overrides):
    with pytest.raises(Exception) as info:
        compose(overrides)
    line = explain(info.value)
    assert "\n" not in line
    return line


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["+preset=minimal", "+lora.rnak=8"], "unknown key 'lora.rnak' (did you mean 'lora.rank'? lora has: enabled"),
        (["+foo=1"], "unknown key 'foo' (the root config has: model, lora,"),
        (["++model.tiny.hiden=3"], "unknown key 'model.tiny.hiden' (did you mean 'model.tiny.hidden_size'?"),
        (["+experiment=aflow_mixed", "+task.nmae=x"], "unknown key 'task.nmae'"),
    ],
)
def test_unknown_keys_added_with_plus_are_refused_in_one_line(overrides, needle):
    assert needle in error_line(overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        ["+preset=minimal"],
        ["+experiment=aflow_mixed"],
        ["+sweep=kl_lr_grid"],
        ["task=arithmetic", "+task.domain_ratios.math=1.0"],
        ["reward=weighted", "+reward.weights.format=0.2"],
        ["+logger.tags.owner=me", "++logger.tags.team=rl"],
        ["+hydra.job.env_set.GRPO_X=1"],
    ],
)
def test_legitimate_plus_overrides_compose(overrides):
    compose(overrides)


def test_mapping_keys_and_values_for_overrides():
    assert in_mapping("task.domain_ratios.math") and in_mapping("reward.weights.format") and in_mapping("logger.tags.x")
    assert not in_mapping("task.domain_ratios") and not in_mapping("lora.rank") and not in_mapping("foo.bar")
    assert unknown_keys({"lora": {"rank": 8, "rnak": 8}, "reward": {"weights": {"anything": 1.0}}, "foo": 1}) == [
        ("lora.rnak", ["enabled", "rank", "alpha", "dropout", "target_modules"]),
        ("foo", unknown_keys({"foo": 1})[0][1]),
    ]
    # Values written as overrides read back as the same values (strings always quoted).
    for value in ["it's \\a\\ path, = : [x]", "true", "1.5", "${not_an_interpolation}", "end\\"]:
        assert compose([f"logger.run_name={override_value(value)}"]).cfg.logger.run_name == value
    comp = compose(
        [f"lora.target_modules={override_value(['q_proj', 'v_proj'])}", f"schedule.grpo_lr={override_value(2e-5)}"]
    )
    assert comp.cfg.lora.target_modules == ["q_proj", "v_proj"] and comp.cfg.schedule.grpo_lr == 2e-5


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,needle",
    [("+lora.rnak=8", "unknown key 'lora.rnak'"), ("+foo=1", "unknown key 'foo'")],
)
def test_cli_refuses_plus_typos_in_one_line_and_creates_no_run(tmp_path, extra, needle):
    db = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpo.run",
            "+preset=minimal",
            extra,
            f"logger.tracking_uri=sqlite:///{db}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert not db.exists() and not (tmp_path / "run").exists()
