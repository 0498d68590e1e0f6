"""The vLLM backend: the same three methods as ``HFBackend``, served by vLLM.

vLLM is optional and imported only when this backend is loaded
(``pip install 'mcts-pref[vllm]'``). It keeps one engine with prefix caching
on, so the shared prompt (system text, exemplars, question, steps so far) of
every child of a node is prefilled once; an adapter from ``train-dpo`` is
served on top of the base weights with a ``LoRARequest`` (never merged), and
``--tensor-parallel-size`` shards the model over GPUs.

Semantics match :class:`mcts_pref.backends.hf.HFBackend` token for token:

- Every request stops at any token whose text contains a newline and at EOS
  (``stop_token_ids``). The tokens are then fed to the same
  :class:`mcts_pref.steps.StepCutter` as HFBackend's: a newline that ends a blank line does not
  end a step, so such a row (and, in ``complete``, every row whose line is not
  an answer line) is continued by a new request whose prompt is the old prompt
  token ids plus the tokens so far -- the exact state HFBackend decodes from,
  and a prefix-cache hit. Costs: one extra scheduling round per blank line
  (``expand``) or per line (``complete``).
- Text is decoded from the token ids by the HF tokenizer (vLLM's own text can
  stop mid-token), EOS is not part of a step, and a step's ``logprob`` is the
  sum of the sampled tokens' log-probs. The engine is built with
  ``logprobs_mode="raw_logprobs"`` (also vLLM's default): log-probs of the
  model's own distribution, before temperature and top-p, as HFBackend's.
- Prompts are tokenized here, with the same tokenizer and special-token rule
  as HFBackend, and sent as token ids.
- ``self_evaluate`` reads the top-20 log-probs of one greedy token after the
  judgement prompt: C = P(B) / (P(A) + P(B)), at the ids "A" and "B" have
  right after that prompt (:func:`mcts_pref.prompts.judge_token_ids`). An
  option outside the top 20 is given the smallest log-prob shown (its upper
  bound); with neither shown C is 0.5. HFBackend reads both exactly from the
  full distribution.

Not identical: sampled (temperature > 0) tokens differ from HFBackend's for
the same seed (another random generator); kernels differ numerically, so a
near tie can break the other way even when greedy. ``stats["forward_calls"]``
counts ``llm.generate`` calls, not model forward passes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcts_pref.console import console
from mcts_pref.policy import load_tokenizer, resolve_model
from mcts_pref.policy_spec import PolicySpec
from mcts_pref.backends.base import StepDecoder
from mcts_pref.prompts import judge_prompt
from mcts_pref.errors import MctsPrefError
from mcts_pref.steps import Step, StepCutter

INSTALL_HINT = "the vllm backend needs vLLM: pip install 'mcts-pref[vllm]'"
JUDGE_TOP = 20  # top log-probs read at the verdict position (vLLM's default max_logprobs)
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # max_lora_rank values vLLM accepts
VLLM_DTYPES = {"auto": "bfloat16", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def import_vllm():
    """The vllm module, or a one-line MctsPrefError saying how to install it."""
    try:
        import vllm
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "vllm":
            raise MctsPrefError(INSTALL_HINT) from None
        raise MctsPrefError(f"vLLM is installed but cannot be imported: {e}") from None
    except ImportError as e:
        raise MctsPrefError(f"vLLM is installed but cannot be imported: {e}") from None
    return vllm


def lora_rank_slot(r: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of rank ``r``."""
    for slot in LORA_RANKS:
        if r <= slot:
            return slot
    raise MctsPrefError(f"LoRA rank {r} is above the largest vLLM serves ({LORA_RANKS[-1]})")


def logprob_value(v: Any) -> float:
    """A vLLM ``Logprob`` (or a bare float) as a float."""
    return float(getattr(v, "logprob", v))


def sampled_logprobs(token_ids: Sequence[int], logprobs: Sequence[Mapping[int, Any]] | None) -> list[float]:
    """Per generated token, the log-prob vLLM reports for the token that was sampled."""
    if logprobs is None:
        raise MctsPrefError("vLLM returned no log-probs (request them with logprobs=0)")
    return [logprob_value(entry[tid]) for tid, entry in zip(token_ids, logprobs)]


