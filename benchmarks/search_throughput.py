"""Search throughput against the decode limit, with the prefix KV cache on and off, in one run.

    python benchmarks/search_throughput.py                                  # paper-default value terms
    python benchmarks/search_throughput.py --value outcome,rollout --rollouts 4
    python benchmarks/search_throughput.py --problems train.jsonl --limit 32

On the same problems and knobs, one process measures:
  search        --batch-trees trees in flight (default 16), prefix cache on (--kv-cache-mb)
  search-nokv   the same with the cache off (only the exemplar and judgement headers reused)
  raw           batched decode of as many tokens at the search's mean rows per decode pass:
                nothing but forward passes and sampling (the ceiling; rows restart from their
                prompt every max-step-tokens, or rollout-max-tokens with rollouts: contexts as
                long as the search's; prompt prefill not timed)
  naive         one tree at a time, every sampled step and every self-evaluation its own call,
                every prefix encoded whole, no cache (the paper code's way; on --naive-limit problems)

Tables go to stderr; the last line of stdout is JSON: search_tok_s, raw_tok_s, ratio
(search / raw), naive_tok_s, prefill_share (share of search time in prefill passes), the same
for the cache off, the cache's hit rate and peak size, and the peak RSS. The machine may be
shared: compare ratios within one run. Trees differ between search and naive (batch
composition changes the sampled tokens), so compare throughput, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcts_pref.records import read_records  # noqa: E402
from mcts_pref.mcts import Config, search_trees  # noqa: E402


def easy_problems(n: int) -> list[dict]:
    """``n`` three-term additions, written out so the benchmark needs no data files."""
    out = []
    for i in range(n):
        a, b, c = 3 + i % 9, 4 + (2 * i) % 7, 2 + i % 5
        out.append({"id": f"add{i}", "question": f"What is {a} + {b} + {c}?", "answer": str(a + b + c), "task": "math"})
    return out


class Unbatched:
    """Wraps a backend so that every step and every self-evaluation is its own call (the naive baseline)."""

    samples_without_replacement = False  # one prefix per call: the driver merges repeats and redraws

    def __init__(self, backend):
        self.inner, self.policy_id, self.stats = backend, backend.policy_id, backend.stats
        self.calls = 0

    def format_prompt(self, problem):
        return self.inner.format_prompt(problem)

    def _full_prefill(self, on: bool):
        """The naive way re-encodes every prefix whole: no header KV, no prefix cache."""
        if on:
            self._saved = (self.inner.prompt_header, self.inner.judge_header, self.inner.kv)
            self.inner.prompt_header = self.inner.judge_header = self.inner.kv = None
        else:
            self.inner.prompt_header, self.inner.judge_header, self.inner.kv = self._saved

    def expand(self, prefixes, n, *, seed=None, **kw):
        self._full_prefill(True)
        try:
            return self._expand(prefixes, n, seed=seed, **kw)
        finally:
            self._full_prefill(False)

    def _expand(self, prefixes, n, *, seed=None, tasks=None, **kw):
        out = []
        for i, (prefix, k) in enumerate(zip(prefixes, n)):
            steps = []
            for j in range(k):
                self.calls += 1
                s = None if seed is None else seed * 1_009 + i * 101 + j
                steps += self.inner.expand([prefix], [1], seed=s, tasks=_one(tasks, i), **kw)[0]
            out.append(steps)
        return out

    def complete(self, prefixes, n, *, seed=None, tasks=None, **kw):
        self._full_prefill(True)
        try:
            out = []
            for i, (prefix, k) in enumerate(zip(prefixes, n)):
                self.calls += k
                s = None if seed is None else seed * 1_009 + i
                out.append(self.inner.complete([prefix], [k], seed=s, tasks=_one(tasks, i), **kw)[0])
            return out
        finally:
            self._full_prefill(False)

    def self_evaluate(self, questions, partials):
        self.calls += len(partials)
        self._full_prefill(True)
        try:
            return [self.inner.self_evaluate([q], [p])[0] for q, p in zip(questions, partials)]
        finally:
            self._full_prefill(False)

    def release(self, prompt):
        self.inner.release(prompt)


def _one(tasks, i):
    """The per-prefix ``tasks`` list of a one-prefix call."""
    return None if tasks is None else [tasks[i]]


class Counting:
    """Counts the backend calls the driver makes."""

    def __init__(self, backend):
        self.inner, self.policy_id, self.stats = backend, backend.policy_id, backend.stats
        self.calls = 0
        # As a real search runs: the hf backend's staged expansions without replacement. Before
        # 2026-12-08 a getattr read False here, so earlier "search" numbers measured merge-and-redraw.
        self.samples_without_replacement = backend.samples_without_replacement

    def format_prompt(self, problem):
        return self.inner.format_prompt(problem)

    def expand(self, *a, **kw):
        self.calls += 1
        return self.inner.expand(*a, **kw)

    def self_evaluate(self, *a, **kw):
        self.calls += 1
        return self.inner.self_evaluate(*a, **kw)

    def complete(self, *a, **kw):
        self.calls += 1
        return self.inner.complete(*a, **kw)

    def release(self, prompt):
        self.inner.release(prompt)


class Timed:
    """Times the backend's forward passes: prefill (a call's first pass) versus decode (one token per row)."""

    def __init__(self, backend):
        self.backend, self.inner_forward = backend, backend._forward
        self.prefill_s = self.decode_s = 0.0
        self.decode_passes = self.decode_rows = 0
        backend._forward = self

    def __call__(self, **kw):
        start = time.perf_counter()
        prefill = "logits_to_keep" in kw  # decode passes feed one new token per row and keep all logits
        rows = kw["input_ids"].shape[0]
        res = self.inner_forward(**kw)
        if prefill:
            self.prefill_s += time.perf_counter() - start
        else:
            self.decode_s += time.perf_counter() - start
            self.decode_passes += 1
            self.decode_rows += rows
        return res

    def restore(self):
        self.backend._forward = self.inner_forward


def run(backend, problems: list[dict], cfg: Config) -> dict:
    start = time.perf_counter()
    recs = list(search_trees(backend, problems, cfg))
    wall = time.perf_counter() - start
    tokens = sum(r["stats"]["tokens"] for r in recs)
    return {
        "wall_s": wall, "tokens": tokens, "tok_per_s": tokens / wall, "calls": backend.calls,
        "correct": sum(r["correct"] for r in recs), "trees": len(recs),
    }


def search_mode(backend, problems, cfg: Config, kv) -> dict:
    """One batched search, timed, with the backend's prefix cache set to ``kv`` (None: off)."""
    saved, backend.kv = backend.kv, kv
    timer = Timed(backend)
    try:
        r = run(Counting(backend), problems, cfg)
    finally:
        timer.restore()
        backend.kv = saved
    r["prefill_share"] = timer.prefill_s / r["wall_s"]
    r["decode_s"] = timer.decode_s
    r["mean_rows"] = timer.decode_rows / max(1, timer.decode_passes)
    return r


