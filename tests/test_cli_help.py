"""Help and errors that say what the code does (issue 22, part 4)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.prompts import FORMATS

from .conftest import read_jsonl, write_jsonl

TREES = Path(__file__).parent / "fixtures" / "trees.jsonl"

runner = CliRunner()


def help_text(*cmd: str) -> str:
    """A command's --help as one line of words (rich's boxes and wrapping removed)."""
    out = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"}).output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())


def option_help(text: str, option: str) -> str:
    """The help of one option, from its type (``<str>``) to the next option's name."""
    row = re.search(rf"{option} (?:-\w )?<\w+> ", text)
    rest = text[row.end():]
    nxt = re.search(r" --?[a-z][\w-]* (?:-\w )?<\w+> ", rest)
    return rest[: nxt.start() if nxt else len(rest)]


# --- --out: replaced, not resumed ------------------------------------------------------


SCORED = [
    {"v": 1, "problem_id": "p1", "sample_index": 0, "prompt": "Q\n", "completion": "The answer is 4.", "steps": ["x"],
     "policy": {"model": "m"}, "answer": "4", "correct": True},
    {"v": 1, "problem_id": "p1", "sample_index": 1, "prompt": "Q\n", "completion": "The answer is 5.", "steps": ["y"],
     "policy": {"model": "m"}, "answer": "4", "correct": False},
]


@pytest.mark.parametrize("cmd", ["merge", "instance-pairs"])
def test_out_help_says_replaced_and_the_file_is_replaced(cmd, tmp_path):
    text = option_help(help_text(cmd), "--out")
    assert "replaced if it exists" in text and "resume" not in text
    scored = write_jsonl(tmp_path / "scored.jsonl", SCORED)
    out = tmp_path / "out.jsonl"
    out.write_text('{"v": 1, "problem_id": "old", "stale": true}\n')
    result = runner.invoke(app, [cmd, str(scored), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert all("stale" not in r for r in read_jsonl(out)) and read_jsonl(out)


@pytest.mark.parametrize("cmd", ["sample", "search"])
def test_out_help_of_resumable_stages_still_says_resumed(cmd):
    assert "an existing file is resumed" in option_help(help_text(cmd), "--out")


# --- --prompt-format lists the formats there are -------------------------------------------


@pytest.mark.parametrize("cmd", ["sample", "search"])
def test_prompt_format_help_lists_exactly_the_formats(cmd):
    text = option_help(help_text(cmd), "--prompt-format")
    assert "fewshot" not in text
    listed = re.findall(r"(?:^|\| )([a-z]+)\b", text)
    assert tuple(listed) == FORMATS


# --- --device offers what each command accepts ---------------------------------------------


def test_train_dpo_device_help_offers_no_cuda_index_and_refuses_one(tmp_path):
    text = option_help(help_text("train-dpo"), "--device")
    assert "auto | cpu | cuda." in text and "| cuda:N" not in text
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"v": 1, "prompt": "Q\n", "chosen": "a", "rejected": "b", "problem_id": "p"}])
    result = runner.invoke(app, ["train-dpo", str(pairs), "--out", str(tmp_path / "A"), "--device", "cuda:1"])
    assert result.exit_code == 2 and "CUDA_VISIBLE_DEVICES" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", ["sample", "search"])
def test_generation_stages_offer_a_cuda_index(cmd):
    # They load through policy.load_model, which places the model on the device as given.
    assert "| cuda:N" in option_help(help_text(cmd), "--device")


# --- show-tree: malformed trees are a file:line error ---------------------------------------


def tree_file(tmp_path: Path, change) -> Path:
    trees = read_jsonl(TREES)
    change(trees[1])
    return write_jsonl(tmp_path / "trees.jsonl", trees)


def renumber(tree: dict, by: int = 10) -> None:
    for n in tree["nodes"]:
        n["id"] += by
        n["parent"] = None if n["parent"] is None else n["parent"] + by
    tree["path"] = [i + by for i in tree["path"]]


def test_show_tree_draws_a_tree_whose_root_is_not_id_0(tmp_path):
    path = tree_file(tmp_path, renumber)
    result = runner.invoke(app, ["show-tree", str(path), "--id", "p2"])
    assert result.exit_code == 0, result.output
    assert "(root)" in result.output and "The answer is" in result.output


@pytest.mark.parametrize("change, msg", [
    (lambda t: t["nodes"].pop(0), "expected exactly one root (parent null), found 0"),
    (lambda t: t["nodes"][1].update(parent=99), "node 1 has parent 99, which is not a node in this tree"),
    (lambda t: t["nodes"][1].pop("id"), "nodes[1] is missing key 'id'"),
    (lambda t: t.update(nodes=[]), "'nodes' must be a non-empty list"),
    (lambda t: t.update(path=[0, 42]), "path id 42 is not a node in this tree"),
    (lambda t: t["nodes"].__setitem__(1, "not a node"), "nodes[1] is not an object"),
])
def test_show_tree_malformed_tree_is_one_line_with_file_and_line(tmp_path, change, msg):
    path = tree_file(tmp_path, change)
    result = runner.invoke(app, ["show-tree", str(path), "--id", "p1"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {path}:2: tree 'p2': {msg}"


def test_show_tree_needs_no_prompt(tmp_path):
    path = tree_file(tmp_path, lambda t: t.pop("prompt"))
    assert runner.invoke(app, ["show-tree", str(path), "--id", "p2"]).exit_code == 0


def test_show_tree_bad_json_line(tmp_path):
    path = tmp_path / "trees.jsonl"
    path.write_text(TREES.read_text().splitlines()[0] + "\n{not json\n")
    result = runner.invoke(app, ["show-tree", str(path), "--id", "p1"])
    assert result.exit_code == 2 and result.output.startswith(f"error: {path}:2: malformed JSON")
    assert json.loads(TREES.read_text().splitlines()[0])["problem_id"] == "p1"
