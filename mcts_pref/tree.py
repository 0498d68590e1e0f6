"""Pure MCTS math over reasoning steps: nodes, prior, value, reward, PUCT, backup, commit.

No model and no torch here: every formula is a small function with a
hand-checked test (tests/test_tree.py). ``search.py`` drives these with a
backend. A tree is a plain ``list[Node]`` indexed by node id, root = 0.

Conventions (the paper's released code runs the same way):

- A node's *value* is a weighted sum of value terms, ``v = sum_t w_t * x_t``
  (``--value``; the paper's rule is ``self-eval=1,outcome=1``):

  - ``self_eval``: C, the policy's self-evaluation P("correct"), in [0, 1];
  - ``outcome``: O = +1 / -1 from the answer checker at terminal nodes, 0 elsewhere;
  - ``rollout``: the mean outcome of K policy completions from the node, in
    [-1, 1] (a terminal node's is its own O);
  - ``checker``: the sum over the steps on the node's path of the step
    checker's verdicts (+1 ok, -1 bad, 0 unknown);
  - ``checker_gate``: -1 once any step on the path was false, else 0.

  The checker terms are *path* terms on purpose. With ``r = v(child) -
  v(parent)`` and the backup below, ``Q(node) = E[v(frontier)] - v(parent)``:
  a term that scored only the node's own step would vanish from its Q as
  soon as it had children.
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

from mcts_pref.check import BAD, UNKNOWN, verdict_score

# Record keys of a node (DESIGN "tree"), in output order. token_ids stay out: big.
RECORD_KEYS = (
    "id", "parent", "depth", "text", "prior", "logprob", "n_tokens", "draws", "self_eval", "outcome", "check",
    "rollouts", "rollout_tokens", "values", "value", "reward", "Q", "V", "N", "commit_Q", "commit_N", "terminal",
    "finish", "correct",
)
FORCED_TERMINAL = "max_depth"  # finish of a step forced terminal at --max-depth (outcome -1: no answer)
VALUE_TERMS = ("self_eval", "outcome", "rollout", "checker", "checker_gate")


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
    draws: int = 1  # samples of the expansion that drew this step (duplicates merge into one child)
    self_eval: float | None = None  # C in [0, 1]; None when not evaluated
    outcome: int | None = None  # O = +1 / -1 at terminal nodes, else None
    check: str | None = None  # the step checker's verdict on this step: ok / bad / unknown
    rollouts: int = 0  # completions sampled from this node for its rollout value
    rollout_tokens: int = 0  # tokens those completions cost
    values: dict = field(default_factory=dict)  # the value terms that make v, unweighted
    terms: dict = field(default_factory=dict)  # every term computed (path terms need the parent's); not in the record
    value: float = 0.0  # v = sum of weight * term over values
    reward: float = 0.0  # r = v(node) - v(parent)
    Q: float = 0.0  # r + V
    V: float = 0.0  # visit-weighted mean of the children's Q; 0 while a leaf
    N: int = 0  # visits
    commit_Q: float | None = None  # Q and N when the parent committed (what pairs compare); None before
    commit_N: int | None = None
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


def value_term(part: str) -> str:
    """The term one ``TERM[=WEIGHT]`` part of a ``--value`` spec names, as a Python name (``self-eval`` -> ``self_eval``)."""
    return part.partition("=")[0].strip().replace("-", "_")


def without_term(spec: str, term: str) -> list[str]:
    """The parts of ``spec`` that do not name ``term`` (``self_eval``), as written; may be none."""
    return [p for p in spec.split(",") if value_term(p) != term]


def parse_value_spec(spec: str) -> dict[str, float]:
    """``"self-eval=1,outcome=1"`` -> ``{"self_eval": 1.0, "outcome": 1.0}``; a bare term has weight 1.

    Raises ValueError naming the problem (unknown term, bad weight, repeated term, empty).
    """
    weights: dict[str, float] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, w = part.partition("=")
        term = value_term(part)
        if term not in VALUE_TERMS:
            raise ValueError(f"unknown value term {name.strip()!r} (terms: {', '.join(t.replace('_', '-') for t in VALUE_TERMS)})")
        if term in weights:
            raise ValueError(f"value term {name.strip()!r} is given twice")
        try:
            weights[term] = float(w) if w.strip() else 1.0
        except ValueError:
            raise ValueError(f"value term {name.strip()!r}: weight {w.strip()!r} is not a number") from None
        if not math.isfinite(weights[term]):
            raise ValueError(f"value term {name.strip()!r}: weight must be finite")
    if not weights:
        raise ValueError("no value terms given")
    return weights


def node_value(values: dict[str, float | None], weights: dict[str, float]) -> float:
    """``v = sum_t weights[t] * values[t]``; a term with no value (None or absent) counts 0."""
    return sum(w * (values.get(t) or 0.0) for t, w in weights.items())


def checker_terms(parent: dict, verdict: str | None) -> dict[str, float]:
    """The path terms of a child whose parent's terms are ``parent`` and whose own step got ``verdict``.

    ``checker`` = parent's sum + score(verdict); ``checker_gate`` = -1 once any step on the path
    was false. The root's terms are 0 (an empty solution has no claims).
    """
    score = verdict_score(verdict or UNKNOWN)
    gate = -1.0 if verdict == BAD or parent.get("checker_gate", 0.0) < 0 else 0.0
    return {"checker": parent.get("checker", 0.0) + score, "checker_gate": gate}


def rollout_value(outcomes: list[int]) -> float | None:
    """Mean of +1 / -1 rollout outcomes, in [-1, 1]; None when there are none."""
    return sum(outcomes) / len(outcomes) if outcomes else None


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


def score_node(nodes: list[Node], node: int, values: dict[str, float | None], weights: dict[str, float]) -> None:
    """Set a fresh node's value terms, value, reward and initial ``Q = r`` (``V = 0``: nothing below it yet).

    ``values`` holds every term computed for the node; those named in ``weights`` make its value.
    """
    n = nodes[node]
    if n.outcome is not None:
        n.correct = n.outcome > 0
    n.values = {t: values.get(t) for t in weights}
    n.value = node_value(values, weights)
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
    """The child to commit to: most visits, then higher Q, then lower id.

    Records every child's ``commit_Q`` / ``commit_N``: the statistics the
    commit was made with, which pairs compare (the committed child goes on
    collecting visits, its siblings do not).
    """
    for i in nodes[parent].children:
        nodes[i].commit_Q, nodes[i].commit_N = nodes[i].Q, nodes[i].N
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
