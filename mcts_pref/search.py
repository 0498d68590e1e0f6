"""`mcts-pref search`: read problems, load the policy, write one tree record per problem.

The search itself (the paper's MCTS, many trees per policy call) is the
engine in ``mcts.py``; this module is the command around it: options,
resuming, progress and the summary line.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mcts_pref.backends import load_backend
from mcts_pref.console import console, stage
from mcts_pref.errors import MctsPrefError
from mcts_pref.mcts import Config, new_stats, search_trees
from mcts_pref.options import Out, Seed, Shard, options_from
from mcts_pref.policy_spec import PolicySpec
from mcts_pref.prompts import load_shots
from mcts_pref.records import RecordWriter, read_problems, shard as take_shard
from mcts_pref.tree import without_term


def drop_term(spec: str, term: str) -> str:
    """``spec`` without ``term`` (``--no-self-eval``); an error if nothing is left."""
    kept = without_term(spec, term.replace("-", "_"))
    if not kept:
        raise MctsPrefError(f"--no-self-eval leaves no value terms in --value {spec!r}")
    return ",".join(kept)


# Where the help has always listed the options: --no-self-eval (no Config field) right after --value.
_ORDER = ("problems", "policy", "iterations", "children", "root_children", "c_puct", "lam", "depth_limit", "max_depth",
          "max_step_tokens", "max_tokens_per_tree", "temperature", "top_p", "value", "no_self_eval", "rollouts",
          "rollout_early_stop", "rollout_max_tokens", "resample_duplicates", "batch_trees", "seed", "shard", "limit",
          "out")


@stage
@options_from(PolicySpec, "policy")
@options_from(Config, "cfg", order=_ORDER, exclude=("seed",))
def command(
    problems: Annotated[str, typer.Argument(help="Problem records (JSONL path, or - for stdin).")],
    policy: PolicySpec,
    cfg: Config,
    no_self_eval: Annotated[bool, typer.Option(
        "--no-self-eval", help="Drop self-eval from --value (the paper's outcome-only ablation).")] = False,
    seed: Seed = Config.seed,  # into cfg too (exclude=)
    shard: Shard = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Search only the first N problems (after --shard).")] = None,
    out: Out = None,
) -> None:
    """Grow an MCTS tree of reasoning steps per problem and write one tree record each.

    Trees are written as they finish; rerunning with the same --out skips
    problems already there.
    """
    if no_self_eval:
        cfg = replace(cfg, value=drop_term(cfg.value, "self-eval"))
    records = take_shard(read_problems(problems), shard)  # ids unique: they key resuming
    if limit is not None:
        records = records[:limit]
    exemplars = load_shots(policy.shots, policy.shots_from)
    with RecordWriter(out, resume_key="problem_id") as writer:
        todo = [p for p in records if str(p["id"]) not in writer.done]
        if not todo:
            console.print(f"search: nothing to do ({len(records)} problems, all already in {out})")
            return
        if writer.done:
            console.print(f"search: resuming, {len(records) - len(todo)} of {len(records)} trees already written")
        backend = load_backend(policy, exemplars)
        _run_with_progress(backend, todo, cfg, writer)


def _run_with_progress(backend, problems: list[dict], cfg: Config, writer: RecordWriter) -> None:
    start, tokens, correct, done = time.perf_counter(), 0, 0, 0
    totals = new_stats()
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
            for key in totals:
                totals[key] += rec["stats"].get(key, 0)
            progress.update(task, advance=1, acc=f"correct {correct}/{done} ({correct / done:.0%})")
    console.print(summary_line(totals, done, correct))


def summary_line(totals: dict, trees: int, correct: int) -> str:
    """One line on what the search spent and found (stderr)."""
    per = totals["children"] / max(1, totals["expansions"])
    line = (f"search: {trees} trees, {correct} committed correct; {totals['expansions']} expansions, "
            f"{per:.2f} distinct children each ({totals['duplicates']} duplicate draws); "
            f"tokens: {totals['expand_tokens']} expansion")
    if totals["rollout_tokens"]:
        line += f", {totals['rollout_tokens']} rollout ({totals['rollouts']} rollouts)"
    if totals["self_eval_prefill_tokens"]:
        line += f", {totals['self_eval_prefill_tokens']} self-eval prefill"
    return line
