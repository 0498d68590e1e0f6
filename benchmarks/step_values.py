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
  checker filter;
- with ``--mc-rollouts N``, pair quality without the step checker: each
  side's success probability under the search's own policy, estimated from N
  whole-solution rollouts (temperature 0.7, top-p 0.95, as the search's
  rollouts) from ``prompt + side`` and scored by the answer checker alone. A
  side the policy ended (an answer line or EOS; ``*_terminal`` in the pair)
  needs no rollout: its probability is its own answer's 0 or 1. A pair is
  right when the chosen side's estimate is higher, a tie when equal, else
  wrong; the share right gets a 95% Wilson interval. Rollouts are cached per
  side in ``mc-<setting>-k<N>.jsonl``, so a killed run resumes. The instance
  baseline gets no such row: both its sides are finished solutions, one right
  and one wrong by construction.

    python benchmarks/step_values.py --work runs/step_values --n 64 --limit 32
    python benchmarks/step_values.py --work runs/step_values --n 64 --only paper,outcome
    # the tree_vs_alternatives setting: task exemplars, max depth 8, seed 0's training draw
    python benchmarks/step_values.py --work runs/step_values_tva --n 64 --shots-from task --max-depth 8 \
        --only paper,outcome,outcome+checker-gate --mc-rollouts 32 --baseline-k 0

