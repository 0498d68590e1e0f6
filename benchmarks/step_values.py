"""Which node values make step-level pairs carry step information? (issue: step values)

Runs the real `search` on the same chain_sum problems once per value setting,
extracts pairs, and measures what the pairs are made of:

- clean pairs: the shared prefix and the chosen side hold no false step, and
  the rejected side holds one (the step checker with the chain_sum
  running-total rule decides; with the checker among the values this is partly
  circular, which is why the outcome-only and rollout rows matter);
- pairs per tree, distinct children per expansion, tokens per tree
  (expansion and rollout, counted apart), committed-correct trees;
- the instance-level baseline: whole-solution pairs from k samples per
  problem, clean under the same definition, before and after the same
  checker filter.

    python benchmarks/step_values.py --work runs/step_values --n 64 --limit 32
    python benchmarks/step_values.py --work runs/step_values --n 64 --only paper,outcome

Every stage writes its --out file under --work, so a killed run resumes.
The last line printed is JSON with one row per setting.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mcts_pref.check import check_steps
from mcts_pref.steps import split_steps

# The round-1 setting of experiments/chain_sum (3 one-digit terms).
TASK = ["gym:chain_sum", "--config", "min_terms=3", "--config", "max_terms=3", "--config", "min_digits=1",
        "--config", "max_digits=1"]
SEARCH = ["--iterations", "3", "--children", "3", "--root-children", "5", "--depth-limit", "3", "--max-depth", "6",
          "--max-step-tokens", "24", "--temperature", "0.7", "--top-p", "0.95", "--seed", "1"]
SETTINGS = {  # in the order they run
    "paper": ["--value", "self-eval=1,outcome=1", "--resample-duplicates", "0"],
    "outcome+checker-gate": ["--value", "outcome,checker-gate"],
    "outcome": ["--value", "outcome"],
    "paper+distinct": ["--value", "self-eval=1,outcome=1", "--resample-duplicates", "1"],
    "outcome+rollout4": ["--value", "outcome,rollout", "--rollouts", "4"],
    "outcome+checker-gate+rollout4": ["--value", "outcome,checker-gate,rollout", "--rollouts", "4"],
    "outcome+checker": ["--value", "outcome,checker"],
}


def run(args: list[str], out: Path) -> None:
    if out.exists() and out.with_suffix(".done").exists():
        return
    print("$ mcts-pref " + " ".join(args), file=sys.stderr)
    subprocess.run([sys.executable, "-m", "mcts_pref", *args, "--out", str(out)], check=True)
    out.with_suffix(".done").write_text("")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_clean(problem: dict, prefix: list[str], chosen: str, rejected: str) -> bool:
    """Good prefix, good chosen side, bad rejected side, by the step checker."""
    chosen_v = check_steps(prefix + split_steps(chosen), problem)
    rejected_v = check_steps(prefix + split_steps(rejected), problem)[len(prefix):]
    return "bad" not in chosen_v and "bad" in rejected_v


def chosen_is_false(problem: dict, prefix: list[str], chosen: str) -> bool:
    return "bad" in check_steps(prefix + split_steps(chosen), problem)


def pair_stats(pairs: list[dict], problems: dict, prompts: dict) -> dict:
    clean = kept = kept_clean = 0
    for p in pairs:
        problem = problems[p["problem_id"]]
        prefix = split_steps(p["prompt"][len(prompts[p["problem_id"]]):])
        c = is_clean(problem, prefix, p["chosen"], p["rejected"])
        clean += c
        if not chosen_is_false(problem, prefix, p["chosen"]) and not any(
                v == "bad" for v in check_steps(prefix, problem)):
            kept += 1
            kept_clean += c
    n = len(pairs)
    return {"pairs": n, "clean": clean / n if n else None, "checked_pairs": kept,
            "checked_clean": kept_clean / kept if kept else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/step_values")
    ap.add_argument("--n", type=int, default=64, help="problems prepared")
    ap.add_argument("--limit", type=int, default=None, help="search only the first N problems (= trees per setting)")
    ap.add_argument("--only", default=None, help="comma-separated setting names (default: all)")
    ap.add_argument("--baseline-k", type=int, default=8, help="samples per problem for the instance-level pairs")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    problems_path = work / "problems.jsonl"
    if not problems_path.exists():
        subprocess.run([sys.executable, "-m", "mcts_pref", "prepare", *TASK, "--size", str(args.n), "--seed", "0",
                        "--out", str(problems_path)], check=True)
    problems = {str(p["id"]): p for p in jsonl(problems_path)[:args.limit]}
    names = args.only.split(",") if args.only else list(SETTINGS)
    rows = []
    for name in names:
        trees_path, pairs_path = work / f"trees-{name}.jsonl", work / f"pairs-{name}.jsonl"
        limit = ["--limit", str(args.limit)] if args.limit else []
        run(["search", str(problems_path), *SEARCH, *SETTINGS[name], *limit], trees_path)
        run(["extract-pairs", str(trees_path)], pairs_path)
        trees = jsonl(trees_path)
        prompts = {t["problem_id"]: t["prompt"] for t in trees}
        st = {k: sum(t["stats"].get(k, 0) for t in trees)
              for k in ("expand_tokens", "rollout_tokens", "expansions", "children", "duplicates")}
        row = {"setting": name, "trees": len(trees), "correct": sum(t["correct"] for t in trees),
               "children_per_expansion": st["children"] / max(1, st["expansions"]),
               "duplicate_draws": st["duplicates"],
               "expand_tokens_per_tree": st["expand_tokens"] / len(trees),
               "rollout_tokens_per_tree": st["rollout_tokens"] / len(trees),
               **pair_stats(jsonl(pairs_path), problems, prompts)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    # Instance-level baseline: k samples per problem, correct vs wrong whole solutions.
    base = work / "baseline"
    base.mkdir(exist_ok=True)
    run(["sample", str(problems_path), *(["--limit", str(args.limit)] if args.limit else []), "-k", str(args.baseline_k), "--temperature", "0.7", "--top-p", "0.95",
         "--max-tokens", "96", "--seed", "1"], base / "samples.jsonl")
    run(["evaluate", str(base / "samples.jsonl")], base / "scored.jsonl")
    run(["instance-pairs", str(base / "scored.jsonl")], base / "pairs.jsonl")
    samples = jsonl(base / "samples.jsonl")
    prompts = {s["problem_id"]: s["prompt"] for s in samples}
    row = {"setting": f"instance (k={args.baseline_k})", "trees": len(problems),
           "expand_tokens_per_tree": sum(s["n_tokens"] for s in samples) / len(problems),
           **pair_stats(jsonl(base / "pairs.jsonl"), problems, prompts)}
    rows.append(row)

    print(f"{'setting':32} {'pairs':>5} {'clean':>6} {'chk pairs':>9} {'chk clean':>9} {'kids/exp':>8} "
          f"{'exp tok/tree':>12} {'roll tok/tree':>13} {'correct':>7}", file=sys.stderr)
    for r in rows:
        fmt = lambda x: "-" if x is None else f"{x:.0%}"
        print(f"{r['setting']:32} {r['pairs']:5d} {fmt(r['clean']):>6} {r['checked_pairs']:9d} "
              f"{fmt(r['checked_clean']):>9} {r.get('children_per_expansion', 0):8.2f} "
              f"{r['expand_tokens_per_tree']:12.0f} {r.get('rollout_tokens_per_tree', 0):13.0f} "
              f"{r.get('correct', '-')!s:>7}", file=sys.stderr)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