def judge_probability(top: Mapping[int, Any], a_id: int, b_id: int) -> float:
    """C = P(B) / (P(A) + P(B)) from one position's top log-probs.

    An option missing from ``top`` gets the smallest log-prob shown, the most
    it can have; with neither shown (or nothing shown) C = 0.5.
    """
    values = {int(k): logprob_value(v) for k, v in top.items()}
    if not values:
        return 0.5
    floor = min(values.values())
    la, lb = values.get(a_id, floor), values.get(b_id, floor)
    d = la - lb  # C = 1 / (1 + exp(la - lb)), written to never overflow
    return 1.0 / (1.0 + math.exp(d)) if d < 0 else math.exp(-d) / (1.0 + math.exp(-d))


def row_seed(seed: int | None, row: int, rnd: int) -> int | None:
    """The vLLM request seed of one row in one continuation round (None: unseeded)."""
    if seed is None:
        return None
    return (seed * 1_000_003 + row * 7_919 + rnd * 104_729) % (2**31 - 1)


@dataclass
class _Row:
    prompt_ids: list[int]
    index: int  # row number within the call: with the round, picks the request seed
    cutter: StepCutter
    sampled: int = 0  # tokens drawn so far, a final EOS included


class VLLMBackend(StepDecoder):
    """A :class:`mcts_pref.backends.base.Backend` over a ``vllm.LLM``; see the module docs."""

    samples_without_replacement = False  # no expand(exclude=): search merges repeats and redraws them

    def __init__(self, llm, tokenizer, spec: PolicySpec, *, shots=None, lora_request=None, eos_ids: Sequence[int] = (),
                 sampling_params: Callable | None = None):
        super().__init__(tokenizer, spec, shots=shots, eos_ids=eos_ids)
        self.llm = llm
        self.lora_request = lora_request
        self._params = sampling_params or import_vllm().SamplingParams
        del self.stats["prefill_tokens"]  # vLLM does its own prefills (and prefix caching)
        self.newline_ids = set(self.cut_rule.newline_ids)
        self.stop_ids = sorted(self.newline_ids | self.eos_ids)

    def _ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=self._add_special).input_ids)

    def _generate(self, prompt_ids: list[list[int]], params: list) -> list:
        self.stats["forward_calls"] += 1
        extra = {"lora_request": self.lora_request} if self.lora_request is not None else {}
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
        return self.llm.generate(prompts, sampling_params=params, use_tqdm=False, **extra)

    # -- generation --------------------------------------------------------------
    def _decode(self, prefixes, n, temperature, top_p, max_new, *, whole: bool, seed, tasks) -> list[list[Step]]:
        rows: list[_Row] = []
        for p, k, task in zip(prefixes, n, tasks):
            ids = self._ids(p)
            rows.extend(_Row(prompt_ids=ids, index=len(rows) + j, cutter=StepCutter(self.cut_rule, whole=whole, task=task))
                        for j in range(k))
        pending, rnd = list(rows), 0
        while pending and max_new > 0:
            params = [self._sample_params(temperature, top_p, max_new - row.sampled,
                                          row_seed(seed, row.index, rnd) if temperature > 0 else None)
                      for row in pending]
            outs = self._generate([row.prompt_ids + row.cutter.tokens for row in pending], params)
            more = []
            for row, out in zip(pending, outs):
                c = out.outputs[0]
                ids = list(c.token_ids)
                self._consume(row, ids, sampled_logprobs(ids, c.logprobs))
                if row.cutter.done:
                    continue
                if c.finish_reason == "stop" and ids and ids[-1] not in self.newline_ids:
                    # vLLM stopped on an end token it knows and we do not: treat it as EOS.
                    row.cutter.end_sequence()
                elif c.finish_reason == "stop" and ids and row.sampled < max_new:
                    more.append(row)  # a blank line, or a non-answer line of a whole solution
            pending, rnd = more, rnd + 1
        steps = [row.cutter.to_step() for row in rows]
        grouped, i = [], 0
        for k in n:
            grouped.append(steps[i:i + k])
            i += k
        return grouped

    def _sample_params(self, temperature: float, top_p: float, max_tokens: int, seed: int | None):
        kw: dict = {"n": 1, "max_tokens": max_tokens, "stop_token_ids": self.stop_ids, "logprobs": 0,
                    "detokenize": False}
        if temperature > 0:
            kw.update(temperature=temperature, top_p=top_p, seed=seed)
        else:
            kw.update(temperature=0.0)
        return self._params(**kw)

    def _consume(self, row: _Row, ids: Sequence[int], lps: Sequence[float]) -> None:
        """Feed newly drawn tokens to the row's step cutter; tokens past its stop point are dropped."""
        for tid, lp in zip(ids, lps):
            if row.cutter.done:
                return
            row.sampled += 1
            before = len(row.cutter.tokens)
            row.cutter.feed(tid, lp)
            self.stats["tokens"] += len(row.cutter.tokens) - before

    # -- self-evaluation ---------------------------------------------------------
    def self_evaluate(self, questions: Sequence[str], partials: Sequence[str]) -> list[float]:
        """C = P(B) / (P(A) + P(B)) at the verdict position of the judgement prompt."""
        self.stats["self_eval_calls"] += 1
        prompts = [self._ids(judge_prompt(q, p, self.tok, self.fmt)) for q, p in zip(questions, partials)]
        if not prompts:
            return []
        params = self._params(n=1, max_tokens=1, temperature=0.0, logprobs=JUDGE_TOP, detokenize=False)
        outs = self._generate(prompts, [params] * len(prompts))
        a, b = self.judge_ids
        return [judge_probability(out.outputs[0].logprobs[0], a, b) for out in outs]


