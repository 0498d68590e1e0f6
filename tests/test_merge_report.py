"""merge (shards round trip, conflicts) and instance-pairs, through the CLI (report: tests/test_report.py)."""

from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.records import read_records, shard
from tests.conftest import write_jsonl

runner = CliRunner()


def _samples(ids, correct=True, text="x"):
    return [{"problem_id": i, "sample_index": 0, "prompt": "p", "completion": text, "steps": [text],
             "policy": "m", "answer": "1", "correct": correct} for i in ids]


def test_shards_merge_back_to_the_whole(tmp_path):
    ids = [f"p-{i}" for i in range(11)]
    recs = _samples(ids)
    files = []
    for k in range(3):
        files.append(str(write_jsonl(tmp_path / f"s{k}.jsonl", shard(recs, f"{k}/3"))))
    files.append(files[0])  # an identical duplicate is kept once
    problems = write_jsonl(tmp_path / "problems.jsonl",
                           [{"id": i, "question": "q", "answer": "1"} for i in ids + ["p-99"]])
    out = tmp_path / "merged.jsonl"
    r = runner.invoke(app, ["merge", *files, "--expect", str(problems), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert [x["problem_id"] for x in read_records(out)] == ids  # p-2 before p-10
    assert "missing 1 problem ids" in r.output and "p-99" in r.output


def test_merge_conflict_names_the_id(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", _samples(["p1", "p2"]))
    b = write_jsonl(tmp_path / "b.jsonl", _samples(["p2"], text="different"))
    r = runner.invoke(app, ["merge", str(a), str(b)])
    assert r.exit_code == 2
    assert "conflicting records" in r.output and "p2" in r.output and f"{b}:1" in r.output


def test_instance_pairs(tmp_path):
    recs = _samples(["p1", "p2"], True, "right") + _samples(["p1"], False, "wrong") + _samples(["p3"], False, "w")
    f = write_jsonl(tmp_path / "scored.jsonl", recs)
    out = tmp_path / "pairs.jsonl"
    r = runner.invoke(app, ["instance-pairs", str(f), "--out", str(out)])
    assert r.exit_code == 0, r.output
    pairs = read_records(out, "pair")
    assert len(pairs) == 1
    assert pairs[0]["chosen"] == "right" and pairs[0]["rejected"] == "wrong" and pairs[0]["problem_id"] == "p1"
    unscored = write_jsonl(tmp_path / "raw.jsonl", [{k: v for k, v in x.items() if k != "correct"} for x in recs])
    r = runner.invoke(app, ["instance-pairs", str(unscored)])
    assert r.exit_code == 2 and "evaluate" in r.output



def test_instance_pairs_checked_chooses_only_clean_correct_solutions(tmp_path):
    base = {"v": 1, "problem_id": "p1", "prompt": "Q\n", "policy": "x", "answer": "9", "source": "gym:chain_sum",
            "question": "State the final answer to the following arithmetic problem: 3 + 4 + 2 ="}
    def sample(text: str, correct: bool) -> dict:
        return dict(base, completion=text, steps=text.splitlines(keepends=True), correct=correct)

    lucky = sample("3 + 4 = 8\n8 + 2 = 9\nThe answer is 9.", True)  # right answer through a false step
    clean = sample("3 + 4 = 7\n7 + 2 = 9\nThe answer is 9.", True)
    wrong = sample("3 + 4 = 7\n7 + 2 = 10\nThe answer is 10.", False)
    f = write_jsonl(tmp_path / "scored.jsonl", [lucky, wrong])
    out = tmp_path / "pairs.jsonl"
    assert runner.invoke(app, ["instance-pairs", str(f), "--out", str(out)]).exit_code == 0
    assert len(read_records(out, "pair")) == 1  # unchecked: the lucky solution is chosen
    out2 = tmp_path / "pairs2.jsonl"
    r = runner.invoke(app, ["instance-pairs", str(f), "--checked", "--out", str(out2)])
    assert r.exit_code == 0 and read_records(out2, "pair") == []  # its 3 + 4 = 8 is false: no pair
    f2 = write_jsonl(tmp_path / "scored2.jsonl", [lucky, clean, wrong])
    out3 = tmp_path / "pairs3.jsonl"
    assert runner.invoke(app, ["instance-pairs", str(f2), "--checked", "--out", str(out3)]).exit_code == 0
    assert [p["chosen"] for p in read_records(out3, "pair")] == [clean["completion"]]
