"""`prepare`: import problem sets into problem records.

Sources:

- ``gsm8k PATH``: GSM8K JSONL ({"question", "answer": "...\\n#### N"}).
- ``math PATH``: MATH JSONL ({"problem", "solution"}); gold = last \\boxed{}.
- ``mcq PATH``: ARC / CommonsenseQA / flat multiple-choice JSONL.
- ``gym:<task>``: a reasoning-gym task generated offline (no PATH), e.g.
  ``gym:chain_sum`` (the embedded default), ``gym:basic_arithmetic``.
- ``problems PATH``: problem records already written by ``prepare`` or
  ``curriculum`` (for ``--format grpo``, ``--limit`` or ``--shard`` on them).

A problem record is ``{"v": 1, "id", "question", "answer", "rationale"?,
"choices"?, "task": "math" | "mcq", "source"}``. A ``rationale`` built here
is one step per line and, for GSM8K and gym sources, ends with the line
``The answer is <answer>.``: the step format the search expects.

``--format grpo`` writes the problems for online RL instead, one row per
problem: ``{"prompt", "solution", "problem_id", "answer", "task"}``, the
columns TRL's ``GRPOTrainer`` and ``RLOOTrainer`` read with
``trl.rewards.accuracy_reward`` as reward (checked against TRL 1.16.0's
``trl/rewards/accuracy_rewards.py`` and ``trl/trainer/grpo_trainer.py``):

- ``prompt`` is conversational (a system and a user message): the reward
  reads ``completion[0]["content"]``, which exists only when the trainer
  decodes completions as assistant messages, i.e. for conversational prompts.
  The system message asks for a final line ``The answer is \\boxed{N}.``:
  the reward parses the completion with LaTeX extraction only (``\\boxed{}``
  first, no bare numbers), so "The answer is 15." scores 0.
- ``solution`` is the gold answer in ``$...$``: the reward parses it with
  math-verify's default configs, which read a bare ``(1, 2]`` as 2 and
  ``3\\sqrt{13}`` as 3 but the delimited forms whole. A gold it cannot parse
  gives reward None (the trainer skips it).
- ``problem_id``, ``answer`` (the raw gold) and ``task`` ride along: both
  trainers pass every extra column to reward functions as keyword lists, so
  a custom reward (e.g. mcts-pref's own checker) can score against them.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Annotated, Optional

import typer

from mcts_pref.console import console, stage
from mcts_pref.options import OutReplaced, Shard
from mcts_pref.prompts import question_text
from mcts_pref.errors import MctsPrefError, RecordError
from mcts_pref.records import RecordWriter, UniqueIds, iter_records, read_problems, shard as take_shard
from mcts_pref.tasks.math import last_boxed
from mcts_pref.tasks.mcq import normalize_choices  # the one choices normaliser (evaluate uses it too)

FILE_SOURCES = ("gsm8k", "math", "mcq")
VALID_SOURCES = "gsm8k PATH, math PATH, mcq PATH, gym:<task> (e.g. gym:chain_sum), problems PATH (records prepare wrote)"
OUT_FORMATS = ("problems", "grpo")
GRPO_SYSTEM = (
    "Solve the problem step by step. Write exactly one short step per line. "
    "Finish with a final line of the form 'The answer is \\boxed{N}.'"
)
GYM_DEFAULT_SIZE = 100
GYM_DEFAULT_SEED = 0

_CALCULATOR = re.compile(r"<<[^<>]*>>")


def answer_line(answer: str) -> str:
    """The final-step line a rationale (and the policy) ends with."""
    return f"The answer is {answer}."


# --- GSM8K -------------------------------------------------------------------


def split_gsm8k_solution(solution: str) -> tuple[list[str], str]:
    """Split "steps...\\n#### N" into (steps, gold).

    Calculator annotations ``<<48/2=24>>`` are removed (they are tool calls in
    the original data, not text a model should learn to write); commas leave
    the gold answer so "1,000" and "1000" are the same gold.
    """
    if "####" not in solution:
        raise ValueError("answer has no '#### <final answer>' line")
    body, _, gold = solution.rpartition("####")
    gold = gold.strip().replace(",", "")
    if not gold:
        raise ValueError("nothing after '####' in answer")
    steps = [line.strip() for line in _CALCULATOR.sub("", body).splitlines()]
    return [s for s in steps if s], gold


def gsm8k_problem(rec: dict, index: int) -> dict:
    for key in ("question", "answer"):
        if not isinstance(rec.get(key), str):
            raise ValueError(f"gsm8k record is missing string key '{key}'")
    steps, gold = split_gsm8k_solution(rec["answer"])
    return {
        "id": f"gsm8k-{index}",
        "question": rec["question"].strip(),
        "answer": gold,
        "rationale": "\n".join([*steps, answer_line(gold)]),
        "task": "math",
        "source": "gsm8k",
    }


# --- MATH --------------------------------------------------------------------


def math_problem(rec: dict, index: int) -> dict:
    for key in ("problem", "solution"):
        if not isinstance(rec.get(key), str):
            raise ValueError(f"math record is missing string key '{key}'")
    gold = (last_boxed(rec["solution"]) or "").strip()  # the one boxed rule evaluate uses too
    if not gold:
        raise ValueError("solution has no \\boxed{...} answer")
    problem = {
        "id": str(rec.get("unique_id") or rec.get("id") or f"math-{index}"),
        "question": rec["problem"].strip(),
        "answer": gold,
        "rationale": rec["solution"].strip(),
        "task": "math",
        "source": "math",
    }
    meta = {k: rec[k] for k in ("level", "type", "subject") if k in rec}
    if meta:
        problem["meta"] = meta
    return problem


# --- multiple choice ------------------------------------------------------------


def mcq_problem(rec: dict, index: int) -> dict:
    question = rec.get("question")
    choices_raw = rec.get("choices")
    if isinstance(question, dict):  # ARC and original CommonsenseQA: {"stem", "choices"}
        choices_raw = question.get("choices", choices_raw)
        question = question.get("stem")
    if not isinstance(question, str):
        raise ValueError("mcq record needs 'question' as a string or as {'stem', 'choices'}")
    if choices_raw is None:
        raise ValueError("mcq record is missing 'choices'")
    choices = normalize_choices(choices_raw)
    key = rec.get("answerKey", rec.get("answer"))
    if key is None or str(key).strip() == "":
        raise ValueError("mcq record is missing 'answerKey'")
    key = str(key).strip()
    labels = [c["label"] for c in choices]
    if key not in labels:
        raise ValueError(f"answerKey {key!r} is not one of the choice labels {labels}")
    return {
        "id": str(rec.get("id") or f"mcq-{index}"),
        "question": question.strip(),
        "answer": key,
        "choices": choices,
        "task": "mcq",
        "source": "mcq",
    }


FILE_IMPORTERS = {"gsm8k": gsm8k_problem, "math": math_problem, "mcq": mcq_problem}


def read_file_problems(source: str, path: str) -> list[dict]:
    """Import a whole file; the first bad line stops it with path:line."""
    convert = FILE_IMPORTERS[source]
    shown = "<stdin>" if path == "-" else path
    problems, ids = [], UniqueIds(path)
    for line, rec in iter_records(path):
        try:
            # Index = line number - 1, so ids stay put when blank lines move.
            problem = convert(rec, line - 1)
        except ValueError as e:
            raise RecordError(shown, line, str(e)) from None
        ids.add(problem["id"], line)
        problems.append(problem)
    return problems


# --- reasoning-gym ------------------------------------------------------------


def coerce_value(text: str):
    """'3' -> 3, '0.5' -> 0.5, 'true'/'False' -> bool, '[1, 2]' -> list, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_config(items: Optional[list[str]]) -> dict:
    config = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MctsPrefError(f"--config must look like key=value, got {item!r}")
        key = key.strip()
        if key in ("seed", "size"):
            raise MctsPrefError(f"use --{key} instead of --config {key}=...")
        config[key] = coerce_value(value.strip())
    return config


