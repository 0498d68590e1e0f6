"""curriculum: pass-rate band selection on hand-made scored files, through the real CLI."""

import json
from fractions import Fraction

import pytest
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.curriculum import Config, histogram, parse_band
from mcts_pref.records import MctsPrefError
from tests.conftest import read_jsonl, write_jsonl

runner = CliRunner()


def problems_file(tmp_path, ids):
    return write_jsonl(tmp_path / "problems.jsonl", [
        {"v": 1, "id": i, "question": f"q {i}", "answer": "1", "rationale": "r", "source": "hand"} for i in ids])


def scored_file(tmp_path, rights: dict[str, list[bool]], name="scored.jsonl"):
    """Scored samples: ``rights[pid]`` is the correctness of each of its samples, interleaved across problems."""
    recs, k = [], max(len(v) for v in rights.values())
    for j in range(k):
        for pid, cs in rights.items():
            if j < len(cs):
                recs.append({"problem_id": pid, "sample_index": j, "prompt": "p", "completion": "c", "steps": ["c"],
                             "policy": "m", "answer": "1", "correct": cs[j]})
    return write_jsonl(tmp_path / name, recs)


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_band_edges_are_inclusive_and_order_follows_the_problems_file(tmp_path):
    # k = 10: pass rates 0, 1/10, 5/10, 9/10, 1. The default band [0.1, 0.9] keeps both edges exactly.
    rates = {"e": 9, "a": 0, "b": 1, "c": 5, "d": 10}
    scored = scored_file(tmp_path, {pid: [j < n for j in range(10)] for pid, n in rates.items()})
    probs = problems_file(tmp_path, ["a", "b", "c", "d", "e"])
    r = runner.invoke(app, ["curriculum", str(scored), "--problems", str(probs)])
    assert r.exit_code == 0, r.output
    kept = records(r.stdout)
    assert [p["id"] for p in kept] == ["b", "c", "e"]  # problems-file order, not scored order
    assert [(p["pass_rate"], p["pass_samples"]) for p in kept] == [(0.1, 10), (0.5, 10), (0.9, 10)]
    assert kept[0]["rationale"] == "r" and kept[0]["source"] == "hand" and kept[0]["question"] == "q b"
    assert "kept 3 of 5 sampled problems with pass rate in [0.1, 0.9]" in r.stderr
    assert "pass rate per problem" in r.stderr and "10/10" in r.stderr
    # Just inside / outside an edge: [0.2, 0.5] keeps 1/2 but not 1/10; [0, 0] keeps only the never-solved.
    r = runner.invoke(app, ["curriculum", str(scored), "-p", str(probs), "--band", "0.2,0.5"])
    assert [p["id"] for p in records(r.stdout)] == ["c"]
    r = runner.invoke(app, ["curriculum", str(scored), "-p", str(probs), "--band", "0,0"])
    assert [p["id"] for p in records(r.stdout)] == ["a"]
    r = runner.invoke(app, ["curriculum", str(scored), "-p", str(probs), "--band", "0,1", "--limit", "2"])
    assert [p["id"] for p in records(r.stdout)] == ["a", "b"] and "--limit 2 of 5 in band" in r.stderr


def test_k_equals_one(tmp_path):
    scored = scored_file(tmp_path, {"a": [True], "b": [False], "c": [True]})
    probs = problems_file(tmp_path, ["a", "b", "c"])
    r = runner.invoke(app, ["curriculum", str(scored), "-p", str(probs)])
    assert r.exit_code == 0, r.output
    assert records(r.stdout) == [] and "kept 0 of 3" in r.stderr  # 0 and 1 lie outside [0.1, 0.9]
    out = tmp_path / "kept.jsonl"
    r = runner.invoke(app, ["curriculum", str(scored), "-p", str(probs), "--band", "1,1", "--out", str(out)])
    assert r.exit_code == 0 and r.stdout == ""
    assert [(p["id"], p["pass_rate"]) for p in read_jsonl(out)] == [("a", 1.0), ("c", 1.0)]
    assert "0/1" in r.stderr and "1/1" in r.stderr  # histogram rows, one per possible rate


def test_several_scored_files_and_stdin_add_up(tmp_path):
    probs = problems_file(tmp_path, ["a", "b"])
    first = scored_file(tmp_path, {"a": [True, False], "b": [False, False]}, "s1.jsonl")
    second = scored_file(tmp_path, {"a": [False, False], "b": [True, True]}, "s2.jsonl")
    # a: 1 of 4 = 0.25, b: 2 of 4 = 0.5
    r = runner.invoke(app, ["curriculum", str(first), "-", "-p", str(probs), "--band", "0.3,1"],
                      input=second.read_text())
    assert r.exit_code == 0, r.output
    assert [(p["id"], p["pass_rate"], p["pass_samples"]) for p in records(r.stdout)] == [("b", 0.5, 4)]


