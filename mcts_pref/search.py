"""`mcts-pref search`: grow one MCTS tree per problem, many trees per policy call.

Each tree is a generator (:func:`grow_tree`) that runs the paper's search top
to bottom and *yields* whenever it needs the model: an :class:`Expand`
(sample k next steps of one node) or a :class:`SelfEval` (score its new
nodes). The driver (:func:`search_trees`) keeps ``batch_trees`` such
generators in flight and answers them in rounds: every pending expansion of
every tree goes into ONE ``backend.expand`` call, then every pending
self-evaluation into ONE ``backend.self_evaluate`` call. The search reads
like a single-tree loop; the batching lives in one small loop.

Per search root (DESIGN "The algorithm"): run ``iterations`` (x4 at the
problem root) of: descend by PUCT to a leaf; while it is expandable (not
terminal, fewer than ``depth_limit`` steps below the search root), expand it,
score the new children and step into the best one by PUCT; back up the path.
Then commit to the most visited child and search again below it (its subtree
is kept), until the committed node is terminal.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Callable, Generator, Iterable, Iterator, Optional

import typer

from mcts_pref.backend import Step
from mcts_pref.console import console, stage
from mcts_pref.options import (
    Adapter, Backend, BatchRows, Device, Dtype, LoadIn4bit, Model, Out, PromptFormat, Seed, Shard, Shots, ShotsFrom,
    TensorParallel, TrustRemoteCode,
)
from mcts_pref.records import MctsPrefError, RecordWriter, read_records, shard as take_shard
from mcts_pref.tree import (
    Node, add_child, backup, commit_child, expandable, path_to, score_node, select_child, select_path, solution_text,
)

MAX_DEPTH = "max_depth"  # finish of a step forced terminal at max_depth (outcome -1: no answer)
TOKEN_BUDGET = "token_budget"


@dataclass
class Config:
    """Every search knob; each tree record carries them all under ``config``.

    iterations (int, 5): MCTS iterations per search root; 4x at the problem root.
    children (int, 3): k, steps sampled when expanding a node below the problem root.
    root_children (int, 5): steps sampled for the first step (the problem root).
    c_puct (float, 1.0): exploration weight c in ``Q + c * p * sqrt(N_parent) / (1 + N)``.
    lam (float, 1.25): length penalty in the prior ``p = exp(sum log pi / L**lam)``.
    depth_limit (int, 4): an iteration creates nodes at most this many steps below the current search root.
    max_depth (int, 12): most steps in a solution; a non-terminal step there is forced terminal, O = -1.
    max_step_tokens (int, 64): token cap of one step.
    max_tokens_per_tree (int | None, None): close a tree once it generated this many tokens (None: no cap).
    temperature (float, 0.7): sampling temperature of expansions.
    top_p (float, 0.95): nucleus sampling of expansions.
    self_eval (bool, True): value nodes by the policy's self-evaluation C; off: C = 1 (the paper's ablation).
    self_eval_weight (float, 1.0): weight of C in the value ``v = w_C * C + w_O * O``.
    outcome_weight (float, 1.0): weight of the outcome O = +1 / -1 at terminal nodes.
    batch_trees (int, 16): trees in flight; their expansions share one backend call per round.
    seed (int, 0): round r of the driver samples with seed ``seed * 1_000_003 + r``.
    """

    iterations: int = 5
    children: int = 3
    root_children: int = 5
    c_puct: float = 1.0
    lam: float = 1.25
    depth_limit: int = 4
    max_depth: int = 12
    max_step_tokens: int = 64
    max_tokens_per_tree: Optional[int] = None
    temperature: float = 0.7
    top_p: float = 0.95
    self_eval: bool = True
    self_eval_weight: float = 1.0
    outcome_weight: float = 1.0
    batch_trees: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "children", "root_children", "depth_limit", "max_depth", "max_step_tokens", "batch_trees"):
            if getattr(self, name) < 1:
                raise MctsPrefError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens_per_tree is not None and self.max_tokens_per_tree < 1:
            raise MctsPrefError("--max-tokens-per-tree must be >= 1 (leave it out for no cap)")
        if self.temperature < 0:
            raise MctsPrefError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise MctsPrefError(f"--top-p must be in (0, 1], got {self.top_p}")

    def round_seed(self, round_ix: int) -> int:
        # Distinct per round and per --seed, so reruns with one seed reproduce and seeds don't overlap.
        return self.seed * 1_000_003 + round_ix


@dataclass
class Expand:
    """A tree asks for ``n`` sampled next steps after ``prefix`` (prompt + steps so far)."""

    prefix: str
    n: int


@dataclass
class SelfEval:
    """A tree asks for P("correct") of each partial solution of its question."""

    question: str
    partials: list[str]


def default_outcome(completion: str, problem: dict) -> bool:
    """The answer checker: is the completion's final answer the problem's gold answer?"""
    from mcts_pref.tasks import score

    return bool(score(completion, problem["answer"], problem.get("task") or "math", problem.get("choices"))[1])


def _expand(nodes: list[Node], leaf: int, problem: dict, prompt: str, cfg: Config, outcome_fn, stats: dict):
    """Expand ``leaf`` and score its new children (sub-generator of :func:`grow_tree`); returns the new ids."""
    n = cfg.root_children if leaf == 0 else cfg.children
    steps: list[Step] = yield Expand(prompt + solution_text(nodes, leaf), n)
    stats["expand_calls"] += 1
    seen = {nodes[c].text for c in nodes[leaf].children}
    new = []
    for step in steps:
        stats["tokens"] += step.n_tokens  # duplicates cost tokens too
        if step.text in seen:
            continue
        seen.add(step.text)
        forced = not step.terminal and nodes[leaf].depth + 1 >= cfg.max_depth
        child = add_child(
            nodes, leaf, step.text, step.token_ids, step.logprob, MAX_DEPTH if forced else step.finish,
            terminal=step.terminal or forced, lam=cfg.lam,
        )
        new.append(child.id)
    if not new:
        raise MctsPrefError("the backend returned no steps for an expansion")
    outcomes = []
    for i in new:
        if not nodes[i].terminal:
            outcomes.append(None)
        elif nodes[i].finish == MAX_DEPTH:
            outcomes.append(-1)
        else:
            outcomes.append(1 if outcome_fn(solution_text(nodes, i), problem) else -1)
    if cfg.self_eval:
        evals = yield SelfEval(problem["question"], [solution_text(nodes, i) for i in new])
        stats["self_eval_calls"] += 1
        stats["self_evals"] += len(new)
    else:
        evals = [None] * len(new)
    for i, c, o in zip(new, evals, outcomes):
        score_node(nodes, i, c, o, cfg.self_eval_weight, cfg.outcome_weight)
    return new


def grow_tree(
    problem: dict, prompt: str, policy: str, cfg: Config, outcome_fn: Callable[[str, dict], bool]
) -> Generator[Expand | SelfEval, Any, dict]:
    """Search one problem to a committed terminal node; yields model requests, returns the tree record."""
    start = time.perf_counter()
    nodes = [Node(id=0, parent=None, depth=0)]
    stats = {"tokens": 0, "expand_calls": 0, "self_eval_calls": 0, "self_evals": 0}

    def over_budget() -> bool:
        return cfg.max_tokens_per_tree is not None and stats["tokens"] >= cfg.max_tokens_per_tree

    search_root = 0
    while not nodes[search_root].terminal and not over_budget():
        for _ in range(cfg.iterations * (4 if search_root == 0 else 1)):
            path = select_path(nodes, search_root, cfg.c_puct)
            while expandable(nodes, path[-1], search_root, cfg.depth_limit) and not over_budget():
                yield from _expand(nodes, path[-1], problem, prompt, cfg, outcome_fn, stats)
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
        forward_calls=stats["expand_calls"] + stats["self_eval_calls"],
        wall_s=round(time.perf_counter() - start, 3),
        closed_reason=closed,
    )
    return tree_record(problem, prompt, policy, cfg, nodes, path, stats)


def tree_record(problem: dict, prompt: str, policy: str, cfg: Config, nodes: list[Node], path: list[int], stats: dict) -> dict:
    """The ``tree`` record (DESIGN): problem fields, config, nodes in id order, committed path, stats."""
    rec = {
        "problem_id": str(problem["id"]),
        "question": problem["question"],
        "answer": problem["answer"],
        "task": problem.get("task") or "math",
    }
    if problem.get("choices") is not None:
        rec["choices"] = problem["choices"]
    leaf = nodes[path[-1]]
    rec.update(
        prompt=prompt, policy=policy, config=asdict(cfg), nodes=[n.to_record() for n in nodes], path=path,
        correct=bool(leaf.terminal and leaf.correct), stats=stats,
    )
    return rec


@dataclass
class _InFlight:
    gen: Generator
    request: Any = None
    record: Optional[dict] = None

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
    refilled at once. Each round makes at most one ``backend.expand`` and one
    ``backend.self_evaluate`` call. ``on_round(tokens)`` reports the tokens
    generated in each round (for progress displays).
    """
    outcome_fn = outcome_fn or default_outcome
    todo = iter(problems)
    active: list[_InFlight] = []
    round_ix = 0
    while True:
        while len(active) < cfg.batch_trees and (problem := next(todo, None)) is not None:
            tree = _InFlight(grow_tree(problem, backend.format_prompt(problem), backend.policy_id, cfg, outcome_fn))
            tree.send(None)
            active.append(tree)
        if not active:
            return
        expanding = [t for t in active if isinstance(t.request, Expand)]
        if expanding:
            results = backend.expand(
                [t.request.prefix for t in expanding], [t.request.n for t in expanding],
                temperature=cfg.temperature, top_p=cfg.top_p, max_step_tokens=cfg.max_step_tokens,
                seed=cfg.round_seed(round_ix),
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
            scores = list(backend.self_evaluate(questions, partials))
            if len(scores) != len(partials):
                raise MctsPrefError(f"backend.self_evaluate returned {len(scores)} scores for {len(partials)} partials")
            for tree in evaluating:
                k = len(tree.request.partials)
                mine, scores = scores[:k], scores[k:]
                tree.send(mine)
        round_ix += 1
        for tree in active:
            if tree.request is None:
                yield tree.record
        active = [t for t in active if t.request is not None]


def _load_backend(**kwargs):
    """Tests replace this hook with a scripted backend."""
    from mcts_pref.policy import load_backend

    return load_backend(**kwargs)


def _opt(flag: str, help: str):
    return typer.Option(flag, help=help)


_D = Config()


@stage
def command(
    problems: Annotated[str, typer.Argument(help="Problem records (JSONL path, or - for stdin).")],
    model: Model = "default",
    adapter: Adapter = None,
    dtype: Dtype = "auto",
    load_in_4bit: LoadIn4bit = False,
    trust_remote_code: TrustRemoteCode = False,
    device: Device = "auto",
    prompt_format: PromptFormat = "auto",
    shots: Shots = 2,
    shots_from: ShotsFrom = None,
    batch_rows: BatchRows = 64,
    backend_name: Backend = "hf",
    tensor_parallel_size: TensorParallel = 1,
    iterations: Annotated[int, _opt("--iterations", "MCTS iterations per search root (x4 at the problem root).")] = _D.iterations,
    children: Annotated[int, _opt("--children", "Steps sampled per expansion below the root (k).")] = _D.children,
    root_children: Annotated[int, _opt("--root-children", "Steps sampled for the first step.")] = _D.root_children,
    c_puct: Annotated[float, _opt("--c-puct", "PUCT exploration weight c.")] = _D.c_puct,
    lam: Annotated[float, _opt("--lam", "Length penalty of the prior: p = exp(sum log pi / L**lam).")] = _D.lam,
    depth_limit: Annotated[int, _opt("--depth-limit", "An iteration grows nodes at most this many steps below the current search root.")] = _D.depth_limit,
    max_depth: Annotated[int, _opt("--max-depth", "Most steps in a solution; deeper is forced terminal, outcome -1.")] = _D.max_depth,
    max_step_tokens: Annotated[int, _opt("--max-step-tokens", "Token cap of one step.")] = _D.max_step_tokens,
    max_tokens_per_tree: Annotated[Optional[int], _opt("--max-tokens-per-tree", "Close a tree after this many generated tokens.")] = None,
    temperature: Annotated[float, _opt("--temperature", "Sampling temperature.")] = _D.temperature,
    top_p: Annotated[float, _opt("--top-p", "Nucleus sampling threshold.")] = _D.top_p,
    no_self_eval: Annotated[bool, _opt("--no-self-eval", "Value nodes by outcome only (self-evaluation C = 1).")] = False,
    self_eval_weight: Annotated[float, _opt("--self-eval-weight", "Weight of self-evaluation C in a node's value.")] = _D.self_eval_weight,
    outcome_weight: Annotated[float, _opt("--outcome-weight", "Weight of the outcome +1/-1 at terminal nodes.")] = _D.outcome_weight,
    batch_trees: Annotated[int, _opt("--batch-trees", "Trees searched together; their expansions share one model call.")] = _D.batch_trees,
    seed: Seed = _D.seed,
    shard: Shard = None,
    limit: Annotated[Optional[int], _opt("--limit", "Search only the first N problems (after --shard).")] = None,
    out: Out = None,
) -> None:
    """Grow an MCTS tree of reasoning steps per problem and write one tree record each.

    Trees are written as they finish; rerunning with the same --out skips
    problems already there.
    """
    cfg = Config(
        iterations=iterations, children=children, root_children=root_children, c_puct=c_puct, lam=lam,
        depth_limit=depth_limit, max_depth=max_depth, max_step_tokens=max_step_tokens,
        max_tokens_per_tree=max_tokens_per_tree, temperature=temperature, top_p=top_p, self_eval=not no_self_eval,
        self_eval_weight=self_eval_weight, outcome_weight=outcome_weight, batch_trees=batch_trees, seed=seed,
    )
    records = take_shard(read_records(problems, "problem"), shard)
    if limit is not None:
        records = records[:limit]
    ids = [str(p["id"]) for p in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise MctsPrefError(f"{problems}: problem id {dup!r} appears more than once; ids must be unique to resume")
    from mcts_pref.prompts import load_shots

    exemplars = load_shots(shots, shots_from)
    with RecordWriter(out, resume_key="problem_id") as writer:
        todo = [p for p in records if str(p["id"]) not in writer.done]
        if not todo:
            console.print(f"search: nothing to do ({len(records)} problems, all already in {out})")
            return
        if writer.done:
            console.print(f"search: resuming, {len(records) - len(todo)} of {len(records)} trees already written")
        backend = _load_backend(
            model=model, adapter=adapter, dtype=dtype, load_in_4bit=load_in_4bit,
            trust_remote_code=trust_remote_code, device=device, prompt_format=prompt_format,
            shots=exemplars, max_batch_rows=batch_rows, backend=backend_name, tensor_parallel_size=tensor_parallel_size,
        )
        _run_with_progress(backend, todo, cfg, writer)


def _run_with_progress(backend, problems: list[dict], cfg: Config, writer: RecordWriter) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    start, tokens, correct, done = time.perf_counter(), 0, 0, 0
    columns = (
        TextColumn("search"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[acc]}"),
        TextColumn("{task.fields[speed]}"), TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("search", total=len(problems), acc="correct -", speed="- tok/s")

        def on_round(n: int) -> None:
            nonlocal tokens
            tokens += n
            progress.update(task, speed=f"{tokens / max(1e-9, time.perf_counter() - start):.1f} tok/s")

        for rec in search_trees(backend, problems, cfg, on_round=on_round):
            writer.write(rec)  # now: a killed run keeps every finished tree
            done += 1
            correct += rec["correct"]
            progress.update(task, advance=1, acc=f"correct {correct}/{done} ({correct / done:.0%})")
