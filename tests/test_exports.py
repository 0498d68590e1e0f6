"""Exports for other trainers (issue 22, part 2), each checked against what its trainer reads.

- ``extract-pairs --format prm``: TRL <= 1.13 stepwise supervision (tests/test_pairs.py).
- ``extract-pairs --format prm-openrlhf``: OpenRLHF's PRM dataset (``input`` with a
  placeholder after each step, ``label`` one "+"/"-" per step); the layout rules are in
  the pairs module docstring, with the OpenRLHF files they were checked against.
- ``prepare --format grpo``: rows for TRL's GRPOTrainer / RLOOTrainer with
  ``trl.rewards.accuracy_reward``; the slow test runs one real GRPOTrainer step on them.
"""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.datasets import GRPO_SYSTEM, grpo_row
from mcts_pref.pairs import PLACEHOLDER, openrlhf_prm_record, prm_records

from .conftest import read_jsonl, write_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "trees.jsonl"
P1_PROMPT = "QUESTION: What is 2 + 3 - 1?\n\nANSWER:\n"

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result, [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def help_text(*cmd: str) -> str:
    """A command's --help as one line of words (rich's boxes and wrapping removed)."""
    out = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"}).output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())


# --- OpenRLHF PRM ----------------------------------------------------------------


def test_prm_openrlhf_records_by_hand():
    result, recs = run("extract-pairs", str(FIXTURE), "--all-trees", "--format", "prm-openrlhf")
    assert result.exit_code == 0, result.output
    p1 = [(r["input"], r["label"]) for r in recs if r["problem_id"] == "p1"]
    # Same paths and labels as the TRL layout (test_pairs.test_prm_labels_by_hand), one step per line.
    assert p1 == [
        (P1_PROMPT + "2 + 3 = 4 ки", ["-"]),
        (P1_PROMPT + "2 + 3 = 5 ки\n5 - 1 = 3 ки", ["+", "+"]),
        (P1_PROMPT + "2 + 3 = 5 ки\n5 - 1 = 4 ки\nThe answer is 4. ки", ["+", "+", "+"]),
        (P1_PROMPT + "2 + 3 = 6 ки\n6 - 1 = 5 ки\nThe answer is 5. ки", ["-", "-", "-"]),
    ]
    # OpenRLHF labels the i-th placeholder with the i-th label: as many of each.
    assert all(r["input"].count(PLACEHOLDER) == len(r["label"]) for r in recs) and len(recs) == 6


def test_prm_openrlhf_custom_placeholder_and_pure_conversion():
    tree = read_jsonl(FIXTURE)[0]
    stepwise = prm_records(tree)[1]
    rec = openrlhf_prm_record(stepwise, "<step>")
    assert rec["input"] == P1_PROMPT + "2 + 3 = 5 <step>\n5 - 1 = 3 <step>" and rec["label"] == ["+", "+"]
    assert set(rec) == {"v", "input", "label", "problem_id", "policy"}


def test_prm_openrlhf_placeholder_in_a_step_is_a_file_line_error(tmp_path):
    trees = read_jsonl(FIXTURE)
    trees[1]["nodes"][1]["text"] = "so ки it is\n"
    bad = write_jsonl(tmp_path / "trees.jsonl", trees)
    result, recs = run("extract-pairs", str(bad), "--all-trees", "--format", "prm-openrlhf")
    assert result.exit_code == 2 and not recs
    assert f"{bad}:2: tree 'p2': node 1's text contains the placeholder 'ки'" in result.output
    # Another tag is fine, and the TRL layout does not care.
    assert run("extract-pairs", str(bad), "--all-trees", "--format", "prm-openrlhf", "--placeholder", "<s1>")[0].exit_code == 0
    assert run("extract-pairs", str(bad), "--all-trees", "--format", "prm")[0].exit_code == 0


@pytest.mark.parametrize("args, msg", [
    (["--format", "prm-openrlhf", "--prm-out", "x.jsonl"], "--prm-out adds PRM records next to DPO pairs"),
    (["--format", "prm-openrlhf", "--placeholder", " "], "--placeholder must be a tag"),
    (["--format", "prm-trl"], "--format must be one of dpo, prm, prm-openrlhf"),
])
def test_prm_option_errors(args, msg):
    result, recs = run("extract-pairs", str(FIXTURE), *args)
    assert result.exit_code == 2 and msg in result.output and not recs


def test_prm_help_names_the_trainer_versions():
    text = help_text("extract-pairs")
    assert "TRL <= 1.13 stepwise supervision" in text
    assert "prm-openrlhf (OpenRLHF's PRM dataset" in text and "--placeholder_token" in text


# --- GRPO / RLOO rows ---------------------------------------------------------------


def test_grpo_rows_from_every_source(tmp_path):
    result, rows = run("prepare", "gym:chain_sum", "--size", "3", "--format", "grpo")
    assert result.exit_code == 0, result.output
    assert [r["problem_id"] for r in rows] == ["chain_sum-s0-0", "chain_sum-s0-1", "chain_sum-s0-2"]
    for r in rows:
        assert r["prompt"][0] == {"role": "system", "content": GRPO_SYSTEM}
        assert r["prompt"][1]["role"] == "user" and r["prompt"][1]["content"].startswith("State the final answer")
        assert r["solution"] == f"${r['answer']}$" and r["task"] == "math"
    # Problem records written earlier (e.g. a curriculum's output) export the same way.
    problems = tmp_path / "problems.jsonl"
    assert runner.invoke(app, ["prepare", "gym:chain_sum", "--size", "3", "--out", str(problems)]).exit_code == 0
    again = run("prepare", "problems", str(problems), "--format", "grpo", "--limit", "2")[1]
    assert again == rows[:2]
    assert run("prepare", "problems", str(problems), "--format", "csv")[0].exit_code == 2


def test_grpo_row_mcq_and_latex_gold():
    mcq = grpo_row({"id": "q1", "question": "Which is a mammal?", "answer": "B", "task": "mcq",
                    "choices": [{"label": "A", "text": "shark"}, {"label": "B", "text": "whale"}]})
    assert mcq["prompt"][1]["content"] == "Which is a mammal?\n(A) shark\n(B) whale" and mcq["solution"] == "$B$"
    assert grpo_row({"id": 7, "question": "q", "answer": "\\frac{1}{3}"})["solution"] == "$\\frac{1}{3}$"
    assert grpo_row({"id": 7, "question": "q", "answer": "$x$"})["solution"] == "$x$"  # already delimited


def test_grpo_rows_score_with_trl_accuracy_reward():
    """TRL's own reward on the exported columns: a boxed right answer scores 1, everything else 0."""
    rewards = pytest.importorskip("trl.rewards")
    pytest.importorskip("math_verify")
    rows = [grpo_row(p) for p in [
        {"id": "a", "question": "q", "answer": "-14"},
        {"id": "b", "question": "q", "answer": "1500"},
        {"id": "c", "question": "q", "answer": "(1, 2]"},        # bare, math-verify would read 2
        {"id": "d", "question": "q", "answer": "3\\sqrt{13}"},   # bare, math-verify would read 3
        {"id": "e", "question": "q", "answer": "B", "task": "mcq"},
    ]]
    right = ["-14", "1500", "(1,2]", "3\\sqrt{13}", "B"]
    wrong = ["-15", "150", "(1,2)", "3", "C"]

    def score(answers: list[str], template: str) -> list:
        completions = [[{"role": "assistant", "content": "5 - 19 = -14\n" + template.format(a)}] for a in answers]
        return rewards.accuracy_reward(completions, [r["solution"] for r in rows][: len(answers)])

    assert score(right, "The answer is \\boxed{{{}}}.") == [1.0] * 5
    assert score(wrong, "The answer is \\boxed{{{}}}.") == [0.0] * 5
    # Why GRPO_SYSTEM asks for \boxed{}: the reward extracts LaTeX only.
    assert score(right[:2], "The answer is {}.") == [0.0, 0.0]


@pytest.mark.slow
def test_one_grpo_step_on_the_exported_file(tiny_model_dir, tmp_path):
    """TRL's GRPOTrainer reads `prepare --format grpo` output as is and runs a step with accuracy_reward."""
    trl = pytest.importorskip("trl")
    pytest.importorskip("math_verify")
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.rewards import accuracy_reward

    rows = tmp_path / "grpo.jsonl"
    result = runner.invoke(app, ["prepare", "gym:chain_sum", "--size", "4", "--format", "grpo", "--out", str(rows)])
    assert result.exit_code == 0, result.output
    dataset = load_dataset("json", data_files=str(rows))["train"]  # how a user loads it

    seen: list[dict] = []

    def reward(completions, solution, **kwargs):
        scores = accuracy_reward(completions, solution, **kwargs)
        seen.append({"completions": completions, "solution": solution, "kwargs": kwargs, "scores": scores})
        return scores

    reward.__name__ = "accuracy_reward"
    args = trl.GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, max_steps=1,
                          per_device_train_batch_size=2, num_generations=2, max_completion_length=8,
                          logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, seed=0)
    trainer = trl.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), reward_funcs=reward,
                              args=args, train_dataset=dataset,
                              processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    trainer.train()
    assert trainer.state.global_step == 1
    call = seen[0]
    # Conversational prompts -> completions as assistant messages, which accuracy_reward indexes.
    assert all(c[0]["role"] == "assistant" and isinstance(c[0]["content"], str) for c in call["completions"])
    assert all(s.startswith("$") and s.endswith("$") for s in call["solution"])
    # Every gold parsed (None would mean the row is skipped) and the extra columns reached the reward.
    assert all(s in (0.0, 1.0) for s in call["scores"])
    assert {"answer", "task", "problem_id"} <= set(call["kwargs"])
    assert any("reward" in h for h in trainer.state.log_history)
