"""JSONL datasets: records, one-line errors naming file and line, splits, and the pre-flight check."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from grpo.checks import check
from grpo.compose import compose
from grpo.config.errors import ConfigError, explain
from grpo.config.schema import TaskConfig
from grpo.run import precheck
from grpo.tasks.files import DataError, iter_jsonl
from grpo.tasks.jsonl import load_split, read_examples, split_fraction
from grpo.tasks.registry import build_task, domains_of

AFLOW = "experiments/data/aflow"


def write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def rec(i, domain="math", **kw):
    return {"prompt": f"q{i}", "answer": str(i), "domain": domain, **kw}


def test_records_parse_with_tests_meta_and_extras(tmp_path):
    path = write(
        tmp_path / "d.jsonl",
        [
            rec(1),
            "",
            rec(2, "qa", meta={"k": 1}, source="x"),
            {"prompt": "f(x)", "domain": "code", "tests": ["assert f(1)==1"]},
            {"prompt": "n", "answer": 7, "domain": "math"},
        ],
    )
    a, b, c, d = read_examples("task.train_path", path)
    assert (a.prompt, a.answer, a.domain, a.tests) == ("q1", "1", "math", None)
    assert (b.meta["k"], b.meta["source"], b.meta["origin"]) == (1, "x", "d.jsonl:3")  # extra keys land in meta
    assert (c.answer, c.tests) == ("", ("assert f(1)==1",))
    assert d.answer == "7"
    assert a.meta["answer_pattern"] != b.meta["answer_pattern"]  # math reads a number, qa a line


def test_streaming_reader_gives_line_numbers(tmp_path):
    path = write(tmp_path / "d.jsonl", [rec(1), "", rec(2)])
    assert [n for n, _ in iter_jsonl(path)] == [1, 3]


@pytest.mark.parametrize(
    "bad,message",
    [
        ('{"prompt": "x", "answer": "1" "domain": "m"}', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"answer": "1"}', "missing 'prompt'"),
        ('{"prompt": "x"}', "missing 'answer'"),
        ('{"prompt": "x", "answer": "1", "tests": [1]}', "'tests' must be a list of strings"),
        ('{"prompt": "x", "answer": "1", "meta": {"answer_pattern": "("}}', "not a valid regex"),
    ],
)
def test_malformed_line_is_one_line_naming_file_and_line(tmp_path, bad, message):
    path = write(tmp_path / "bad.jsonl", [rec(1), rec(2), bad])
    with pytest.raises(DataError) as info:
        read_examples("task.train_path", path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}:3: ") and message in text
    assert explain(info.value) == text


def test_missing_file_names_the_key_and_path(tmp_path):
    with pytest.raises(ConfigError) as info:
        read_examples("task.val_path", str(tmp_path / "nope.jsonl"))
    assert (
        str(info.value).startswith("task.val_path=")
        and "nope.jsonl" in str(info.value)
        and "no such file" in str(info.value)
    )


def test_relative_paths_fall_back_to_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(read_examples("task.train_path", f"{AFLOW}/train.jsonl")) == 60


def test_split_by_fraction_is_seeded_and_per_domain():
    records = tuple(build_example(i, d) for i, d in enumerate(["math"] * 50 + ["qa"] * 30 + ["code"] * 20))
    train, val = split_fraction(records, 0.1, seed=3)
    assert Counter(e.domain for e in val) == {"math": 5, "qa": 3, "code": 2}
    assert len(train) + len(val) == 100 and not {e.prompt for e in train} & {e.prompt for e in val}
    assert split_fraction(records, 0.1, seed=3) == (train, val)
    assert split_fraction(records, 0.1, seed=4)[1] != val


def build_example(i, domain):
    from grpo.tasks.base import Example

    return Example(prompt=f"q{i}", answer=str(i), domain=domain)


def test_splits_by_file_and_caps(tmp_path):
    train = write(tmp_path / "train.jsonl", [rec(i, d) for i, d in enumerate(["math", "qa"] * 10)])
    val = write(tmp_path / "val.jsonl", [rec(100 + i) for i in range(5)])
    test = write(tmp_path / "test.jsonl", [rec(200 + i) for i in range(3)])
    cfg = TaskConfig(name="jsonl", train_path=train, val_path=val, test_path=test, train_size=12, val_size=4)
    task = build_task(cfg)
    assert len(task.train) == 12 and len(task.val) == 4 and task.domains == ("math", "qa")
    assert [e.prompt for e in load_split(cfg, "test")] == ["q200", "q201", "q202"]
    assert load_split(cfg, "train") == list(task.train)  # seeded: the same subset every time
    no_val = TaskConfig(name="jsonl", train_path=train, val_fraction=0.2, train_size=16)
    task = build_task(no_val)
    assert len(task.val) == 4 and len(task.train) == 16


def test_train_size_may_not_exceed_the_file(tmp_path):
    train = write(tmp_path / "train.jsonl", [rec(i) for i in range(10)])
    with pytest.raises(ConfigError, match=r"task.train_size=256: the train split has 9 records"):
        build_task(TaskConfig(name="jsonl", train_path=train))


def test_domains_of_jsonl():
    assert domains_of("jsonl") is None  # no files: any domain
    cfg = TaskConfig(name="jsonl", train_path=f"{AFLOW}/train.jsonl", val_path=f"{AFLOW}/val.jsonl", train_size=60)
    assert domains_of("jsonl", cfg) == ("code", "math", "qa")


def test_preflight_reports_a_bad_line_in_one_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", [rec(1), rec(2), "{oops"])
    error = precheck(["task=jsonl", f"task.train_path={path}"])
    assert error is not None and error.startswith(f"{path}:3: not valid JSON") and "\n" not in error
    error = precheck(["task=jsonl", f"task.train_path={tmp_path}/missing.jsonl"])
    assert error.startswith("task.train_path=") and "missing.jsonl" in error


def test_checks_domain_ratios_against_the_file():
    comp = compose(["+experiment=aflow_mixed"])
    assert comp.cfg.task.domain_ratios == {"math": 0.4, "qa": 0.3, "code": 0.3}
    comp.cfg.task.domain_ratios = {"math": 0.5, "poetry": 0.5}
    with pytest.raises(ConfigError, match=r"task.domain_ratios.poetry.*domains: code, math, qa"):
        check(
            comp.cfg, grpo_steps=comp.derived.grpo_steps, warmup_steps=comp.derived.warmup_steps, domains_of=domains_of
        )
