"""The evaluate stage: scoring, summary statistics, and the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.evaluate import majority_correct, score_samples, summarize, wilson_interval
from mcts_pref.records import RecordError

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
        (b'{"prompt": "q"}\n', "bad.jsonl:1: sample record is missing required key 'problem_id'"),
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
