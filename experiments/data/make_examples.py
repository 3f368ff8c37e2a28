"""Writes the small example datasets under experiments/data/ (written by the project, not downloaded).

    python experiments/data/make_examples.py

aflow/{train,val,test}.jsonl  math / qa / code records for `+experiment=aflow_mixed`: short prompts
                              (the tiny model's context is 64 characters), qa with choice letters
                              and short text answers, code with assertions as tests.
lever/candidates.jsonl        seed 004's shape: prompts with 3-5 scored beams each (score: the beam
                              score, correct: 0/1); also the train split of the Lever experiments.
lever/val.jsonl               held-out prompts of the same kind, for validation.

Deterministic: the same seed writes the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 2024


# ---------------------------------------------------------------------------- aflow: math / qa / code
def math_item(rng: random.Random) -> dict:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    prompt, answer = rng.choice(
        [
            (f"What is {a}*{b}?", a * b),
            (f"What is {a * 3}+{b * 7}?", a * 3 + b * 7),
            (f"What is {a * b}-{b}?", a * b - b),
            (f"Half of {2 * a * b}?", a * b),
            (f"Solve {a}x={a * b}. x=?", b),
            (f"10% of {10 * (a + b)}?", a + b),
        ]
    )
    return {"prompt": prompt, "answer": str(answer), "domain": "math"}


FACTS = [
    ("Opposite of hot?", "cold"),
    ("Opposite of up?", "down"),
    ("Opposite of big?", "small"),
    ("Opposite of day?", "night"),
    ("Color of grass?", "green"),
    ("Color of the sky?", "blue"),
    ("Color of snow?", "white"),
    ("Capital of France?", "Paris"),
    ("Capital of Japan?", "Tokyo"),
    ("Capital of Italy?", "Rome"),
    ("Capital of Spain?", "Madrid"),
    ("Days in a week?", "7"),
    ("Legs on a spider?", "8"),
    ("Months in a year?", "12"),
    ("Planet we live on?", "Earth"),
    ("Frozen water is?", "ice"),
    ("Baby cat is a?", "kitten"),
    ("Baby dog is a?", "puppy"),
]


def qa_choice_item(rng: random.Random) -> dict:
    values = rng.sample(range(1, 20), 4)
    which = rng.choice(["Max", "Min"])
    pick = max(values) if which == "Max" else min(values)
    options = " ".join(f"{letter}){v}" for letter, v in zip("ABCD", values))
    return {
        "prompt": f"{which}? {options}",
        "answer": "ABCD"[values.index(pick)],
        "domain": "qa",
        "meta": {"kind": "choice"},
    }


def code_items() -> list[dict]:
    """Function-writing items: the answer is a reference solution, the tests decide."""
    fixed = [
        ("f(x): x squared", "def f(x): return x*x", ["f(3)==9", "f(0)==0", "f(-2)==4"]),
        ("f(s): reverse s", "def f(s): return s[::-1]", ["f('ab')=='ba'", "f('')==''", "f('xyz')=='zyx'"]),
        ("f(a,b): max of a,b", "def f(a,b): return max(a,b)", ["f(1,2)==2", "f(5,3)==5", "f(-1,-4)==-1"]),
        ("f(n): sum 1..n", "def f(n): return n*(n+1)//2", ["f(1)==1", "f(4)==10", "f(0)==0"]),
        ("f(s): length of s", "def f(s): return len(s)", ["f('abc')==3", "f('')==0", "f('hi')==2"]),
        ("f(x): is x even", "def f(x): return x%2==0", ["f(2) is True", "f(3) is False", "f(0) is True"]),
        ("f(l): sum of l", "def f(l): return sum(l)", ["f([1,2])==3", "f([])==0", "f([5])==5"]),
        ("f(x): abs of x", "def f(x): return abs(x)", ["f(-3)==3", "f(2)==2", "f(0)==0"]),
        ("f(a,b): a**b", "def f(a,b): return a**b", ["f(2,3)==8", "f(5,0)==1", "f(3,2)==9"]),
        ("f(s): upper s", "def f(s): return s.upper()", ["f('ab')=='AB'", "f('')==''", "f('Hi')=='HI'"]),
        ("f(l): last of l", "def f(l): return l[-1]", ["f([1,2])==2", "f([7])==7", "f('ab')=='b'"]),
        ("f(n): n factorial", "def f(n): return 1 if n<2 else n*f(n-1)", ["f(0)==1", "f(3)==6", "f(5)==120"]),
        ("f(l): sorted l", "def f(l): return sorted(l)", ["f([2,1])==[1,2]", "f([])==[]", "f([3,1,2])==[1,2,3]"]),
        (
            "f(s): vowels in s",
            "def f(s): return sum(c in 'aeiou' for c in s)",
            ["f('abe')==2", "f('xyz')==0", "f('')==0"],
        ),
        ("f(a,b): a minus b", "def f(a,b): return a-b", ["f(5,3)==2", "f(0,2)==-2", "f(4,4)==0"]),
        ("f(l): length of l", "def f(l): return len(l)", ["f([1,2])==2", "f([])==0", "f([0])==1"]),
        ("f(s): first char", "def f(s): return s[0]", ["f('ab')=='a'", "f('z')=='z'", "f('hi')=='h'"]),
        ("f(l): max of l", "def f(l): return max(l)", ["f([1,5,2])==5", "f([-1])==-1", "f([3,3])==3"]),
    ]
    items = [
        {"prompt": p, "answer": a, "domain": "code", "tests": [f"assert {t}" for t in tests]} for p, a, tests in fixed
    ]
    for k in range(2, 9):
        items.append(
            {
                "prompt": f"f(x): x plus {k}",
                "answer": f"def f(x): return x+{k}",
                "domain": "code",
                "tests": [f"assert f(0)=={k}", f"assert f(3)=={3 + k}", f"assert f(-1)=={k - 1}"],
            }
        )
        items.append(
            {
                "prompt": f"f(x): x times {k}",
                "answer": f"def f(x): return x*{k}",
                "domain": "code",
                "tests": [f"assert f(1)=={k}", "assert f(0)==0", f"assert f(-2)=={-2 * k}"],
            }
        )
    return items


def unique(make, rng: random.Random, count: int, seen: set) -> list[dict]:
    out = []
    while len(out) < count:
        item = make(rng)
        if item["prompt"] not in seen:
            seen.add(item["prompt"])
            out.append(item)
    return out


def aflow(rng: random.Random) -> dict[str, list[dict]]:
    seen: set = set()
    facts = [{"prompt": q, "answer": a, "domain": "qa", "meta": {"kind": "fact"}} for q, a in FACTS]
    rng.shuffle(facts)
    code = code_items()
    rng.shuffle(code)
    sizes = {"train": (24, 18, 18), "val": (6, 5, 5), "test": (6, 5, 5)}  # math, qa, code (0.4 / 0.3 / 0.3)
    facts_at = {"train": facts[:10], "val": facts[10:14], "test": facts[14:18]}
    code_at = {"train": code[:18], "val": code[18:23], "test": code[23:28]}
    out = {}
    for split, (n_math, n_qa, n_code) in sizes.items():
        qa = facts_at[split][: n_qa // 2 + 1]
        qa += unique(qa_choice_item, rng, n_qa - len(qa), seen)
        items = unique(math_item, rng, n_math, seen) + qa + code_at[split][:n_code]
        rng.shuffle(items)
        out[split] = items
    return out


# ---------------------------------------------------------------------------- lever: offline beams
def lever_item(rng: random.Random, a: int, b: int, with_candidates: bool) -> dict:
    answer = a + b
    item = {"prompt": f"{a}+{b}=", "answer": str(answer), "domain": "math"}
    if not with_candidates:
        return item
    size = rng.randint(3, 5)  # beams per prompt differ, as in beam data
    wrong = rng.sample([answer + d for d in (-3, -2, -1, 1, 2, 3, 10) if answer + d >= 0], size - 1)
    texts = [str(w) for w in wrong]
    texts = [str(answer), *texts] if rng.random() < 0.85 else [*texts, str(wrong[0] + 20)]  # some beams miss it
    raw = sorted((rng.random() for _ in texts), reverse=True)
    if rng.random() < 0.4:  # the correct beam is not always the best-scored one
        rng.shuffle(texts)
    total = sum(raw) * 1.25
    item["candidates"] = [
        {"text": t, "score": round(s / total, 4), "correct": int(t == str(answer))} for t, s in zip(texts, raw)
    ]
    return item


def lever(rng: random.Random) -> dict[str, list[dict]]:
    pairs = rng.sample([(a, b) for a in range(0, 30) for b in range(0, 30)], 64)
    return {
        "candidates": [lever_item(rng, a, b, True) for a, b in pairs[:48]],
        "val": [lever_item(rng, a, b, False) for a, b in pairs[48:]],
    }


def write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"{path.relative_to(HERE.parent.parent)}: {len(records)} records")


def main() -> None:
    rng = random.Random(SEED)
    for split, items in aflow(rng).items():
        write(HERE / "aflow" / f"{split}.jsonl", items)
    for name, items in lever(rng).items():
        write(HERE / "lever" / f"{name}.jsonl", items)


if __name__ == "__main__":
    main()
