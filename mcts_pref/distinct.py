"""Distinct siblings: sample an expansion's replacement steps without replacement.

An expansion that drew duplicate siblings asks again for the missing ones
(``search --resample-duplicates``). Drawn again from the policy's law, a
peaked policy mostly repeats the siblings it has, and every repeat costs a
full step of tokens. So the replacement rows are drawn from the law
*conditioned on not being a step drawn so far*: successive sampling without
replacement (Shi et al. 2020, "Incremental Sampling Without Replacement for
Sequence Models"), done token by token while decoding.

Each drawn step is its *path*: the tokens the decoder consumed (an EOS that
ended it included) with ``q``, the probability the sampling law (temperature,
top-p) gave each one. In the trie of those paths, ``f(u)`` is the share of
the law's mass below node ``u`` that has been drawn already:

    f(u) = 1                              where a drawn path ends (every continuation is that step)
    f(u) = sum_c q(c | u) * f(c)          elsewhere, over u's children c in the trie

A row standing at node ``u`` samples token ``c`` with probability
proportional to ``q(c | u) * (1 - f(c))``, which is the law conditioned on
leaving the drawn set; once it takes a token no drawn path took, it samples
from the plain law. ``1 - f(root)`` is the mass left: when it is about zero
the policy has no other step to give (at this temperature and top-p), and
asking again is waste. The prior of a step stays the policy's own log-prob.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

Path = Sequence[tuple[int, float]]  # (token id, probability under the sampling law), in decoding order
EXHAUSTED = 1e-6  # drawn mass within this of 1: nothing is left to draw


@dataclass
class TrieNode:
    """A node of the drawn-paths trie: the tokens drawn after it, their ``q``, and ``f``."""

    kids: dict[int, "TrieNode"] = field(default_factory=dict)
    q: dict[int, float] = field(default_factory=dict)
    end: bool = False  # a drawn path ends here
    f: float = 0.0  # share of the sampling law's mass below this node already drawn

    def multipliers(self) -> dict[int, float]:
        """Token -> the factor ``1 - f(child)`` its probability gets at this node (only drawn tokens)."""
        return {t: max(0.0, 1.0 - kid.f) for t, kid in self.kids.items()}


def build_trie(paths: Sequence[Path]) -> TrieNode:
    """The trie of drawn ``paths`` with ``f`` filled in (see the module docstring)."""
    root = TrieNode()
    for path in paths:
        node = root
        for tok, q in path:
            if tok not in node.kids:
                node.kids[tok] = TrieNode()
                node.q[tok] = float(q)
            node = node.kids[tok]
        node.end = True
    _fill(root)
    return root


def _fill(node: TrieNode) -> float:
    for kid in node.kids.values():
        _fill(kid)
    node.f = 1.0 if node.end else min(1.0, sum(node.q[t] * kid.f for t, kid in node.kids.items()))
    return node.f


def mass_left(paths: Sequence[Path]) -> float:
    """``1 - f(root)``: the probability that a fresh draw is none of ``paths`` (0 if ``paths`` is empty: 1)."""
    return 1.0 - build_trie(paths).f if paths else 1.0
