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


# --- better evidence (issue 11, item 4) -------------------------------------------

from collections import Counter  # noqa: E402

from mcts_pref.pair_rules import first_error, label_smoothing as eps_of, sibling_stats, step_signal, visits  # noqa: E402
from mcts_pref.pairs import children_of, problem_of  # noqa: E402

PROMPT = "QUESTION: What is 3 + 4 + 5?\n\nANSWER:\n"


def node(id, parent, text, Q, N, **extra):
    return {"id": id, "parent": parent, "text": text, "Q": Q, "N": N, "terminal": False, "finish": "step", **extra}


def tree(nodes, path, correct, **extra):
    return {
        "v": 1, "problem_id": extra.pop("problem_id", "t"), "question": "What is 3 + 4 + 5?", "answer": "12",
        "task": "math", "prompt": PROMPT, "policy": {"model": "tiny", "adapter": None}, "config": {},
        "nodes": nodes, "path": path, "correct": correct, **extra,
    }


def commit_tree():
    """Committed child 1 looked worst when the root committed; it kept collecting visits after.

        0 root
        |- 1 "a"  Q 0.9 N 8 | commit Q -0.5 N 4   (path)
        |  |- 4 "c" terminal  Q 1.0 N 5 | commit Q 0.8 N 2   (path)
        |  `- 5 "d"           Q 0.1 N 1 | commit Q 0.1 N 1
        |- 2 "b"  Q 0.5 N 2 | commit Q 0.5 N 2
        `- 3 "x"  Q -0.3 N 1 | commit Q -0.3 N 1
    """
    return tree(
        [
            node(0, None, "", None, 16),
            node(1, 0, "a\n", 0.9, 8, commit_Q=-0.5, commit_N=4),
            node(2, 0, "b\n", 0.5, 2, commit_Q=0.5, commit_N=2),
            node(3, 0, "x\n", -0.3, 1, commit_Q=-0.3, commit_N=1),
            node(4, 1, "c\n", 1.0, 5, commit_Q=0.8, commit_N=2, terminal=True, finish="answer", correct=True),
            node(5, 1, "d\n", 0.1, 1, commit_Q=0.1, commit_N=1),
        ],
        [0, 1, 4],
        True,
    )


def late_only(t):
    """The same tree as an older search would write it: no commit-time statistics."""
    for n in t["nodes"]:
        n.pop("commit_Q", None), n.pop("commit_N", None)
    return t


def write_trees(tmp_path, trees, name="trees.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(t) + "\n" for t in trees))
    return str(path)


@pytest.mark.parametrize(
    "n_chosen, n_rejected, eps",
    # add-one: (N_rej + 1) / (N_cho + N_rej + 2), capped at 0.5
    [(6, 2, 3 / 10), (4, 1, 2 / 7), (5, 0, 1 / 7), (10, 0, 1 / 12), (3, 2, 3 / 7), (0, 0, 0.5), (1, 3, 0.5), (2, 1, 2 / 5)],
)
def test_add_one_label_smoothing_by_hand(n_chosen, n_rejected, eps):
    assert eps_of(n_chosen, n_rejected, "add-one") == pytest.approx(eps)


def test_label_smoothing_paper_is_default_and_unknown_rule_fails():
    assert eps_of(6, 2) == eps_of(6, 2, "paper") == pytest.approx(0.25)
    with pytest.raises(ValueError, match="add-one"):
        eps_of(1, 1, "laplace")


def test_commit_time_statistics_pick_another_pair_and_eps():
    late = tree_pairs(late_only(commit_tree()))
    assert [(p["chosen"], p["rejected"]) for p in late] == [("a\n", "x\n"), ("c\n", "d\n")]
    assert [p["label_smoothing"] for p in late] == pytest.approx([1 / 9, 1 / 6])

    pairs = tree_pairs(commit_tree())
    # Root: at the commit, b (Q 0.5) was best and a (Q -0.5) worst; the late numbers said a vs x.
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("b\n", "a\n"), ("c\n", "d\n")]
    first, second = pairs
    assert (first["q_chosen"], first["q_rejected"], first["n_chosen"], first["n_rejected"]) == (0.5, -0.5, 2, 4)
    assert first["label_smoothing"] == pytest.approx(0.5)  # 4 / 6, capped
    assert (second["q_chosen"], second["n_chosen"], second["n_rejected"]) == (0.8, 2, 1)
    assert second["label_smoothing"] == pytest.approx(1 / 3)  # not 1 / 6: node 4's later visits do not count
    assert second["prompt"] == PROMPT + "a\n"
    assert tree_pairs(commit_tree(), eps="add-one")[1]["label_smoothing"] == pytest.approx(2 / 5)  # (1+1)/(2+1+2)


