"""The experiment's GRPO arm driver (experiments/tree_vs_alternatives/grpo_arm.py) on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, load_script, write_jsonl

pytest.importorskip("trl")


def load_driver():
    return load_script(REPO / "experiments/tree_vs_alternatives/grpo_arm.py", "grpo_arm")


def test_reward_is_our_answer_checker_and_counts_tokens():
    g = load_driver()
    r = g.Reward()
    out = r(prompts=["p"] * 3,
            completions=["2 + 3 = 5\nThe answer is 5.\nQUESTION: 1 + 1\nThe answer is 7.",  # cut at the first answer
                         "The answer is 6.", "no answer at all"],
            completion_ids=[[1] * 10, [2] * 4, [3] * 7], answer=["5", "5", "5"], task=["math"] * 3)
    assert out == [1.0, 0.0, 0.0]
    assert (r.tokens, r.completions, r.right) == (21, 3, 1)


@pytest.mark.slow
def test_grpo_round_trains_until_the_token_budget(tmp_path, tiny_model_dir):
    g = load_driver()
    problems = [{"id": f"p{i}", "question": f"State the final answer: {i} + 1 =", "answer": str(i + 1), "task": "math"}
                for i in range(3)]
    acct = g.train_round(str(tiny_model_dir), problems, budget=100, lr=1e-4, seed=0, adapter_in=None, out=tmp_path,
                         shots_from=None, est_tokens=200, generations=2)
    # Every completion is counted; training stopped at the first step that reached the budget.
    assert acct["generated_tokens"] >= 100 and acct["completions"] == 2 * acct["steps"]
    assert acct["steps"] <= acct["max_steps"] and acct["reward_mean"] == 0.0  # a random model never answers
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    # The saved adapter is what `sample --adapter` evaluates, and round 2 continues it.
    acct2 = g.train_round(str(tiny_model_dir), problems, budget=50, lr=1e-4, seed=1,
                          adapter_in=str(tmp_path / "adapter"), out=tmp_path / "r2", shots_from=None, est_tokens=200,
                          generations=2)
    assert acct2["steps"] >= 1
    test = write_jsonl(tmp_path / "test.jsonl", problems[:2])
    rep = g.evaluate(str(tiny_model_dir), test, tmp_path / "r2" / "adapter", tmp_path / "r2", 0, None)
    assert rep["n_problems"] == 2
    assert len((tmp_path / "r2" / "samples.jsonl").read_text().splitlines()) == 2
