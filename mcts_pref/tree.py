"""Pure MCTS math over reasoning steps: nodes, prior, value, reward, PUCT, backup, commit.

No model and no torch here: every formula is a small function with a
hand-checked test (tests/test_tree.py). ``search.py`` drives these with a
backend. A tree is a plain ``list[Node]`` indexed by node id, root = 0.

Conventions (the paper's released code runs the same way):

- A node's *value* ``v = self_eval_weight * C + outcome_weight * O`` where
  ``C`` is the policy's self-evaluation P("correct") of the partial solution
  (``C = 1`` when self-evaluation is off, as in the paper's ablation) and
  ``O`` = +1 / -1 is the answer checker's verdict, present only at terminal
  nodes.
- The root's value is 0 (it is never self-evaluated). Any root value would
  shift the reward of every first step by the same constant, so it cannot
  change a PUCT choice, the commit, or which sibling a pair prefers; 0 saves
  a forward pass per problem.
- Step reward ``r = v(child) - v(parent)``.
- A fresh node has ``V = 0`` (nothing below it is known yet), so its
  ``Q = r + V = r``. Backup keeps ``Q = r + V`` with ``V`` the visit-weighted
  mean of the children's ``Q``; the rewards telescope, so
  ``Q(node) = E[v(frontier below node)] - v(parent)``: siblings compare by
  the value their subtrees reach, and a terminal outcome is counted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Record keys of a node (DESIGN "tree"), in output order. token_ids stay out: big.
RECORD_KEYS = (
    "id", "parent", "depth", "text", "prior", "logprob", "n_tokens", "self_eval", "outcome",
    "value", "reward", "Q", "V", "N", "terminal", "finish", "correct",
)


@dataclass
class Node:
    """One reasoning step (the root is the empty solution)."""

    id: int
    parent: int | None
    depth: int  # number of steps from the root; root 0
    text: str = ""  # the step, with its trailing newline; root ""
    token_ids: list[int] = field(default_factory=list)
    n_tokens: int = 0
    logprob: float = 0.0  # sum of log pi over the step's tokens, nats
    prior: float = 1.0  # p = exp(logprob / n_tokens**lam), in (0, 1]
    self_eval: float | None = None  # C in [0, 1]; None when not evaluated
    outcome: int | None = None  # O = +1 / -1 at terminal nodes, else None
    value: float = 0.0  # v = w_C * C + w_O * O
    reward: float = 0.0  # r = v(node) - v(parent)
    Q: float = 0.0  # r + V
    V: float = 0.0  # visit-weighted mean of the children's Q; 0 while a leaf
    N: int = 0  # visits
    terminal: bool = False
    correct: bool | None = None  # the checker's verdict at terminal nodes
    finish: str = ""  # why the step ended (backend.STEP, ANSWER, EOS, ...)
    children: list[int] = field(default_factory=list)

    def to_record(self) -> dict:
        return {k: getattr(self, k) for k in RECORD_KEYS}


def prior(logprob_sum: float, n_tokens: int, lam: float = 1.25) -> float:
    """Length-penalised step probability ``p = exp(logprob_sum / n_tokens**lam)``.

    With ``lam > 1`` long steps are not punished for their length as hard as
    the raw product of token probabilities would. ``n_tokens`` is clamped to
    >= 1 so an empty step has ``p = exp(logprob_sum)``.
    """
    return math.exp(logprob_sum / max(1, n_tokens) ** lam)


def node_value(
    self_eval: float | None, outcome: int | None, self_eval_weight: float = 1.0, outcome_weight: float = 1.0
) -> float:
    """``v = self_eval_weight * C + outcome_weight * O``; ``C = 1`` if None (self-eval off), ``O = 0`` if None."""
    c = 1.0 if self_eval is None else self_eval
    o = 0 if outcome is None else outcome
    return self_eval_weight * c + outcome_weight * o


def step_reward(value: float, parent_value: float) -> float:
    """``r = v(child) - v(parent)``: what this step added to the solution's value."""
    return value - parent_value