def test_sibling_stats_never_mix_commit_and_late_numbers():
    t = commit_tree()
    kids = children_of(t["nodes"])
    assert sibling_stats(kids[0]) == {1: (-0.5, 4), 2: (0.5, 2), 3: (-0.3, 1)}
    # A sibling unscored at the commit (null commit_Q) is no candidate, even if scored later.
    kids[0][2]["commit_Q"] = kids[0][2]["commit_N"] = None
    assert sibling_stats(kids[0]) == {1: (-0.5, 4), 2: (0.5, 2)}
    # A parent never committed (all null): the final Q / N.
    for n in kids[1]:
        n["commit_Q"] = n["commit_N"] = None
    assert sibling_stats(kids[1]) == {4: (1.0, 5), 5: (0.1, 1)}


def test_visits_count_rollouts():
    assert visits({"id": 1}, 3) == 3
    assert visits({"id": 1, "rollouts": 4}, 1) == 5
    assert visits({"id": 1, "rollouts": None}, 2) == 2


def test_min_visits_uses_commit_time_n_plus_rollouts():
    # Pairs: root b (N 2) vs a (N 4); node 1: c (N 2) vs d (N 1).
    assert [p["depth"] for p in tree_pairs(commit_tree(), min_visits=0)] == [1, 2]
    dropped = Counter()
    assert [p["depth"] for p in tree_pairs(commit_tree(), min_visits=2, dropped=dropped)] == [1]
    assert dropped == Counter({"min-visits": 1})
    t = commit_tree()
    t["nodes"][5]["rollouts"] = 3  # d: 1 visit + 3 rollouts
    assert [p["depth"] for p in tree_pairs(t, min_visits=2)] == [1, 2]
    assert tree_pairs(t, min_visits=3) == []  # b has 2 visits; c has 2
    # c has 5 visits late but had 2 at the commit: only the late numbers would keep c vs d at 3.
    late = late_only(t)
    assert [p["depth"] for p in tree_pairs(late, min_visits=3)] == [2]


def test_forced_terminal_step_is_not_terminal_in_a_pair():
    p1, _ = load_trees()
    _node(p1, 6)["finish"] = "max_depth"  # chosen chain of node 1 ends at 6
    _node(p1, 8)["finish"] = "max_depth"  # rejected chain of the root ends at 8
    first, second = tree_pairs(p1)
    assert (first["chosen_terminal"], first["rejected_terminal"]) == (False, False)
    assert (second["chosen_terminal"], second["rejected_terminal"]) == (False, False)
    _node(p1, 8)["finish"] = "answer"
    assert tree_pairs(p1)[0]["rejected_terminal"] is True


# --- first-error pairs -------------------------------------------------------------


def gate_tree():
    """A wrong answer; checker gate + outcome values; self-evaluation says the opposite of the checker.

        0 root                                         (no values)
        |- 1 "3 + 4 = 7"     checker 0                  (path)  signal 0
        |  |- 3 "7 + 5 = 13" checker -1, self_eval 0.9  (path)  signal -1: first error
        |  |  `- 5 "The answer is 13." checker -1, outcome -1, terminal wrong (path)
        |  |- 4 "7 + 5 = 12" checker 0, self_eval 0.1          signal 0: good
        |  `- 6 "7 + 5 = 11" checker -1                        signal -1
        `- 2 "3 + 4 = 8"     checker -1                        (a bad sibling of a good path step)
    """
    return tree(
        [
            node(0, None, "", None, 9),
            node(1, 0, "3 + 4 = 7\n", 0.2, 6, values={"self_eval": 0.5, "checker": 0, "outcome": None}),
            node(2, 0, "3 + 4 = 8\n", -0.4, 2, values={"self_eval": 0.7, "checker": -1, "outcome": None}),
            node(3, 1, "7 + 5 = 13\n", 0.3, 3, values={"self_eval": 0.9, "checker": -1, "outcome": None}),
            node(4, 1, "7 + 5 = 12\n", 0.1, 1, values={"self_eval": 0.1, "checker": 0, "outcome": None}),
            node(5, 3, "The answer is 13.\n", -1.0, 2, terminal=True, finish="answer", correct=False,
                 values={"self_eval": 0.9, "checker": -1, "outcome": -1}),
            node(6, 1, "7 + 5 = 11\n", -0.6, 1, values={"self_eval": 0.2, "checker": -1, "outcome": None}),
        ],
        [0, 1, 3, 5],
        False,
        problem_id="gate",
    )


