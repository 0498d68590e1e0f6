"""Prompt formats: how a problem becomes the text the policy continues.

Three formats share one idea: the policy must write one reasoning step per
line and end with ``The answer is N.`` so that a step is a line and a
terminal step is recognisable.

- ``chat``: the tokenizer's chat template, a system instruction, and
  few-shot exemplars as earlier user/assistant turns.
- ``plain``: the paper's ``QUESTION: {q}\\n\\nANSWER:`` plus a newline, so the
  first step starts on its own line (exemplars, if any, in the same shape).
- ``auto``: ``chat`` when the tokenizer has a chat template, else ``plain``.

The self-evaluation prompt (:func:`judge_prompt`) asks the policy whether the
steps so far are correct; its next token is the verdict, read at the ids
:func:`judge_token_ids` finds in context. :func:`continuation_ids` is how
every stage turns a text that follows another into the ids the policy emits.
"""

from __future__ import annotations

from mcts_pref.errors import MctsPrefError
from mcts_pref.records import read_problems

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
# What continuation_ids tokenizes a text after when it merges with its real prefix: a
# newline (after which no tokenizer adds a space), or a letter for a text that itself
# starts with a newline (byte-level BPE would merge the two newlines).
ANCHORS = ("\n", "a")


def question_text(problem: dict) -> str:
    """The question as the policy sees it; MCQ choices are listed as (A) text lines."""
    q = str(problem["question"]).strip()
    choices = problem.get("choices")
    if choices:
        lines = [f"({c['label']}) {c['text']}" for c in choices]
        q = q + "\n" + "\n".join(lines)
    return q


def judge_question(problem: dict) -> str:
    """The question text the self-evaluation shows: the question and, for MCQ, its choices.

    The same text the policy was asked (:func:`question_text`), so a judgement
    of "Answer: C" can see what C says.
    """
    return question_text(problem)


def _rationale(shot: dict) -> str:
    text = str(shot["rationale"]).strip()
    if "answer is" not in text.lower() and shot.get("answer") is not None:
        text += f"\nThe answer is {shot['answer']}."
    return text


def resolve_format(fmt: str, tokenizer) -> str:
    if fmt not in FORMATS:
        raise MctsPrefError(f"--prompt-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
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
    """Prompt whose next token is the policy's verdict, ``A`` (incorrect) or ``B`` (correct).

    ``question`` is :func:`judge_question` of the problem (with MCQ choices).
    """
    body = f"{JUDGE_INSTRUCTION}\n\nQuestion: {question.strip()}\n\nPartial solution:\n{partial.strip() or '(no steps yet)'}"
    if fmt == "chat":
        messages = [{"role": "user", "content": body}]
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return head + JUDGE_PREFILL
    return f"{body}\n\nANSWER: {JUDGE_PREFILL}"


def continuation_ids(tokenizer, prefix: str, text: str) -> list[int]:
    """The ids of ``text`` as the policy emits them right after the ids of ``prefix`` (no special tokens).

    Tokenized alone, a text may start with a token the policy never emits
    after its prefix: a SentencePiece tokenizer (Llama-2, Mistral) puts "▁"
    (a space) before the start of any text, so "A" alone is "▁A" while "(A"
    ends in "A". So ``text`` is tokenized together with ``prefix`` and the
    prefix's own ids are taken off the front. Where the two merge across the
    boundary instead (byte-level BPE joins "Total: " and "$5" into " $"), the
    prefix's own ids are not a prefix of the joint ids; the policy saw the
    prefix's own ids and generated the text's after them, so the text is then
    tokenized after a short anchor it does not merge with, which gives its
    ids with no leading "▁" for either kind of tokenizer.
    """
    def ids(s: str) -> list[int]:
        return list(tokenizer(s, add_special_tokens=False).input_ids)

    for head in (prefix, *ANCHORS):
        before, joint = ids(head), ids(head + text)
        if joint[: len(before)] == before:
            return joint[len(before):]
    return ids(text)


def judge_token_ids(tokenizer, fmt: str) -> list[int]:
    """The ids of the verdicts ``A`` and ``B`` as the policy emits them after a judgement prompt."""
    text = judge_prompt("What is 1 + 1?", "1 + 1 = 2", tokenizer, fmt)
    ids = []
    for verdict in ("A", "B"):
        cont = continuation_ids(tokenizer, text, verdict)
        if not cont:
            raise MctsPrefError(f"the tokenizer gives the verdict {verdict!r} no token after a judgement prompt")
        ids.append(cont[0])
    if ids[0] == ids[1]:
        raise MctsPrefError("this tokenizer starts the verdicts A and B with the same token, so self-evaluation "
                            "cannot tell them apart; leave self-eval out of --value")
    return ids


def load_shots(n: int, path: str | None) -> list[dict]:
    """``n`` exemplars from ``path`` (problem records with a rationale) or the built-in ones."""
    if n <= 0:
        return []
    if path is None:
        return DEFAULT_SHOTS[:n]
    shots = [p for p in read_problems(path, unique=False) if p.get("rationale")]
    if not shots:
        raise MctsPrefError(f"{path}: no problem record has a 'rationale' to use as an exemplar")
    return shots[:n]
