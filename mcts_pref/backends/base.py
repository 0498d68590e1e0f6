"""The narrow interface between the algorithm and a model.

`search` and `sample` talk only to a :class:`Backend`. Implementations:
``backends/hf.py`` (transformers), ``backends/vllm.py`` (vLLM), and the
scripted doubles the tests register. Both real backends cut steps with the
one rule in :mod:`mcts_pref.steps`.

A *prefix* is the prompt text followed by the steps so far, each step ending
with its delimiter (a newline) so that token boundaries stay stable.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from mcts_pref.steps import ANSWER, EOS, LENGTH, STEP, STEP_CAP, TERMINAL_FINISHES, Step

__all__ = ["ANSWER", "EOS", "LENGTH", "STEP", "STEP_CAP", "TERMINAL_FINISHES", "Backend", "Step"]


class Backend(Protocol):
    policy_id: str  # e.g. "default" or "HuggingFaceTB/SmolLM2-135M-Instruct+runs/a/round-1/adapter"
    stats: dict  # running counters: "tokens" generated, "forward_calls", ... (for reports)

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
        tasks: Sequence[str] | None = None,
    ) -> list[list[Step]]:
        """For each prefix, sample ``n[i]`` next steps, all in as few batched calls as possible.

        ``tasks[i]`` (default ``math``) tells the step cutter which lines state a final answer.
        """
        ...

    def complete(
        self,
        prefixes: Sequence[str],
        n: Sequence[int],
        *,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None = None,
        tasks: Sequence[str] | None = None,
    ) -> list[list[Step]]:
        """``n[i]`` whole solutions per prefix: each stops at an answer line, EOS, or ``max_tokens``."""
        ...

    def self_evaluate(self, questions: Sequence[str], partials: Sequence[str]) -> list[float]:
        """P("correct") in [0, 1] the policy gives each partial solution of its question."""
        ...
