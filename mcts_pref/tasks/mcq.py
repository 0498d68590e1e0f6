"""Multiple-choice answers (ARC, CommonsenseQA): find the chosen label.

``choices`` is a list of ``{"label": "A", "text": "..."}``; the gold answer is
a label. Extraction priority:

1. the last "answer is (C)" / "answer is C" / "answer: C" with a valid label
   (a bare lowercase letter only counts inside parentheses: "answer is a
   dog" is not label A);
2. the text after the last "answer is" naming exactly one choice's text;
3. the last "(C)" in the final ``TAIL_CHARS`` characters;
4. exactly one choice text mentioned anywhere (whole words, any case).
"""

from __future__ import annotations

import re

DEFAULT_LABELS = ("A", "B", "C", "D", "E")
TAIL_CHARS = 200

_ANSWER_LETTER = re.compile(r"(?i:answer)(?:\s+(?i:is))?[ \t]*:?[ \t]*(?:\*\*)?(?:\(([A-Za-z])\)|([A-Z])(?![A-Za-z]))")
_ANSWER_IS = re.compile(r"answer\s+is\b[ \t]*:?[ \t]*([^\n]*)", re.IGNORECASE)
_PAREN_LETTER = re.compile(r"\(([A-Za-z])\)")


def labels(choices: list | None) -> list[str]:
    """Upper-case labels of ``choices`` (A-E when there are none)."""
    if not choices:
        return list(DEFAULT_LABELS)
    return [str(c.get("label", "")).strip().upper() for c in choices if isinstance(c, dict)]


def _mentioned(text: str, choices: list | None) -> list[str]:
    """Labels whose choice text occurs in ``text`` as whole words (any case)."""
    low = text.lower()
    found = []
    for c in choices or []:
        t = str(c.get("text", "")).strip().lower() if isinstance(c, dict) else ""
        if t and re.search(r"(?<!\w)" + re.escape(t) + r"(?!\w)", low):
            found.append(str(c.get("label", "")).strip().upper())
    return found


def extract(text: str, choices: list | None = None) -> str | None:
    """The chosen label (upper case) of a multiple-choice completion, or ``None``."""
    valid = set(labels(choices))
    letter = None
    for m in _ANSWER_LETTER.finditer(text):
        cand = (m.group(1) or m.group(2)).upper()
        if cand in valid:
            letter = cand
    if letter is not None:
        return letter
    last = None
    for last in _ANSWER_IS.finditer(text):
        pass
    if last is not None:
        named = _mentioned(last.group(1), choices)
        if len(named) == 1:
            return named[0]
    tail = text[-TAIL_CHARS:]
    for m in reversed(list(_PAREN_LETTER.finditer(tail))):
        if m.group(1).upper() in valid:
            return m.group(1).upper()
    named = _mentioned(text, choices)
    return named[0] if len(named) == 1 else None


def normalize_gold(gold, choices: list | None = None) -> str:
    """Gold as an upper-case label: "c", "(C)" and the choice's text all give "C"."""
    g = str(gold).strip()
    if g.startswith("(") and g.endswith(")"):
        g = g[1:-1].strip()
    if g.upper() in set(labels(choices)):
        return g.upper()
    for c in choices or []:
        if isinstance(c, dict) and str(c.get("text", "")).strip().lower() == g.lower():
            return str(c.get("label", "")).strip().upper()
    return g.upper()


def check(pred: str | None, gold, choices: list | None = None) -> tuple[bool, str | None]:
    """``(correct, reason)``; reason ``"no_answer"`` when no label was found."""
    if pred is None:
        return False, "no_answer"
    return pred.strip().upper() == normalize_gold(gold, choices), None


def is_answer_line(line: str) -> bool:
    """Does this line state a final choice ("The answer is (C)", "Answer: C")?"""
    if _ANSWER_LETTER.search(line) is not None:
        return True
    m = _ANSWER_IS.search(line)  # "The answer is bank." names the choice by text
    return m is not None and bool(m.group(1).strip())
