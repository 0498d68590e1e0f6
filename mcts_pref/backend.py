"""The narrow interface between the algorithm and a model.

`search` and `sample` talk only to a :class:`Backend`. The transformers
implementation lives in ``policy.py``; tests use scripted doubles; a vLLM
backend can implement the same three methods.

A *prefix* is the prompt text followed by the steps so far, each step ending
with its delimiter (a newline) so that token boundaries stay stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

# Why a generated step ended.
STEP = "step"  # hit the step delimiter (newline): the solution goes on
STEP_CAP = "step_cap"  # hit the per-step token cap mid-line: the solution goes on
ANSWER = "answer"  # the step states the final answer: terminal
EOS = "eos"  # the model ended the sequence: terminal
TERMINAL_FINISHES = frozenset({ANSWER, EOS})


@dataclass
class Step:
    """One sampled next step."""

    text: str  # includes the trailing newline when finish == STEP
    token_ids: list[int]
    logprob: float  # sum of the policy's log-probs of token_ids (temperature 1), nats
    finish: str  # one of STEP, STEP_CAP, ANSWER, EOS

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def terminal(self) -> bool:
        return self.finish in TERMINAL_FINISHES


class Backend(Protocol):
    policy_id: str  # e.g. "default" or "HuggingFaceTB/SmolLM2-135M-Instruct+runs/a/round-1/adapter"

    def format_prompt(self, problem: dict) -> str:
        """The prompt text for a problem record (question, task, choices)."""
        ...

    def expand(
        self,
        prefixes: Sequence[str],
        n: Sequence[int],
        *,
        temperature: float,
        top_p: float,
        max_step_tokens: int,
        seed: int | None = None,
    ) -> list[list[Step]]:
        """For each prefix, sample ``n[i]`` next steps, all in as few batched calls as possible."""
        ...

    def self_evaluate(self, questions: Sequence[str], partials: Sequence[str]) -> list[float]:
        """P("correct") in [0, 1] the policy gives each partial solution of its question."""
        ...
