"""prepare: importers (pure) and the CLI on hand-made fixtures and real GSM8K."""

import json
import re
from pathlib import Path

import pytest

from mcts_pref.tasks.math import last_boxed
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.datasets import (
    chain_sum_steps,
    coerce_value,
    gym_problems,
    normalize_choices,
    split_gsm8k_solution,
)

FIXTURES = Path(__file__).parent / "fixtures"
# The shared data folder sits next to the repo; never copied into it.
GSM8K_TRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k" / "train.jsonl"

runner = CliRunner()


def prepare(*args: str):
    result = runner.invoke(app, ["prepare", *args])
    records = [json.loads(line) for line in result.stdout.split("\n") if line.strip()]
    return result, records


# --- pure helpers ------------------------------------------------------------


def test_split_gsm8k_strips_annotations_and_commas():
    steps, gold = split_gsm8k_solution("It has 1,200 + 300 = <<1200+300=1500>>1,500 hens.\n\n#### 1,500")
    assert steps == ["It has 1,200 + 300 = 1,500 hens."]
    assert gold == "1500"


def test_split_gsm8k_needs_marker():
    with pytest.raises(ValueError, match="####"):
        split_gsm8k_solution("no final line")


@pytest.mark.parametrize(
    "text, gold",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"$\boxed{6}$ then $\boxed{9}$", "9"),
        (r"$\boxed{\{1, 2\}}$", r"\{1, 2\}"),  # escaped braces still count
        (r"answer \boxed 5$", "5"),
        (r"\fbox{x+1}", "x+1"),
        ("no box here", None),
        (r"\boxed{unclosed", None),
        (r"\boxed{7} and later \boxed{unclosed", "7"),  # the same rule as evaluate: an earlier closed box
    ],
)
def test_last_boxed(text, gold):
    assert last_boxed(text) == gold


def test_normalize_choices_shapes():
    expected = [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}]
    assert normalize_choices([{"label": "A", "text": "x"}, {"label": "B", "text": "y"}]) == expected
    assert normalize_choices({"label": ["A", "B"], "text": ["x", "y"]}) == expected
    assert normalize_choices(["x", "y"]) == expected
    with pytest.raises(ValueError, match="duplicate"):
        normalize_choices({"label": ["A", "A"], "text": ["x", "y"]})


def test_coerce_value():
    assert coerce_value("3") == 3
    assert coerce_value("0.5") == 0.5
    assert coerce_value("true") is True and coerce_value("False") is False
    assert coerce_value("[1, 2]") == [1, 2]
    assert coerce_value("abc") == "abc"


def test_chain_sum_steps_left_to_right():
    assert chain_sum_steps("3 + 4 - 2") == ["3 + 4 = 7", "7 - 2 = 5"]
    assert chain_sum_steps("5 - -3") == ["5 - -3 = 8"]
    assert chain_sum_steps("7") == []


# --- gsm8k ---------------------------------------------------------------------


def test_gsm8k_fixture():
    result, recs = prepare("gsm8k", str(FIXTURES / "gsm8k.jsonl"))
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in recs] == ["gsm8k-0", "gsm8k-2"]  # ids follow line numbers
    assert recs[0]["answer"] == "1500"
    assert recs[0]["rationale"] == "It has 1,200 + 300 = 1,500 hens.\nThe answer is 1500."
    assert recs[0]["task"] == "math" and recs[0]["source"] == "gsm8k" and recs[0]["v"] == 1
    assert "wrote 2 problems" in result.stderr


@pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason="shared GSM8K data not present")
def test_gsm8k_real_file(tmp_path):
    out = tmp_path / "train.jsonl"
    result, _ = prepare("gsm8k", str(GSM8K_TRAIN), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    # split("\n"), not splitlines(): questions may hold U+2028, which JSON keeps raw.
    recs = [json.loads(line) for line in out.read_text().split("\n") if line]
    assert len(recs) == 7473
    first = recs[0]
    assert first["id"] == "gsm8k-0" and first["answer"] == "72"
    assert first["question"].startswith("Natalia sold clips")
    assert first["rationale"].splitlines()[-1] == "The answer is 72."
    assert not any("<<" in r["rationale"] or ">>" in r["rationale"] for r in recs)
    assert all(re.fullmatch(r"-?[\d.]+(/\d+)?", r["answer"]) for r in recs)  # numeric golds, no commas

    result, limited = prepare("gsm8k", str(GSM8K_TRAIN), "--limit", "5")
    assert [r["id"] for r in limited] == [f"gsm8k-{i}" for i in range(5)]
    result, shard = prepare("gsm8k", str(GSM8K_TRAIN), "--limit", "5", "--shard", "1/2")
    assert [r["id"] for r in shard] == ["gsm8k-1", "gsm8k-3"]


# --- math and mcq ------------------------------------------------------------------


def test_math_fixture():
    result, recs = prepare("math", str(FIXTURES / "math.jsonl"))
    assert result.exit_code == 0, result.stderr
    assert recs[0]["answer"] == r"\frac{1}{2}"
    assert recs[0]["id"] == "math-0" and recs[0]["meta"] == {"level": "Level 1", "type": "Prealgebra"}
    assert recs[0]["rationale"].startswith("Divide top and bottom")
    assert recs[1]["answer"] == "9"  # the last box wins
    assert recs[1]["id"] == "test/algebra/1.json"


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "mcq_arc.jsonl",
            [("Mercury_1", "Which is a mammal?", "B", ["A", "B", "C"]), ("ARC_num_2", "What do plants need for photosynthesis?", "2", ["1", "2"])],
        ),
        ("mcq_csqa.jsonl", [("csqa-a1", "Where would you keep milk cold?", "B", ["A", "B", "C", "D", "E"])]),
        ("mcq_flat.jsonl", [("mcq-0", "What color is the sky on a clear day?", "B", ["A", "B"])]),
    ],
)
def test_mcq_shapes(name, expected):
    result, recs = prepare("mcq", str(FIXTURES / name))
    assert result.exit_code == 0, result.stderr
    got = [(r["id"], r["question"], r["answer"], [c["label"] for c in r["choices"]]) for r in recs]
    assert got == expected
    assert all(r["task"] == "mcq" and "rationale" not in r for r in recs)
    assert all(set(c) == {"label", "text"} for r in recs for c in r["choices"])


