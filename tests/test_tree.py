"""Hand-checked MCTS math (mcts_pref.tree): every expected number is worked out in a comment."""

import math

import pytest

from mcts_pref.tree import (
    Node, add_child, backup, checker_terms, commit_child, expandable, node_value, parse_value_spec, path_to, prior,
    puct, rollout_value, score_node, select_child, select_path, solution_text, step_reward,
)

PAPER = {"self_eval": 1.0, "outcome": 1.0}


def test_prior_length_penalty():
    # 4 tokens, sum log pi = -2: 4**1.25 = 4 * 2**0.5 = 5.656854; -2 / 5.656854 = -0.353553; exp = 0.702189
    assert prior(-2.0, 4) == pytest.approx(0.702189, abs=1e-6)
    # lam = 1 is the plain per-token mean: exp(-2 / 4) = exp(-0.5) = 0.606531
    assert prior(-2.0, 4, lam=1.0) == pytest.approx(0.606531, abs=1e-6)
    # one token: the penalty does nothing, p = exp(-0.5); an empty step counts as one token
    assert prior(-0.5, 1) == pytest.approx(math.exp(-0.5))
    assert prior(-0.5, 0) == pytest.approx(math.exp(-0.5))
    # the length penalty favours the longer of two steps with the same per-token log-prob
    assert prior(-0.5 * 8, 8) > prior(-0.5 * 2, 2)


def test_value_and_reward():
    assert node_value({"self_eval": 0.8, "outcome": None}, PAPER) == pytest.approx(0.8)  # non-terminal: v = C
    assert node_value({"self_eval": 0.8, "outcome": 1}, PAPER) == pytest.approx(1.8)  # terminal, right: 0.8 + 1
    # 0.5 * 0.8 + 2 * (-1) = 0.4 - 2
    assert node_value({"self_eval": 0.8, "outcome": -1}, {"self_eval": 0.5, "outcome": 2.0}) == pytest.approx(-1.6)
    assert node_value({"self_eval": 0.8, "outcome": -1}, {"outcome": 1.0}) == pytest.approx(-1.0)  # outcome only
    # outcome + checker + rollout: -1 + 0.5 * (1 + 1 - 1) + 2 * 0.25 = -1 + 0.5 + 0.5 = 0
    weights = {"outcome": 1.0, "checker": 0.5, "rollout": 2.0}
    assert node_value({"outcome": -1, "checker": 1.0, "rollout": 0.25, "self_eval": 0.9}, weights) == pytest.approx(0.0)
    assert step_reward(1.8, 0.6) == pytest.approx(1.2)  # r = v(child) - v(parent)


def test_value_spec():
    assert parse_value_spec("self-eval=1,outcome=1") == PAPER
    assert parse_value_spec("outcome, checker=0.5,rollout") == {"outcome": 1.0, "checker": 0.5, "rollout": 1.0}
    assert parse_value_spec("checker-gate=2") == {"checker_gate": 2.0}
    for bad, msg in [("", "no value terms"), ("luck=1", "unknown value term 'luck'"), ("outcome=x", "not a number"),
                     ("outcome,outcome=2", "given twice"), ("outcome=inf", "finite")]:
        with pytest.raises(ValueError, match=msg):
            parse_value_spec(bad)


def test_checker_path_terms_and_rollout_value():
    root = {}
    a = checker_terms(root, "ok")  # sum 0 + 1; no false step yet
    assert a == {"checker": 1.0, "checker_gate": 0.0}
    b = checker_terms(a, "bad")  # 1 - 1 = 0; the gate closes
    assert b == {"checker": 0.0, "checker_gate": -1.0}
    c = checker_terms(b, "ok")  # 0 + 1 = 1; once closed the gate stays closed
    assert c == {"checker": 1.0, "checker_gate": -1.0}
    assert checker_terms(a, "unknown") == {"checker": 1.0, "checker_gate": 0.0}
    assert checker_terms(a, None) == {"checker": 1.0, "checker_gate": 0.0}
    assert rollout_value([1, -1, -1, -1]) == pytest.approx(-0.5)  # (1 - 3) / 4
    assert rollout_value([1, 1]) == 1.0 and rollout_value([]) is None