def adapter_rank(adapter: str) -> int:
    cfg = Path(adapter) / "adapter_config.json"
    if not cfg.exists():
        raise MctsPrefError(f"--adapter {adapter}: no adapter_config.json there (expected a train-dpo output dir)")
    return int(json.loads(cfg.read_text()).get("r") or 8)


def generation_eos_ids(path: str) -> list[int]:
    """EOS ids of the model's generation_config.json (HFBackend stops on these too)."""
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(path).eos_token_id
    except (OSError, ValueError):
        return []
    return [e for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]


def load_vllm_backend(spec: PolicySpec, *, shots: list[dict] | None = None, seed: int = 0,
                      gpu_memory_utilization: float = 0.9) -> VLLMBackend:
    """A :class:`VLLMBackend` for the policy ``spec`` (its adapter served as a LoRA, not merged).

    ``shots``: the exemplars (None: the built-in ones). vLLM caches prefixes
    itself (automatic prefix caching), so ``spec.kv_cache_mb`` is not used.
    """
    vllm = import_vllm()
    if spec.dtype not in VLLM_DTYPES:
        raise MctsPrefError(f"--dtype must be auto, fp32, bf16 or fp16, got {spec.dtype!r}")
    if spec.tensor_parallel_size < 1:
        raise MctsPrefError("--tensor-parallel-size must be at least 1")
    if spec.device not in ("auto", "cuda"):
        console.print(f"[yellow]--device {spec.device} is not used by --backend vllm[/yellow] "
                      "(vLLM picks its devices; select GPUs with CUDA_VISIBLE_DEVICES)")
    model, adapter = spec.model, spec.adapter
    path = resolve_model(model)
    kwargs: dict = {
        "model": path, "tokenizer": path, "dtype": VLLM_DTYPES[spec.dtype], "trust_remote_code": spec.trust_remote_code,
        "tensor_parallel_size": spec.tensor_parallel_size, "enable_prefix_caching": True, "seed": seed,
        "gpu_memory_utilization": gpu_memory_utilization, "logprobs_mode": "raw_logprobs",
    }
    lora = None
    if adapter:
        from vllm.lora.request import LoRARequest

        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank_slot(adapter_rank(adapter)))
        lora = LoRARequest("mcts-pref-adapter", 1, str(Path(adapter).resolve()))
    if spec.load_in_4bit:
        kwargs["quantization"] = "bitsandbytes"  # in-flight 4-bit quantization of the base weights
    tok = load_tokenizer(model, spec.trust_remote_code)
    llm = vllm.LLM(**kwargs)
    return VLLMBackend(llm, tok, spec, shots=shots, lora_request=lora, eos_ids=generation_eos_ids(path), sampling_params=vllm.SamplingParams)