def chain_sum_steps(expression: str) -> list[str]:
    """Left-to-right steps for "a op b op c ...", one "x op y = z" per line.

    "3 + 4 - 2" -> ["3 + 4 = 7", "7 - 2 = 5"]. Operands keep their sign as
    written ("5 - -3 = 8") so each line reads like the question.
    """
    tokens = expression.split()
    if len(tokens) % 2 == 0 or any(op not in "+-" for op in tokens[1::2]):
        raise ValueError(f"not a +/- chain: {expression!r}")
    total = int(tokens[0])
    steps = []
    for op, operand in zip(tokens[1::2], tokens[2::2]):
        value = total + int(operand) if op == "+" else total - int(operand)
        steps.append(f"{total} {op} {operand} = {value}")
        total = value
    return steps


def gym_rationale(task: str, entry: dict) -> Optional[str]:
    meta = entry.get("metadata") or {}
    answer = str(entry["answer"])
    if task == "chain_sum":
        steps = chain_sum_steps(meta["expression"])
        if steps and steps[-1].rsplit("= ", 1)[1] != answer:
            raise MctsPrefError(f"chain_sum rationale disagrees with the gold answer for {meta['expression']!r}")
        return "\n".join([*steps, answer_line(answer)])
    if isinstance(meta.get("answer_cot"), str) and "####" in meta["answer_cot"]:  # gsm_symbolic
        steps, _ = split_gsm8k_solution(meta["answer_cot"])
        return "\n".join([*steps, answer_line(answer)])
    return None


def _json_safe(value):
    # Metadata may hold tuples or other objects; records must stay plain JSON.
    return json.loads(json.dumps(value, default=str))


def gym_problems(task: str, size: int, seed: int, config: dict) -> list[dict]:
    """Generate ``size`` problems offline; same (task, seed, config) -> same records."""
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    if task not in DATASETS:
        close = difflib.get_close_matches(task, sorted(DATASETS), n=3)
        hint = f"; did you mean {', '.join('gym:' + c for c in close)}?" if close else ""
        raise MctsPrefError(f"unknown reasoning-gym task {task!r}{hint} ({len(DATASETS)} tasks, e.g. gym:chain_sum)")
    fields = sorted(f for f in DATASETS[task][1].__dataclass_fields__ if f not in ("seed", "size"))
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise MctsPrefError(f"gym:{task} has no option {', '.join(unknown)}; options are: {', '.join(fields)}")
    try:
        dataset = reasoning_gym.create_dataset(task, size=size, seed=seed, **config)
    except (AssertionError, ValueError, TypeError) as e:
        raise MctsPrefError(f"gym:{task}: invalid --config: {e or 'failed validation'}") from None
    problems = []
    for i in range(size):
        entry = dataset[i]
        if entry.get("answer") is None:
            raise MctsPrefError(f"gym:{task} has no single gold answer (item {i}); it cannot be scored here")
        problem = {
            "id": f"{task}-s{seed}-{i}",
            "question": entry["question"],
            "answer": str(entry["answer"]),
            "task": "math",
            "source": f"gym:{task}",
        }
        rationale = gym_rationale(task, entry)
        if rationale is not None:
            problem["rationale"] = rationale
        # Kept so reasoning-gym's own scorer can be rebuilt from the record.
        problem["meta"] = _json_safe(entry.get("metadata") or {})
        problems.append(problem)
    return problems


# --- online RL export ----------------------------------------------------------


def grpo_row(problem: dict) -> dict:
    """One problem as a TRL GRPO / RLOO row (module docstring: why each column looks as it does)."""
    gold = str(problem["answer"]).strip()
    return {
        "v": 1,
        "prompt": [{"role": "system", "content": GRPO_SYSTEM}, {"role": "user", "content": question_text(problem)}],
        "solution": gold if "$" in gold else f"${gold}$",
        "problem_id": str(problem["id"]),
        "answer": gold,
        "task": problem.get("task") or ("mcq" if problem.get("choices") else "math"),
    }


# --- the stage -----------------------------------------------------------------


def load_problems(
    source: str,
    path: Optional[str],
    size: Optional[int] = None,
    seed: Optional[int] = None,
    config: Optional[list[str]] = None,
) -> list[dict]:
    """Problems for ``source`` before --limit and --shard."""
    if source.startswith("gym:"):
        task = source[len("gym:"):]
        if path is not None:
            raise MctsPrefError(f"{source} is generated, it takes no PATH (got {path!r})")
        if size is not None and size < 1:
            raise MctsPrefError("--size must be >= 1")
        return gym_problems(
            task,
            GYM_DEFAULT_SIZE if size is None else size,
            GYM_DEFAULT_SEED if seed is None else seed,
            parse_config(config),
        )
    if source not in FILE_SOURCES + ("problems",):
        raise MctsPrefError(f"unknown source {source!r}; valid sources: {VALID_SOURCES}")
    if path is None:
        raise MctsPrefError(f"{source} needs a PATH to a JSONL file")
    if size is not None or seed is not None or config:
        raise MctsPrefError("--size, --seed and --config apply only to gym:<task> sources")
    if source == "problems":
        return read_problems(path)
    return read_file_problems(source, path)


@stage
def command(
    source: Annotated[str, typer.Argument(
        help="gsm8k | math | mcq | problems (records prepare wrote) | gym:<task> (e.g. gym:chain_sum).", show_default=False)],
    path: Annotated[Optional[str], typer.Argument(help="JSONL file (or - for stdin); none for gym:<task>.", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Keep only the first N problems.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help=f"gym: generator seed (default {GYM_DEFAULT_SEED}).", show_default=False)] = None,
    size: Annotated[Optional[int], typer.Option("--size", help=f"gym: number of problems (default {GYM_DEFAULT_SIZE}).", show_default=False)] = None,
    shard: Shard = None,
    out: OutReplaced = None,
    config: Annotated[
        Optional[list[str]],
        typer.Option("--config", "-c", help="gym: generator option key=value, repeatable (e.g. --config max_terms=3)."),
    ] = None,
    fmt: Annotated[str, typer.Option(
        "--format",
        help="problems (problem records, what search and sample read) | grpo (online RL rows for TRL's GRPOTrainer / "
             "RLOOTrainer with trl.rewards.accuracy_reward: conversational 'prompt' asking for \\boxed{}, "
             "'solution' = the gold in $...$, plus problem_id, answer, task).")] = "problems",
) -> None:
    """Import a problem set (GSM8K, MATH, ARC/CSQA, or a reasoning-gym task) as problem records.

    Output is deterministic: the same input and options give the same records,
    so --shard i/N slices can be merged back by id. --format grpo writes the
    same problems as rows for TRL's online trainers:
    datasets.load_dataset("json", data_files=FILE)["train"] is their train_dataset.
    """
    if fmt not in OUT_FORMATS:
        raise MctsPrefError(f"--format must be one of {', '.join(OUT_FORMATS)}, got {fmt!r}")
    problems = load_problems(source, path, size=size, seed=seed, config=config)
    if limit is not None:
        if limit < 0:
            raise MctsPrefError("--limit must be >= 0")
        problems = problems[:limit]
    problems = take_shard(problems, shard)
    with RecordWriter(out) as writer:
        writer.write_many(problems if fmt == "problems" else [grpo_row(p) for p in problems])
    where = f" to {out}" if out not in (None, "-") else ""
    shard_note = f" (shard {shard})" if shard else ""
    what = "problems" if fmt == "problems" else "GRPO rows"
    console.print(f"prepare: wrote [bold]{writer.count}[/bold] {what} from [cyan]{source}[/cyan]{shard_note}{where}")

