"""extract-pairs: rules checked against pairs worked out by hand.

tests/fixtures/trees.jsonl holds two trees:

p1 (correct), prompt P1, path 0 -> 1 -> 4 -> 6:

    0 root (N 10)
    |- 1 "2 + 3 = 5\\n"  Q  0.8 N 6   (path)
    |  |- 4 "5 - 1 = 4\\n"  Q 0.9 N 4  (path)
    |  |  `- 6 "The answer is 4.\\n" Q 1.0 N 3 terminal correct (path)
    |  `- 5 "5 - 1 = 3\\n"  Q 0.1 N 1
    |- 2 "2 + 3 = 6\\n"  Q -0.4 N 2
    |  `- 7 "6 - 1 = 5\\n" Q -0.5 N 1
    |     `- 8 "The answer is 5.\\n" Q -1.0 N 1 terminal wrong
    `- 3 "2 + 3 = 4\\n"  Q -0.2 N 2

p2 (wrong), path 0 -> 1: children 1 (Q 0.5 N 3) and 2 (Q 0.25 N 1), both terminal.
"""

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.pairs import label_smoothing, prm_records, step_labels, tree_pairs

FIXTURE = Path(__file__).parent / "fixtures" / "trees.jsonl"
P1_PROMPT = "QUESTION: What is 2 + 3 - 1?\n\nANSWER:\n"

runner = CliRunner()


def load_trees():
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def extract(*args: str):
    result = runner.invoke(app, ["extract-pairs", *args])
    records = [json.loads(line) for line in result.stdout.split("\n") if line.strip()]
    return result, records


# --- pure rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    "n_chosen, n_rejected, eps",
    [(6, 2, 0.25), (4, 1, 0.2), (1, 3, 0.5), (1, 1, 0.5), (5, 0, 0.0), (0, 0, 0.0)],
)
def test_label_smoothing_by_hand(n_chosen, n_rejected, eps):
    assert label_smoothing(n_chosen, n_rejected) == pytest.approx(eps)


def test_p1_pairs_by_hand():
    p1, _ = load_trees()
    pairs = tree_pairs(p1)
    assert len(pairs) == 2
    first, second = pairs
    # Root: chosen node 1 (has 2 children, no merge); rejected node 2 merged with its chain 7 -> 8.
    assert first["prompt"] == P1_PROMPT
    assert first["chosen"] == "2 + 3 = 5\n"
    assert first["rejected"] == "2 + 3 = 6\n6 - 1 = 5\nThe answer is 5.\n"
    assert (first["depth"], first["q_chosen"], first["q_rejected"]) == (1, 0.8, -0.4)
    assert (first["n_chosen"], first["n_rejected"]) == (6, 2)
    assert first["label_smoothing"] == pytest.approx(2 / 8)
    assert (first["chosen_terminal"], first["rejected_terminal"]) == (False, True)
    # Node 1: chosen 4 merged with its only child 6; rejected 5 is a leaf.
    assert second["prompt"] == P1_PROMPT + "2 + 3 = 5\n"
    assert second["chosen"] == "5 - 1 = 4\nThe answer is 4.\n"
    assert second["rejected"] == "5 - 1 = 3\n"
    assert (second["depth"], second["n_chosen"], second["n_rejected"]) == (2, 4, 1)
    assert second["label_smoothing"] == pytest.approx(1 / 5)
    assert (second["chosen_terminal"], second["rejected_terminal"]) == (True, False)
    assert first["problem_id"] == "p1" and first["policy"] == {"model": "tiny", "adapter": None}
    assert first["v"] == 1


def test_min_margin_and_max_pairs():
    p1, _ = load_trees()
    # Margins: depth 1 -> 1.2, depth 2 -> 0.8.
    assert [p["depth"] for p in tree_pairs(p1, min_margin=1.0)] == [1]
    assert tree_pairs(p1, min_margin=1.3) == []
    assert [p["depth"] for p in tree_pairs(p1, max_pairs=1)] == [1]  # largest margin kept


def test_equal_q_never_pairs():
    p1, _ = load_trees()
    for node in p1["nodes"]:
        if node["id"] in (1, 2, 3):
            node["Q"] = 0.3
    assert [p["depth"] for p in tree_pairs(p1, min_margin=-1.0)] == [2]


def test_unscored_children_are_not_candidates():
    p1, _ = load_trees()
    for node in p1["nodes"]:
        if node["id"] in (2, 3):
            node["Q"] = None
    assert [p["depth"] for p in tree_pairs(p1)] == [2]


def test_random_rejected_is_seeded_and_varies():
    p1, _ = load_trees()
    runs = {seed: tree_pairs(p1, rejected="random", seed=seed) for seed in range(20)}
    assert runs[3] == tree_pairs(p1, rejected="random", seed=3)
    root_rejected = {pairs[0]["rejected"].split("\n")[0] for pairs in runs.values()}
    assert root_rejected == {"2 + 3 = 6", "2 + 3 = 4"}  # either other child of the root
    for pairs in runs.values():
        assert all(p["chosen"].startswith(("2 + 3 = 5", "5 - 1 = 4")) for p in pairs)
        assert pairs[-1]["rejected"] == "5 - 1 = 3\n"  # node 1 has only one other child