def test_a_per_step_term_cancels_but_a_path_term_does_not():
    """Why checker is a path term: Q(node) = mean frontier value - v(parent)."""
    def tree(step_terms: bool) -> list[Node]:
        # root -> a (false step), b (true step); each has one child, both of which score the same
        nodes = [Node(id=0, parent=None, depth=0)]
        for parent, text in ((0, "a\n"), (0, "b\n"), (1, "c\n"), (2, "d\n")):
            add_child(nodes, parent, text, [1], -1.0, "step", False)
        w = {"checker": 1.0}
        verdict = {1: "bad", 2: "ok", 3: "unknown", 4: "unknown"}
        for i in (1, 2, 3, 4):
            nodes[i].terms = ({"checker": float({"ok": 1, "bad": -1}.get(verdict[i], 0))} if step_terms
                              else checker_terms(nodes[nodes[i].parent].terms, verdict[i]))
            score_node(nodes, i, nodes[i].terms, w)
        backup(nodes, [0, 1, 3])
        backup(nodes, [0, 2, 4])
        return nodes

    per_step, path = tree(True), tree(False)
    # per-step: Q(a) = r(a) + Q(c) = (-1 - 0) + (0 - (-1)) = 0, Q(b) = (1 - 0) + (0 - 1) = 0: the verdicts cancel
    assert per_step[1].Q == pytest.approx(0.0) and per_step[2].Q == pytest.approx(0.0)
    # path sum: v(c) = -1 + 0 = -1, v(d) = 1 + 0 = 1, so Q(a) = -1 and Q(b) = +1
    assert path[1].Q == pytest.approx(-1.0) and path[2].Q == pytest.approx(1.0)


def _star(children: list[tuple[float, float, int]], n_parent: int) -> list[Node]:
    """A root with children given as (Q, prior, N)."""
    nodes = [Node(id=0, parent=None, depth=0, N=n_parent)]
    for q, p, n in children:
        nodes.append(Node(id=len(nodes), parent=0, depth=1, Q=q, prior=p, N=n))
        nodes[0].children.append(nodes[-1].id)
    return nodes


def test_puct_score_and_choice():
    # Q + c p sqrt(N_parent) / (1 + N) = 0.2 + 1 * 0.5 * 2 / 2 = 0.7
    assert puct(0.2, 0.5, 4, 1) == pytest.approx(0.7)
    assert puct(0.2, 0.5, 4, 1, c=2.0) == pytest.approx(1.2)  # 0.2 + 2 * 0.5 = 1.2
    # child 1: 0.2 + 0.5*2/2 = 0.7; child 2: 0.5 + 0.4*2/4 = 0.7; child 3 (unvisited): 0 + 0.9*2/1 = 1.8
    assert select_child(_star([(0.2, 0.5, 1), (0.5, 0.4, 3), (0.0, 0.9, 0)], n_parent=4), 0) == 3
    # without the unvisited one (Q = -2: -2 + 1.8 = -0.2) children 1 and 2 tie at 0.7: lower id wins
    assert select_child(_star([(0.2, 0.5, 1), (0.5, 0.4, 3), (-2.0, 0.9, 0)], n_parent=4), 0) == 1
    # N_parent = 0 (a node just expanded): no exploration bonus, Q decides
    assert select_child(_star([(0.1, 0.9, 0), (0.3, 0.1, 0)], n_parent=0), 0) == 2


def _three_levels() -> list[Node]:
    """root 0 (v 0) -> 1 (C 0.5), 2 (C 0.3); 1 -> 3 (C 0.9, terminal, right), 4 (C 0.1)."""
    nodes = [Node(id=0, parent=None, depth=0)]
    for parent, text, terminal in ((0, "a\n", False), (0, "b\n", False), (1, "c\n", True), (1, "d\n", False)):
        add_child(nodes, parent, text, [7, 8], -1.0, "step", terminal)
    for i, c, o in ((1, 0.5, None), (2, 0.3, None), (3, 0.9, 1), (4, 0.1, None)):
        nodes[i].self_eval, nodes[i].outcome = c, o
        score_node(nodes, i, {"self_eval": c, "outcome": o}, PAPER)
    return nodes


def test_fresh_node_scores():
    nodes = _three_levels()
    # v: 1 -> 0.5, 2 -> 0.3, 3 -> 0.9 + 1 = 1.9, 4 -> 0.1; r = v - v(parent); fresh Q = r (V = 0)
    assert [n.value for n in nodes] == pytest.approx([0.0, 0.5, 0.3, 1.9, 0.1])
    assert [n.reward for n in nodes] == pytest.approx([0.0, 0.5, 0.3, 1.4, -0.4])
    assert [n.Q for n in nodes] == pytest.approx([0.0, 0.5, 0.3, 1.4, -0.4])
    assert nodes[3].correct is True and nodes[3].outcome == 1 and nodes[4].correct is None
    assert nodes[2].prior == pytest.approx(prior(-1.0, 2))
    assert nodes[0].children == [1, 2] and nodes[1].children == [3, 4]