def test_step_signal_by_hand():
    root = {"id": 0}
    # checker path sum: a false step lowers it by 1, even while the sum stays >= 0.
    assert step_signal({"values": {"checker": 0}}, {"values": {"checker": 1}}, 0.4) == -1
    assert step_signal({"values": {"checker": 2}}, {"values": {"checker": 1}}, -0.4) == 1
    # gate: only the step that trips it drops.
    assert step_signal({"values": {"checker": -1}}, {"values": {"checker": -1}}, 0.0) == 0
    # rollout: mean outcome 0.5 -> -0.5; outcome -1 at a wrong terminal; self_eval never counts.
    assert step_signal({"values": {"rollout": -0.5, "self_eval": 0.9}}, {"values": {"rollout": 0.5}}, 1.0) == -1.0
    assert step_signal({"values": {"outcome": -1, "rollout": None}}, {"values": {"rollout": 0.5}}, 1.0) == -1
    assert step_signal({"values": {"rollout": 0.25}}, root, -3.0) == 0.25  # the root counts 0
    assert step_signal({"values": {"self_eval": 0.2}}, root, -3.0) == 0  # no evidence: not an error
    assert step_signal({"id": 7}, root, -0.25) == -0.25  # no values (older trees): the commit-time Q


def test_first_error_on_a_wrong_tree():
    t = gate_tree()
    nodes = {n["id"]: n for n in t["nodes"]}
    rejected_id, chosen_id, _ = first_error(t["path"], nodes, children_of(t["nodes"]))
    assert (rejected_id, chosen_id) == (3, 4)
    (pair,) = tree_pairs(t, rule="first-error")
    assert pair["prompt"] == PROMPT + "3 + 4 = 7\n"
    assert pair["chosen"] == "7 + 5 = 12\n"
    assert pair["rejected"] == "7 + 5 = 13\nThe answer is 13.\n"  # merged with its only child
    assert (pair["depth"], pair["chosen_terminal"], pair["rejected_terminal"]) == (2, False, True)
    # Q and N as compared (self-eval noise gave the wrong step the higher Q; the pair does not follow it).
    assert (pair["q_chosen"], pair["q_rejected"], pair["n_chosen"], pair["n_rejected"]) == (0.1, 0.3, 1, 3)
    assert pair["label_smoothing"] == pytest.approx(0.5)  # min(3 / 4, 0.5)
    # The paper rule on the same tree pairs by Q instead: 1 vs 2 at the root, 3 vs 6 below.
    assert [(p["chosen"][:10], p["rejected"][:10]) for p in tree_pairs(t)] == [
        ("3 + 4 = 7\n", "3 + 4 = 8\n"), ("7 + 5 = 13", "7 + 5 = 11")]


def test_first_error_best_sibling_and_path_sum():
    t = gate_tree()
    # Path-sum checker: node 1 is ok (+1); node 3 keeps the sum at 0 but lowered it: the error.
    sums = {1: 1, 2: -1, 3: 0, 4: 2, 5: 0, 6: 0}
    for n in t["nodes"][1:]:
        n["values"]["checker"] = sums[n["id"]]
    t["nodes"].append(node(7, 1, "Add 5 next.\n", 0.9, 1, values={"checker": 1}))  # unknown step: signal 0
    # Both 4 (+1) and 7 (0) are judged good; 4 has the higher signal although 7 has the higher Q.
    (pair,) = tree_pairs(t, rule="first-error")
    assert (pair["chosen"], pair["rejected"][:11]) == ("7 + 5 = 12\n", "7 + 5 = 13\n")
    # Equal signals: the higher Q wins.
    t["nodes"][-1]["values"]["checker"] = 2
    assert tree_pairs(t, rule="first-error")[0]["chosen"] == "Add 5 next.\n"