def test_mcq_csqa_choice_texts():
    _, recs = prepare("mcq", str(FIXTURES / "mcq_csqa.jsonl"))
    assert recs[0]["choices"][1] == {"label": "B", "text": "fridge"}


# --- reasoning-gym ------------------------------------------------------------------


def test_gym_chain_sum_deterministic_and_consistent():
    a = gym_problems("chain_sum", 20, 7, {})
    assert a == gym_problems("chain_sum", 20, 7, {})
    assert a != gym_problems("chain_sum", 20, 8, {})
    assert [p["id"] for p in a[:2]] == ["chain_sum-s7-0", "chain_sum-s7-1"]
    for p in a:
        lines = p["rationale"].splitlines()
        assert lines[-1] == f"The answer is {p['answer']}."
        # Every line is true arithmetic and feeds the next one.
        running = None
        for line in lines[:-1]:
            left, op, right, _, result = line.split(" ")
            value = int(left) + int(right) if op == "+" else int(left) - int(right)
            assert value == int(result)
            assert running is None or int(left) == running
            running = value
        assert running == int(p["answer"])
        assert p["question"].endswith(p["meta"]["expression"] + " =")


def test_gym_cli_config_honored():
    args = ["gym:chain_sum", "--size", "5", "--seed", "3"]
    args += ["--config", "min_terms=3", "--config", "max_terms=3", "--config", "min_digits=1", "--config", "max_digits=1"]
    result, recs = prepare(*args)
    assert result.exit_code == 0, result.stderr
    assert len(recs) == 5
    for r in recs:
        terms = r["meta"]["expression"].split()[::2]
        assert len(terms) == 3 and all(len(t) == 1 for t in terms)
        assert len(r["rationale"].splitlines()) == 3  # two sums + the answer line
    again, recs2 = prepare(*args)
    assert recs2 == recs


def test_gym_limit_and_default_size():
    result, recs = prepare("gym:chain_sum", "--limit", "4")
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in recs] == [f"chain_sum-s0-{i}" for i in range(4)]
    result, recs = prepare("gym:basic_arithmetic", "--size", "3")
    assert result.exit_code == 0, result.stderr
    assert len(recs) == 3 and all(r["answer"] and r["source"] == "gym:basic_arithmetic" for r in recs)


def test_gym_gsm_symbolic_rationale():
    (p,) = gym_problems("gsm_symbolic", 1, 0, {})
    assert p["rationale"].splitlines()[-1] == f"The answer is {p['answer']}."
    assert "####" not in p["rationale"]


# --- errors -------------------------------------------------------------------------


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.mark.parametrize(
    "source, lines, bad_line, message",
    [
        ("gsm8k", ['{"question": "q", "answer": "a\\n#### 1"}', "{not json"], 2, "malformed JSON"),
        ("gsm8k", ['{"question": "q"}'], 1, "'answer'"),
        ("gsm8k", ['{"answer": "#### 1"}'], 1, "'question'"),
        ("gsm8k", ['{"question": "q", "answer": "no marker"}'], 1, "####"),
        ("math", ['{"problem": "p", "solution": "s \\\\boxed{1}"}', '{"problem": "p"}'], 2, "'solution'"),
        ("math", ['{"solution": "\\\\boxed{1}"}'], 1, "'problem'"),
        ("math", ['{"problem": "p", "solution": "no box"}'], 1, "boxed"),
        ("mcq", ['{"question": "q", "choices": ["a", "b"], "answerKey": "C"}'], 1, "answerKey"),
        ("mcq", ['{"question": "q", "choices": ["a", "b"]}'], 1, "answerKey"),
        ("mcq", ['{"id": "x", "question": "q", "choices": ["a", "b"], "answerKey": "A"}'] * 2, 2, "duplicate id"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, source, lines, bad_line, message):
    path = _write(tmp_path, "bad.jsonl", lines)
    result, recs = prepare(source, path)
    assert result.exit_code == 2
    assert f"{path}:{bad_line}:" in result.stderr
    assert message in result.stderr
    assert recs == []  # nothing written before the whole file is validated


def test_missing_file():
    result, _ = prepare("gsm8k", "/nonexistent/train.jsonl")
    assert result.exit_code == 2 and "/nonexistent/train.jsonl: no such file" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["arc", "x.jsonl"], "valid sources: gsm8k PATH, math PATH, mcq PATH, gym:<task>"),
        (["gsm8k"], "needs a PATH"),
        (["gym:chain_sum", "x.jsonl"], "takes no PATH"),
        (["gym:chainsum"], "did you mean gym:chain_sum"),
        (["gym:chain_sum", "--config", "nope=1"], "no option nope"),
        (["gym:chain_sum", "--config", "min_terms=4", "--config", "max_terms=2"], "invalid --config"),
        (["gym:chain_sum", "--config", "seed=1"], "use --seed"),
        (["gym:chain_sum", "--config", "min_terms"], "key=value"),
        (["math", str(FIXTURES / "math.jsonl"), "--seed", "1"], "only to gym"),
        (["gym:chain_sum", "--shard", "3/2"], "--shard"),
    ],
)
def test_usage_errors_exit_2(args, message):
    result, _ = prepare(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback
