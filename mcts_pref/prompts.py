"""Prompt formats: how a problem becomes the text the policy continues.

Three formats share one idea: the policy must write one reasoning step per
line and end with ``The answer is N.`` so that a step is a line and a
terminal step is recognisable.

- ``chat``: the tokenizer's chat template, a system instruction, and
  few-shot exemplars as earlier user/assistant turns.
- ``plain``: the paper's ``QUESTION: {q}\\n\\nANSWER:`` plus a newline, so the
  first step starts on its own line (exemplars, if any, in the same shape).
- ``auto``: ``chat`` when the tokenizer has a chat template, else ``plain``.
"""

from __future__ import annotations

FORMATS = ("auto", "chat", "plain")

SYSTEM = (
    "Solve the problem step by step. Write exactly one short step per line. "
    "Finish with a final line of the form 'The answer is N.'"
)

# Hand-written exemplars in the one-step-per-line shape. Short on purpose:
# every exemplar token is re-read at every expansion.
DEFAULT_SHOTS: list[dict] = [
    {
        "question": "Tom has 3 apples. He buys 5 more and then eats 2. How many apples does he have now?",
        "rationale": "Tom starts with 3 apples.\n3 + 5 = 8\n8 - 2 = 6\nThe answer is 6.",
    },
    {
        "question": "State the final answer to the following arithmetic problem: 4 + 7 - 3 =",
        "rationale": "4 + 7 = 11\n11 - 3 = 8\nThe answer is 8.",
    },
]

JUDGE_INSTRUCTION = (
    "Review the partial solution to the question. Is every step so far correct?\n"
    "(A) incorrect\n(B) correct"
)
JUDGE_PREFILL = "The steps so far are ("


def question_text(problem: dict) -> str:
    """The question as the policy sees it; MCQ choices are listed as (A) text lines."""
    q = str(problem["question"]).strip()
    choices = problem.get("choices")
    if choices:
        lines = [f"({c['label']}) {c['text']}" for c in choices]
        q = q + "\n" + "\n".join(lines)
    return q


def _rationale(shot: dict) -> str:
    text = str(shot["rationale"]).strip()
    if "answer is" not in text.lower() and shot.get("answer") is not None:
        text += f"\nThe answer is {shot['answer']}."
    return text


def resolve_format(fmt: str, tokenizer) -> str:
    if fmt not in FORMATS:
        from mcts_pref.records import MctsPrefError

        raise MctsPrefError(f"--prompt-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        from mcts_pref.records import MctsPrefError

        raise MctsPrefError("--prompt-format chat: this tokenizer has no chat template; use --prompt-format plain")
    return fmt


def format_prompt(problem: dict, tokenizer, fmt: str, shots: list[dict]) -> str:
    """The full prompt text; the policy's first step continues right after it."""
    if fmt == "chat":
        messages = [{"role": "system", "content": SYSTEM}]
        for s in shots:
            messages.append({"role": "user", "content": question_text(s)})
            messages.append({"role": "assistant", "content": _rationale(s)})
        messages.append({"role": "user", "content": question_text(problem)})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = [f"QUESTION: {question_text(s)}\n\nANSWER:\n{_rationale(s)}\n\n" for s in shots]
    parts.append(f"QUESTION: {question_text(problem)}\n\nANSWER:\n")
    return "".join(parts)


def judge_prompt(question: str, partial: str, tokenizer, fmt: str) -> str:
    """Prompt whose next token is the policy's verdict, ``A`` (incorrect) or ``B`` (correct)."""
    body = f"{JUDGE_INSTRUCTION}\n\nQuestion: {question.strip()}\n\nPartial solution:\n{partial.strip() or '(no steps yet)'}"
    if fmt == "chat":
        messages = [{"role": "user", "content": body}]
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return head + JUDGE_PREFILL
    return f"{body}\n\nANSWER: {JUDGE_PREFILL}"


def load_shots(n: int, path: str | None) -> list[dict]:
    """``n`` exemplars from ``path`` (problem records with a rationale) or the built-in ones."""
    if n <= 0:
        return []
    if path is None:
        return DEFAULT_SHOTS[:n]
    from mcts_pref.records import MctsPrefError, read_records

    shots = [p for p in read_records(path, "problem") if p.get("rationale")]
    if not shots:
        raise MctsPrefError(f"{path}: no problem record has a 'rationale' to use as an exemplar")
    return shots[:n]