def test_first_error_none_without_a_good_sibling_or_an_error():
    t = gate_tree()
    t["nodes"][4]["values"]["checker"] = -1  # node 4 false too: no good sibling, and no later step is tried
    assert tree_pairs(t, rule="first-error") == []
    p1, _ = load_trees()  # correct tree, every committed Q > 0 (no values: Q decides)
    assert tree_pairs(p1, rule="first-error") == []


def test_first_error_without_values_uses_commit_time_q():
    t = late_only(commit_tree())
    assert tree_pairs(t, rule="first-error") == []  # late Q of the path: 0.9, 1.0
    (pair,) = tree_pairs(commit_tree(), rule="first-error")
    # At the root's commit, node 1 stood at Q -0.5: the first error; best sibling with Q >= 0 is b.
    assert (pair["chosen"], pair["rejected"], pair["depth"]) == ("b\n", "a\n", 1)


def test_first_error_rollout_terms():
    t = tree(
        [
            node(0, None, "", None, 6),
            node(1, 0, "s1\n", 0.5, 4, rollouts=4, values={"rollout": 0.5}),
            node(2, 0, "s2\n", 0.0, 1, rollouts=4, values={"rollout": 0.0}),
            node(3, 1, "s3\n", 0.0, 2, rollouts=4, values={"rollout": 0.0}),  # 0.5 -> 0.0: fewer reach the answer
            node(4, 1, "s4\n", 0.0, 1, rollouts=4, values={"rollout": 0.5}),
            node(5, 3, "The answer is 1.\n", -1.0, 1, terminal=True, finish="answer", correct=False,
                 values={"outcome": -1}),
        ],
        [0, 1, 3, 5],
        False,
    )
    (pair,) = tree_pairs(t, rule="first-error", min_visits=5)  # 1 visit + 4 rollouts on the chosen side
    assert (pair["chosen"], pair["rejected"]) == ("s4\n", "s3\nThe answer is 1.\n")
    assert tree_pairs(t, rule="first-error", min_visits=6) == []


def test_problem_of_passes_source_and_choices():
    t = gate_tree()
    assert problem_of(t) == {"id": "gate", "question": "What is 3 + 4 + 5?", "answer": "12", "task": "math"}
    t.update(source="gym:chain_sum", choices=None)
    assert problem_of(t)["source"] == "gym:chain_sum" and "choices" in problem_of(t)


# --- CLI for the new options -----------------------------------------------------------


def test_cli_first_error_uses_every_tree_unless_told(tmp_path):
    right = commit_tree()  # correct tree with a first error at its root commit
    path = write_trees(tmp_path, [gate_tree(), right])
    result, pairs = extract(path, "--pairs", "first-error")
    assert result.exit_code == 0, result.stderr
    assert [(p["problem_id"], p["depth"]) for p in pairs] == [("gate", 2), ("t", 1)]
    result, pairs = extract(path, "--pairs", "first-error", "--only-correct-trees")
    assert result.exit_code == 0 and [p["problem_id"] for p in pairs] == ["t"]
    result, pairs = extract(path)  # paper default still keeps only correct trees
    assert result.exit_code == 0 and {p["problem_id"] for p in pairs} == {"t"}


def test_cli_min_visits_eps_and_summary(tmp_path):
    path = write_trees(tmp_path, [commit_tree()])
    result, pairs = extract(path, "--min-visits", "2", "--eps", "add-one")
    assert result.exit_code == 0, result.stderr
    assert [p["depth"] for p in pairs] == [1]
    assert pairs[0]["label_smoothing"] == pytest.approx(0.5)  # (4+1)/(2+4+2) capped
    assert "dropped by --min-visits" in result.stderr
    result, _ = extract(path)
    assert "dropped by" not in result.stderr


