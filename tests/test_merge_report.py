"""merge (shards round trip, conflicts), instance-pairs and report, through the CLI."""

import json

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


def test_report_table_json_and_plot(tmp_path):
    run = tmp_path / "run"
    for k, acc in ((0, 0.25), (1, 0.5)):
        d = run / f"round-{k}"
        d.mkdir(parents=True)
        (d / "report.json").write_text(json.dumps({"accuracy": acc, "ci95": [acc - 0.1, acc + 0.1], "n_samples": 40}))
        write_jsonl(d / "samples.jsonl", [{"n_tokens": 10}, {"n_tokens": 5}])
    write_jsonl(run / "round-1" / "trees.jsonl", [{"correct": True, "stats": {"tokens": 100, "wall_s": 2.0}}])
    write_jsonl(run / "round-1" / "pairs.jsonl", [{"prompt": "a"}] * 3)
    (run / "round-1" / "adapter").mkdir()
    write_jsonl(run / "round-1" / "adapter" / "metrics.jsonl", [{"step": 1, "seconds": 2.0}, {"step": 2, "seconds": 3.5}])
    r = runner.invoke(app, ["report", str(run), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == ["round-0", "round-1"]
    assert rows[1]["pairs"] == 3 and rows[1]["search_tokens"] == 100 and rows[0]["sample_tokens"] == 15
    assert rows[1]["train_s"] == 5.5 and rows[1]["train_steps"] == 2
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0 and "50.0%" in r.stdout
    r = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert r.exit_code == 2


def test_report_plot(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    d = tmp_path / "run" / "round-0"
    d.mkdir(parents=True)
    (d / "report.json").write_text(json.dumps({"accuracy": 0.3, "ci95": [0.2, 0.4], "n_samples": 10}))
    png = tmp_path / "p.png"
    r = runner.invoke(app, ["report", str(tmp_path / "run"), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