def test_prm_labels_by_hand():
    p1, _ = load_trees()
    assert step_labels(p1) == {1: True, 2: False, 3: False, 4: True, 5: True, 6: True, 7: False, 8: False}
    records = prm_records(p1)
    got = [(r["completions"], r["labels"]) for r in records]
    assert got == [
        (["2 + 3 = 4"], [False]),
        (["2 + 3 = 5", "5 - 1 = 3"], [True, True]),  # Q 0.1 > 0 although no correct end below
        (["2 + 3 = 5", "5 - 1 = 4", "The answer is 4."], [True, True, True]),
        (["2 + 3 = 6", "6 - 1 = 5", "The answer is 5."], [False, False, False]),
    ]
    assert all(r["prompt"] == P1_PROMPT for r in records)


def test_prm_wrong_terminal_with_positive_q_is_false():
    _, p2 = load_trees()
    assert step_labels(p2) == {1: False, 2: False}


# --- CLI --------------------------------------------------------------------------


def test_cli_default_only_correct_trees(tmp_path):
    out = tmp_path / "pairs.jsonl"
    out.write_text("stale\n")  # replaced, not resumed
    result, _ = extract(str(FIXTURE), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(p["problem_id"], p["depth"]) for p in pairs] == [("p1", 1), ("p1", 2)]
    for label in ("trees read", "trees kept", "pairs per depth", "mean Q margin", "mean label smoothing"):
        assert label in result.stderr
    assert "1: 1, 2: 1" in result.stderr
    assert "1.0000" in result.stderr  # mean margin (1.2 + 0.8) / 2
    assert "0.2250" in result.stderr  # mean eps (0.25 + 0.2) / 2


def test_cli_all_trees_and_stdin():
    result, pairs = extract(str(FIXTURE), "--all-trees")
    assert result.exit_code == 0, result.stderr
    assert [p["problem_id"] for p in pairs] == ["p1", "p1", "p2"]
    p2 = pairs[-1]
    assert p2["chosen"] == "The answer is 3.\n" and p2["rejected"] == "The answer is 11.\n"
    assert p2["label_smoothing"] == pytest.approx(0.25)
    stdin = runner.invoke(app, ["extract-pairs", "-", "--all-trees"], input=FIXTURE.read_text())
    assert stdin.exit_code == 0 and stdin.stdout == result.stdout


def test_cli_several_files_and_filters(tmp_path):
    result, pairs = extract(str(FIXTURE), str(FIXTURE), "--max-pairs-per-tree", "1", "--min-margin", "0.5")
    assert result.exit_code == 0, result.stderr
    assert [(p["problem_id"], p["depth"]) for p in pairs] == [("p1", 1), ("p1", 1)]


def test_cli_prm(tmp_path):
    result, recs = extract(str(FIXTURE), "--format", "prm")
    assert result.exit_code == 0, result.stderr
    assert len(recs) == 4 and all(set(r) >= {"prompt", "completions", "labels"} for r in recs)
    prm_out = tmp_path / "prm.jsonl"
    result, pairs = extract(str(FIXTURE), "--all-trees", "--prm-out", str(prm_out))
    assert result.exit_code == 0, result.stderr
    assert len(pairs) == 3
    assert len(prm_out.read_text().splitlines()) == 6  # 4 leaves of p1 + 2 of p2
    assert "PRM records" in result.stderr


def _bad_tree_file(tmp_path, mutate):
    trees = load_trees()
    mutate(trees[1])
    path = tmp_path / "trees.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in trees))
    return str(path)


def _node(tree, node_id):
    return next(n for n in tree["nodes"] if n["id"] == node_id)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: _node(t, 2).update(parent=9), "node 2 has parent 9, which is not a node"),
        (lambda t: t["path"].append(5), "path id 5 is not a node"),
        (lambda t: t.update(path=[0, 2]) or _node(t, 2).update(parent=1, depth=2), "path goes 0 -> 2"),
        (lambda t: t.update(path=[1]), "path starts at 1"),
        (lambda t: t.pop("prompt"), "'prompt'"),
        (lambda t: t.pop("policy"), "missing required key 'policy'"),
        (lambda t: _node(t, 1).pop("Q"), "missing key 'Q'"),
        (lambda t: _node(t, 1).update(depth=3), "node 1 has depth 3"),
        (lambda t: _node(t, 0).update(parent=2), "exactly one root"),
        (lambda t: (t.pop("correct"), _node(t, 1).pop("correct")), "no 'correct' flag"),
    ],
)
def test_bad_tree_exit_2_with_file_line(tmp_path, mutate, message):
    path = _bad_tree_file(tmp_path, mutate)
    result, pairs = extract(path)
    assert result.exit_code == 2
    assert f"{path}:2:" in result.stderr and message in result.stderr
    assert pairs == []  # validated before anything is written


def test_cycle_is_reported(tmp_path):
    def cycle(t):
        t["nodes"].append({"id": 3, "parent": 4, "text": "a\n", "Q": 0.1, "N": 1})
        t["nodes"].append({"id": 4, "parent": 3, "text": "b\n", "Q": 0.1, "N": 1})

    result, _ = extract(_bad_tree_file(tmp_path, cycle))
    assert result.exit_code == 2 and "cycle" in result.stderr


def test_usage_errors():
    for args, message in [
        (["--rejected", "worst"], "--rejected"),
        (["--format", "sft"], "--format"),
        (["--max-pairs-per-tree", "0"], "--max-pairs-per-tree"),
        (["--format", "prm", "--prm-out", "x.jsonl"], "--prm-out"),
    ]:
        result, _ = extract(str(FIXTURE), *args)
        assert result.exit_code == 2 and message in result.stderr
    result, _ = extract("/nonexistent/trees.jsonl")
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_pure_extraction_does_not_mutate_input():
    p1, _ = load_trees()
    before = copy.deepcopy(p1)
    tree_pairs(p1, rejected="random")
    prm_records(p1)
    assert p1 == before
