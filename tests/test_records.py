import json
import os

import pytest

from mcts_pref.records import (
    RecordError, RecordWriter, check_version, dumps, iter_records, parse_line, read_records, shard, validate,
)


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


# ---------------------------------------------------------------- reading (through jsonlines)


@pytest.mark.parametrize("raw, msg", [
    (b'{"a": 1}\n\n{"id": 1,\n', "bad.jsonl:3: malformed JSON (Expecting property name enclosed in double quotes, column 10)"),
    (b'{"a": 1} {"b": 2}\n', "bad.jsonl:1: malformed JSON (Extra data, column 10)"),
    (b'\n{"a": 1}\n"text"\n', "bad.jsonl:3: expected a JSON object, got str"),
    (b"null\n", "bad.jsonl:1: expected a JSON object, got NoneType"),
    (b'{"a": 1}\n{"id": "caf\xc3"}\n', "bad.jsonl:2: not valid UTF-8 (invalid continuation byte at byte 11)"),
])
def test_bad_lines_exact_messages(tmp_path, raw, msg):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(raw)
    with pytest.raises(RecordError) as e:
        read_records(p)
    assert str(e.value) == f"{tmp_path}/{msg}"


def test_iter_records_line_numbers_skip_blank_lines_and_accept_a_bom(tmp_path):
    p = tmp_path / "x.jsonl"
    # Windows editors start files with a byte-order mark; CRLF endings and blank lines are fine too.
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n \r\n\t\n{"a": "\xc3\xa9\\u2028"}\n')
    assert list(iter_records(p)) == [(1, {"a": 1}), (4, {"a": "\u00e9\u2028"})]


def test_parse_line():
    assert parse_line(b"  \n", "f", 7, None) is None
    assert parse_line(b'{"id": "a", "question": "q", "answer": "1"}\n', "f", 7, "problem")["id"] == "a"
    with pytest.raises(RecordError, match=r"^f:7: problem record is missing required key 'answer'$"):
        parse_line(b'{"id": "a", "question": "q"}', "f", 7, "problem")
    with pytest.raises(RecordError, match=r"^f:7: malformed JSON"):
        parse_line(b"{", "f", 7, None)


def test_check_version():
    check_version({"a": 1})  # no "v": the current schema
    check_version({"v": 1})
    with pytest.raises(RecordError, match=r"^f:3: unsupported schema version v='1'"):
        check_version({"v": "1"}, "f", 3)


# ---------------------------------------------------------------- writing


def test_writer_line_format(tmp_path):
    out = tmp_path / "out.jsonl"
    with RecordWriter(out) as w:
        w.write({"t": "caf\u00e9 \u2028 \u2029", "n": [1, 2.5], "v": 1})
    # Compact, UTF-8 kept, "v" not duplicated, the two line separators escaped.
    assert out.read_bytes() == '{"t":"caf\u00e9 \\u2028 \\u2029","n":[1,2.5],"v":1}\n'.encode()
    assert dumps({"a": 1}) == '{"v":1,"a":1}'
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1
    assert read_records(out)[0]["t"] == "caf\u00e9 \u2028 \u2029"


def test_write_many_is_one_os_write(tmp_path, monkeypatch):
    # The atomicity claim: a batch reaches the OS in one write() call, so a kill leaves all or none of it.
    calls = []
    real_write = os.write

    def counting_write(fd, data):
        calls.append(bytes(data))
        return real_write(fd, data)

    out = tmp_path / "out.jsonl"
    with RecordWriter(out) as w:
        monkeypatch.setattr(os, "write", counting_write)
        w.write_many([{"i": i} for i in range(3)])
        w.write_many([])
        w.write({"i": 3})
    assert calls == [b'{"v":1,"i":0}\n{"v":1,"i":1}\n{"v":1,"i":2}\n', b'{"v":1,"i":3}\n']
    assert w.count == 4


def test_writer_to_stdout(capsysbinary):
    with RecordWriter(None) as w:
        w.write_many([{"a": 1}, {"b": "\u00e9"}])
    assert capsysbinary.readouterr().out == '{"v":1,"a":1}\n{"v":1,"b":"\u00e9"}\n'.encode()


def test_writer_resume_drops_a_whole_but_corrupt_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"problem_id": "a"}\n{"problem_id": "b", "x": \xff}\n')
    warnings = []
    with RecordWriter(out, resume_key="problem_id", warn=warnings.append) as w:
        assert w.done == {"a"}
        w.write({"problem_id": "b"})
    assert "torn" in warnings[0]
    assert [r["problem_id"] for r in read_records(out)] == ["a", "b"]


def test_writer_resume_reports_a_bad_middle_line_with_its_location(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"problem_id": "a"}\nnot json\n{"problem_id": "b"}\n')
    with pytest.raises(RecordError, match=r"out.jsonl:2: malformed JSON"):
        RecordWriter(out, resume_key="problem_id")


def test_read_problems_refuses_a_repeated_id_naming_both_lines(tmp_path):
    from mcts_pref.records import read_problems

    p = tmp_path / "p.jsonl"
    rows = [{"id": 7, "question": "q", "answer": "1"}, {"id": "8", "question": "q", "answer": "2"},
            {"id": "7", "question": "q2", "answer": "3"}]  # 7 and "7" are one id: ids are compared as text
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(RecordError, match=r"p.jsonl:3: duplicate id '7' \(first on line 1\)"):
        read_problems(p)
    assert [r["id"] for r in read_problems(p, unique=False)] == [7, "8", "7"]


def test_scored_kind_needs_a_boolean_correct():
    validate({"problem_id": "a", "correct": False}, "scored")
    with pytest.raises(RecordError, match="missing required key 'correct'; score the samples with `mcts-pref evaluate`"):
        validate({"problem_id": "a"}, "scored", "s.jsonl", 4)
    with pytest.raises(RecordError, match=r"s.jsonl:2: 'correct' must be true or false, got 'yes'"):
        validate({"problem_id": "a", "correct": "yes"}, "scored", "s.jsonl", 2)


def test_sample_refuses_repeated_problem_ids_before_loading_a_model(tmp_path):
    from typer.testing import CliRunner

    from mcts_pref.cli import app

    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(json.dumps({"id": "x", "question": "1+1?", "answer": "2"}) for _ in range(2)) + "\n")
    out = tmp_path / "s.jsonl"
    r = CliRunner().invoke(app, ["sample", str(p), "--model", str(tmp_path / "no-such-model"), "--out", str(out)])
    assert r.exit_code == 2 and f"{p}:2: duplicate id 'x' (first on line 1)" in r.output
    assert not out.exists()
