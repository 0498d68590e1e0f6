"""Run directories for the HTML report tests, made by the real search driver and pair rules (no model).

:class:`ArithmeticBackend` answers expansions of "What is a + b + c?" with
one-operation steps whose sums are sometimes wrong, seeded by the prefix, so
trees are deterministic and as big as the demo loop's (its search knobs).
"""

from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path

from mcts_pref.pairs import tree_pairs
from mcts_pref.mcts import Config, search_trees
from tests.conftest import scripted_step, write_jsonl

# The demo loop's search knobs (examples/mcts_dpo_loop.sh).
DEMO = dict(iterations=3, children=3, root_children=5, depth_limit=3, max_depth=8, value="outcome,checker-gate",
            resample_duplicates=1)


def says_answer(completion: str, problem: dict) -> bool:
    return f"The answer is {problem['answer']}." in completion


class ArithmeticBackend:
    policy_id = "arith"
    samples_without_replacement = False

    def __init__(self, seed: int = 0):
        self.seed, self.calls, self.stats = seed, 0, {"tokens": 0}

    def format_prompt(self, problem: dict) -> str:
        return f"Q: {problem['question']}\nA:\n"

    def _step(self, prefix: str, rng: random.Random) -> str:
        nums = [int(x) for x in re.findall(r"\d+", prefix.split("\nA:\n", 1)[0])]
        done = prefix.split("\nA:\n", 1)[1].splitlines()
        total = nums[0] if not done else int(re.findall(r"= (-?\d+)", done[-1])[0]) if "=" in done[-1] else nums[0]
        if len(done) >= len(nums) - 1 or rng.random() < 0.15:
            return f"The answer is {total + rng.choice([0, 0, 0, 1, -1])}.\n"
        x = nums[len(done) + 1]
        return f"{total} + {x} = {total + x + rng.choice([0, 0, 0, 1, -2, 3])}\n"

    def expand(self, prefixes, n, *, temperature, top_p, max_step_tokens, seed=None, tasks=None):
        self.calls += 1
        out = []
        for prefix, k in zip(prefixes, n):
            rng = random.Random(zlib.crc32(f"{self.seed}|{seed}|{self.calls}|{prefix}".encode()))
            out.append([scripted_step(self._step(prefix, rng)) for _ in range(k)])
        self.stats["tokens"] += sum(s.n_tokens for steps in out for s in steps)
        return out

    def complete(self, prefixes, n, **kw):
        return [[scripted_step("The answer is 0.\n") for _ in range(k)] for k in n]

    def self_evaluate(self, questions, partials):
        return [0.5 for _ in partials]

    def release(self, prompt):
        """No prefix cache: nothing to free."""


def problems(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = (rng.randint(1, 9) for _ in range(3))
        out.append({"id": f"r{seed}-{i}", "question": f"What is {a} + {b} + {c}?", "answer": str(a + b + c), "task": "math"})
    return out


def search(probs: list[dict], seed: int = 0, **cfg) -> list[dict]:
    trees = list(search_trees(ArithmeticBackend(seed), probs, Config(**{**DEMO, **cfg}), outcome_fn=says_answer))
    order = {p["id"]: i for i, p in enumerate(probs)}
    return sorted(trees, key=lambda t: order[t["problem_id"]])


def scored(d: Path, ids: list[str], right: set[str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "scored.jsonl", [{"problem_id": i, "sample_index": 0, "correct": i in right, "n_tokens": 12} for i in ids])
    write_jsonl(d / "samples.jsonl", [{"problem_id": i, "n_tokens": 12} for i in ids])
    acc = len(right & set(ids)) / len(ids)
    (d / "report.json").write_text(json.dumps({"accuracy": acc, "ci95": [max(0, acc - 0.1), min(1, acc + 0.1)],
                                               "n_samples": len(ids)}))


def make_run(root: Path, rounds: int = 2, trees_per_round: int = 4, n_test: int = 40, extra_trees=()) -> Path:
    """round-0 (scored only) and ``rounds`` searched rounds with trees, pairs, scored samples and metrics."""
    run = root / "run"
    test_ids = [f"t{i}" for i in range(n_test)]
    rng = random.Random(7)
    scored(run / "round-0", test_ids, {i for i in test_ids if rng.random() < 0.2})
    for k in range(1, rounds + 1):
        d = run / f"round-{k}"
        d.mkdir(parents=True)
        trees = search(problems(trees_per_round, seed=k), seed=k) + list(extra_trees)
        write_jsonl(d / "trees.jsonl", trees)
        write_jsonl(d / "pairs.jsonl", [p for t in trees for p in tree_pairs(t, min_margin=0.0)])
        scored(d, test_ids, {i for i in test_ids if rng.random() < 0.2 + 0.1 * k})
        (d / "adapter").mkdir()
        write_jsonl(d / "adapter" / "metrics.jsonl", [{"step": s, "seconds": 0.5, "loss": 0.6} for s in range(1, 5)])
    return run