def test_unsampled_problems_are_skipped_and_counted(tmp_path):
    scored = scored_file(tmp_path, {"b": [True, False]})
    probs = problems_file(tmp_path, ["a", "b", "c"])
    r = runner.invoke(app, ["curriculum", str(scored), "-p", str(probs)])
    assert r.exit_code == 0, r.output
    assert [p["id"] for p in records(r.stdout)] == ["b"]
    assert "kept 1 of 1 sampled problems" in r.stderr and f"2 problems of {probs} had no samples" in r.stderr


def test_errors_name_file_and_line(tmp_path):
    probs = problems_file(tmp_path, ["a", "b"])
    scored = scored_file(tmp_path, {"a": [True, False], "zz": [True]})
    r = runner.invoke(app, ["curriculum", str(scored), "-p", str(probs)])
    # Line order: a#0, zz#0, a#1, so the unknown problem is on line 2.
    assert r.exit_code == 2 and f"{scored}:2: problem 'zz' is not in {probs}" in r.output
    unscored = write_jsonl(tmp_path / "raw.jsonl", [{"problem_id": "a", "correct": True}, {"problem_id": "a"}])
    r = runner.invoke(app, ["curriculum", str(unscored), "-p", str(probs)])
    assert r.exit_code == 2 and f"{unscored}:2: scored record is missing required key 'correct'" in r.output
    assert "mcts-pref evaluate" in r.output
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"problem_id": "a", "correct": 1}])
    r = runner.invoke(app, ["curriculum", str(odd), "-p", str(probs)])
    assert r.exit_code == 2 and f"{odd}:1: 'correct' must be true or false, got 1" in r.output
    strings = write_jsonl(tmp_path / "str.jsonl", [{"problem_id": "a", "correct": "true"}])
    r = runner.invoke(app, ["curriculum", str(strings), "-p", str(probs)])
    assert r.exit_code == 2 and f"{strings}:1:" in r.output
    no_id = write_jsonl(tmp_path / "noid.jsonl", [{"correct": True}])
    r = runner.invoke(app, ["curriculum", str(no_id), "-p", str(probs)])
    assert r.exit_code == 2 and f"{no_id}:1: scored record is missing required key 'problem_id'" in r.output
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    r = runner.invoke(app, ["curriculum", str(empty), "-p", str(probs)])
    assert r.exit_code == 2 and "no scored samples" in r.output
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "question": "q", "answer": "1"}] * 2)
    r = runner.invoke(app, ["curriculum", str(scored), "-p", str(dup)])
    assert r.exit_code == 2 and f"{dup}:2: duplicate id 'a' (first on line 1)" in r.output
    r = runner.invoke(app, ["curriculum", str(scored)])
    assert r.exit_code == 2 and "--problems" in r.output


@pytest.mark.parametrize("band", ["0.9,0.1", "-0.1,0.5", "0.1,1.5", "x,0.5", "0.1", "0.1,0.5,0.9", "nan,1"])
def test_bad_band_fails_before_reading_anything(tmp_path, band):
    r = runner.invoke(app, ["curriculum", str(tmp_path / "missing.jsonl"), "-p", str(tmp_path / "none.jsonl"),
                            "--band", band])
    assert r.exit_code == 2 and "--band" in r.output and "missing.jsonl" not in r.output, r.output


def test_config_and_histogram_pure():
    assert parse_band(" 0.1 , 0.9 ") == (Fraction(1, 10), Fraction(9, 10))
    assert parse_band("1/3,2/3") == (Fraction(1, 3), Fraction(2, 3))
    with pytest.raises(MctsPrefError):
        Config(Fraction(1, 2), Fraction(1, 4))
    cfg = Config()
    assert cfg.contains(Fraction(1, 10)) and cfg.contains(Fraction(9, 10)) and not cfg.contains(Fraction(1, 11))
    # Same k everywhere: one row per rate j/k. a 0/2, b 1/2, c 1/2, d 2/2.
    rows = histogram({"a": [0, 2], "b": [1, 2], "c": [1, 2], "d": [2, 2]}, cfg)
    assert rows == [("0/2", 1, 0), ("1/2", 2, 2), ("2/2", 1, 0)]
    # Uneven k: ten bins of width 0.1, the last closed. 1/3 -> 0.3-0.4, 1/4 -> 0.2-0.3, 1/1 -> 0.9-1.0, 0/4 -> 0.0-0.1.
    rows = histogram({"a": [1, 3], "b": [1, 4], "c": [1, 1], "d": [0, 4]}, cfg)
    assert len(rows) == 10 and sum(n for _, n, _ in rows) == 4
    assert rows[0] == ("0.0-0.1", 1, 0) and rows[2] == ("0.2-0.3", 1, 1) and rows[3] == ("0.3-0.4", 1, 1)
    assert rows[9] == ("0.9-1.0", 1, 0)
