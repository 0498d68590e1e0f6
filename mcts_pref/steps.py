"""Steps: THE rule that says where a step ends, for text and for token streams.

A step is one line of a solution: it ends with the newline that completes a
non-blank line. Blank lines do not end a step; they start the next one (a
decoder cannot know that a blank line follows until it has generated it, and
by then the step before is already cut). A line stating the final answer
ends the solution (``ANSWER``), as does the model's EOS (``EOS``).

One object, :class:`StepCutter`, applies the rule. Both generation backends
feed it token by token (``feed(token_id, logprob)`` -> done?, then
``to_step()``), and :func:`split_steps` feeds it a finished text character by
character, so the steps a decoder cut and the steps of its joined text agree.
The one difference a tokenizer can make: a single token holding a newline
*and* more text after it (say ``".\\n\\n"``) is kept whole in the step that
its newline ends, since a model cannot emit half a token. Joining the steps
always gives back the exact text, so prefixes rebuilt from steps tokenize
the way the policy produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Container, Sequence

from mcts_pref.tasks import is_answer_line

# Why a generated step (or solution) ended.
STEP = "step"  # hit the step delimiter (newline): the solution goes on
STEP_CAP = "step_cap"  # hit the per-step token cap mid-line: the solution goes on
ANSWER = "answer"  # the step states the final answer: terminal
EOS = "eos"  # the model ended the sequence: terminal
LENGTH = "length"  # a whole solution (``complete``) hit its token cap
TERMINAL_FINISHES = frozenset({ANSWER, EOS})


@dataclass
class Step:
    """One sampled step (``expand``) or whole solution (``complete``)."""

    text: str  # includes the trailing newline when finish == STEP
    token_ids: list[int]
    logprob: float  # sum of the policy's log-probs of token_ids and of a final EOS (temperature 1), nats
    finish: str  # one of STEP, STEP_CAP, ANSWER, EOS, LENGTH
    # The tokens the decoder consumed (an ending EOS included), each with its probability under the
    # sampling law (temperature, top-p): what sampling without replacement needs (mcts_pref.distinct).
    # Empty where a backend does not record it.
    drawn: tuple[tuple[int, float], ...] = ()

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def terminal(self) -> bool:
        return self.finish in TERMINAL_FINISHES


@dataclass(frozen=True)
class CutRule:
    """What a :class:`StepCutter` needs to know about a vocabulary.

    ``decode`` turns token ids into text; ``newline_ids`` holds every id whose
    text contains a newline; ``eos_ids`` the ids that end a sequence (never
    part of a step's text).
    """

    decode: Callable[[Sequence[int]], str]
    newline_ids: Container[int]
    eos_ids: Container[int]

    @classmethod
    def from_tokenizer(cls, tokenizer, eos_ids: Sequence[int] = (), vocab_size: int | None = None) -> "CutRule":
        """The rule for a Hugging Face tokenizer (``vocab_size``: ids the model can emit, may exceed the tokenizer's)."""
        n = len(tokenizer)
        pieces = tokenizer.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
        newline = frozenset(i for i, piece in enumerate(pieces) if "\n" in piece)
        eos = frozenset(e for e in [tokenizer.eos_token_id, *eos_ids] if e is not None)

        # Decoded after a newline token, which is then taken off: a SentencePiece decoder drops
        # the leading space of a text's first token ("▁The" alone is "The"), which a step that
        # continues a prefix keeps. No clean-up either (it would rewrite " ," to ",").
        anchor = next(([i] for i, piece in enumerate(pieces) if piece == "\n"), [])
        head = tokenizer.decode(anchor, clean_up_tokenization_spaces=False)

        def decode(ids: Sequence[int]) -> str:
            text = tokenizer.decode(anchor + list(ids), clean_up_tokenization_spaces=False)
            if text.startswith(head):
                return text[len(head):]
            return tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)

        return cls(decode=decode, newline_ids=newline, eos_ids=eos)


# Text as a token stream: one "token" per character, its code point as the id.
TEXT_RULE = CutRule(decode=lambda ids: "".join(map(chr, ids)), newline_ids=frozenset({10}), eos_ids=frozenset())


@dataclass
class StepCutter:
    """Feed one row's tokens; it says when the step (``whole``: the solution) ends.

    In step mode the row ends at the newline completing a non-blank line
    (``STEP``), at an answer line (``ANSWER``) or at EOS (``EOS``). In whole
    mode only an answer line or EOS ends it. A row that runs out of tokens
    first ends ``STEP_CAP`` (step mode) or ``LENGTH`` (whole mode), see
    :meth:`to_step`.
    """

    rule: CutRule
    whole: bool = False
    task: str = "math"
    tokens: list[int] = field(default_factory=list)
    logprob: float = 0.0
    finish: str | None = None
    line_start: int = 0

    @property
    def done(self) -> bool:
        return self.finish is not None

    def feed(self, token_id: int, logprob: float = 0.0) -> bool:
        """Take the next sampled token (its log-prob in nats); True once the row is done."""
        if self.finish is not None:
            return True  # anything after the stop point is dropped
        if token_id in self.rule.eos_ids:
            # The policy chose to stop here: that choice is part of the step's probability
            # (an EOS-only step would otherwise get log-prob 0, prior 1), not of its text.
            self.logprob += logprob
            self.end_sequence()
            return True
        self.tokens.append(token_id)
        self.logprob += logprob
        if token_id in self.rule.newline_ids:
            line = self.rule.decode(self.tokens[self.line_start:])
            if not line.strip():
                return False  # a blank line is not a step; keep going
            if is_answer_line(line, self.task):
                self.finish = ANSWER
            elif not self.whole:
                self.finish = STEP
            self.line_start = len(self.tokens)
        return self.finish is not None

    def end_sequence(self) -> None:
        """The model ended the sequence (EOS is never part of the text): ANSWER if the last line states one."""
        line = self.rule.decode(self.tokens[self.line_start:])
        self.finish = ANSWER if is_answer_line(line, self.task) else EOS

    def to_step(self) -> Step:
        """The row as a :class:`Step`; an unfinished row was cut by its token cap."""
        text = self.rule.decode(self.tokens)
        finish = self.finish
        if finish is None:
            if self.whole:
                finish = ANSWER if is_answer_line(text.rsplit("\n", 1)[-1], self.task) else LENGTH
            else:
                finish = STEP_CAP
        return Step(text=text, token_ids=list(self.tokens), logprob=self.logprob, finish=finish)


def split_steps(completion: str, task: str = "math") -> list[str]:
    """Split a finished text into steps by :class:`StepCutter`'s rule.

    ``"a\\nb\\n\\nc"`` -> ``["a\\n", "b\\n", "\\nc"]``; ``"".join`` of the result is the input.
    """
    steps: list[str] = []
    cutter = StepCutter(TEXT_RULE, task=task)
    start = 0
    for i, ch in enumerate(completion):
        if cutter.feed(ord(ch)):
            steps.append(completion[start:i + 1])
            start = i + 1
            cutter = StepCutter(TEXT_RULE, task=task)
    if start < len(completion):
        steps.append(completion[start:])
    return steps


def join_steps(steps: list[str]) -> str:
    return "".join(steps)
