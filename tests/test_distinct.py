"""Sampling siblings without replacement: the drawn-paths trie by hand, the sampling law of the
adjusted pick, and the hf backend and search on the tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from mcts_pref.policy_spec import PolicySpec
from mcts_pref.distinct import build_trie, mass_left
from mcts_pref.mcts import Config, search_trees


def test_trie_mass_by_hand():
    one = [(1, 0.5), (2, 0.4)]  # token 1 (q .5) then token 2 (q .4), where the step ended
    root = build_trie([one])
    assert root.kids[1].f == pytest.approx(0.4) and root.f == pytest.approx(0.2)
    assert root.multipliers() == pytest.approx({1: 0.6}) and root.kids[1].multipliers() == {2: 0.0}
    assert mass_left([one]) == pytest.approx(0.8)
    # A sibling path through the same first token: together they cover all of token 1's mass there.
    two = [(1, 0.5), (3, 0.6)]
    root = build_trie([one, two, one])  # a repeated path changes nothing
    assert root.kids[1].f == pytest.approx(1.0) and root.f == pytest.approx(0.5)
    assert root.multipliers() == pytest.approx({1: 0.0})
    # Deeper: f sums q * f over drawn children only.
    three = [(4, 0.25), (5, 0.5), (6, 0.5)]
    root = build_trie([one, three])
    assert root.kids[4].kids[5].f == pytest.approx(0.5)
    assert root.kids[4].f == pytest.approx(0.25) and root.f == pytest.approx(0.5 * 0.4 + 0.25 * 0.25)
    assert mass_left([]) == 1.0


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_adjusted_pick_samples_the_law_conditioned_on_leaving_the_drawn_set(top_p):
    from mcts_pref.backends.hf import HFBackend

    logits = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.06, 0.04]))
    p = torch.softmax(logits, -1)
    if top_p < 1:  # the nucleus: tokens whose higher-ranked mass is <= top_p
        p = torch.where(p.cumsum(-1) - p > top_p, torch.zeros_like(p), p)
    law = p / p.sum()
    factors = {0: 0.0, 1: 0.5}
    want = law * torch.tensor([0.0, 0.5, 1, 1, 1])
    want = want / want.sum()
    rows = 40_000
    chosen, lp, q = HFBackend._pick(logits.repeat(rows, 1), 1.0, top_p, torch.Generator().manual_seed(3),
                                    [factors] * rows)
    freq = torch.bincount(chosen, minlength=5).float() / rows
    assert freq.tolist() == pytest.approx(want.tolist(), abs=0.01)
    assert not bool((chosen == 0).any())
    # q is the chosen token's probability under the plain law; lp the untempered policy's log-prob
    assert q.tolist() == pytest.approx(law[chosen].tolist(), abs=1e-6)
    assert lp.tolist() == pytest.approx(torch.log_softmax(logits, -1)[chosen].tolist(), abs=1e-6)
    # A row whose drawn set holds all its mass falls back to the plain law instead of failing.
    everything = {t: 0.0 for t in range(5)}
    chosen, _, _ = HFBackend._pick(logits.repeat(4, 1), 1.0, top_p, torch.Generator().manual_seed(0), [everything] * 4)
    assert len(chosen) == 4


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from mcts_pref.backends import load_backend

    return load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="plain", shots=0))


# A temperature so low that the tiny random model is all but deterministic: plain sampling repeats itself.
COLD = dict(temperature=0.002, top_p=1.0, max_step_tokens=5)


def path(step) -> tuple[int, ...]:
    return tuple(t for t, _ in step.drawn)


def test_expand_never_repeats_an_excluded_step(tiny):
    prompt = tiny.format_prompt({"question": "What is 2 + 2?"})
    first = tiny.expand([prompt], [1], seed=1, **COLD)[0][0]
    assert path(first)[:len(first.token_ids)] == tuple(first.token_ids)
    assert all(0 < q <= 1 for _, q in first.drawn)
    plain = tiny.expand([prompt], [8], seed=2, **COLD)[0]
    assert {path(s) for s in plain} == {path(first)}  # the premise: plain sampling only repeats it
    again = tiny.expand([prompt, prompt], [8, 2], seed=2, exclude=[[first.drawn], []], **COLD)
    assert all(path(s) != path(first) for s in again[0])
    assert {path(s) for s in again[1]} == {path(first)}  # the other prefix excludes nothing
    with pytest.raises(ValueError, match="exclude"):
        tiny.expand([prompt], [1], exclude=[[], []], **COLD)


def test_search_resamples_duplicates_without_replacement(tiny):
    """A cold search: an expansion's first round draws half its children (staged), all one step;
    each later round asks the backend to exclude every path drawn so far and never gets one back."""
    calls = []
    inner = tiny.expand

    def spy(prefixes, n, **kw):
        out = inner(prefixes, n, **kw)
        calls.append((kw.get("exclude"), out))
        return out

    tiny.expand = spy
    try:
        problems = [{"id": "p0", "question": "What is 2 + 2?", "answer": "4", "task": "math"}]
        cfg = Config(iterations=1, children=3, root_children=3, depth_limit=1, max_depth=2, max_step_tokens=5,
                     temperature=0.002, top_p=1.0, batch_trees=1, seed=1, value="outcome", resample_duplicates=4)
        (tree,) = list(search_trees(tiny, problems, cfg))
    finally:
        del tiny.expand
    first_exclude, first_out = calls[0]
    assert first_exclude is None and len(first_out[0]) == 2 and len({path(s) for s in first_out[0]}) == 1
    resampled = [(ex, out) for ex, out in calls if ex]
    assert resampled
    for ex, out in resampled:
        assert not {path(s) for s in out[0]} & {tuple(t for t, _ in p) for p in ex[0]}
    root_kids = [n for n in tree["nodes"] if n["parent"] == 0]
    assert len(root_kids) == 3 and len({n["text"] for n in root_kids}) == 3
