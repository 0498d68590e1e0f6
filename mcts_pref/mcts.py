"""The search engine: grow one MCTS tree per problem, many trees per policy call.

Each tree is a generator (:func:`grow_tree`) that runs the paper's search top
to bottom and *yields* whenever it needs the model: an :class:`Expand`
(sample k next steps of one node), a :class:`SelfEval` (score its new
nodes) or a :class:`Rollout` (complete its new nodes K times each, for the
``rollout`` value term). The driver (:func:`search_trees`) keeps
``batch_trees`` such generators in flight and answers them in rounds: every
pending expansion of every tree goes into ONE ``backend.expand`` call, then
every self-evaluation into ONE ``backend.self_evaluate`` call, then every
rollout into ONE ``backend.complete`` call. The search reads like a
single-tree loop; the batching lives in one small loop.

Node values are weighted sums of value terms (``--value``, see ``tree.py``).
An expansion spends its budget on *distinct* steps: a sampled step that
repeats a sibling (after whitespace normalisation) adds a draw to that
sibling, and up to ``--resample-duplicates`` extra rounds ask for as many
new samples as were duplicates. Conditioned on differing from what was
drawn, a new sample follows the policy, so this is sampling without
replacement; the prior stays the policy's own log-prob. A backend that
``samples_without_replacement`` (the transformers one) draws those rows from
that conditional law directly (``mcts_pref/distinct.py``), so they spend no
tokens repeating a sibling, and its expansions are staged: the first round
draws only half the children, later rounds the rest without replacement.
Elsewhere repeats are merged and asked for again.

Per search root (DESIGN "The algorithm"): run ``iterations`` (x4 at the
problem root) of: descend by PUCT to a leaf; while it is expandable (not
terminal, fewer than ``depth_limit`` steps below the search root), expand it,
score the new children and step into the best one by PUCT; back up the path.
Then commit to the most visited child and search again below it (its subtree
is kept), until the committed node is terminal.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Generator, Iterable, Iterator, Optional

from mcts_pref.check import step_verdict
from mcts_pref.distinct import EXHAUSTED, mass_left
from mcts_pref.errors import MctsPrefError
from mcts_pref.policy_spec import knob
from mcts_pref.prompts import judge_question
from mcts_pref.steps import STEP_CAP, Step
from mcts_pref.tasks import resolve_task, score
from mcts_pref.tree import (
    FORCED_TERMINAL, Node, add_child, backup, checker_terms, commit_child, expandable, parse_value_spec, path_to, rollout_value,
    score_node, select_child, select_path, solution_text,
)
from mcts_pref.trees import tree_record

MAX_DEPTH = FORCED_TERMINAL  # finish of a step forced terminal at max_depth (outcome -1: no answer)
TOKEN_BUDGET = "token_budget"
ROLLOUT_SEED = 500_009  # offsets the rollout sampling stream of a round from its expansion stream


@dataclass
class Config:
    """Every search knob; each tree record carries them all under ``config``.

    A knob's meaning and default are its field's (the help of ``search``'s
    option of the same name); ``seed`` is ``search``'s shared ``--seed``.
    """

    iterations: int = knob(5, "MCTS iterations per search root (x4 at the problem root).")
    children: int = knob(3, "Steps sampled per expansion below the root (k).")
    root_children: int = knob(5, "Steps sampled for the first step (the problem root).")
    c_puct: float = knob(1.0, "PUCT exploration weight c, in Q + c * p * sqrt(N_parent) / (1 + N).")
    lam: float = knob(1.25, "Length penalty of the prior: p = exp(sum log pi / L**lam).")
    depth_limit: int = knob(4, "An iteration grows nodes at most this many steps below the current search root.")
    max_depth: int = knob(12, "Most steps in a solution; a non-terminal step at that depth is forced terminal, "
                                "outcome -1.")
    max_step_tokens: int = knob(64, "Token cap of one step.")
    max_tokens_per_tree: Optional[int] = knob(None, "Close a tree after this many generated tokens (default: no cap).")
    temperature: float = knob(0.7, "Sampling temperature of expansions and rollouts.")
    top_p: float = knob(0.95, "Nucleus sampling threshold of expansions and rollouts.")
    value: str = knob("self-eval=1,outcome=1", "Value terms TERM[=WEIGHT],... summed into a node's value. Terms: "
                      "self-eval (the policy's P(correct)), outcome (+1/-1 at terminal nodes), rollout (mean outcome "
                      "of --rollouts completions), checker (sum of step-checker verdicts on the path), checker-gate "
                      "(-1 once a step on the path is false). Default: the paper's.")
    rollouts: int = knob(4, "K: completions per node for the rollout term.")
    rollout_early_stop: bool = knob(False, "Stop a node's rollouts at its first success (value +1, else -1).")
    rollout_max_tokens: int = knob(128, "Token cap of one rollout.")
    resample_duplicates: int = knob(1, "Extra sampling rounds an expansion spends replacing duplicate siblings "
                                       "(0: duplicates only merge, the paper code's behaviour). On the hf backend "
                                       "they are drawn without replacement (from the law conditioned on differing "
                                       "from every step drawn so far), and the first round draws only half the "
                                       "children (rounded up).")
    batch_trees: int = knob(16, "Trees searched together; their expansions share one model call per round.")
    seed: int = 0  # round r of the driver samples with seed ``seed * 1_000_003 + r`` (round_seed)
    weights: dict = field(init=False)  # the parsed --value

    def __post_init__(self) -> None:
        for name in ("iterations", "children", "root_children", "depth_limit", "max_depth", "max_step_tokens",
                     "batch_trees", "rollouts", "rollout_max_tokens"):
            if getattr(self, name) < 1:
                raise MctsPrefError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.resample_duplicates < 0:
            raise MctsPrefError(f"--resample-duplicates must be >= 0, got {self.resample_duplicates}")
        if self.max_tokens_per_tree is not None and self.max_tokens_per_tree < 1:
            raise MctsPrefError("--max-tokens-per-tree must be >= 1 (leave it out for no cap)")
        if self.temperature < 0:
            raise MctsPrefError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise MctsPrefError(f"--top-p must be in (0, 1], got {self.top_p}")
        try:
            self.weights = parse_value_spec(self.value)
        except ValueError as e:
            raise MctsPrefError(f"--value {self.value!r}: {e}") from None

    def round_seed(self, round_ix: int) -> int:
        # Distinct per round and per --seed, so reruns with one seed reproduce and seeds don't overlap.
        return self.seed * 1_000_003 + round_ix


@dataclass
class Expand:
    """A tree asks for ``n`` sampled next steps after ``prefix`` (prompt + steps so far)."""

    prefix: str
    n: int
    task: str = "math"  # tells the step cutter which lines state a final answer
    exclude: list = field(default_factory=list)  # drawn paths (Step.drawn) of the steps not to repeat


@dataclass
class SelfEval:
    """A tree asks for P("correct") of each partial solution of its question."""

    question: str
    partials: list[str]


@dataclass
class Rollout:
    """A tree asks for ``n[i]`` whole completions after each ``prefixes[i]`` (prompt + steps so far)."""

    prefixes: list[str]
    n: list[int]
    task: str = "math"


def default_outcome(completion: str, problem: dict) -> bool:
    """The answer checker: is the completion's final answer the problem's gold answer?"""
    return bool(score(completion, problem["answer"], resolve_task(problem.get("task")), problem.get("choices"))[1])


def _norm(text: str) -> str:
    """Steps that differ only in whitespace are one step."""
    return " ".join(text.split())


def _expand(nodes: list[Node], leaf: int, problem: dict, prompt: str, cfg: Config, outcome_fn, stats: dict,
            staged: bool = False):
    """Expand ``leaf`` and score its new children (sub-generator of :func:`grow_tree`); returns the new ids.

    ``staged`` (the backend samples without replacement, and resampling is on): the first round
    draws only half the children i.i.d. and later rounds draw the rest without replacement, so
    fewer tokens go to repeats than when all k are drawn i.i.d. and only the repeats redrawn.
    """
    want = cfg.root_children if leaf == 0 else cfg.children
    staged = staged and cfg.resample_duplicates > 0 and want > 1
    task = resolve_task(problem.get("task"))
    prefix = prompt + solution_text(nodes, leaf)
    seen = {_norm(nodes[c].text): c for c in nodes[leaf].children}
    new: list[int] = []
    drawn: list = []  # every drawn path so far: the next round draws none of them again
    ask = (want + 1) // 2 if staged else want
    for attempt in range(cfg.resample_duplicates + 1):
        steps: list[Step] = yield Expand(prefix, ask, task, list(drawn))
        stats["expand_calls"] += 1
        dups = 0
        for step in steps:
            stats["tokens"] += step.n_tokens  # duplicates cost tokens too
            stats["expand_tokens"] += step.n_tokens
            if step.drawn:
                drawn.append(step.drawn)
            key = _norm(step.text)
            if key in seen:
                nodes[seen[key]].draws += 1
                dups += 1
                continue
            forced = not step.terminal and nodes[leaf].depth + 1 >= cfg.max_depth
            child = add_child(
                nodes, leaf, step.text, step.token_ids, step.logprob, MAX_DEPTH if forced else step.finish,
                terminal=step.terminal or forced, lam=cfg.lam,
            )
            seen[key] = child.id
            new.append(child.id)
        stats["duplicates"] += dups
        ask = want - len(new)
        if (not dups and not staged) or ask <= 0 or (cfg.max_tokens_per_tree is not None and stats["tokens"] >= cfg.max_tokens_per_tree):
            break
        if drawn and mass_left(drawn) < EXHAUSTED:
            break  # the policy has no other step to give at this temperature and top-p
    if not new:
        raise MctsPrefError("the backend returned no steps for an expansion")
    stats["expansions"] += 1
    stats["children"] += len(new)

    # Value terms of the new children. outcome and the checker's path terms cost no model call.
    terms = {i: {} for i in new}
    for i in new:
        n = nodes[i]
        if n.terminal:
            n.outcome = -1 if n.finish == MAX_DEPTH else (1 if outcome_fn(solution_text(nodes, i), problem) else -1)
        path_steps = [nodes[j].text for j in path_to(nodes, i)[1:]]
        n.check = step_verdict(n.text, problem, path_steps[:-1], cut=n.finish == STEP_CAP)
        terms[i].update(outcome=float(n.outcome or 0), **checker_terms(nodes[leaf].terms, n.check))
    if "self_eval" in cfg.weights:
        evals = yield SelfEval(judge_question(problem), [solution_text(nodes, i) for i in new])
        stats["self_eval_calls"] += 1
        stats["self_evals"] += len(new)
        for i, c in zip(new, evals):
            nodes[i].self_eval = c
            terms[i]["self_eval"] = c
    if "rollout" in cfg.weights:
        yield from _rollouts(nodes, [i for i in new if not nodes[i].terminal], problem, prompt, cfg, outcome_fn, stats)
        for i in new:
            n = nodes[i]
            terms[i]["rollout"] = float(n.outcome) if n.terminal else n.terms.get("rollout")
    for i in new:
        nodes[i].terms.update(terms[i])
        score_node(nodes, i, terms[i], cfg.weights)
    return new


def _rollouts(nodes: list[Node], todo: list[int], problem: dict, prompt: str, cfg: Config, outcome_fn, stats: dict):
    """Complete each node of ``todo`` K times with the policy; store its rollout value (sub-generator).

    With ``rollout_early_stop`` the K completions come in waves of ``max(1, K // 4)`` and a node
    stops at its first success (value +1; -1 when none of its K succeeds).
    """
    task = resolve_task(problem.get("task"))
    wave = max(1, cfg.rollouts // 4) if cfg.rollout_early_stop else cfg.rollouts
    outcomes: dict[int, list[int]] = {i: [] for i in todo}
    pending = list(todo)
    while pending:
        n = [min(wave, cfg.rollouts - len(outcomes[i])) for i in pending]
        results = yield Rollout([prompt + solution_text(nodes, i) for i in pending], n, task)
        stats["rollout_calls"] += 1
        for i, completions in zip(pending, results):
            partial = solution_text(nodes, i)
            for c in completions:
                stats["tokens"] += c.n_tokens
                stats["rollout_tokens"] += c.n_tokens
                nodes[i].rollout_tokens += c.n_tokens
                outcomes[i].append(1 if outcome_fn(partial + c.text, problem) else -1)
            nodes[i].rollouts = len(outcomes[i])
        stats["rollouts"] += sum(n)
        pending = [i for i in pending if len(outcomes[i]) < cfg.rollouts
                   and not (cfg.rollout_early_stop and 1 in outcomes[i])]
    for i in todo:
        if cfg.rollout_early_stop:
            nodes[i].terms["rollout"] = 1.0 if 1 in outcomes[i] else -1.0
        else:
            nodes[i].terms["rollout"] = rollout_value(outcomes[i])


def new_stats() -> dict:
    """A tree's counters: tokens generated (all, expansions, rollouts), calls, and what expansions found."""
    return dict.fromkeys(("tokens", "expand_tokens", "rollout_tokens", "self_eval_prefill_tokens", "expand_calls",
                          "self_eval_calls", "self_evals", "rollout_calls", "rollouts", "expansions", "children",
                          "duplicates", "wall_share_s"), 0)


def grow_tree(
    problem: dict, prompt: str, policy: str, cfg: Config, outcome_fn: Callable[[str, dict], bool],
    stats: Optional[dict] = None, staged: bool = False,
) -> Generator[Expand | SelfEval | Rollout, Any, dict]:
    """Search one problem to a committed terminal node; yields model requests, returns the tree record.

    ``staged``: the backend samples without replacement (see :func:`_expand`)."""
    start = time.perf_counter()
    nodes = [Node(id=0, parent=None, depth=0)]
    stats = new_stats() if stats is None else stats

    def over_budget() -> bool:
        return cfg.max_tokens_per_tree is not None and stats["tokens"] >= cfg.max_tokens_per_tree

    search_root = 0
    while not nodes[search_root].terminal and not over_budget():
        for _ in range(cfg.iterations * (4 if search_root == 0 else 1)):
            path = select_path(nodes, search_root, cfg.c_puct)
            while expandable(nodes, path[-1], search_root, cfg.depth_limit) and not over_budget():
                yield from _expand(nodes, path[-1], problem, prompt, cfg, outcome_fn, stats, staged)
                path.append(select_child(nodes, path[-1], cfg.c_puct))
            # Only the current search root's subtree learns: nodes above it keep the statistics
            # their commit (and their siblings' comparison) was made with.
            backup(nodes, path)
            if over_budget():
                break
        if over_budget():
            break
        search_root = commit_child(nodes, search_root)

    path = path_to(nodes, search_root)
    closed = None
    if not nodes[search_root].terminal:
        closed = TOKEN_BUDGET
        # Follow the commit rule through what was already searched, so the work still yields pairs.
        while nodes[path[-1]].children:
            path.append(commit_child(nodes, path[-1]))
    elif nodes[search_root].finish == MAX_DEPTH:
        closed = MAX_DEPTH
    stats.update(
        forward_calls=stats["expand_calls"] + stats["self_eval_calls"] + stats["rollout_calls"],
        wall_s=round(time.perf_counter() - start, 3),
        closed_reason=closed,
    )
    leaf = nodes[path[-1]]
    return tree_record(problem, prompt, policy, asdict(cfg), [n.to_record() for n in nodes], path,
                       bool(leaf.terminal and leaf.correct), stats)


@dataclass
class _InFlight:
    gen: Generator
    stats: dict
    request: Any = None
    record: Optional[dict] = None

    def add_stat(self, key: str, value: int) -> None:
        self.stats[key] += value

    def send(self, value: Any) -> None:
        try:
            self.request = self.gen.send(value)
        except StopIteration as done:
            self.request, self.record = None, done.value


def search_trees(
    backend, problems: Iterable[dict], cfg: Config, outcome_fn: Optional[Callable[[str, dict], bool]] = None,
    on_round: Optional[Callable[[int], None]] = None,
) -> Iterator[dict]:
    """Yield one tree record per problem, as trees finish (not in input order).

    Up to ``cfg.batch_trees`` trees are in flight; a finished tree's slot is
    refilled at once. Each round makes at most one ``backend.expand``, one
    ``backend.self_evaluate`` and one ``backend.complete`` call.
    ``on_round(tokens)`` reports the tokens generated (for progress displays).
    """
    outcome_fn = outcome_fn or default_outcome
    todo = iter(problems)
    active: list[_InFlight] = []
    round_ix = 0
    without_replacement = backend.samples_without_replacement
    while True:
        t0 = time.perf_counter()
        while len(active) < cfg.batch_trees and (problem := next(todo, None)) is not None:
            stats = new_stats()
            tree = _InFlight(grow_tree(problem, backend.format_prompt(problem), backend.policy_id, cfg, outcome_fn, stats,
                                       without_replacement), stats)
            tree.send(None)
            active.append(tree)
        if not active:
            return
        expanding = [t for t in active if isinstance(t.request, Expand)]
        if expanding:
            excluding = without_replacement and any(t.request.exclude for t in expanding)
            results = backend.expand(
                [t.request.prefix for t in expanding], [t.request.n for t in expanding],
                temperature=cfg.temperature, top_p=cfg.top_p, max_step_tokens=cfg.max_step_tokens,
                seed=cfg.round_seed(round_ix), tasks=[t.request.task for t in expanding],
                **({"exclude": [t.request.exclude for t in expanding]} if excluding else {}),
            )
            if len(results) != len(expanding):
                raise MctsPrefError(f"backend.expand returned {len(results)} results for {len(expanding)} prefixes")
            if on_round:
                on_round(sum(s.n_tokens for steps in results for s in steps))
            for tree, steps in zip(expanding, results):
                tree.send(steps)
        evaluating = [t for t in active if isinstance(t.request, SelfEval)]
        if evaluating:
            questions = [t.request.question for t in evaluating for _ in t.request.partials]
            partials = [p for t in evaluating for p in t.request.partials]
            prefill_before = backend.stats.get("prefill_tokens", 0)
            scores = list(backend.self_evaluate(questions, partials))
            if len(scores) != len(partials):
                raise MctsPrefError(f"backend.self_evaluate returned {len(scores)} scores for {len(partials)} partials")
            # The backend counts the judgement prompts' prefill for the whole call: share it by partials.
            prefill = (backend.stats.get("prefill_tokens", 0) - prefill_before) / max(1, len(partials))
            for tree in evaluating:
                k = len(tree.request.partials)
                mine, scores = scores[:k], scores[k:]
                tree.add_stat("self_eval_prefill_tokens", round(prefill * k))
                tree.send(mine)
        rolling = [t for t in active if isinstance(t.request, Rollout)]
        if rolling:
            results = backend.complete(
                [p for t in rolling for p in t.request.prefixes], [k for t in rolling for k in t.request.n],
                temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.rollout_max_tokens,
                seed=cfg.round_seed(round_ix) + ROLLOUT_SEED, tasks=[t.request.task for t in rolling for _ in t.request.n],
            )
            if on_round:
                on_round(sum(s.n_tokens for steps in results for s in steps))
            for tree in rolling:
                k = len(tree.request.prefixes)
                mine, results = results[:k], results[k:]
                tree.send(mine)
        round_ix += 1
        # Trees in flight share the round's wall time: summed over trees this is the search's own time
        # (each tree's wall_s runs from its start to its end and overlaps the others').
        share = (time.perf_counter() - t0) / len(active)
        for tree in active:
            tree.stats["wall_share_s"] += share
        for tree in active:
            if tree.request is None:
                backend.release(tree.record["prompt"])  # a backend with a prefix cache frees the tree's blocks
                tree.stats["wall_share_s"] = round(tree.stats["wall_share_s"], 4)
                yield tree.record
        active = [t for t in active if t.request is not None]