def test_cli_defaults_unchanged_on_old_trees():
    result, pairs = extract(str(FIXTURE), "--all-trees")
    explicit, same = extract(str(FIXTURE), "--all-trees", "--pairs", "paper", "--eps", "paper", "--min-visits", "0")
    assert result.exit_code == explicit.exit_code == 0 and pairs == same and len(pairs) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pairs", "step-dpo"], "--pairs must be one of paper, first-error"),
        (["--eps", "laplace"], "--eps must be one of paper, add-one"),
        (["--min-visits", "-1"], "--min-visits must be >= 0"),
        (["--pairs", "first-error", "--rejected", "random"], "--rejected applies to --pairs paper"),
    ],
)
def test_cli_new_option_errors(args, message):
    result, pairs = extract(str(FIXTURE), *args)
    assert result.exit_code == 2 and message in result.stderr and pairs == []
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: _node(t, 1).update(commit_Q="high", commit_N=1), "node 1: 'commit_Q' must be a number"),
        (lambda t: _node(t, 1).update(commit_Q=0.5), "node 1: 'commit_N' must be an integer >= 0 when 'commit_Q'"),
        (lambda t: _node(t, 1).update(commit_Q=0.5, commit_N=-1), "'commit_N' must be an integer >= 0"),
        (lambda t: _node(t, 2).update(rollouts=1.5), "node 2: 'rollouts' must be an integer"),
        (lambda t: _node(t, 2).update(values=[1]), "node 2: 'values' must be an object"),
        (lambda t: _node(t, 2).update(values={"checker": "bad"}), "values['checker'] must be a number"),
    ],
)
def test_bad_evidence_keys_exit_2(tmp_path, mutate, message):
    path = _bad_tree_file(tmp_path, mutate)
    result, pairs = extract(path, "--all-trees")
    assert result.exit_code == 2 and f"{path}:2:" in result.stderr and message in result.stderr
    assert pairs == []


def test_help_names_every_new_option():
    result = runner.invoke(app, ["extract-pairs", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0
    for text in ("--pairs", "first-error", "--min-visits", "--checked", "--eps", "add-one", "--only-correct-trees"):
        assert text in result.stdout


# --- --checked (the step checker, check.py) ---------------------------------------------


def test_checked_keeps_clean_pairs_whatever_the_rejected_side_holds():
    p1, _ = load_trees()
    # The root pair's rejected side "2 + 3 = 6" is false: that is what a rejected side may be.
    assert tree_pairs(p1, checked=True) == tree_pairs(p1)


def test_checked_reads_every_step_of_a_merged_chosen_side():
    p1, _ = load_trees()
    _node(p1, 6)["text"] = "4 * 2 = 9\n"  # the second step of the chain chosen below node 1
    dropped = Counter()
    assert [p["depth"] for p in tree_pairs(p1, checked=True, dropped=dropped)] == [1]
    assert dropped == Counter({"checked": 1})
    assert [p["depth"] for p in tree_pairs(p1)] == [1, 2]


def test_checked_drops_a_false_shared_prefix():
    p1, _ = load_trees()
    _node(p1, 1)["text"] = "2 + 3 = 7\n"
    # Root pair: the chosen side is false. Node 1's pair: its chosen side "5 - 1 = 4 ..." is true,
    # but the committed step before it is false.
    dropped = Counter()
    assert tree_pairs(p1, checked=True, dropped=dropped) == []
    assert dropped == Counter({"checked": 2})


def test_checked_uses_the_task_check_of_the_trees_source():
    # "7 + 3 = 10" is true arithmetic on the wrong operands of 7 - 4 + 3: only the chain_sum check sees it.
    t = tree(
        [
            node(0, None, "", None, 4),
            node(1, 0, "7 + 3 = 10\n", 0.5, 3),
            node(2, 0, "7 - 4 = 2\n", -0.5, 1),
        ],
        [0, 1],
        True,
        question="State the final answer to the following arithmetic problem: 7 - 4 + 3 =",
    )
    assert len(tree_pairs(t, checked=True)) == 1  # no source: general arithmetic only
    t["source"] = "gym:chain_sum"
    assert tree_pairs(t, checked=True) == []


def test_cli_checked(tmp_path):
    p1, p2 = load_trees()
    _node(p1, 6)["text"] = "4 * 2 = 9\n"
    result, pairs = extract(write_trees(tmp_path, [p1, p2]), "--checked")
    assert result.exit_code == 0, result.stderr
    assert [p["depth"] for p in pairs] == [1]
    assert "dropped by --checked" in result.stderr