def test_backup_three_levels():
    nodes = _three_levels()
    backup(nodes, [0, 1, 3])
    # 3: N 1, leaf keeps V 0, Q = 1.4
    # 1: N 1, V = (1 * 1.4 + 1 * -0.4) / 2 = 0.5 (unvisited 4 counts once), Q = 0.5 + 0.5 = 1.0
    # 0: N 1, V = (1 * 1.0 + 1 * 0.3) / 2 = 0.65, Q = 0 + 0.65
    assert [n.N for n in nodes] == [1, 1, 0, 1, 0]
    assert nodes[3].Q == pytest.approx(1.4) and nodes[3].V == 0.0
    assert (nodes[1].V, nodes[1].Q) == pytest.approx((0.5, 1.0))
    assert (nodes[0].V, nodes[0].Q) == pytest.approx((0.65, 0.65))

    backup(nodes, [0, 2])
    # 2: N 1, Q = 0.3 + 0; 0: N 2, V = (1 * 1.0 + 1 * 0.3) / 2 = 0.65
    assert nodes[2].N == 1 and nodes[2].Q == pytest.approx(0.3)
    assert nodes[0].N == 2 and nodes[0].V == pytest.approx(0.65)

    backup(nodes, [0, 1, 3])
    # 3: N 2, Q 1.4; 1: N 2, V = (2 * 1.4 + 1 * -0.4) / 3 = 0.8, Q = 0.5 + 0.8 = 1.3
    # 0: N 3, V = (2 * 1.3 + 1 * 0.3) / 3 = 2.9 / 3 = 0.966667
    assert nodes[1].N == 2 and nodes[1].Q == pytest.approx(1.3)
    assert nodes[0].N == 3 and nodes[0].V == pytest.approx(2.9 / 3)
    # rewards telescope: Q(1) = visit-weighted frontier value (2 * 1.9 + 1 * 0.1) / 3 - v(root) = 1.3
    assert nodes[1].Q == pytest.approx((2 * 1.9 + 0.1) / 3 - 0.0)


def test_select_path_and_expandable():
    nodes = _three_levels()
    backup(nodes, [0, 1, 3])
    # root N 1: child 1 scores 1.0 + p/2, child 2 scores 0.3 + p/1 with p = prior(-1, 2) = 0.657 -> 1
    # node 1 N 1: child 3 scores 1.4 + p/2, child 4 -0.4 + p -> 3, which is terminal: stop
    assert select_path(nodes, 0) == [0, 1, 3]
    assert not expandable(nodes, 3, 0, depth_limit=4)  # terminal
    assert not expandable(nodes, 1, 0, depth_limit=4)  # already has children
    assert expandable(nodes, 4, 0, depth_limit=4)
    # node 4 is 2 steps below the root: its children would be 3 below, past a limit of 2
    assert not expandable(nodes, 4, 0, depth_limit=2)
    assert expandable(nodes, 4, 1, depth_limit=2)  # limits count from the current search root
    assert not expandable(nodes, 4, 1, depth_limit=1)
    assert path_to(nodes, 4) == [0, 1, 4]
    assert solution_text(nodes, 4) == "a\nd\n"


def test_commit_rule_ties():
    # most visits wins even against a higher Q
    assert commit_child(_star([(0.9, 0.5, 2), (0.1, 0.5, 3)], 5), 0) == 2
    # equal visits: higher Q
    assert commit_child(_star([(0.1, 0.5, 3), (0.4, 0.5, 3)], 6), 0) == 2
    # equal visits and Q: lower id
    assert commit_child(_star([(0.4, 0.5, 3), (0.4, 0.9, 3)], 6), 0) == 1
    # the commit records every sibling's Q and N as they were then (what pairs compare)
    nodes = _star([(0.9, 0.5, 2), (0.1, 0.5, 3)], 5)
    assert commit_child(nodes, 0) == 2
    nodes[2].N, nodes[2].Q = 9, 0.7  # the committed child goes on collecting visits
    assert [(n.commit_Q, n.commit_N) for n in nodes[1:]] == [(0.9, 2), (0.1, 3)]


def test_node_record_drops_token_ids():
    rec = _three_levels()[3].to_record()
    assert "token_ids" not in rec and "children" not in rec
    assert rec["n_tokens"] == 2 and rec["terminal"] is True and rec["outcome"] == 1