Problems are ``prepare``'s draw with generator seed 0, which is the loop's
(and ``experiments/tree_vs_alternatives``') training draw of seed 0, never a
test problem there; ``--problems FILE`` takes another problem file instead.
Every stage writes its --out file under --work, so a killed run resumes; the
prompt and search settings are written to ``--work``/config.json and a rerun
with other ones stops (use another --work).
The last line printed is JSON with one row per setting.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

from mcts_pref.check import check_steps, has_false_step
from mcts_pref.mcts import default_outcome
from mcts_pref.stats import wilson_interval
from mcts_pref.steps import split_steps
from mcts_pref.tasks import resolve_task

# The round-1 setting of experiments/chain_sum (3 one-digit terms).
TASK = ["gym:chain_sum", "--config", "min_terms=3", "--config", "max_terms=3", "--config", "min_digits=1",
        "--config", "max_digits=1"]
SEARCH = ["--iterations", "3", "--children", "3", "--root-children", "5", "--depth-limit", "3",
          "--max-step-tokens", "24", "--temperature", "0.7", "--top-p", "0.95", "--seed", "1"]
SHOTS_SEED = 424242  # the loop's SHOTS_FROM=task exemplars (examples/mcts_dpo_loop.sh)
# Monte Carlo pair quality: sampled as the search samples its rollouts (mcts.Config's defaults).
MC_TEMPERATURE, MC_TOP_P, MC_MAX_TOKENS, MC_SEED = 0.7, 0.95, 128, 7
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


def prefix_steps(pair: dict, prompts: dict) -> list[str]:
    """The committed steps before the pair's two sides (its prompt past the tree's prompt)."""
    return split_steps(pair["prompt"][len(prompts[pair["problem_id"]]):])


def is_clean(problem: dict, prefix: list[str], chosen: str, rejected: str) -> bool:
    """Good prefix, good chosen side, bad rejected side, by the step checker."""
    chosen_v = check_steps(prefix + split_steps(chosen), problem)
    rejected_v = check_steps(prefix + split_steps(rejected), problem)[len(prefix):]
    return "bad" not in chosen_v and "bad" in rejected_v


def chosen_is_false(problem: dict, prefix: list[str], chosen: str) -> bool:
    return has_false_step(prefix + split_steps(chosen), problem)


def kept_by_checker(problem: dict, prefix: list[str], chosen: str) -> bool:
    """What ``extract-pairs --checked`` keeps: no false step in the prefix or the chosen side."""
    return not chosen_is_false(problem, prefix, chosen) and not any(v == "bad" for v in check_steps(prefix, problem))


def pair_stats(pairs: list[dict], problems: dict, prompts: dict) -> dict:
    clean = kept = kept_clean = 0
    for p in pairs:
        problem = problems[p["problem_id"]]
        prefix = prefix_steps(p, prompts)
        c = is_clean(problem, prefix, p["chosen"], p["rejected"])
        clean += c
        if kept_by_checker(problem, prefix, p["chosen"]):
            kept += 1
            kept_clean += c
    n = len(pairs)
    return {"pairs": n, "clean": clean / n if n else None, "checked_pairs": kept,
            "checked_clean": kept_clean / kept if kept else None}


# ---------------------------------------------------------------- Monte Carlo pair quality


def pair_verdict(chosen: tuple[int, int], rejected: tuple[int, int]) -> str:
    """``right`` when the chosen side's success estimate beats the rejected side's, ``tie`` when equal, else ``wrong``.

    Each side is ``(successes, tries)`` with tries >= 1: N rollouts, or ``(0 or 1, 1)`` for a finished side.
    """
    c, r = Fraction(*chosen), Fraction(*rejected)
    return "right" if c > r else "tie" if c == r else "wrong"


def mc_summary(verdicts: list[str], gaps: list[float]) -> dict:
    """Counts of right / tie / wrong pairs, the share right with its 95% Wilson CI, and the mean estimate gap."""
    n, right = len(verdicts), verdicts.count("right")
    return {"mc_pairs": n, "mc_right": right, "mc_ties": verdicts.count("tie"), "mc_wrong": verdicts.count("wrong"),
            "mc_right_share": right / n if n else None, "mc_right_ci95": wilson_interval(right, n),
            "mc_mean_gap": sum(gaps) / n if n else None}


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def mc_pair_quality(backend, pairs: list[dict], problems: dict, prompts: dict, rollouts: int,
                    cache: Path | None = None, batch: int = 8, seed: int = MC_SEED,
                    max_tokens: int = MC_MAX_TOKENS) -> tuple[list[str], list[float], int]:
    """Each pair's verdict by Monte Carlo rollouts of ``backend``, the chosen - rejected estimate gaps, and tokens.

    ``prompts`` maps problem id to the tree's prompt; the backend must format the
    same prompt (same model, exemplars and format), which is checked. Up to
    ``batch`` unfinished sides go to one ``backend.complete`` call with
    ``rollouts`` rows each; a side already in ``cache`` (JSONL, one line per
    side) is not rolled out again, and each call's sides are appended to it.
    """
    sides: dict[str, tuple[str, str, str]] = {}  # key -> (prefix, solution so far, problem id), unfinished sides
    estimate: dict[str, tuple[int, int]] = {}
    pair_keys = []
    for p in pairs:
        pid = p["problem_id"]
        problem, head = problems[pid], p["prompt"][len(prompts[pid]):]
        keys = []
        for side in ("chosen", "rejected"):
            prefix, solution = p["prompt"] + p[side], head + p[side]
            key = _key(prefix)
            if p.get(f"{side}_terminal", False):  # the policy ended here: no rollout can change the answer
                estimate[key] = (int(default_outcome(solution, problem)), 1)
            else:
                sides[key] = (prefix, solution, pid)
            keys.append(key)
        pair_keys.append(keys)
    tokens = 0
    if cache is not None and cache.exists():
        for line in cache.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec["rollouts"] == rollouts and rec["key"] in sides:
                    estimate[rec["key"]] = (rec["successes"], rec["rollouts"])
                    tokens += rec["tokens"]
    todo = sorted((k for k in sides if k not in estimate), key=lambda k: (sides[k][2], k))  # a problem's sides together
    for call, lo in enumerate(range(0, len(todo), batch)):
        keys = todo[lo:lo + batch]
        pids = sorted({sides[k][2] for k in keys})
        for pid in pids:  # the same prompt as the trees: same policy, exemplars and format (and, on hf, the prefix cache)
            if backend.format_prompt(problems[pid]) != prompts[pid]:
                raise SystemExit(f"problem {pid}: the rollout backend's prompt differs from the trees'; "
                                 "pass the search's --model and exemplars")
        results = backend.complete([sides[k][0] for k in keys], [rollouts] * len(keys), temperature=MC_TEMPERATURE,
                                   top_p=MC_TOP_P, max_tokens=max_tokens, seed=seed + call,
                                   tasks=[resolve_task(problems[sides[k][2]].get("task")) for k in keys])
        lines = []
        for k, completions in zip(keys, results):
            _, solution, pid = sides[k]
            wins = sum(default_outcome(solution + c.text, problems[pid]) for c in completions)
            used = sum(c.n_tokens for c in completions)
            estimate[k] = (wins, len(completions))
            tokens += used
            lines.append(json.dumps({"key": k, "problem_id": pid, "successes": wins, "rollouts": len(completions),
                                     "tokens": used}) + "\n")
        if cache is not None:
            with cache.open("a") as f:
                f.write("".join(lines))
        for pid in pids:
            backend.release(prompts[pid])
        print(f"mc rollouts: {min(lo + batch, len(todo))}/{len(todo)} sides", file=sys.stderr)
    verdicts = [pair_verdict(estimate[c], estimate[r]) for c, r in pair_keys]
    gaps = [float(Fraction(*estimate[c]) - Fraction(*estimate[r])) for c, r in pair_keys]
    return verdicts, gaps, tokens


def mc_row(backend, pairs: list[dict], problems: dict, prompts: dict, rollouts: int, cache: Path | None,
           **kw) -> dict:
    """The Monte Carlo columns of a setting: all pairs, and the ones ``extract-pairs --checked`` keeps.

    ``kw`` goes to :func:`mc_pair_quality` (``batch``, ``seed``, ``max_tokens``).
    """
    verdicts, gaps, tokens = mc_pair_quality(backend, pairs, problems, prompts, rollouts, cache, **kw)
    kept = [kept_by_checker(problems[p["problem_id"]], prefix_steps(p, prompts), p["chosen"]) for p in pairs]
    checked = mc_summary([v for v, k in zip(verdicts, kept) if k], [g for g, k in zip(gaps, kept) if k])
    return {"mc_rollouts": rollouts, "mc_tokens": tokens, **mc_summary(verdicts, gaps),
            **{f"checked_{k}": v for k, v in checked.items()}}


def _setup(args, work: Path) -> tuple[Path, list[str]]:
    """The problem file and the prompt arguments; records them in work/config.json and refuses a different one."""
    shots = ["--shots", str(args.shots)]
    if args.shots_from == "task":
        shots_path = work / "shots.jsonl"
        if not shots_path.exists():
            subprocess.run([sys.executable, "-m", "mcts_pref", "prepare", *TASK, "--size", str(args.shots), "--seed",
                            str(SHOTS_SEED), "--out", str(shots_path)], check=True)
        shots += ["--shots-from", str(shots_path)]
    elif args.shots_from:
        shots += ["--shots-from", args.shots_from]
    config = {"model": args.model, "shots": shots, "max_depth": args.max_depth, "problems": args.problems,
              "n": None if args.problems else args.n, "limit": args.limit}
    config_path = work / "config.json"
    if config_path.exists() and json.loads(config_path.read_text()) != config:
        raise SystemExit(f"{work} holds a run with other settings ({config_path}): use another --work")
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    if args.problems:
        return Path(args.problems), shots
    problems_path = work / "problems.jsonl"
    if not problems_path.exists():
        subprocess.run([sys.executable, "-m", "mcts_pref", "prepare", *TASK, "--size", str(args.n), "--seed", "0",
                        "--out", str(problems_path)], check=True)
    return problems_path, shots


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/step_values")
    ap.add_argument("--n", type=int, default=64, help="problems prepared")
    ap.add_argument("--limit", type=int, default=None, help="search only the first N problems (= trees per setting)")
    ap.add_argument("--only", default=None, help="comma-separated setting names (default: all)")
    ap.add_argument("--baseline-k", type=int, default=8, help="samples per problem for the instance-level pairs "
                                                              "(0: no instance baseline)")
    ap.add_argument("--problems", default=None, help="a problem file to search instead of prepare's seed-0 draw")
    ap.add_argument("--model", default="default", help="the policy searched (and rolled out with --mc-rollouts)")
    ap.add_argument("--shots", type=int, default=2, help="exemplars before each question")
    ap.add_argument("--shots-from", default=None,
                    help="'task': the loop's SHOTS_FROM=task exemplars (chain_sum, generator seed 424242); "
                         "or a problem file with rationales (default: search's built-in exemplars)")
    ap.add_argument("--max-depth", type=int, default=6, help="search --max-depth (the experiments use 8)")
    ap.add_argument("--mc-rollouts", type=int, default=0,
                    help="N: rollouts per unfinished pair side for the checker-free pair quality (0: off)")
    ap.add_argument("--mc-batch", type=int, default=8, help="pair sides per rollout call (N rows each)")
    args = ap.parse_args(argv)
    unknown = [n for n in (args.only.split(",") if args.only else []) if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"--only: unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    problems_path, shots = _setup(args, work)
    problems = {str(p["id"]): p for p in jsonl(problems_path)[:args.limit]}
    names = args.only.split(",") if args.only else list(SETTINGS)
    policy = ["--model", args.model, *shots]
    backend = None
    rows = []
    for name in names:
        trees_path, pairs_path = work / f"trees-{name}.jsonl", work / f"pairs-{name}.jsonl"
        limit = ["--limit", str(args.limit)] if args.limit else []
        run(["search", str(problems_path), *policy, *SEARCH, "--max-depth", str(args.max_depth), *SETTINGS[name],
             *limit], trees_path)
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
        if args.mc_rollouts > 0:
            pairs = jsonl(pairs_path)
            if backend is None and pairs:
                from mcts_pref.backends import load_backend  # lazy: torch and the model only with --mc-rollouts
                from mcts_pref.policy_spec import PolicySpec

                shots_from = shots[shots.index("--shots-from") + 1] if "--shots-from" in shots else None
                backend = load_backend(PolicySpec(model=args.model, shots=args.shots, shots_from=shots_from))
            row.update(mc_row(backend, pairs, problems, prompts, args.mc_rollouts,
                              work / f"mc-{name}-k{args.mc_rollouts}.jsonl", batch=args.mc_batch))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    if args.baseline_k > 0:
        # Instance-level baseline: k samples per problem, correct vs wrong whole solutions.
        base = work / "baseline"
        base.mkdir(exist_ok=True)
        run(["sample", str(problems_path), *policy, *(["--limit", str(args.limit)] if args.limit else []),
             "-k", str(args.baseline_k), "--temperature", "0.7", "--top-p", "0.95", "--max-tokens", "96", "--seed", "1"],
            base / "samples.jsonl")
        run(["evaluate", str(base / "samples.jsonl")], base / "scored.jsonl")
        run(["instance-pairs", str(base / "scored.jsonl")], base / "pairs.jsonl")
        samples = jsonl(base / "samples.jsonl")
        prompts = {s["problem_id"]: s["prompt"] for s in samples}
        row = {"setting": f"instance (k={args.baseline_k})", "trees": len(problems),
               "expand_tokens_per_tree": sum(s["n_tokens"] for s in samples) / len(problems),
               **pair_stats(jsonl(base / "pairs.jsonl"), problems, prompts)}
        rows.append(row)

    fmt = lambda x: "-" if x is None else f"{x:.0%}"
    print(f"{'setting':32} {'pairs':>5} {'clean':>6} {'chk pairs':>9} {'chk clean':>9} {'kids/exp':>8} "
          f"{'exp tok/tree':>12} {'roll tok/tree':>13} {'correct':>7}", file=sys.stderr)
    for r in rows:
        print(f"{r['setting']:32} {r['pairs']:5d} {fmt(r['clean']):>6} {r['checked_pairs']:9d} "
              f"{fmt(r['checked_clean']):>9} {r.get('children_per_expansion', 0):8.2f} "
              f"{r['expand_tokens_per_tree']:12.0f} {r.get('rollout_tokens_per_tree', 0):13.0f} "
              f"{r.get('correct', '-')!s:>7}", file=sys.stderr)
    if args.mc_rollouts > 0:
        print(f"\npair quality by Monte Carlo ({args.mc_rollouts} rollouts per unfinished side, answer checker only; "
              f"right: the chosen side's estimate is higher)", file=sys.stderr)
        print(f"{'setting':32} {'pairs':>5} {'right':>5} {'ties':>5} {'wrong':>5} {'right % (95% CI)':>18} "
              f"{'clean':>6} {'chk pairs':>9} {'chk right %':>11}", file=sys.stderr)
        for r in rows:
            if "mc_pairs" not in r:
                continue
            ci = r["mc_right_ci95"]
            share = "-" if ci is None else f"{r['mc_right_share']:.0%} ({ci[0]:.0%}-{ci[1]:.0%})"
            print(f"{r['setting']:32} {r['mc_pairs']:5d} {r['mc_right']:5d} {r['mc_ties']:5d} {r['mc_wrong']:5d} "
                  f"{share:>18} {fmt(r['clean']):>6} {r['checked_mc_pairs']:9d} "
                  f"{fmt(r['checked_mc_right_share']):>11}", file=sys.stderr)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
