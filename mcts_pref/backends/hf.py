"""The transformers backend: batched step generation with a shared-prefix KV cache.

Decoding a small model is memory-bandwidth bound, so one forward pass over
many rows costs about as much as over one. Everything here is therefore
batched: all prefixes of a call are prefilled together once, their KV cache
is copied to the k continuation rows (the prefix is never re-encoded per
child), rows that finish are pruned from the batch, and self-evaluation is
one forward pass over all (question, partial solution) pairs.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Sequence

import torch

from mcts_pref.backends.base import StepDecoder
from mcts_pref.prompts import judge_prompt
from mcts_pref.steps import Step, StepCutter

SENTINEL = "\ue000"  # a private-use character standing in for the question
TOP_K_FIRST = 256  # top-p sampling looks for the nucleus among this many tokens first
MIN_SHARED = 8  # prompts sharing at least this many leading tokens are prefilled as a group


@dataclass
class Header:
    """The text every prompt of one kind starts with (system + exemplars), prefilled once."""

    text: str
    ids: list[int]  # its tokens, special tokens included
    cache: object  # a batch-1 DynamicCache of the header

    @property
    def length(self) -> int:
        return len(self.ids)


class HFBackend(StepDecoder):
    """A :class:`mcts_pref.backends.base.Backend` over a transformers causal LM."""

    def __init__(self, model, tokenizer, *, policy_id: str, prompt_format: str = "auto", shots=None, max_batch_rows: int = 64):
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        super().__init__(tokenizer, policy_id=policy_id, prompt_format=prompt_format, shots=shots,
                         eos_ids=gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
        self.model = model
        self.max_batch_rows = max(1, max_batch_rows)
        self.device = next(model.parameters()).device
        params = inspect.signature(type(model).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        # Every prompt starts with the same system text and exemplars, and every
        # judgement prompt with the same instruction: prefill each once, reuse its KV.
        probe_q = "What is 12 + 3?"
        self.prompt_header = self._make_header(self.format_prompt({"question": SENTINEL}),
                                               self.format_prompt({"question": probe_q}))
        self.judge_header = self._make_header(judge_prompt(SENTINEL, "1", tokenizer, self.fmt),
                                              judge_prompt(probe_q, "1", tokenizer, self.fmt))

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

    def _prefill(self, texts: Sequence[str], header: Header | None, share: bool = False):
        """One forward pass over left-padded ``texts``; returns (last logits, cache, attention mask).

        With a header that every text starts with, only the rest is encoded:
        the header's KV is copied to each row and padding sits between the
        header and the rest, which the attention mask and positions account for.
        With ``share``, texts that start with the same tokens (the judgement
        prompts of siblings) encode those once: see :meth:`_prefill_shared`.
        """
        ids = self._token_ids(texts, header)
        if ids is None:
            header, ids = None, self._token_ids(texts, None)
        base = header.length if header is not None else 0
        if share and len(texts) > 1:
            groups = share_groups(ids)
            if groups is not None:
                return self._prefill_shared(ids, groups, header)
        tokens, smask = self._left_pad(ids)
        mask = torch.cat([smask.new_ones(len(texts), base), smask], dim=1)
        pos = base + (smask.cumsum(-1) - 1).clamp(min=0)
        res = self._forward(input_ids=tokens, attention_mask=mask, position_ids=pos,
                            cache=self._header_cache(header, len(texts)), logits_to_keep=1)
        return res.logits[:, -1, :], getattr(res, "cache", None) or res.past_key_values, mask

    def _token_ids(self, texts: Sequence[str], header: Header | None) -> list[list[int]] | None:
        """Each text's token ids after the header's: those of the whole text, less the header's.

        A text's rest is never tokenized alone: a SentencePiece tokenizer would
        start it with a "▁" that is not in the whole text's tokens. None when
        some text's tokens do not start with the header's (a merge across the
        cut): then the texts are prefilled whole, without the header.
        """
        if header is not None and not all(t.startswith(header.text) for t in texts):
            return None
        full = [list(x) for x in self.tok(list(texts), add_special_tokens=self._add_special).input_ids]
        if header is None:
            return full
        if any(x[: header.length] != header.ids for x in full):
            return None
        return [x[header.length:] for x in full]

    def _header_cache(self, header: Header | None, rows: int):
        """A cache to prefill on: the header's KV copied to ``rows`` rows, or an empty one."""
        from transformers import DynamicCache

        if header is None:
            return DynamicCache()
        cache = copy.deepcopy(header.cache)
        cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=self.device))
        return cache

    def _left_pad(self, seqs: list[list[int]]):
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        width = max(1, max(len(x) for x in seqs))
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, x in enumerate(seqs):
            if x:
                ids[i, width - len(x):] = torch.tensor(x)
                mask[i, width - len(x):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _prefill_shared(self, ids: list[list[int]], groups: list[tuple[int, list[int]]], header: Header | None):
        """:meth:`_prefill` in two levels: each group's shared tokens once, then every row's own rest.

        Level 1 encodes one row per group (its shared prefix) on top of the
        header; its KV is then copied to the group's members, and level 2
        encodes each member's remaining tokens. The tokens are exactly those
        of the whole text, so the result is the one-level result up to float
        rounding.
        """
        n, base = len(ids), header.length if header is not None else 0
        row_group = [0] * n
        for g, (_, members) in enumerate(groups):
            for m in members:
                row_group[m] = g
        ids1, m1 = self._left_pad([ids[members[0]][:plen] for plen, members in groups])
        cache = self._header_cache(header, len(groups))
        mask1 = torch.cat([m1.new_ones(len(groups), base), m1], dim=1)
        pos1 = base + (m1.cumsum(-1) - 1).clamp(min=0)
        res = self._forward(input_ids=ids1, attention_mask=mask1, position_ids=pos1, cache=cache, logits_to_keep=1)
        cache = getattr(res, "cache", None) or res.past_key_values

        sel = torch.tensor(row_group, device=self.device)
        cache.batch_select_indices(sel)
        ids2, m2 = self._left_pad([ids[r][groups[row_group[r]][0]:] for r in range(n)])
        mask = torch.cat([mask1[sel], m2], dim=1)
        pos2 = base + m1.sum(-1)[sel][:, None] + (m2.cumsum(-1) - 1).clamp(min=0)
        res = self._forward(input_ids=ids2, attention_mask=mask, position_ids=pos2, cache=cache, logits_to_keep=1)
        return res.logits[:, -1, :], getattr(res, "cache", None) or res.past_key_values, mask

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

    def _decode(self, prefixes, n, temperature, top_p, max_new, *, whole: bool, seed, tasks):
        out: list[list[Step]] = [[] for _ in prefixes]
        for c, group in enumerate(self._chunks(n)):
            gen = None
            if temperature > 0:
                gen = torch.Generator(device=self.device)
                gen.manual_seed((seed if seed is not None else 0) * 1_000_003 + c)
            steps = self._decode_rows([prefixes[i] for i in group], [n[i] for i in group],
                                      [tasks[i] for i in group], temperature, top_p, max_new, whole, gen)
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
    def _decode_rows(self, prefixes, n, tasks, temperature, top_p, max_new, whole, gen) -> list[list[Step]]:
        last, cache, mask = self._prefill(prefixes, self.prompt_header)
        # Shared prefix: encode once, then copy its KV rows to its k continuations.
        expand_idx = torch.repeat_interleave(torch.arange(len(prefixes), device=self.device),
                                             torch.tensor(list(n), device=self.device))
        cache.batch_select_indices(expand_idx)
        logits = last[expand_idx]
        mask = mask[expand_idx]
        next_pos = mask.sum(-1)

        cutters = [StepCutter(self.cut_rule, whole=whole, task=task) for task, k in zip(tasks, n) for _ in range(k)]
        active = list(range(len(cutters)))  # batch position -> row id
        for t in range(max_new):
            chosen, chosen_lp = self._pick(logits, temperature, top_p, gen)
            for a, (tid, lp) in enumerate(zip(chosen.tolist(), chosen_lp.tolist())):
                row = cutters[active[a]]
                if not row.done:
                    before = len(row.tokens)
                    row.feed(tid, lp)
                    self.stats["tokens"] += len(row.tokens) - before
            alive = [a for a, r in enumerate(active) if not cutters[r].done]
            if not alive or t == max_new - 1:
                break
            if len(active) - len(alive) >= max(1, len(active) // 4):
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

        steps = [c.to_step() for c in cutters]
        grouped, i = [], 0
        for k in n:
            grouped.append(steps[i:i + k])
            i += k
        return grouped

    @staticmethod
    def _pick(logits, temperature, top_p, gen):
        """Next token per row and its log-prob under the untempered policy (for the prior)."""
        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        if temperature <= 0:
            chosen = logits.argmax(-1)
        else:
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
                pick = torch.multinomial(sp, 1, generator=gen)
                chosen = si.gather(1, pick).squeeze(1)
            else:
                chosen = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        return chosen, logprobs.gather(1, chosen[:, None]).squeeze(1)

    # -- self-evaluation ---------------------------------------------------------
    @torch.inference_mode()
    def self_evaluate(self, questions: Sequence[str], partials: Sequence[str]) -> list[float]:
        """C = P(B) / (P(A) + P(B)) at the verdict position of the judgement prompt."""
        self.stats["self_eval_calls"] += 1
        prompts = [judge_prompt(q, p, self.tok, self.fmt) for q, p in zip(questions, partials)]
        scores: list[float] = []
        for i in range(0, len(prompts), self.max_batch_rows):
            # Siblings' judgement prompts differ only in their last step: share the rest.
            logits, _, _ = self._prefill(prompts[i:i + self.max_batch_rows], self.judge_header, share=True)
            two = torch.softmax(logits.float()[:, self.judge_ids], dim=-1)
            scores.extend(two[:, 1].tolist())
        return scores


def share_groups(ids: list[list[int]], min_shared: int = MIN_SHARED) -> list[tuple[int, list[int]]] | None:
    """Group token sequences by a common prefix: ``[(shared length, row indices), ...]``.

    Rows are sorted, and neighbours sharing at least ``min_shared`` leading
    tokens form a group; a group keeps at least one token of each row for
    level 2 (that row's last logits come from there). A row alone shares with
    nobody and puts all but its last token in level 1. None when grouping
    would save less than a quarter of the tokens.
    """
    def lcp(a: list[int], b: list[int]) -> int:
        k = 0
        for x, y in zip(a, b):
            if x != y:
                break
            k += 1
        return k

    order = sorted(range(len(ids)), key=lambda i: ids[i])
    groups: list[tuple[int, list[int]]] = []
    members, shared = [order[0]], len(ids[order[0]])
    for i in order[1:]:
        common = lcp(ids[members[0]], ids[i])  # sorted: the group's common prefix with i
        if common >= min_shared:
            members.append(i)
            shared = min(shared, common)
        else:
            groups.append((members, shared))
            members, shared = [i], len(ids[i])
    groups.append((members, shared))
    out = [(max(0, min(shared, min(len(ids[m]) for m in members) - 1)), members) for members, shared in groups]
    saved = sum((len(members) - 1) * plen for plen, members in out)
    if saved * 4 < sum(len(x) for x in ids):
        return None
    return out