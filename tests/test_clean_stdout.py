"""Stdout carries records only (issue 22, part 3).

Every command that writes JSONL runs here as its own process, as a user runs
it (``python -m mcts_pref ...``, with DeepSpeed installed when the README's
install put it there), and every stdout line must parse as JSON; with
``--out`` (or for commands that write no records) stdout must be empty.
The model stages use the tiny random Llama and are marked slow: they are the
ones whose imports pulled in DeepSpeed, whose logger wrote "[WARNING] ...
Setting accelerator to CPU" to stdout.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.console import route_loggers_to_stderr

from .conftest import write_jsonl

TREES = Path(__file__).parent / "fixtures" / "trees.jsonl"

PROBLEMS = [
    {"v": 1, "id": "p1", "question": "What is 2 + 3 - 1?", "answer": "4", "task": "math"},
    {"v": 1, "id": "p2", "question": "What is 5 + 1?", "answer": "6", "task": "math"},
]
SAMPLES = [
    {"v": 1, "problem_id": "p1", "sample_index": 0, "prompt": "Q: 2 + 3 - 1?\n", "completion": "2 + 3 = 5\n5 - 1 = 4\nThe answer is 4.",
     "steps": ["2 + 3 = 5", "5 - 1 = 4", "The answer is 4."], "policy": {"model": "m"}, "answer": "4", "task": "math"},
    {"v": 1, "problem_id": "p1", "sample_index": 1, "prompt": "Q: 2 + 3 - 1?\n", "completion": "2 + 3 = 6\nThe answer is 5.",
     "steps": ["2 + 3 = 6", "The answer is 5."], "policy": {"model": "m"}, "answer": "4", "task": "math"},
    {"v": 1, "problem_id": "p2", "sample_index": 0, "prompt": "Q: 5 + 1?\n", "completion": "The answer is 6.",
     "steps": ["The answer is 6."], "policy": {"model": "m"}, "answer": "6", "task": "math"},
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Inputs for every command, made in-process (fast)."""
    tmp = tmp_path_factory.mktemp("stdout")
    f = {"problems": write_jsonl(tmp / "problems.jsonl", PROBLEMS), "samples": write_jsonl(tmp / "samples.jsonl", SAMPLES),
         "trees": TREES, "scored": tmp / "scored.jsonl", "pairs": tmp / "pairs.jsonl", "tmp": tmp,
         "shard0": write_jsonl(tmp / "shard0.jsonl", SAMPLES[:2]), "shard1": write_jsonl(tmp / "shard1.jsonl", SAMPLES[2:])}
    runner = CliRunner()
    assert runner.invoke(app, ["evaluate", str(f["samples"]), "--out", str(f["scored"])]).exit_code == 0
    assert runner.invoke(app, ["extract-pairs", str(TREES), "--all-trees", "--out", str(f["pairs"])]).exit_code == 0
    return f


# name -> arguments; {x} are files from the fixture. Each writes records to stdout unless --out is given.
RECORD_COMMANDS = {
    "prepare": ["prepare", "problems", "{problems}"],
    "prepare-gym-grpo": ["prepare", "gym:chain_sum", "--size", "2", "--format", "grpo"],
    "extract-pairs": ["extract-pairs", "{trees}", "--all-trees"],
    "extract-pairs-prm": ["extract-pairs", "{trees}", "--all-trees", "--format", "prm"],
    "extract-pairs-prm-openrlhf": ["extract-pairs", "{trees}", "--all-trees", "--format", "prm-openrlhf"],
    "evaluate": ["evaluate", "{samples}"],
    "curriculum": ["curriculum", "{scored}", "--problems", "{problems}", "--band", "0,1"],
    "instance-pairs": ["instance-pairs", "{scored}"],
    "merge": ["merge", "{shard0}", "{shard1}", "--expect", "{problems}"],
}
TINY = ["--shots", "0", "--seed", "0"]
MODEL_COMMANDS = {
    "sample": ["sample", "{problems}", "--model", "{model}", "--max-tokens", "4", *TINY],
    "search": ["search", "{problems}", "--model", "{model}", "--iterations", "1", "--children", "2", "--root-children", "2",
               "--depth-limit", "2", "--max-depth", "2", "--max-step-tokens", "4", "--top-p", "1", *TINY],
}


def mcts_pref(args: list[str], files: dict, **more) -> subprocess.CompletedProcess:
    argv = [a.format(**{k: str(v) for k, v in {**files, **more}.items()}) for a in args]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "mcts_pref", *argv], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def assert_records_only(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    for i, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"stdout line {i} is not JSON: {line[:200]!r}")
    assert lines, "no records on stdout"
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("name", sorted(RECORD_COMMANDS))
def test_stdout_is_records_only(name, files):
    assert_records_only(mcts_pref(RECORD_COMMANDS[name], files).stdout)


@pytest.mark.parametrize("name", ["prepare", "extract-pairs-prm-openrlhf", "evaluate", "curriculum", "instance-pairs", "merge"])
def test_stdout_is_empty_with_out(name, files):
    out = files["tmp"] / f"{name}.out.jsonl"
    proc = mcts_pref(RECORD_COMMANDS[name] + ["--out", str(out)], files)
    assert proc.stdout == "" and out.read_text().strip()


def test_show_tree_draws_on_stderr_only(files):
    proc = mcts_pref(["show-tree", "{trees}", "--id", "p1"], files)
    assert proc.stdout == "" and "The answer is 4" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODEL_COMMANDS))
def test_model_stage_stdout_is_records_only(name, files, tiny_model_dir):
    recs = assert_records_only(mcts_pref(MODEL_COMMANDS[name], files, model=tiny_model_dir).stdout)
    assert {r["problem_id"] for r in recs} == {"p1", "p2"}


@pytest.mark.slow
def test_train_dpo_writes_nothing_to_stdout(files, tiny_model_dir):
    """The reported case: `train-dpo ... --out A > out.jsonl` got DeepSpeed's warning in out.jsonl."""
    out = files["tmp"] / "adapter"
    proc = mcts_pref(["train-dpo", "{pairs}", "--model", "{model}", "--out", str(out), "--epochs", "1"], files,
                     model=tiny_model_dir)
    assert proc.stdout == "" and (out / "adapter_config.json").exists()


def test_stdout_handlers_added_by_libraries_land_on_stderr(capsys):
    """What DeepSpeed's LoggerFactory does at import: a StreamHandler on sys.stdout for its named logger."""
    route_loggers_to_stderr(("mcts-pref-test-lib",))
    logger = logging.getLogger("mcts-pref-test-lib")
    handler = logging.StreamHandler(stream=sys.stdout)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("Setting accelerator to CPU")
        captured = capsys.readouterr()
        assert captured.out == "" and "Setting accelerator to CPU" in captured.err
    finally:
        logger.removeHandler(handler)