def raw_decode(backend, prompts: list[str], rows: int, tokens: int, run: int, seed: int) -> dict:
    """Decode ``tokens`` tokens in ``rows`` rows after the prompts: forward passes and sampling only.

    Rows restart from their prompt every ``run`` tokens (the longest a search row decodes), so
    attention spans as long a context as in the search; the prompts' prefill is not timed.
    """
    import torch

    rows = max(1, rows)
    steps = max(1, -(-tokens // rows))
    texts = [prompts[i % len(prompts)] for i in range(rows)]
    gen = torch.Generator(device=backend.device).manual_seed(seed)
    saved, backend.kv = backend.kv, None
    wall = 0.0
    try:
        with torch.inference_mode():
            done = 0
            while done < steps:
                last, cache, mask = backend.prefill(texts, backend.prompt_header)
                pos = mask.sum(-1)
                start = time.perf_counter()
                logits = last
                for _ in range(min(run, steps - done)):
                    chosen, _, _ = backend._pick(logits, 0.7, 0.95, gen)
                    mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
                    res = backend.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=pos[:, None],
                                        use_cache=True, **{backend._cache_kw: cache})
                    cache = getattr(res, "cache", None) or res.past_key_values
                    logits, pos = res.logits[:, -1, :], pos + 1
                    done += 1
                wall += time.perf_counter() - start
    finally:
        backend.kv = saved
    return {"wall_s": wall, "tokens": rows * steps, "tok_per_s": rows * steps / wall, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--problems", help="problem records JSONL (default: built-in additions)")
    ap.add_argument("--limit", type=int, default=16, help="problems to search")
    ap.add_argument("--batch-trees", type=int, default=16, help="trees in flight")
    ap.add_argument("--batch-rows", type=int, default=64)
    ap.add_argument("--kv-cache-mb", type=int, default=2048)
    ap.add_argument("--naive-limit", type=int, default=2, help="problems the naive baseline searches (0: skip)")
    ap.add_argument("--no-kv-off", action="store_true", help="skip the cache-off search")
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--children", type=int, default=2)
    ap.add_argument("--root-children", type=int, default=3)
    ap.add_argument("--depth-limit", type=int, default=3)
    ap.add_argument("--max-depth", type=int, default=4)
    ap.add_argument("--max-step-tokens", type=int, default=32)
    ap.add_argument("--value", default=Config.value)
    ap.add_argument("--rollouts", type=int, default=Config.rollouts)
    ap.add_argument("--rollout-max-tokens", type=int, default=Config.rollout_max_tokens)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from mcts_pref.backends import load_backend
    from mcts_pref.policy_spec import PolicySpec

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    problems = read_records(args.problems, "problem")[: args.limit] if args.problems else easy_problems(args.limit)
    backend = load_backend(PolicySpec(model=args.model, device=args.device, batch_rows=args.batch_rows,
                                       kv_cache_mb=args.kv_cache_mb))
    knobs = dict(
        iterations=args.iterations, children=args.children, root_children=args.root_children,
        depth_limit=args.depth_limit, max_depth=args.max_depth, max_step_tokens=args.max_step_tokens, seed=args.seed,
        value=args.value, rollouts=args.rollouts, rollout_max_tokens=args.rollout_max_tokens,
    )
    log(f"model={backend.policy_id} problems={len(problems)} batch_trees={args.batch_trees} {knobs}")
    log(f"{'mode':>12} {'wall_s':>8} {'tokens':>8} {'tok/s':>8} {'prefill':>8} {'rows':>6} {'calls':>7} {'correct':>8}")

    def show(name: str, r: dict) -> None:
        log(f"{name:>12} {r['wall_s']:8.1f} {r['tokens']:8d} {r['tok_per_s']:8.1f} {r.get('prefill_share', 0):8.0%} "
            f"{r.get('mean_rows', r.get('rows', 1)):6.1f} {r.get('calls', 0):7d} {r.get('correct', 0):>4}/{r.get('trees', 0)}")

    cfg = Config(batch_trees=args.batch_trees, **knobs)
    kv = backend.kv
    on = search_mode(backend, problems, cfg, kv)
    show("search", on)
    off = None if args.no_kv_off else search_mode(backend, problems, cfg, None)
    if off:
        show("search-nokv", off)
    longest = max(args.max_step_tokens, args.rollout_max_tokens if "rollout" in args.value else 0)
    raw = raw_decode(backend, [backend.format_prompt(p) for p in problems], round(on["mean_rows"]), on["tokens"],
                     longest, args.seed)
    show("raw", raw)
    naive = None
    if args.naive_limit > 0:
        naive = run(Unbatched(backend), problems[: args.naive_limit], Config(batch_trees=1, **knobs))
        show("naive", naive)
    out = {
        "search_tok_s": round(on["tok_per_s"], 2), "raw_tok_s": round(raw["tok_per_s"], 2),
        "ratio": round(on["tok_per_s"] / raw["tok_per_s"], 3),
        "naive_tok_s": round(naive["tok_per_s"], 2) if naive else None,
        "prefill_share": round(on["prefill_share"], 3),
        "search_tok_s_kv_off": round(off["tok_per_s"], 2) if off else None,
        "ratio_kv_off": round(off["tok_per_s"] / raw["tok_per_s"], 3) if off else None,
        "prefill_share_kv_off": round(off["prefill_share"], 3) if off else None,
        "kv_hit_rate": round(kv.hit_rate(), 3) if kv else None,
        "kv_peak_mb": round(kv.peak_bytes / 2**20, 1) if kv else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rows": raw["rows"], "tokens": on["tokens"], "trees": on["trees"], "value": args.value,
        "rollouts": args.rollouts if "rollout" in args.value else None,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
