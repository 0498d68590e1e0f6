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

from mcts_pref.policy_spec import PolicySpec
from mcts_pref.prompts import DEFAULT_SHOTS, format_prompt, judge_token_ids, resolve_format
from mcts_pref.steps import ANSWER, EOS, LENGTH, STEP, STEP_CAP, TERMINAL_FINISHES, CutRule, Step

__all__ = ["ANSWER", "EOS", "LENGTH", "STEP", "STEP_CAP", "TERMINAL_FINISHES", "Backend", "Step", "StepDecoder"]


class Backend(Protocol):
    policy_id: str  # e.g. "default" or "HuggingFaceTB/SmolLM2-135M-Instruct+runs/a/round-1/adapter"
    stats: dict  # running counters: "tokens" generated, "forward_calls", ... (for reports)
    #: True when ``expand`` takes ``exclude=`` and draws those rows without replacement
    #: (the transformers backend); search then stages expansions and passes ``exclude``.
    samples_without_replacement: bool

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
        A backend with ``samples_without_replacement = True`` also takes ``exclude=`` (see
        :meth:`StepDecoder.expand`); search passes it only to such a backend.
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

    def release(self, prompt: str) -> None:
        """The tree (or sample batch) of ``prompt``, a :meth:`format_prompt` result, is done.

        Search calls it once per finished tree, ``sample`` once per prompt of a written batch:
        a backend with a prefix cache drops what only that tree used; others do nothing.
        """
        ...


class StepDecoder:
    """What the transformers and vLLM backends share: prompts, verdict ids, the step rule, expand/complete.

    A subclass sets up the model and implements ``_decode(prefixes, n, temperature, top_p, max_new,
    whole=, seed=, tasks=)``, which samples ``n[i]`` rows after each prefix and feeds each row's tokens
    to a :class:`mcts_pref.steps.StepCutter` built from ``self.cut_rule``.
    """

    def __init__(self, tokenizer, spec: PolicySpec, *, shots, eos_ids: Sequence[int]):
        self.tok = tokenizer
        self.policy_id = spec.policy_id
        self.fmt = resolve_format(spec.prompt_format, tokenizer)
        self.shots = DEFAULT_SHOTS if shots is None else list(shots)
        self.eos_ids = {e for e in [tokenizer.eos_token_id, *eos_ids] if e is not None}
        self.cut_rule = CutRule.from_tokenizer(tokenizer, eos_ids=sorted(self.eos_ids))
        self._judge_ids: list[int] | None = None
        self._add_special = self.fmt != "chat"  # a chat template writes its own special tokens
        self.stats = {"tokens": 0, "forward_calls": 0, "expand_calls": 0, "self_eval_calls": 0, "prefill_tokens": 0}

    def format_prompt(self, problem: dict) -> str:
        return format_prompt(problem, self.tok, self.fmt, self.shots)

    @property
    def judge_ids(self) -> list[int]:
        """The ids of the verdicts A and B right after a judgement prompt (found on first use)."""
        if self._judge_ids is None:
            self._judge_ids = judge_token_ids(self.tok, self.fmt)
        return self._judge_ids

    #: ``expand(..., exclude=)`` draws without replacement (a subclass whose ``_decode`` honours it says so)
    samples_without_replacement = False

    def expand(self, prefixes: Sequence[str], n: Sequence[int], *, temperature: float, top_p: float,
               max_step_tokens: int, seed: int | None = None, tasks: Sequence[str] | None = None,
               exclude: Sequence[Sequence[Sequence[tuple[int, float]]]] | None = None) -> list[list[Step]]:
        """``n[i]`` sampled next steps (one line each) for every prefix.

        ``exclude[i]``: drawn paths (:attr:`Step.drawn`) of prefix i's steps that its rows must not
        repeat, honoured where :attr:`samples_without_replacement` (see :mod:`mcts_pref.distinct`).
        """
        self.stats["expand_calls"] += 1
        if exclude is not None and len(exclude) != len(prefixes):
            raise ValueError("prefixes and exclude must have the same length")
        return self._checked_decode(prefixes, n, temperature, top_p, max_step_tokens, False, seed, tasks,
                                    exclude=exclude if self.samples_without_replacement else None)

    def complete(self, prefixes: Sequence[str], n: Sequence[int], *, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None, tasks: Sequence[str] | None = None) -> list[list[Step]]:
        """``n[i]`` whole solutions per prefix: stop at an answer line, EOS, or ``max_tokens``."""
        return self._checked_decode(prefixes, n, temperature, top_p, max_tokens, True, seed, tasks)

    def release(self, prompt: str) -> None:
        """Nothing cached per tree here (vLLM manages its own prefix cache); HFBackend overrides it."""

    def _checked_decode(self, prefixes, n, temperature, top_p, max_new, whole, seed, tasks, exclude=None) -> list[list[Step]]:
        if len(prefixes) != len(n) or (tasks is not None and len(tasks) != len(n)):
            raise ValueError("prefixes, n and tasks must have the same length")
        tasks = list(tasks) if tasks is not None else ["math"] * len(prefixes)
        extra = {} if exclude is None else {"exclude": exclude}
        return self._decode(prefixes, n, temperature, top_p, max_new, whole=whole, seed=seed, tasks=tasks, **extra)

    def _decode(self, prefixes, n, temperature, top_p, max_new, *, whole: bool, seed, tasks) -> list[list[Step]]:
        raise NotImplementedError
