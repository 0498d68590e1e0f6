"""`sample`: k whole solutions per problem from a policy, batched across problems."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mcts_pref import options as O
from mcts_pref.backends import load_backend
from mcts_pref.console import console, stage
from mcts_pref.options import options_from
from mcts_pref.policy_spec import PolicySpec
from mcts_pref.prompts import load_shots
from mcts_pref.errors import MctsPrefError
from mcts_pref.records import RecordWriter, read_problems, shard
from mcts_pref.steps import split_steps
from mcts_pref.tasks import resolve_task


@dataclass
class SampleConfig:
    """The sampling knobs of `sample` (the policy's are shared: ``policy_spec.PolicySpec``).

    k (int, 1): samples per problem.
    temperature (float, 0.0): 0 = greedy (needs k = 1).
    top_p (float, 1.0): nucleus sampling mass.
    max_tokens (int, 256): token cap per solution.
    batch_problems (int, 16): problems decoded together.
    seed (int, 0): batch b samples with seed ``seed + b`` (b: the batch's first problem index).
    """

    k: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    batch_problems: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise MctsPrefError("-k must be at least 1")
        if self.k > 1 and self.temperature <= 0:
            raise MctsPrefError(f"-k {self.k} with --temperature 0 gives {self.k} identical greedy samples; "
                                "set --temperature > 0")
        if self.batch_problems < 1 or self.max_tokens < 1:
            raise MctsPrefError("--batch-problems and --max-tokens must be positive")
        if not 0 < self.top_p <= 1:
            raise MctsPrefError(f"--top-p must be in (0, 1], got {self.top_p}")


_D = SampleConfig()


def sample_problems(backend, problems: list[dict], *, k: int, temperature: float, top_p: float, max_tokens: int,
                    batch_problems: int, seed: int, writer: RecordWriter, on_batch=None) -> None:
    """Write ``k`` sample records per problem; each problem's samples are written as one unit."""
    for b in range(0, len(problems), batch_problems):
        batch = problems[b:b + batch_problems]
        prompts = [backend.format_prompt(p) for p in batch]
        tasks = [resolve_task(p.get("task")) for p in batch]
        # Seed by batch start so a resumed run draws the same numbers for the same batch.
        outs = backend.complete(prompts, [k] * len(batch), temperature=temperature, top_p=top_p,
                                max_tokens=max_tokens, seed=seed + b, tasks=tasks)
        for p, prompt, task, cands in zip(batch, prompts, tasks, outs):
            recs = []
            for j, c in enumerate(cands):
                rec = {
                    "problem_id": str(p["id"]), "sample_index": j, "question": p["question"],
                    "answer": p["answer"], "task": task, "prompt": prompt,
                    "completion": c.text, "steps": split_steps(c.text, task), "finish": c.finish,
                    "n_tokens": c.n_tokens, "logprob": round(c.logprob, 4), "policy": backend.policy_id,
                    "seed": seed, "temperature": temperature,
                }
                if p.get("choices"):
                    rec["choices"] = p["choices"]
                if p.get("source"):
                    rec["source"] = p["source"]  # the step checker's task rules are looked up by source
                recs.append(rec)
            writer.write_many(recs)
        for prompt in prompts:
            backend.release(prompt)  # a backend with a prefix cache frees the batch's blocks
        if on_batch:
            on_batch(len(batch))


@stage
@options_from(PolicySpec, "policy", order=(
    "problems", "model", "adapter", "k", "temperature", "top_p", "max_tokens", "batch_problems", "limit", "shots",
    "shots_from", "prompt_format", "dtype", "load_in_4bit", "trust_remote_code", "device", "batch_rows", "kv_cache_mb",
    "backend", "tensor_parallel_size", "seed", "shard_spec", "out"))  # the order --help has always listed them in
def command(
    problems: Annotated[str, typer.Argument(help="Problem JSONL (from `prepare`), or - for stdin.")],
    policy: PolicySpec,
    k: Annotated[int, typer.Option("--k", "-k", help="Samples per problem.")] = _D.k,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="0 = greedy (needs k=1).")] = _D.temperature,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")] = _D.top_p,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Token cap per solution.")] = _D.max_tokens,
    batch_problems: Annotated[int, typer.Option("--batch-problems", help="Problems decoded together.")] = _D.batch_problems,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N problems.")] = None,
    seed: O.Seed = _D.seed,
    shard_spec: O.Shard = None,
    out: O.Out = None,
) -> None:
    """Sample k solutions per problem and write sample records (resumable with --out).

    Greedy with the defaults (k=1, temperature 0). Records carry the prompt,
    completion, its steps, the gold answer and the policy; score them with
    `mcts-pref evaluate`.
    """
    cfg = SampleConfig(k=k, temperature=temperature, top_p=top_p, max_tokens=max_tokens, batch_problems=batch_problems,
                       seed=seed)
    todo = shard(read_problems(problems), shard_spec)[:limit]
    exemplars = load_shots(policy.shots, policy.shots_from)
    with RecordWriter(out, resume_key="problem_id") as writer:
        todo = [p for p in todo if str(p["id"]) not in writer.done]
        if not todo:
            console.print(f"[green]nothing to do[/green]: all problems already sampled{f' in {out}' if out else ''}")
            return
        backend = load_backend(policy, exemplars)
        start = time.time()
        with Progress(TextColumn("sample"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[rate]}"), console=console) as bar:
            task = bar.add_task("sample", total=len(todo), rate="")

            def on_batch(n: int) -> None:
                rate = backend.stats["tokens"] / max(time.time() - start, 1e-9)
                bar.update(task, advance=n, rate=f"{rate:.0f} tok/s")

            sample_problems(backend, todo, k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens, batch_problems=cfg.batch_problems, seed=cfg.seed, writer=writer,
                            on_batch=on_batch)
        secs = time.time() - start
        console.print(f"sampled {len(todo)} problems x {k}: {backend.stats['tokens']} tokens in {secs:.1f} s "
                      f"({backend.stats['tokens'] / max(secs, 1e-9):.0f} tok/s)")
