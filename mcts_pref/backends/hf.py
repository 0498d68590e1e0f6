"""The transformers backend: batched step generation with a prefix KV cache across calls.

Decoding a small model is memory-bandwidth bound, so one forward pass over
many rows costs about as much as over one. Everything here is therefore
batched: all prefixes of a call are prefilled together once, their KV cache
is copied to the k continuation rows (the prefix is never re-encoded per
child), rows that finish are pruned from the batch, and self-evaluation is
one forward pass over all (question, partial solution) pairs.

Across calls, a :class:`mcts_pref.backends.kvcache.PrefixCache` (``kv_cache_mb``
> 0, the default) keeps the KV of every prefix and of every generated step in
a radix tree of token runs: the next expansion of a child, its rollouts and its
judgement prompt encode only what is not cached yet. With ``kv_cache_mb=0``
only the exemplar and judgement headers are reused (prefilled once at start).
The prefills themselves are a :class:`mcts_pref.backends.prefill.Prefiller` the
backend owns (``self.prefill``).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Sequence

import torch

from mcts_pref.backends.base import StepDecoder
from mcts_pref.backends.kvcache import PrefixCache
from mcts_pref.backends.prefill import Header, Prefiller, row_kv
from mcts_pref.distinct import TrieNode, build_trie
from mcts_pref.policy_spec import PolicySpec
from mcts_pref.prompts import judge_prompt, judge_question
from mcts_pref.steps import Step, StepCutter

SENTINEL = "\ue000"  # a private-use character standing in for the question
TOP_K_FIRST = 256  # top-p sampling looks for the nucleus among this many tokens first
PINNED = ("header",)  # the owner of the headers' cached runs: never released, evicted last


class HFBackend(StepDecoder):
    """A :class:`mcts_pref.backends.base.Backend` over a transformers causal LM."""

    samples_without_replacement = True

    def __init__(self, model, tokenizer, spec: PolicySpec, *, shots=None):
        """``shots``: the exemplars (None: the built-in ones); of ``spec``, the prompt format,
        ``batch_rows`` and ``kv_cache_mb`` apply here, the model was loaded from it."""
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        super().__init__(tokenizer, spec, shots=shots, eos_ids=gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
        self.model = model
        self.max_batch_rows = max(1, spec.batch_rows)
        self.device = next(model.parameters()).device
        params = inspect.signature(type(model).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._live: dict[str, int] = {}  # prompt of a live tree -> how many live trees have it
        self._judge_owner: dict[str, str] = {}  # judge_question of a live tree -> its prompt
        # Every prompt starts with the same system text and exemplars, and every
        # judgement prompt with the same instruction: prefill each once, reuse its KV.
        # (Templates, not trees: formatted without the live-tree bookkeeping of format_prompt.)
        probe_q = "What is 12 + 3?"
        template = super().format_prompt
        self.prompt_header = self._make_header(template({"question": SENTINEL}), template({"question": probe_q}))
        self.judge_header = self._make_header(judge_prompt(SENTINEL, "1", tokenizer, self.fmt),
                                              judge_prompt(probe_q, "1", tokenizer, self.fmt))
        # The prefix cache, when the model's cache is plain per-layer KV (no sliding-window
        # truncation, no recurrent state): only then is a run of KV a function of its tokens.
        kv = None
        if spec.kv_cache_mb > 0 and self._plain_kv():
            kv = PrefixCache(spec.kv_cache_mb * 2**20)
            for header in (self.prompt_header, self.judge_header):
                if header is not None:
                    kv.insert(header.ids, 0, lambda lo, hi, c=header.cache: row_kv(c, 0, lo, hi), owner=PINNED)
        # The forward is looked up per call, so a wrapper put on self._forward (a timer, a test's
        # spy) sees the prefills too.
        self.prefill = Prefiller(tokenizer, self._add_special, self.device, lambda **kw: self._forward(**kw), kv)

    @property
    def kv(self) -> PrefixCache | None:
        """The prefix cache (None: off); the prefiller holds it, so setting it here switches both."""
        return self.prefill.kv

    @kv.setter
    def kv(self, cache: PrefixCache | None) -> None:
        self.prefill.kv = cache

    @torch.inference_mode()
    def _make_header(self, template: str, probe: str) -> Header | None:
        """The part of ``template`` before the SENTINEL, cut where tokenization is stable.

        ``probe`` is the same template with a real question in place of the
        sentinel: the header is used only if its tokens are a prefix of the
        probe's tokens (BPE can merge across the cut, e.g. a space and a word).
        """
        from transformers import DynamicCache

        text = template[: template.index(SENTINEL)]
        probe_ids = self.tok(probe, add_special_tokens=self._add_special).input_ids
        for cut in (text[: text.rfind("\n") + 1], text.rstrip()):
            ids = self.tok(cut, add_special_tokens=self._add_special).input_ids
            if len(ids) >= 8 and probe_ids[: len(ids)] == ids:
                ids_t = torch.tensor([ids], device=self.device)
                res = self._forward(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), cache=DynamicCache())
                return Header(text=cut, ids=list(ids), cache=getattr(res, "cache", None) or res.past_key_values)
        return None  # no stable cut: prefill whole prompts instead

    def _plain_kv(self) -> bool:
        """Does this model's forward fill a cache of plain DynamicLayers (full K and V per layer)?"""
        from transformers import DynamicCache

        try:
            from transformers.cache_utils import DynamicLayer
        except ImportError:  # a transformers without per-layer cache objects: no prefix cache
            return False
        header = self.prompt_header or self.judge_header
        if header is None:
            ids_t = torch.tensor([[self.tok.eos_token_id or 0] * 2], device=self.device)
            res = self._forward(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), cache=DynamicCache())
            cache = getattr(res, "cache", None) or res.past_key_values
        else:
            cache = header.cache
        layers = getattr(cache, "layers", None)
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    # -- live trees own their cached runs ------------------------------------------
    def format_prompt(self, problem: dict) -> str:
        """The prompt of ``problem``; with the prefix cache on, its tree is live until :meth:`release`."""
        prompt = super().format_prompt(problem)
        if self.kv is not None:
            self._live[prompt] = self._live.get(prompt, 0) + 1
            self._judge_owner[judge_question(problem)] = prompt
        return prompt

    def release(self, prompt: str) -> None:
        """The tree (or sample batch) of ``prompt`` is done: drop the cached runs only it used."""
        left = self._live.get(prompt, 0) - 1
        if left > 0:
            self._live[prompt] = left
            return
        self._live.pop(prompt, None)
        for q in [q for q, p in self._judge_owner.items() if p == prompt]:
            del self._judge_owner[q]
        if self.kv is not None:
            self.kv.release(prompt)

    def _owner(self, prefix: str) -> str | None:
        """The live prompt ``prefix`` starts with (the tree it belongs to), if any."""
        for prompt in self._live:
            if prefix.startswith(prompt):
                return prompt
        return None

    # -- generation --------------------------------------------------------------
    def _chunks(self, n: Sequence[int]):
        """Group prefix indices so that each group has at most max_batch_rows rows."""
        group, rows = [], 0
        for i, k in enumerate(n):
            if group and rows + k > self.max_batch_rows:
                yield group
                group, rows = [], 0
            group.append(i)
            rows += k
        if group:
            yield group

    def _decode(self, prefixes, n, temperature, top_p, max_new, *, whole: bool, seed, tasks, exclude=None):
        out: list[list[Step]] = [[] for _ in prefixes]
        for c, group in enumerate(self._chunks(n)):
            gen = None
            if temperature > 0:
                gen = torch.Generator(device=self.device)
                gen.manual_seed((seed if seed is not None else 0) * 1_000_003 + c)
            steps = self._decode_rows([prefixes[i] for i in group], [n[i] for i in group],
                                      [tasks[i] for i in group], temperature, top_p, max_new, whole, gen,
                                      None if exclude is None else [exclude[i] for i in group])
            for i, s in zip(group, steps):
                out[i] = s
        return out

    def _forward(self, **kw):
        self.stats["forward_calls"] += 1
        if kw["input_ids"].shape[1] > 1:
            self.stats["prefill_tokens"] += kw["input_ids"].numel()  # padding included: it costs the same
        cache = kw.pop("cache")
        return self.model(**kw, use_cache=True, **{self._cache_kw: cache})

    @torch.inference_mode()
    def _decode_rows(self, prefixes, n, tasks, temperature, top_p, max_new, whole, gen, exclude=None) -> list[list[Step]]:
        kv = self.kv
        if kv is None:
            last, cache, mask = self.prefill(prefixes, self.prompt_header)
        else:
            ids = [list(x) for x in self.tok(list(prefixes), add_special_tokens=self._add_special).input_ids]
            owners = [self._owner(p) for p in prefixes]
            last, cache, mask, spans = self.prefill.cached(ids, owners)
        # Shared prefix: encode once, then copy its KV rows to its k continuations.
        expand_idx = torch.repeat_interleave(torch.arange(len(prefixes), device=self.device),
                                             torch.tensor(list(n), device=self.device))
        cache.batch_select_indices(expand_idx)
        logits = last[expand_idx]
        mask = mask[expand_idx]
        next_pos = mask.sum(-1)
        width0 = mask.shape[1]
        source = expand_idx.tolist()  # row id -> prefix index

        cutters = [StepCutter(self.cut_rule, whole=whole, task=task) for task, k in zip(tasks, n) for _ in range(k)]
        active = list(range(len(cutters)))  # batch position -> row id
        drawn: list[list[tuple[int, float]]] = [[] for _ in cutters]
        # Without replacement: each row walks the trie of its prefix's excluded steps while it follows one.
        tries = [build_trie(paths) if paths and temperature > 0 else None for paths in (exclude or [None] * len(n))]
        at: list[TrieNode | None] = [tries[i] for i in source]

        def keep(positions) -> None:
            """Cache the rows at these batch positions: prefix + generated step (KV exists for all but the last token)."""
            if kv is None:
                return
            made = mask.shape[1] - width0  # generated tokens whose KV is in the cache
            for a in positions:
                r = active[a]
                i = source[r]
                # Rollouts (whole solutions) are not future prefixes: keep only their prefix.
                tail = [] if whole else cutters[r].tokens[:made]
                self.prefill.keep(cache, a, ids[i] + tail, spans[i], owners[i])

        for t in range(max_new):
            adjust = None
            if any(node is not None for node in at):
                adjust = [at[r].multipliers() if at[r] is not None else None for r in active]
            chosen, chosen_lp, chosen_q = self._pick(logits, temperature, top_p, gen, adjust)
            for a, (tid, lp, q) in enumerate(zip(chosen.tolist(), chosen_lp.tolist(), chosen_q.tolist())):
                r = active[a]
                row = cutters[r]
                if not row.done:
                    before = len(row.tokens)
                    row.feed(tid, lp)
                    drawn[r].append((tid, q))
                    if at[r] is not None:
                        at[r] = at[r].kids.get(tid)
                    self.stats["tokens"] += len(row.tokens) - before
            alive = [a for a, r in enumerate(active) if not cutters[r].done]
            if not alive or t == max_new - 1:
                break
            if len(active) - len(alive) >= max(1, len(active) // 4):
                keep([a for a, r in enumerate(active) if cutters[r].done])
                sel = torch.tensor(alive, device=self.device)
                cache.batch_select_indices(sel)
                mask, next_pos, chosen = mask[sel], next_pos[sel], chosen[sel]
                active = [active[a] for a in alive]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            res = self._forward(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                                cache=cache)
            cache = getattr(res, "cache", None) or res.past_key_values
            next_pos = next_pos + 1
            logits = res.logits[:, -1, :]
        keep(range(len(active)))

        steps = [replace(c.to_step(), drawn=tuple(d)) for c, d in zip(cutters, drawn)]
        grouped, i = [], 0
        for k in n:
            grouped.append(steps[i:i + k])
            i += k
        return grouped

    @staticmethod
    def _pick(logits, temperature, top_p, gen, adjust=None):
        """Next token per row: (token, its log-prob under the untempered policy (for the prior),
        its probability under the sampling law).

        ``adjust[row]``, where given, maps tokens to factors their sampling probability is
        multiplied by (sampling without replacement, :mod:`mcts_pref.distinct`); a row whose
        mass is all removed falls back to the plain law (it repeats a drawn step).
        """
        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        if temperature <= 0:
            chosen = logits.argmax(-1)
            return chosen, logprobs.gather(1, chosen[:, None]).squeeze(1), torch.ones_like(chosen, dtype=torch.float32)
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            # The nucleus: tokens whose higher-ranked mass is <= top_p. It almost always
            # lies in the top few hundred of a vocabulary of tens of thousands, and topk
            # is far cheaper than a full sort; sort only when some row needs more.
            k = min(TOP_K_FIRST, probs.shape[-1])
            sp, si = probs.topk(k, dim=-1)
            if k < probs.shape[-1] and bool((sp.sum(-1) <= top_p).any()):
                sp, si = probs.sort(dim=-1, descending=True)
            sp[(sp.cumsum(-1) - sp) > top_p] = 0.0
        else:
            sp, si = probs, None
        law = sp / sp.sum(-1, keepdim=True)
        weights = _excluded(sp, si, adjust) if adjust is not None and any(adjust) else sp
        pick = torch.multinomial(weights, 1, generator=gen)
        chosen = pick.squeeze(1) if si is None else si.gather(1, pick).squeeze(1)
        return chosen, logprobs.gather(1, chosen[:, None]).squeeze(1), law.gather(1, pick).squeeze(1)

    # -- self-evaluation ---------------------------------------------------------
    @torch.inference_mode()
    def self_evaluate(self, questions: Sequence[str], partials: Sequence[str]) -> list[float]:
        """C = P(B) / (P(A) + P(B)) at the verdict position of the judgement prompt."""
        self.stats["self_eval_calls"] += 1
        prompts = [judge_prompt(q, p, self.tok, self.fmt) for q, p in zip(questions, partials)]
        scores: list[float] = []
        for i in range(0, len(prompts), self.max_batch_rows):
            chunk = prompts[i:i + self.max_batch_rows]
            if self.kv is None:
                # Siblings' judgement prompts differ only in their last step: share the rest.
                logits, _, _ = self.prefill(chunk, self.judge_header, share=True)
            else:
                # A child's judgement prompt extends its parent's up to the parent's last step:
                # cached from the parent's own judgement, so mostly only the new step is encoded.
                ids = [list(x) for x in self.tok(chunk, add_special_tokens=self._add_special).input_ids]
                owners = [self._judge_owner.get(q) for q in questions[i:i + self.max_batch_rows]]
                self.prefill.share_uncached(ids, owners)
                logits, cache, _, spans = self.prefill.cached(ids, owners)
                for r, (x, span, owner) in enumerate(zip(ids, spans, owners)):
                    self.prefill.keep(cache, r, x, span, owner)
            two = torch.softmax(logits.float()[:, self.judge_ids], dim=-1)
            scores.extend(two[:, 1].tolist())
        return scores


def _excluded(sp: torch.Tensor, si: torch.Tensor | None, adjust) -> torch.Tensor:
    """``sp`` (sampling weights; column j is token ``si[:, j]``, or token j when ``si`` is None)
    with ``adjust[row]``'s factors applied; rows left with no mass keep their plain weights."""
    out = sp.clone()
    for r, factors in enumerate(adjust):
        if not factors:
            continue
        toks = torch.tensor(list(factors), device=sp.device)
        mult = torch.tensor(list(factors.values()), dtype=sp.dtype, device=sp.device)
        if si is None:
            out[r, toks] *= mult
        else:
            hit = si[r][None, :] == toks[:, None]  # [drawn tokens, columns]
            found = hit.any(1)
            out[r, hit.float().argmax(1)[found]] *= mult[found]
        if float(out[r].sum()) <= 1e-12:
            out[r] = sp[r]
    return out