def puct(q: float, prior_p: float, n_parent: int, n: int, c: float = 1.0) -> float:
    """``Q + c * p * sqrt(N_parent) / (1 + N)``."""
    return q + c * prior_p * math.sqrt(n_parent) / (1 + n)


def select_child(nodes: list[Node], parent: int, c: float = 1.0) -> int:
    """The child of ``parent`` with the highest PUCT score; ties go to the lower id."""
    n_parent = nodes[parent].N
    best = max(nodes[parent].children, key=lambda i: (puct(nodes[i].Q, nodes[i].prior, n_parent, nodes[i].N, c), -i))
    return best


def expandable(nodes: list[Node], node: int, search_root: int, depth_limit: int) -> bool:
    """A leaf that is not terminal and lies less than ``depth_limit`` steps below the search root."""
    n = nodes[node]
    return not n.terminal and not n.children and n.depth - nodes[search_root].depth < depth_limit


def select_path(nodes: list[Node], search_root: int, c: float = 1.0) -> list[int]:
    """Descend from ``search_root`` by PUCT until a node without children; the ids on the way."""
    path = [search_root]
    while nodes[path[-1]].children and not nodes[path[-1]].terminal:
        path.append(select_child(nodes, path[-1], c))
    return path


def add_child(
    nodes: list[Node], parent: int, text: str, token_ids: list[int], logprob: float, finish: str,
    terminal: bool, lam: float = 1.25,
) -> Node:
    """Append a fresh, unscored child of ``parent`` and return it."""
    node = Node(
        id=len(nodes), parent=parent, depth=nodes[parent].depth + 1, text=text, token_ids=list(token_ids),
        n_tokens=len(token_ids), logprob=logprob, prior=prior(logprob, len(token_ids), lam),
        terminal=terminal, finish=finish,
    )
    nodes.append(node)
    nodes[parent].children.append(node.id)
    return node


def score_node(
    nodes: list[Node], node: int, self_eval: float | None, outcome: int | None,
    self_eval_weight: float = 1.0, outcome_weight: float = 1.0,
) -> None:
    """Set a fresh node's value, reward and initial ``Q = r`` (``V = 0``: nothing below it yet)."""
    n = nodes[node]
    n.self_eval, n.outcome = self_eval, outcome
    if outcome is not None:
        n.correct = outcome > 0
    n.value = node_value(self_eval, outcome, self_eval_weight, outcome_weight)
    n.reward = step_reward(n.value, nodes[n.parent].value) if n.parent is not None else 0.0
    n.V = 0.0
    n.Q = n.reward + n.V


def backup(nodes: list[Node], path: list[int]) -> None:
    """Update the nodes on ``path`` (search root .. leaf), leaf first.

    Each gets ``N += 1``; a node with children gets
    ``V = sum(max(1, N_c) * Q_c) / sum(max(1, N_c))`` over all its children
    (unvisited ones count once, at their initial Q); then ``Q = r + V``.
    A leaf keeps its V.
    """
    for i in reversed(path):
        n = nodes[i]
        n.N += 1
        if n.children:
            weights = [max(1, nodes[c].N) for c in n.children]
            n.V = sum(w * nodes[c].Q for w, c in zip(weights, n.children)) / sum(weights)
        n.Q = n.reward + n.V


def commit_child(nodes: list[Node], parent: int) -> int:
    """The child to commit to: most visits, then higher Q, then lower id."""
    return max(nodes[parent].children, key=lambda i: (nodes[i].N, nodes[i].Q, -i))


def path_to(nodes: list[Node], node: int) -> list[int]:
    """Node ids from the root down to ``node``."""
    out = []
    i: int | None = node
    while i is not None:
        out.append(i)
        i = nodes[i].parent
    return out[::-1]


def solution_text(nodes: list[Node], node: int) -> str:
    """The steps from the root to ``node`` concatenated: the (partial) completion, no prompt."""
    return "".join(nodes[i].text for i in path_to(nodes, node))
