"""Prefill for the transformers backend: encode many prompts in one forward pass, reusing KV.

A :class:`Prefiller` is owned by :class:`mcts_pref.backends.hf.HFBackend` (as ``backend.prefill``)
and built with what it needs: the tokenizer, the special-token rule, the device, the model call
and the prefix cache. Three ways to skip re-encoding a prompt's start:

- a :class:`Header` (system prompt + exemplars, or the judgement template) prefilled
  once and copied to every row;
- share groups: rows that start with the same tokens (siblings' judgement prompts)
  encode them once, then each row its own rest (:meth:`Prefiller._shared`);
- the cross-call prefix cache (:class:`mcts_pref.backends.kvcache.PrefixCache`):
  each row's cached runs go into a left-padded past and only the rest is encoded
  (:meth:`Prefiller.cached`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mcts_pref.backends.kvcache import PrefixCache, common_length

MIN_SHARED = 8  # prompts sharing at least this many leading tokens are prefilled as a group
MIN_SAVED = 64  # tokens a first, shared prefill must save to pay for its extra forward pass (CPU, small model)


@dataclass
class Header:
    """The text every prompt of one kind starts with (system + exemplars), prefilled once."""

    text: str
    ids: list[int]  # its tokens, special tokens included
    cache: object  # a batch-1 DynamicCache of the header

    @property
    def length(self) -> int:
        return len(self.ids)


class Prefiller:
    """The prefill half of the transformers backend.

    ``tokenizer`` and ``add_special`` (whether it adds special tokens) turn texts into ids;
    ``device`` is where the inputs go; ``forward(**kw)`` is the model call (inputs, attention
    mask, positions, ``cache=``, ``logits_to_keep=``) that returns logits and the cache; ``kv``
    is the :class:`~mcts_pref.backends.kvcache.PrefixCache` (None: off), which
    :meth:`cached`, :meth:`share_uncached` and :meth:`keep` need.
    """

    def __init__(self, tokenizer, add_special: bool, device, forward: Callable, kv: PrefixCache | None):
        self.tok = tokenizer
        self.add_special = add_special
        self.device = device
        self.forward = forward
        self.kv = kv

    def __call__(self, texts: Sequence[str], header: Header | None, share: bool = False):
        """One forward pass over left-padded ``texts``; returns (last logits, cache, attention mask).

        With a header that every text starts with, only the rest is encoded:
        the header's KV is copied to each row and padding sits between the
        header and the rest, which the attention mask and positions account for.
        With ``share``, texts that start with the same tokens (the judgement
        prompts of siblings) encode those once: see :meth:`_shared`.
        """
        ids = self._token_ids(texts, header)
        if ids is None:
            header, ids = None, self._token_ids(texts, None)
        base = header.length if header is not None else 0
        if share and len(texts) > 1:
            groups = share_groups(ids)
            if groups is not None:
                return self._shared(ids, groups, header)
        tokens, smask = self._left_pad(ids)
        mask = torch.cat([smask.new_ones(len(texts), base), smask], dim=1)
        pos = base + (smask.cumsum(-1) - 1).clamp(min=0)
        res = self.forward(input_ids=tokens, attention_mask=mask, position_ids=pos,
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
        full = [list(x) for x in self.tok(list(texts), add_special_tokens=self.add_special).input_ids]
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

    def _shared(self, ids: list[list[int]], groups: list[tuple[int, list[int]]], header: Header | None):
        """A prefill (:meth:`__call__`) in two levels: each group's shared tokens once, then every row's own rest.

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
        res = self.forward(input_ids=ids1, attention_mask=mask1, position_ids=pos1, cache=cache, logits_to_keep=1)
        cache = getattr(res, "cache", None) or res.past_key_values

        sel = torch.tensor(row_group, device=self.device)
        cache.batch_select_indices(sel)
        ids2, m2 = self._left_pad([ids[r][groups[row_group[r]][0]:] for r in range(n)])
        mask = torch.cat([mask1[sel], m2], dim=1)
        pos2 = base + m1.sum(-1)[sel][:, None] + (m2.cumsum(-1) - 1).clamp(min=0)
        res = self.forward(input_ids=ids2, attention_mask=mask, position_ids=pos2, cache=cache, logits_to_keep=1)
        return res.logits[:, -1, :], getattr(res, "cache", None) or res.past_key_values, mask

    def cached(self, ids: list[list[int]], owners: Sequence[str | None]):
        """One forward pass over ``ids`` that encodes only what the prefix cache lacks.

        Row i's cached runs (``m_i`` tokens, always leaving at least its last token
        to encode for the logits) are copied into a left-padded past; the rest is
        left-padded after it, so a row reads
        ``[pad, cached KV, pad, new tokens]`` with the attention mask and explicit
        positions saying which is which. Returns (last logits, cache, attention mask,
        ``spans``): ``spans[i] = (m_i, c_i)``, the row's KV for its token ``m_i`` and on
        sits at cache columns ``c_i, c_i + 1, ...`` (generated tokens follow on).
        """
        from transformers import DynamicCache

        paths = [self.kv.match(x, owner, max_tokens=len(x) - 1) for x, owner in zip(ids, owners)]
        matched = [sum(used for _, used in p) for p in paths]
        rest = [x[m:] for x, m in zip(ids, matched)]
        tokens, rmask = self._left_pad(rest)
        width = max(matched)
        pmask = rmask.new_zeros(len(ids), width)
        cache = DynamicCache()
        if width:
            past = None
            for i, path in enumerate(paths):
                kv = self.kv.gather(path)
                if kv is None:
                    continue
                if past is None:
                    layers, _, heads, _, dim = kv.shape
                    past = kv.new_zeros(layers, 2, len(ids), heads, width, dim)
                past[:, :, i, :, width - matched[i]:] = kv
                pmask[i, width - matched[i]:] = 1
            cache = DynamicCache(ddp_cache_data=[(past[j, 0], past[j, 1]) for j in range(past.shape[0])])
        mask = torch.cat([pmask, rmask], dim=1)
        m_t = torch.tensor(matched, device=self.device)[:, None]
        pos = m_t + (rmask.cumsum(-1) - 1).clamp(min=0)
        res = self.forward(input_ids=tokens, attention_mask=mask, position_ids=pos, cache=cache, logits_to_keep=1)
        total = mask.shape[1]
        spans = [(m, total - len(r)) for m, r in zip(matched, rest)]
        return res.logits[:, -1, :], getattr(res, "cache", None) or res.past_key_values, mask, spans

    def share_uncached(self, ids: list[list[int]], owners: Sequence[str | None]) -> None:
        """Encode once, and cache, what one tree's rows share beyond the cache (its question and steps).

        A tree's rows (siblings' judgement prompts) share their longest common prefix; it is
        prefilled for one of them when that saves at least :data:`MIN_SAVED` tokens in all,
        about the cost of the extra forward pass. The rows then find it in the cache.
        """
        by_owner: dict[str, list[int]] = {}
        for r, owner in enumerate(owners):
            if owner is not None:
                by_owner.setdefault(owner, []).append(r)
        reps, rep_owners, saved = [], [], 0
        for owner, rows in by_owner.items():
            if len(rows) < 2:
                continue
            first = ids[rows[0]]
            plen = min(min(common_length(first, ids[r]) for r in rows[1:]), min(len(ids[r]) for r in rows) - 1)
            cached = sum(u for _, u in self.kv.match(first, max_tokens=plen, count=False))
            if plen - cached >= MIN_SHARED:
                reps.append(first[:plen])
                rep_owners.append(owner)
                saved += (len(rows) - 1) * (plen - cached)
        if saved < MIN_SAVED:
            return
        _, cache, _, spans = self.cached(reps, rep_owners)
        for r, (x, span, owner) in enumerate(zip(reps, spans, rep_owners)):
            self.keep(cache, r, x, span, owner)

    def keep(self, cache, row: int, ids: list[int], span: tuple[int, int], owner: str | None) -> None:
        """Cache the KV of ``ids``; from token ``span[0]`` on it sits in ``cache`` row ``row``, columns ``span[1]`` on."""
        m, col = span
        self.kv.insert(ids, m, lambda lo, hi: row_kv(cache, row, col + lo - m, col + hi - m), owner=owner)


def row_kv(cache, row: int, lo: int, hi: int) -> torch.Tensor:
    """Cache columns ``lo:hi`` of batch row ``row``, all layers: [layers, 2 (K, V), heads, hi - lo, head_dim]."""
    return torch.stack([torch.stack([layer.keys[row, :, lo:hi], layer.values[row, :, lo:hi]])
                        for layer in cache.layers])


def share_groups(ids: list[list[int]], min_shared: int = MIN_SHARED) -> list[tuple[int, list[int]]] | None:
    """Group token sequences by a common prefix: ``[(shared length, row indices), ...]``.

    Rows are sorted, and neighbours sharing at least ``min_shared`` leading
    tokens form a group; a group keeps at least one token of each row for
    level 2 (that row's last logits come from there). A row alone shares with
    nobody and puts all but its last token in level 1. None when grouping
    would save less than a quarter of the tokens.
    """
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    groups: list[tuple[int, list[int]]] = []
    members, shared = [order[0]], len(ids[order[0]])
    for i in order[1:]:
        common = common_length(ids[members[0]], ids[i])  # sorted: the group's common prefix with i
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