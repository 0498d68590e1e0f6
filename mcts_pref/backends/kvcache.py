"""A prefix KV cache keyed by token ids: a radix tree of token runs, LRU-evicted, owned by live trees.

SGLang's RadixAttention at the scale of one process (vLLM's automatic
prefix caching is the same idea with fixed-size blocks): the keys and values
the model computed for a token sequence are kept in the nodes of a radix
tree, each node a run of tokens (an *edge*) with their KV, a child of the run
before it. The cached KV of a sequence is found by walking its tokens from
the root; a node's prefix was encoded by the call that generated its step,
so the next call that extends the node encodes only the tokens after the
longest cached run, token-exact (a fixed block size would re-encode up to a
block less one per row).

A run's KV depends on its tokens and every token before them, and a tree
path pins both. Keys carry their rotary position already, and a run is only
ever used at the position it was computed at (its depth in tokens), so
cached KV is what a full prefill computes, up to float rounding.

Memory is bounded by ``max_bytes``. Nodes carry the *owners* (live search
trees) whose calls passed through them; :meth:`PrefixCache.release` drops
what a finished tree alone used. Past the cap, leaves are evicted least
recently used first, nodes no live tree owns before owned ones; a cache under
a tiny cap is slower (more is re-encoded), never wrong.

This module holds tensors but does no model work; ``hf.py`` builds the
batched past from :meth:`PrefixCache.gather` and hands back new KV through
:meth:`PrefixCache.insert`. KV tensors are [layers, 2 (K, V), heads, tokens, head_dim].
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable, Hashable, Sequence

import torch

EVICT_TO = 0.9  # eviction frees down to this share of the cap, so it does not run on every insert


class Node:
    """A run of tokens (``edge``) and its KV, below the run before it."""

    __slots__ = ("edge", "parent", "children", "kv", "last_used", "owners")

    def __init__(self, edge: list[int], parent: "Node | None", kv: torch.Tensor | None):
        self.edge, self.parent, self.kv = edge, parent, kv
        self.children: dict[int, Node] = {}  # keyed by the child's first token
        self.last_used = 0
        self.owners: set = set()

    @property
    def nbytes(self) -> int:
        return 0 if self.kv is None else self.kv.numel() * self.kv.element_size()


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """Token ids -> cached KV. ``max_bytes``: the cap on the cached tensors (bytes)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max(0, int(max_bytes))
        self.root = Node([], None, None)
        self.bytes = 0
        self.peak_bytes = 0
        self.nodes = 0
        self._clock = itertools.count(1)
        self._owned: dict[Hashable, set[Node]] = {}
        self.stats = {"lookup_tokens": 0, "hit_tokens": 0, "inserted_tokens": 0, "evicted_nodes": 0,
                      "released_nodes": 0}

    # -- lookup ----------------------------------------------------------------
    def match(self, ids: Sequence[int], owner: Hashable | None = None,
              max_tokens: int | None = None, count: bool = True) -> list[tuple[Node, int]]:
        """The cached runs ``ids`` starts with: ``[(node, tokens used of its edge), ...]``.

        At most ``max_tokens`` tokens in all. Found nodes become most recently used
        and are tagged with ``owner``; ``count=False`` leaves the hit statistics alone.
        """
        limit = len(ids) if max_tokens is None else max(0, min(len(ids), max_tokens))
        now, node, pos, path = next(self._clock), self.root, 0, []
        while pos < limit:
            child = node.children.get(ids[pos])
            if child is None:
                break
            used = common_length(child.edge, ids[pos:min(limit, pos + len(child.edge))])
            self._touch(child, now, owner)
            path.append((child, used))
            pos += used
            if used < len(child.edge):
                break
            node = child
        if count:
            self.stats["lookup_tokens"] += len(ids)
            self.stats["hit_tokens"] += pos
        return path

    @staticmethod
    def gather(path: Sequence[tuple[Node, int]]) -> torch.Tensor | None:
        """The KV of a matched path as one tensor [layers, 2, heads, tokens, head_dim] (a copy)."""
        if not path:
            return None
        return torch.cat([n.kv[:, :, :, :used] for n, used in path], dim=3)

    # -- insertion ---------------------------------------------------------------
    def insert(self, ids: Sequence[int], start: int, kv_of: Callable[[int, int], torch.Tensor],
               owner: Hashable | None = None) -> int:
        """Cache the KV of ``ids``; returns how many tokens were new.

        ``kv_of(lo, hi)`` gives the KV of ``ids[lo:hi]``; it is asked once at most, for the
        uncached rest, and only with ``lo >= start`` (the caller holds KV from ``start`` on:
        the tokens before were matched, not computed). If the cached part before ``start``
        was evicted meanwhile, nothing is inserted.
        """
        ids = list(ids)
        now, node, pos = next(self._clock), self.root, 0
        while pos < len(ids):
            child = node.children.get(ids[pos])
            if child is None:
                break
            used = common_length(child.edge, ids[pos:pos + len(child.edge)])
            if used < len(child.edge):
                if pos + used == len(ids):  # all of ids is cached already
                    self._touch(child, now, owner)
                    return 0
                child = self._split(child, used)
            self._touch(child, now, owner)
            node, pos = child, pos + used
        if pos >= len(ids) or pos < start:
            return 0
        leaf = Node(ids[pos:], node, kv_of(pos, len(ids)).clone())
        node.children[leaf.edge[0]] = leaf
        self._touch(leaf, now, owner)
        self.bytes += leaf.nbytes
        self.nodes += 1
        self.stats["inserted_tokens"] += len(leaf.edge)
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        if self.bytes > self.max_bytes:
            self.evict(int(self.max_bytes * EVICT_TO))
        return len(leaf.edge)

    def _split(self, node: Node, at: int) -> Node:
        """Cut ``node``'s run after ``at`` tokens; returns the new upper part (the old node hangs below it)."""
        upper = Node(node.edge[:at], node.parent, node.kv[:, :, :, :at].clone())
        upper.last_used, upper.owners = node.last_used, set(node.owners)
        for o in upper.owners:
            self._owned[o].add(upper)
        node.parent.children[upper.edge[0]] = upper
        node.edge, node.kv, node.parent = node.edge[at:], node.kv[:, :, :, at:].clone(), upper
        upper.children[node.edge[0]] = node
        self.nodes += 1
        return upper

    # -- ownership and eviction --------------------------------------------------
    def _touch(self, node: Node, now: int, owner: Hashable | None) -> None:
        node.last_used = now
        if owner is not None and owner not in node.owners:
            node.owners.add(owner)
            self._owned.setdefault(owner, set()).add(node)

    def release(self, owner: Hashable) -> int:
        """``owner`` (a finished tree) lets go of its nodes; those no one else owns are dropped now.

        Returns the number of nodes dropped. Every call tags the whole path it walked, so the
        descendants of a node no live owner holds are held by nobody either.
        """
        nodes = self._owned.pop(owner, set())
        for n in nodes:
            n.owners.discard(owner)
        dropped = 0
        for n in sorted(nodes, key=self._depth):  # shallowest first: a dropped subtree takes its nodes along
            if not n.owners and self._attached(n):
                dropped += self._drop(n)
        self.stats["released_nodes"] += dropped
        return dropped

    def evict(self, target_bytes: int) -> int:
        """Drop least recently used leaves until the cache holds at most ``target_bytes``; returns how many."""
        heap = [(bool(n.owners), n.last_used, id(n), n) for n in self._all() if not n.children]
        heapq.heapify(heap)
        dropped = 0
        while self.bytes > target_bytes and heap:
            *_, n = heapq.heappop(heap)
            if n.children or not self._attached(n):
                continue
            parent = n.parent
            dropped += self._drop(n)
            if parent is not self.root and not parent.children:
                heapq.heappush(heap, (bool(parent.owners), parent.last_used, id(parent), parent))
        self.stats["evicted_nodes"] += dropped
        return dropped

    def _drop(self, node: Node) -> int:
        """Detach ``node`` and free it and everything below it; returns the number of nodes freed."""
        del node.parent.children[node.edge[0]]
        count, stack = 0, [node]
        while stack:
            n = stack.pop()
            stack.extend(n.children.values())
            for o in n.owners:
                held = self._owned.get(o)
                if held is not None:
                    held.discard(n)
            self.bytes -= n.nbytes
            n.kv, n.children, n.owners, n.parent = None, {}, set(), None
            count += 1
        self.nodes -= count
        return count

    def _attached(self, node: Node) -> bool:
        return node.parent is not None and node.parent.children.get(node.edge[0]) is node

    @staticmethod
    def _depth(node: Node) -> int:
        d = 0
        while node.parent is not None:
            node, d = node.parent, d + 1
        return d

    def _all(self):
        stack = list(self.root.children.values())
        while stack:
            n = stack.pop()
            yield n
            stack.extend(n.children.values())

    def cached_tokens(self) -> int:
        return sum(len(n.edge) for n in self._all())

    def hit_rate(self) -> float:
        """Share of looked-up prefix tokens whose KV came from the cache."""
        return self.stats["hit_tokens"] / max(1, self.stats["lookup_tokens"])
