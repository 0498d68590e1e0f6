import json

import pytest

from mcts_pref.records import RecordError, RecordWriter, read_records, shard, validate


def test_read_validates_and_names_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "a", "question": "q", "answer": "1"}\n\n{"id": "b", "question": "q"}\n')
    with pytest.raises(RecordError) as e:
        read_records(p, "problem")
    assert str(e.value) == f"{p}:3: problem record is missing required key 'answer'"


@pytest.mark.parametrize("raw, msg", [
    (b'{"id": 1,\n', "malformed JSON"),
    (b'[1, 2]\n', "expected a JSON object, got list"),
    (b'{"id": "\xff"}\n', "not valid UTF-8"),
])
def test_bad_lines(tmp_path, raw, msg):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(raw)
    with pytest.raises(RecordError, match=msg):
        read_records(p)


def test_missing_file_and_wrong_version(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    p = tmp_path / "v2.jsonl"
    p.write_text('{"v": 2, "id": "a", "question": "q", "answer": "1"}\n')
    with pytest.raises(RecordError, match="schema version"):
        read_records(p, "problem")


def test_unknown_keys_pass_through(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "a", "question": "q", "answer": "1", "extra": [1]}\n')
    assert read_records(p, "problem")[0]["extra"] == [1]


def test_writer_resume_repairs_torn_tail(tmp_path):
    out = tmp_path / "out.jsonl"
    with RecordWriter(out, resume_key="problem_id") as w:
        w.write_many([{"problem_id": "a", "x": 1}, {"problem_id": "a", "x": 2}])
        w.write({"problem_id": "b"})
    with open(out, "ab") as f:
        f.write(b'{"problem_id": "c", "x"')  # a run killed mid-write
    warnings = []
    with RecordWriter(out, resume_key="problem_id", warn=warnings.append) as w:
        assert w.done == {"a", "b"}
        w.write({"problem_id": "c"})
    assert len(warnings) == 1 and "torn" in warnings[0]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["problem_id"] for r in recs] == ["a", "a", "b", "c"]
    assert all(r["v"] == 1 for r in recs)


def test_writer_without_resume_overwrites(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"a": 1}\n')
    with RecordWriter(out) as w:
        w.write({"b": 2})
    assert out.read_text() == '{"v":1,"b":2}\n'


def test_shard_partitions():
    items = list(range(10))
    parts = [shard(items, f"{i}/3") for i in range(3)]
    assert sorted(sum(parts, [])) == items
    assert parts[1] == [1, 4, 7]


def test_validate_ok():
    validate({"problem_id": "p", "prompt": "", "completion": "", "steps": [], "policy": "m"}, "sample")
