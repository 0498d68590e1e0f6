"""The evaluate stage: scoring, summary statistics, and the CLI contract.

The contract under test: a record needs only `completion` and a gold `answer`
(or `--answer-key`), so completions from any generator score unchanged.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref import check
from mcts_pref.scoring import majority_correct, score_samples, step_check_rates, summarize
from mcts_pref.stats import wilson_interval
from mcts_pref.records import RecordError
from mcts_pref.tasks.mcq import normalize_choices

REPO = Path(__file__).resolve().parents[1]


def sample(pid, completion, answer="42", policy="base", **extra):
    return {"problem_id": pid, "prompt": "Q", "completion": completion, "steps": [completion],
            "policy": policy, "answer": answer, **extra}


# p1: 3 samples (2 right, 1 wrong), p2: 1 unparsable, p3: mcq right, p4: boxed LaTeX right.
FIXTURE = [
    sample("p1", "6 * 7 = 42.\nThe answer is 42."),
    sample("p1", "#### 42"),
    sample("p1", "The answer is 41."),
    sample("p2", "I do not know.", answer="7"),
    sample("p3", "The answer is (B).", answer="B", task="mcq",
           choices=[{"label": "A", "text": "cat"}, {"label": "B", "text": "dog"}]),
    sample("p4", "So we get \\boxed{\\frac{1}{2}}.", answer="0.5"),
]


def write_jsonl(path: Path, recs) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


# ---------------------------------------------------------------- pure functions


def test_score_samples_adds_fields_and_keeps_the_rest():
    scored = score_samples(FIXTURE)
    assert [(s["pred"], s["correct"], s["reason"]) for s in scored] == [
        ("42", True, None), ("42", True, None), ("41", False, None),
        (None, False, "no_answer"), ("B", True, None), ("\\frac{1}{2}", True, None),
    ]
    assert scored[4]["choices"] == FIXTURE[4]["choices"]
    assert "pred" not in FIXTURE[0]  # copies, inputs untouched


def test_score_samples_missing_answer_names_the_record():
    recs = [sample("p1", "The answer is 1"), {"problem_id": "p9", "completion": "x"}]
    with pytest.raises(RecordError, match=r"<records>:2: .*p9.*'answer'"):
        score_samples(recs)


def test_wilson_interval_hand_values():
    # 8/10: p=0.8, z^2/n=0.38415; centre=(0.8+0.19207)/1.38415=0.71674,
    # half=1.96*sqrt(0.016+0.0096036)/1.38415=0.22658 -> (0.4902, 0.9433).
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    # 0/4: centre = half = 0.96037/1.96037 -> (0, 0.4899).
    lo, hi = wilson_interval(0, 4)
    assert lo == 0.0 and hi == pytest.approx(0.4899, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_majority_vote_counts_equal_values_together_and_breaks_ties_by_first_seen():
    votes = [{"pred": "0.5", "correct": True}, {"pred": "7", "correct": False},
             {"pred": "7", "correct": False}, {"pred": "1/2", "correct": True}, {"pred": None}]
    # 0.5 and 1/2 are one value with 2 votes; "7" also 2 votes; "0.5" was seen first.
    assert majority_correct(votes) is True
    assert majority_correct([{"pred": "7", "correct": False}, {"pred": "0.5", "correct": True}]) is False
    assert majority_correct([{"pred": None, "correct": False}]) is False


def test_summarize_counts():
    s = summarize(score_samples(FIXTURE))
    assert (s["n_samples"], s["n_problems"], s["correct"], s["no_answer"], s["timeouts"]) == (6, 4, 4, 1, 0)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["k"] == 3 and s["k_min"] == 1
    assert s["pass_at_k"] == pytest.approx(3 / 4)  # p1, p3, p4
    assert s["maj_at_k"] == pytest.approx(3 / 4)  # p1 majority "42" is right
    assert "policies" not in s


def test_summarize_per_policy_rows():
    recs = [sample("p1", "The answer is 42", policy="base"), sample("p1", "The answer is 1", policy="base"),
            sample("p1", "The answer is 1", policy={"model": "m", "adapter": "a1"}),
            sample("p1", "The answer is 1", policy={"model": "m", "adapter": "a1"})]
    s = summarize(score_samples(recs))
    assert set(s["policies"]) == {"base", "m + a1"}
    assert s["policies"]["base"]["pass_at_k"] == 1.0 and s["policies"]["m + a1"]["pass_at_k"] == 0.0
    assert s["n_problems"] == 1 and s["pass_at_k"] == 0.5  # groups are (policy, problem)


def test_summarize_empty():
    s = summarize([])
    assert (s["n_samples"], s["accuracy"], s["ci95"], s["k"]) == (0, None, None, None)


# ---------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_scores_fixture_and_writes_report(tmp_path):
    src = write_jsonl(tmp_path / "samples.jsonl", FIXTURE)
    out, report = tmp_path / "scored.jsonl", tmp_path / "sub" / "report.json"
    result = runner.invoke(app, ["evaluate", str(src), "--out", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in scored] == [True, True, False, False, True, True]
    assert all(r["v"] == 1 for r in scored)
    summary = json.loads(report.read_text())
    assert (summary["n_samples"], summary["correct"], summary["no_answer"]) == (6, 4, 1)


def test_cli_writes_stdout_without_out(tmp_path):
    src = write_jsonl(tmp_path / "samples.jsonl", FIXTURE[:2])
    result = runner.invoke(app, ["evaluate", str(src)])
    assert result.exit_code == 0
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert [r["pred"] for r in lines] == ["42", "42"]


def test_cli_empty_input(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text("\n")
    out = tmp_path / "scored.jsonl"
    result = runner.invoke(app, ["evaluate", str(src), "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_text() == ""


@pytest.mark.parametrize(
    "content, needle",
    [
        (b'{"problem_id": "p1", \n', "bad.jsonl:1: malformed JSON"),
        (b"[1, 2]\n", "bad.jsonl:1: expected a JSON object"),
        (json.dumps(sample("p1", "x")).encode() + b'\n{"problem_id": "p2", "prompt": "", "completion": "",'
         b' "steps": [], "policy": "b"}\n', "bad.jsonl:2: sample record (problem_id='p2') is missing required key 'answer'"),
        (b'{"prompt": "q"}\n', "bad.jsonl:1: sample record is missing required key 'completion'"),
        (b'{"answer": "1"}\n\n{"problem_id": 7, "answer": "1"}\n',
         "bad.jsonl:1: sample record is missing required key 'completion'"),
        (b'{"completion": "The answer is 1"}\n', "bad.jsonl:1: sample record is missing required key 'answer'"),
        (b'{"completion": "x", "answer": "1"}\n{"completion": 3, "answer": "1"}\n',
         "bad.jsonl:2: 'completion' must be a string, got int"),
        (b'{"completion": "x", "answer": ["1"]}\n', "bad.jsonl:1: 'answer' must be a string or number, got list"),
        (b'{"completion": "x", "answer": "A", "choices": ["only one"]}\n', "bad.jsonl:1: bad 'choices': "),
        (b'{"completion": "x", "answer": "A", "choices": {"label": "A", "text": "t"}}\n',
         "bad.jsonl:1: bad 'choices': choices is one"),
        (b'{"v": 2, "completion": "x", "answer": "1"}\n', "bad.jsonl:1: unsupported schema version v=2"),
        (b'\n\n{"problem_id": "\xff"}\n', "bad.jsonl:3: not valid UTF-8"),
        (json.dumps(sample("p1", "x", task="code")).encode() + b"\n", "bad.jsonl:1: unknown task 'code'"),
    ],
)
def test_cli_bad_input_is_one_line_with_location(tmp_path, content, needle):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(content)
    out = tmp_path / "scored.jsonl"
    result = runner.invoke(app, ["evaluate", str(src), "-o", str(out)])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()  # validated before anything is written


def test_cli_missing_file(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file"


def test_module_entry_point_reads_stdin():
    data = "".join(json.dumps(r) + "\n" for r in FIXTURE[:3]) + "not json\n"
    proc = subprocess.run([sys.executable, "-m", "mcts_pref", "evaluate", "-"], input=data, capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: <stdin>:4: malformed JSON (Expecting value, column 1)"]
    assert proc.stdout == ""
    good = subprocess.run([sys.executable, "-m", "mcts_pref", "evaluate", "-"], input=data.rsplit("not", 1)[0],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert good.returncode == 0, good.stderr
    assert [json.loads(x)["correct"] for x in good.stdout.splitlines()] == [True, True, False]
    assert "pass@k" in good.stderr  # the summary table goes to stderr


# ---------------------------------------------------------------- anyone's completions


def run_cli(*args):
    result = runner.invoke(app, ["evaluate", *map(str, args)])
    return result, [json.loads(x) for x in result.stdout.splitlines() if x.strip()]


def assert_one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert needle in err, err
    assert "\n" not in err and "Traceback" not in err


def test_cli_minimal_completion_and_answer_records(tmp_path):
    # Another generator's output: no prompt, steps, policy, problem_id, task or v.
    src = tmp_path / "theirs.jsonl"
    src.write_text('{"completion": "3 + 4 = 7. The answer is 7.", "answer": "7"}\n'
                   '{"completion": "The answer is 8", "answer": 7}\n'
                   "\n"
                   '{"completion": "#### 12", "answer": "12", "model": "someone-else-7b"}\n')
    result, scored = run_cli(src)
    assert result.exit_code == 0, result.output
    assert [(r["problem_id"], r["pred"], r["correct"]) for r in scored] == [(1, "7", True), (2, "8", False), (4, "12", True)]
    assert scored[2]["model"] == "someone-else-7b"  # unknown keys pass through
    assert "prompt" not in scored[0] and "steps" not in scored[0]  # nothing invented that was not needed


def test_problem_ids_default_to_line_numbers_so_each_line_is_its_own_problem(tmp_path):
    # Two explicit samples of "q" plus two id-less lines: 3 problems, k = 2 only for "q".
    src = write_jsonl(tmp_path / "s.jsonl", [
        {"problem_id": "q", "completion": "The answer is 1", "answer": "1"},
        {"problem_id": "q", "completion": "The answer is 2", "answer": "1"},
        {"completion": "The answer is 5", "answer": "5"},
        {"completion": "The answer is 6", "answer": "5"},
    ])
    report = tmp_path / "r.json"
    result, scored = run_cli(src, "--report", report)
    assert result.exit_code == 0, result.output
    assert [r["problem_id"] for r in scored] == ["q", "q", 3, 4]
    summary = json.loads(report.read_text())
    assert (summary["n_problems"], summary["k"], summary["k_min"]) == (3, 2, 1)
    assert summary["pass_at_k"] == pytest.approx(2 / 3)  # q and line 3


CHOICE_SHAPES = {
    "strings": ["cat", "dog", "bank"],
    "label_text_objects": [{"label": "A", "text": "cat"}, {"label": "B", "text": "dog"}, {"label": "C", "text": "bank"}],
    "label_to_text_object": {"A": "cat", "B": "dog", "C": "bank"},
}


@pytest.mark.parametrize("shape", sorted(CHOICE_SHAPES))
def test_cli_scores_every_choices_shape(tmp_path, shape):
    choices = CHOICE_SHAPES[shape]
    # No "task": choices make it mcq. Labels, choice texts and gold given as text all resolve.
    src = write_jsonl(tmp_path / "mcq.jsonl", [
        {"completion": "The answer is (B).", "answer": "B", "choices": choices},
        {"completion": "So the answer is dog.", "answer": "B", "choices": choices},
        {"completion": "Answer: C", "answer": "dog", "choices": choices},
        {"completion": "The answer is (D).", "answer": "B", "choices": choices},  # D is not a choice
    ])
    result, scored = run_cli(src)
    assert result.exit_code == 0, result.output
    assert [(r["pred"], r["correct"]) for r in scored] == [("B", True), ("B", True), ("C", False), (None, False)]
    assert scored[0]["choices"] == choices  # the record's own shape is passed through


def test_normalize_choices_shapes_and_errors():
    want = [{"label": "A", "text": "cat"}, {"label": "B", "text": "dog"}]
    assert normalize_choices(["cat", " dog "]) == want
    assert normalize_choices({"A": "cat", "B": "dog"}) == want
    assert normalize_choices([{"label": "A", "text": "cat", "x": 1}, {"label": " B", "text": "dog"}]) == want
    assert normalize_choices({"label": ["A", "B"], "text": ["cat", "dog"]}) == want  # CommonsenseQA on the hub
    assert normalize_choices({"A": 3, "B": 4.5}) == [{"label": "A", "text": "3"}, {"label": "B", "text": "4.5"}]
    assert normalize_choices(None) is None
    assert [c["label"] for c in normalize_choices([str(i) for i in range(26)])][-1] == "Z"
    for bad, msg in [
        (["cat"], "at least 2"),
        ({"A": "cat", "a": "dog"}, "duplicate choice labels"),
        (["cat", {"label": "B", "text": "dog"}], "must be a list of strings"),
        ({"label": "A", "text": "cat"}, "one {\"label\", \"text\"} object"),
        ({"label": ["A"], "text": ["x", "y"]}, "differ in length"),
        ({"A": ["x"], "B": "y"}, "strings or numbers"),
        ([True, False], "must be a list of strings"),
        ({" ": "x", "B": "y"}, "empty label"),
        ([str(i) for i in range(27)], "27 unlabelled choices"),
        ("AB", "must be a list of strings"),
    ]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            normalize_choices(bad)


PROBLEMS = [
    {"v": 1, "id": "p1", "question": "What is 6 * 7?", "answer": "42", "task": "math", "source": "gsm8k"},
    {"v": 1, "id": "p2", "question": "Which animal barks?", "answer": "B", "task": "mcq",
     "choices": [{"label": "A", "text": "cat"}, {"label": "B", "text": "dog"}]},
    {"v": 1, "id": 3, "question": "1 + 1?", "answer": "2"},
]


def test_cli_answer_key_joins_gold_task_and_choices(tmp_path):
    key = write_jsonl(tmp_path / "problems.jsonl", PROBLEMS)
    src = write_jsonl(tmp_path / "completions.jsonl", [
        {"problem_id": "p1", "completion": "6 * 7 = 42. The answer is 42."},
        {"problem_id": "p2", "completion": "Dogs bark. The answer is (B)."},  # task and choices from the key
        # Its own choices, shuffled: the key's gold B ("dog") is A here, and the gold is joined as its text.
        {"problem_id": "p2", "completion": "The answer is (A).", "choices": ["dog", "cat"]},
        {"problem_id": "3", "completion": "The answer is 2"},  # ids compare as text
        {"problem_id": "p1", "completion": "The answer is 41", "answer": "41"},  # a generator's own "answer"
    ])
    report = tmp_path / "r.json"
    result, scored = run_cli(src, "--answer-key", key, "--report", report)
    assert result.exit_code == 0, result.output
    assert [(r["pred"], r["correct"]) for r in scored] == [("42", True), ("B", True), ("A", True), ("2", True), ("41", False)]
    assert [r["answer"] for r in scored] == ["42", "B", "dog", "2", "42"]  # the key is the gold
    assert scored[1]["task"] == "mcq" and scored[1]["choices"] == PROBLEMS[1]["choices"]
    assert scored[2]["choices"] == ["dog", "cat"]
    assert "question" not in scored[0]  # only what scoring needs is joined
    assert "1 record(s)" in result.stderr and "differs from the answer key" in result.stderr
    assert json.loads(report.read_text())["n_problems"] == 3


def test_cli_answer_key_missing_id_is_one_line_with_location(tmp_path):
    key = write_jsonl(tmp_path / "problems.jsonl", PROBLEMS)
    src = write_jsonl(tmp_path / "completions.jsonl", [
        {"problem_id": "p1", "completion": "The answer is 42"},
        {"problem_id": "p9", "completion": "The answer is 1"},
    ])
    out = tmp_path / "scored.jsonl"
    result, _ = run_cli(src, "--answer-key", key, "-o", out)
    assert_one_line_error(result, f"{src}:2: problem_id 'p9' is not in the answer key {key}")
    assert not out.exists()
    src.write_text('{"completion": "The answer is 42"}\n')
    result, _ = run_cli(src, "--answer-key", key)
    assert_one_line_error(result, f"{src}:1: sample record has no 'problem_id' to look up in the answer key")


@pytest.mark.parametrize("key_lines, needle", [
    ('{"id": "p1", "answer": "1"}\n{"id": "p1", "answer": "2"}\n', "key.jsonl:2: duplicate id 'p1' (first on line 1)"),
    ('{"id": "p1"}\n', "key.jsonl:1: answer-key record is missing required key 'answer'"),
    ('\n{"answer": "1"}\n', "key.jsonl:2: answer-key record is missing required key 'id'"),
    ('{"id": "p1", "answer": "A", "choices": 5}\n', "key.jsonl:1: bad 'choices'"),
])
def test_cli_bad_answer_key(tmp_path, key_lines, needle):
    key = tmp_path / "key.jsonl"
    key.write_text(key_lines)
    src = write_jsonl(tmp_path / "s.jsonl", [{"problem_id": "p1", "completion": "The answer is 1"}])
    result, _ = run_cli(src, "--answer-key", key)
    assert_one_line_error(result, needle)


def test_cli_hostile_completions_and_answers_are_never_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    src = write_jsonl(tmp_path / "hostile.jsonl", [
        {"completion": f"The answer is {payload}", "answer": payload},
        {"completion": "The answer is 9**9**9**9", "answer": "1"},
        {"completion": "The answer is 1e999999999", "answer": "1e999999999"},
        {"completion": "The answer is " + "9" * 100_000, "answer": "9" * 100_001},
        {"completion": "The answer is \\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "answer": "1"},
    ])
    result, scored = run_cli(src, "--timeout", "1")
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    assert [r["correct"] for r in scored][1:4] == [False, True, False]


# ---------------------------------------------------------------- --steps


def test_step_check_rates_hand_values():
    scored = [
        {"correct": True, "step_checks": ["ok", "ok"]},        # right, clean
        {"correct": True, "step_checks": ["ok", "bad"]},       # right answer, false step
        {"correct": False, "step_checks": ["unknown"]},        # wrong, nothing false
        {"correct": False, "step_checks": ["bad", "bad"]},     # wrong, false steps
        {"correct": True},                                     # not checked: not counted
    ]
    # false step: 2 of 4 checked; process accuracy: only the first, 1 of 4.
    assert step_check_rates(scored) == (4, 0.5, 0.25)
    assert step_check_rates([{"correct": True}]) == (0, None, None)
    assert step_check_rates([{"correct": True, "step_checks": []}]) == (1, 0.0, 1.0)


def test_cli_steps_adds_verdicts_and_process_accuracy(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [
        {"completion": "2 + 3 = 5\nThe answer is 5", "answer": "5"},                         # clean
        {"completion": "2 + 3 = 6\n6 - 1 = 5\nThe answer is 5", "answer": "5"},              # lucky: false step
        {"completion": "ignored", "steps": ["4 * 2 = 8\n", "The answer is 9"], "answer": "8"},  # steps used
    ])
    report = tmp_path / "r.json"
    result, scored = run_cli(src, "--steps", "--report", report)
    assert result.exit_code == 0, result.output
    checks = [r["step_checks"] for r in scored]
    assert [len(c) for c in checks] == [2, 3, 2]  # completion split into lines when there are no steps
    assert checks[0][0] == "ok" and checks[1][:2] == ["bad", "ok"] and checks[2][0] == "ok"
    assert "bad" not in checks[0] + checks[2]
    summary = json.loads(report.read_text())
    assert summary["n_step_checked"] == 3
    assert summary["false_step"] == pytest.approx(1 / 3)
    assert summary["process_accuracy"] == pytest.approx(1 / 3)  # the first; the second is right by luck
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert "false step" in result.stderr and "process acc" in result.stderr


def test_cli_without_steps_has_no_step_columns(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"completion": "2 + 3 = 6\nThe answer is 6", "answer": "5"}])
    result, scored = run_cli(src)
    assert result.exit_code == 0
    assert "step_checks" not in scored[0] and "false step" not in result.stderr


def test_cli_steps_gives_the_checker_the_sample_merged_over_its_problem(tmp_path, monkeypatch):
    seen, real = [], check.check_steps

    def spy(steps, problem):
        seen.append((list(steps), problem))
        return real(steps, problem)

    key = write_jsonl(tmp_path / "problems.jsonl", PROBLEMS)
    src = write_jsonl(tmp_path / "s.jsonl", [{"problem_id": "p1", "completion": "6 * 7 = 42\nThe answer is 42"}])
    monkeypatch.setattr("mcts_pref.scoring.check.check_steps", spy)
    result, scored = run_cli(src, "--answer-key", key, "--steps")
    assert result.exit_code == 0, result.output
    (steps, problem), = seen
    assert steps == ["6 * 7 = 42\n", "The answer is 42"]
    assert (problem["question"], problem["source"], problem["answer"]) == ("What is 6 * 7?", "gsm8k", "42")
    assert problem["completion"] == "6 * 7 = 42\nThe answer is 42"
    assert scored[0]["step_checks"][0] == "ok"


def test_cli_steps_rejects_malformed_steps_with_location(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"completion": "x", "answer": "1"},
                                             {"completion": "x", "answer": "1", "steps": "x"}])
    result, _ = run_cli(src, "--steps")
    assert_one_line_error(result, f"{src}:2: 'steps' must be a list of strings")
    result, _ = run_cli(src)  # steps are not needed without --steps
    assert result.exit_code == 0
