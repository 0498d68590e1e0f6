"""Multiple-choice answers (ARC, CommonsenseQA): find the chosen label.

``choices`` is a list of ``{"label": "A", "text": "..."}``; the gold answer is
a label. ``normalize_choices`` turns the other usual shapes (a list of strings,
a ``{label: text}`` dict, parallel label/text lists) into that one. Extraction
priority:

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


def normalize_choices(raw) -> list[dict] | None:
    """Choices as ``[{"label": "A", "text": "..."}, ...]``; ``None`` stays ``None``.

    Accepted shapes, labels and texts coming back as stripped strings:

    - ``[{"label": "A", "text": "cat"}, ...]`` (ARC, and the problem record);
    - ``["cat", "dog"]``: labelled A, B, C, ... in order;
    - ``{"A": "cat", "B": "dog"}``: label -> text, in the dict's order;
    - ``{"label": ["A", "B"], "text": ["cat", "dog"]}`` (CommonsenseQA on the hub).

    Texts may be numbers. Raises ``ValueError`` for any other shape, fewer
    than 2 choices, an empty label, or labels equal up to case.
    """
    if raw is None:
        return None
    if isinstance(raw, dict) and set(raw) == {"label", "text"} and all(isinstance(raw[k], list) for k in raw):
        if len(raw["label"]) != len(raw["text"]):
            raise ValueError("choices 'label' and 'text' lists differ in length")
        pairs = list(zip(raw["label"], raw["text"]))
    elif isinstance(raw, dict) and set(raw) == {"label", "text"}:
        raise ValueError('choices is one {"label", "text"} object; expected a list of them')
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list) and all(isinstance(c, dict) and "label" in c and "text" in c for c in raw):
        pairs = [(c["label"], c["text"]) for c in raw]
    elif isinstance(raw, list) and all(_scalar(c) for c in raw):
        if len(raw) > 26:
            raise ValueError(f"{len(raw)} unlabelled choices; label them past Z with [{{\"label\", \"text\"}}, ...]")
        pairs = [(chr(ord("A") + i), c) for i, c in enumerate(raw)]
    else:
        raise ValueError(
            'choices must be a list of strings, a list of {"label", "text"} objects, or a {label: text} object'
        )
    if not all(_scalar(label) and _scalar(text) for label, text in pairs):
        raise ValueError("choice labels and texts must be strings or numbers")
    if len(pairs) < 2:
        raise ValueError("a multiple-choice question needs at least 2 choices")
    choices = [{"label": str(label).strip(), "text": str(text).strip()} for label, text in pairs]
    upper = [c["label"].upper() for c in choices]
    if "" in upper:
        raise ValueError("a choice has an empty label")
    if len(set(upper)) != len(upper):
        raise ValueError(f"duplicate choice labels {[c['label'] for c in choices]}")
    return choices


def _scalar(x) -> bool:
    return isinstance(x, (str, int, float)) and not isinstance(x, bool)


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
