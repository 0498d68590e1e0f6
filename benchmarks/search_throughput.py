"""Search throughput: the same problems and knobs, searched with different batching.

    python benchmarks/search_throughput.py                      # default model, 16 problems
    python benchmarks/search_throughput.py --problems train.jsonl --limit 32 --batch-trees 1,4,16

Modes:
  naive       one tree at a time, every sampled step and every self-evaluation its
              own backend call, every prefix encoded whole (the paper code's way)
  batch=B     B trees in flight; each round is one expand and one self_evaluate call

Prints wall time, generated tokens, tokens/s and backend calls per mode to stdout.
Trees differ between modes (batch composition changes the sampled tokens), so
compare throughput, not accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcts_pref.records import read_records  # noqa: E402
from mcts_pref.search import Config, search_trees  # noqa: E402


def easy_problems(n: int) -> list[dict]:
    """``n`` three-term additions, written out so the benchmark needs no data files."""
    out = []
    for i in range(n):
        a, b, c = 3 + i % 9, 4 + (2 * i) % 7, 2 + i % 5
        out.append({"id": f"add{i}", "question": f"What is {a} + {b} + {c}?", "answer": str(a + b + c), "task": "math"})
    return out


class Unbatched:
    """Wraps a backend so that every step and every self-evaluation is its own call (the naive baseline)."""

    def __init__(self, backend):
        self.inner, self.policy_id = backend, backend.policy_id
        self.calls = 0

    def format_prompt(self, problem):
        return self.inner.format_prompt(problem)

    def _full_prefill(self, on: bool):
        """The naive way re-encodes every prefix whole: no reuse of the exemplar header's KV."""
        if on:
            self._saved = (self.inner.prompt_header, self.inner.judge_header)
            self.inner.prompt_header = self.inner.judge_header = None
        else:
            self.inner.prompt_header, self.inner.judge_header = self._saved

    def expand(self, prefixes, n, *, seed=None, **kw):
        self._full_prefill(True)
        try:
            return self._expand(prefixes, n, seed=seed, **kw)
        finally:
            self._full_prefill(False)

    def _expand(self, prefixes, n, *, seed=None, **kw):
        out = []
        for i, (prefix, k) in enumerate(zip(prefixes, n)):
            steps = []
            for j in range(k):
                self.calls += 1
                s = None if seed is None else seed * 1_009 + i * 101 + j
                steps += self.inner.expand([prefix], [1], seed=s, **kw)[0]
            out.append(steps)
        return out

    def self_evaluate(self, questions, partials):
        self.calls += len(partials)
        self._full_prefill(True)
        try:
            return [self.inner.self_evaluate([q], [p])[0] for q, p in zip(questions, partials)]
        finally:
            self._full_prefill(False)


class Counting:
    """Counts the backend calls the driver makes."""

    def __init__(self, backend):
        self.inner, self.policy_id = backend, backend.policy_id
        self.calls = 0

    def format_prompt(self, problem):
        return self.inner.format_prompt(problem)

    def expand(self, *a, **kw):
        self.calls += 1
        return self.inner.expand(*a, **kw)

    def self_evaluate(self, *a, **kw):
        self.calls += 1
        return self.inner.self_evaluate(*a, **kw)


def run(backend, problems: list[dict], cfg: Config) -> dict:
    start = time.perf_counter()
    recs = list(search_trees(backend, problems, cfg))
    wall = time.perf_counter() - start
    tokens = sum(r["stats"]["tokens"] for r in recs)
    return {
        "wall_s": wall, "tokens": tokens, "tok_per_s": tokens / wall, "calls": backend.calls,
        "correct": sum(r["correct"] for r in recs), "trees": len(recs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--problems", help="problem records JSONL (default: built-in additions)")
    ap.add_argument("--limit", type=int, default=16, help="problems to search per mode")
    ap.add_argument("--batch-trees", default="1,16", help="comma-separated batch sizes to time")
    ap.add_argument("--no-naive", action="store_true", help="skip the unbatched baseline (slowest)")
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--children", type=int, default=2)
    ap.add_argument("--root-children", type=int, default=3)
    ap.add_argument("--depth-limit", type=int, default=3)
    ap.add_argument("--max-depth", type=int, default=4)
    ap.add_argument("--max-step-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from mcts_pref.backends import load_backend

    problems = read_records(args.problems, "problem")[: args.limit] if args.problems else easy_problems(args.limit)
    backend = load_backend(args.model, device=args.device)
    knobs = dict(
        iterations=args.iterations, children=args.children, root_children=args.root_children,
        depth_limit=args.depth_limit, max_depth=args.max_depth, max_step_tokens=args.max_step_tokens, seed=args.seed,
    )
    modes = [] if args.no_naive else [("naive", Unbatched(backend), 1)]
    modes += [(f"batch={b}", Counting(backend), b) for b in map(int, args.batch_trees.split(","))]
    print(f"model={backend.policy_id} problems={len(problems)} {knobs}")
    print(f"{'mode':>10} {'wall_s':>8} {'tokens':>8} {'tok/s':>8} {'calls':>7} {'correct':>8}")
    for name, wrapped, batch in modes:
        r = run(wrapped, problems, Config(batch_trees=batch, **knobs))
        print(f"{name:>10} {r['wall_s']:8.1f} {r['tokens']:8d} {r['tok_per_s']:8.1f} {r['calls']:7d} {r['correct']:>4}/{r['trees']}",
              flush=True)


if __name__ == "__main__":
    main()
