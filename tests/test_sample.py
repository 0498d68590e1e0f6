import pytest
from typer.testing import CliRunner

from mcts_pref.policy_spec import PolicySpec
from mcts_pref.cli import app
from mcts_pref.records import read_records, validate
from tests.conftest import read_jsonl, write_jsonl

runner = CliRunner()


def test_sample_cli_writes_valid_records_and_resumes(tiny_model_dir, easy_problems, tmp_path):
    out = tmp_path / "samples.jsonl"
    args = ["sample", str(easy_problems), "--model", str(tiny_model_dir), "-k", "2", "--temperature", "1.0",
            "--max-tokens", "8", "--out", str(out), "--shots", "0", "--seed", "5"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    recs = read_records(out, "sample")
    assert [x["problem_id"] for x in recs] == ["p1", "p1", "p2", "p2"]
    for x in recs:
        validate(x, "sample")
        assert x["answer"] in {"9", "8"} and x["policy"] == str(tiny_model_dir)
        assert "".join(x["steps"]) == x["completion"]
    # Remove p2 (as if killed after p1): the rerun samples only p2, with the same seed.
    keep = [x for x in read_jsonl(out) if x["problem_id"] == "p1"]
    write_jsonl(out, keep)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    again = read_records(out, "sample")
    assert [x["problem_id"] for x in again] == ["p1", "p1", "p2", "p2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "nothing to do" in r.output


def test_sample_rejects_bad_input_before_loading(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q", "answer": "1"}\n{"id": "b"}\n')
    r = runner.invoke(app, ["sample", str(bad), "--model", "/nonexistent"])
    assert r.exit_code == 2
    assert f"{bad}:2: problem record is missing required key 'question'" in r.output
    r = runner.invoke(app, ["sample", str(bad), "-k", "3"])
    assert r.exit_code == 2 and "--temperature" in r.output


def test_sample_empty_input(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = runner.invoke(app, ["sample", str(empty), "--model", "/nonexistent"])
    assert r.exit_code == 0


@pytest.mark.slow
def test_sample_then_evaluate_real_smollm2(easy_problems, tmp_path, default_model_dir):
    out = tmp_path / "samples.jsonl"
    r = runner.invoke(app, ["sample", str(easy_problems), "--max-tokens", "48", "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = read_records(out, "sample")
    assert len(recs) == 2 and all(x["policy"] == "default" and x["completion"] for x in recs)
    scored = tmp_path / "scored.jsonl"
    r = runner.invoke(app, ["evaluate", str(out), "--out", str(scored)])
    assert r.exit_code == 0, r.output
    assert all("correct" in x for x in read_records(scored, "sample"))


@pytest.mark.slow
def test_sample_with_4bit_weights_on_cpu(tiny_model_dir, easy_problems, tmp_path):
    """--load-in-4bit (bitsandbytes nf4) loads and samples on CPU too, just slower."""
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "samples.jsonl"
    r = runner.invoke(app, ["sample", str(easy_problems), "--model", str(tiny_model_dir), "--load-in-4bit",
                            "--max-tokens", "6", "--shots", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert len(read_records(out, "sample")) == 2
    from mcts_pref.policy import load_model

    model, _ = load_model(PolicySpec(model=str(tiny_model_dir), load_in_4bit=True))
    assert any("4bit" in type(m).__name__ for m in model.modules())
