"""The prefix KV cache: the radix tree on hand-made tensors, then the hf backend on the tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from mcts_pref.policy_spec import PolicySpec
from mcts_pref.backends.kvcache import PrefixCache, common_length
from mcts_pref.mcts import Config, search_trees
from tests.conftest import read_jsonl, write_jsonl

TOKEN_BYTES = 4 * 2  # the fake KV below: 1 layer, K and V, 1 head, head_dim 1, fp32


def fake_kv(ids):
    """A KV function whose value at each position is (token id, position): gather must give them back in order."""
    def kv_of(lo, hi):
        k = torch.tensor([float(t) for t in ids[lo:hi]])
        v = torch.arange(lo, hi, dtype=torch.float32)
        return torch.stack([k, v])[None, :, None, :, None]  # [1, 2, 1, hi - lo, 1]
    return kv_of


def gathered(cache, ids, **kw):
    path = cache.match(ids, **kw)
    kv = cache.gather(path)
    return [] if kv is None else kv[0, 0, 0, :, 0].long().tolist(), [] if kv is None else kv[0, 1, 0, :, 0].long().tolist()


def test_common_length():
    assert common_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_length([], [1]) == 0
    assert common_length([7, 8], [7, 8]) == 2


def test_radix_insert_split_match():
    c = PrefixCache(10**6)
    a = [1, 2, 3, 4, 5, 6]
    assert c.insert(a, 0, fake_kv(a)) == 6
    b = [1, 2, 3, 9, 9]
    # b shares 3 tokens with a: only its last 2 are new, and kv_of is asked for them only
    asked = []
    kv_b = fake_kv(b)
    assert c.insert(b, 3, lambda lo, hi: asked.append((lo, hi)) or kv_b(lo, hi)) == 2
    assert asked == [(3, 5)]
    assert c.nodes == 3  # [1 2 3] split off, with [4 5 6] and [9 9] below it
    assert c.bytes == 8 * TOKEN_BYTES
    assert gathered(c, a) == (a, list(range(6)))
    assert gathered(c, b + [7]) == (b, list(range(5)))
    assert gathered(c, [1, 2, 3, 4, 8]) == ([1, 2, 3, 4], [0, 1, 2, 3])  # stops inside a run
    assert gathered(c, a, max_tokens=4) == ([1, 2, 3, 4], [0, 1, 2, 3])  # always leaves the rest to encode
    assert gathered(c, [5, 1]) == ([], [])
    assert c.insert(a[:4], 0, fake_kv(a)) == 0  # a prefix of what is cached: nothing new, no split
    assert c.nodes == 3
    # hits: 6 + 5 + 4 + 4 + 0 of 6 + 6 + 5 + 6 + 2 looked-up tokens
    assert c.stats["hit_tokens"] == 19 and c.stats["lookup_tokens"] == 25
    assert c.hit_rate() == pytest.approx(19 / 25)


def test_insert_needs_the_tokens_before_start():
    """A caller holds KV only from ``start`` on: if the cached part before was evicted, nothing is inserted."""
    c = PrefixCache(10**6)
    ids = [1, 2, 3, 4]

    def never(lo, hi):
        raise AssertionError("asked for KV the caller does not hold")
    assert c.insert(ids, 2, never) == 0
    assert c.nodes == 0


def test_eviction_is_lru_and_keeps_under_the_cap():
    c = PrefixCache(12 * TOKEN_BYTES)
    old, new = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]
    c.insert(old, 0, fake_kv(old))
    c.insert(new, 0, fake_kv(new))
    c.match(old)  # old is now the more recently used
    third = [11, 12, 13, 14, 15]
    c.insert(third, 0, fake_kv(third))  # 15 tokens > 12: the least recently used leaf goes
    assert c.bytes <= c.max_bytes
    assert gathered(c, new)[0] == [] and gathered(c, old)[0] == old and gathered(c, third)[0] == third
    assert c.stats["evicted_nodes"] == 1


def test_owned_nodes_are_evicted_last_and_released_with_their_tree():
    c = PrefixCache(10**6)
    header = [1, 2, 3, 4]
    t1, t2, loose = header + [5, 6], header + [7, 8], [9, 9, 9]
    c.insert(header, 0, fake_kv(header), owner="pinned")
    c.insert(t1, 4, fake_kv(t1), owner="tree1")
    c.insert(t2, 4, fake_kv(t2), owner="tree2")
    c.insert(loose, 0, fake_kv(loose))
    c.match(loose)  # the most recently used, but nobody's: evicted first all the same
    c.evict(c.bytes - 1)
    assert gathered(c, loose)[0] == [] and gathered(c, t1)[0] == t1
    assert c.release("tree1") == 1  # its own run; the header is still the pinned owner's and tree2's
    assert gathered(c, t1)[0] == header and gathered(c, t2)[0] == t2
    assert c.release("tree2") == 1
    assert c.bytes == len(header) * TOKEN_BYTES and c.nodes == 1
    assert c.release("nobody") == 0


# -- the hf backend on the tiny random Llama ---------------------------------------------------

QUESTIONS = ["What is 4 + 7 - 3?", "Tom has 5 apples and buys 3 more. How many apples?"]


@pytest.fixture(scope="module")
def backends(tiny_model_dir):
    from mcts_pref.backends import load_backend

    on = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="chat", kv_cache_mb=16))  # built-in exemplars: a header
    off = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="chat", kv_cache_mb=0))
    assert on.kv is not None and off.kv is None
    return on, off


def test_the_backend_and_its_prefiller_share_one_cache(backends):
    """``backend.kv`` is the prefiller's cache: switching it (as benchmarks do) switches both."""
    on, off = backends
    assert on.prefill.kv is on.kv and off.prefill.kv is None
    saved, on.kv = on.kv, None
    try:
        assert on.prefill.kv is None
    finally:
        on.kv = saved
    assert on.prefill.kv is saved


def full_logits(backend, texts):
    """Each text's last-position logits from its own forward pass: no cache, no padding."""
    out = []
    for t in texts:
        ids = torch.tensor([backend.tok(t, add_special_tokens=backend._add_special).input_ids])
        with torch.inference_mode():
            out.append(backend.model(input_ids=ids).logits[0, -1])
    return torch.stack(out)


def test_cached_prefill_matches_full_prefill(backends):
    """After an expansion cached its prefixes and steps, extending them encodes a few tokens, same logits."""
    b, _ = backends
    prompts = [b.format_prompt({"question": q}) for q in QUESTIONS]
    steps = b.expand(prompts, [2, 1], temperature=1.0, top_p=1.0, max_step_tokens=6, seed=1)
    texts = [prompts[0] + steps[0][0].text, prompts[0] + steps[0][1].text + "so 8 - 3 = 5\n",
             prompts[1] + steps[1][0].text, prompts[1] + "A different first step.\n"]
    ids = [list(b.tok(t, add_special_tokens=b._add_special).input_ids) for t in texts]
    hits = b.kv.stats["hit_tokens"]
    with torch.inference_mode():
        last, _, _, spans = b.prefill.cached(ids, [None] * len(ids))
    torch.testing.assert_close(last, full_logits(b, texts), rtol=1e-4, atol=1e-4)
    # The generated step's KV was kept, all but its last token's (never fed back): a child's prefix
    # is cached as far as its tokens agree with what was generated (a random model's text may
    # tokenize differently when re-read).
    pids = list(b.tok(prompts[0], add_special_tokens=b._add_special).input_ids)
    kept = pids + steps[0][0].token_ids[:-1]
    assert spans[0][0] == min(common_length(ids[0], kept), len(ids[0]) - 1) >= len(pids)
    assert b.kv.stats["hit_tokens"] - hits > sum(len(x) for x in ids) // 2
    for p in prompts:
        b.release(p)


def test_cache_on_and_off_agree(backends):
    """Greedy steps, their log-probs and self-evaluations are the same with the cache on and off."""
    on, off = backends
    prompts = [[x.format_prompt({"question": q}) for q in QUESTIONS] for x in (on, off)]
    results = []
    for b, ps in zip((on, off), prompts):
        first = b.expand(ps, [1, 1], temperature=0, top_p=1.0, max_step_tokens=6)
        nxt = b.expand([p + s[0].text for p, s in zip(ps, first)], [1, 1], temperature=0, top_p=1.0, max_step_tokens=6)
        judged = b.self_evaluate(QUESTIONS * 2, [f[0].text for f in first] + [f[0].text + n[0].text for f, n in zip(first, nxt)])
        results.append((first, nxt, judged))
        for p in ps:
            b.release(p)
    (f1, n1, j1), (f2, n2, j2) = results
    assert [s[0].token_ids for s in f1 + n1] == [s[0].token_ids for s in f2 + n2]
    for x, y in zip(f1 + n1, f2 + n2):
        assert x[0].logprob == pytest.approx(y[0].logprob, abs=1e-3)
    assert j1 == pytest.approx(j2, abs=1e-4)


def test_tiny_cap_evicts_and_stays_correct(tiny_model_dir, backends):
    """A cap far below what one call caches: it evicts all the time, and the results do not change."""
    from mcts_pref.backends import load_backend

    _, off = backends
    b = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="chat", kv_cache_mb=1))
    per_token = sum(l.keys[0, :, :1].numel() * 2 * 4 for l in b.prompt_header.cache.layers)
    b.kv.max_bytes = 40 * per_token  # less than one prompt
    ps = [b.format_prompt({"question": q}) for q in QUESTIONS]
    for _ in range(2):  # the second round finds only what survived eviction
        got = b.expand(ps, [2, 2], temperature=0, top_p=1.0, max_step_tokens=6)
        assert b.kv.bytes <= b.kv.max_bytes
    want = off.expand(ps, [2, 2], temperature=0, top_p=1.0, max_step_tokens=6)
    assert [[s.token_ids for s in x] for x in got] == [[s.token_ids for s in x] for x in want]
    assert b.kv.stats["evicted_nodes"] > 0
    assert b.self_evaluate(QUESTIONS, ["1\n", "2\n"]) == pytest.approx(off.self_evaluate(QUESTIONS, ["1\n", "2\n"]), abs=1e-4)


def test_finished_trees_release_their_memory(tiny_model_dir):
    """After a search, only the pinned headers stay cached: every tree released its runs as it finished."""
    from mcts_pref.backends import load_backend

    b = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="chat", kv_cache_mb=16))
    pinned = b.kv.bytes
    problems = [{"id": f"p{i}", "question": q, "answer": "8", "task": "math"} for i, q in enumerate(QUESTIONS)]
    cfg = Config(iterations=1, children=2, root_children=2, depth_limit=2, max_depth=2, max_step_tokens=6, top_p=1.0,
                 batch_trees=2, seed=1, value="self-eval,outcome,rollout", rollouts=2, rollout_max_tokens=8)
    recs = list(search_trees(b, problems, cfg))
    assert len(recs) == 2
    assert b.kv.peak_bytes > pinned and b.kv.stats["hit_tokens"] > 0
    assert b.kv.stats["released_nodes"] > 0
    assert b.kv.bytes == pinned and not b._live and not b._judge_owner


def test_resumed_search_rebuilds_the_cache(tiny_model_dir, tmp_path):
    """The cache is only memory: a second run on the same --out resumes with a fresh cache."""
    from mcts_pref.cli import app

    problems = write_jsonl(tmp_path / "p.jsonl", [
        {"v": 1, "id": f"p{i}", "question": q, "answer": "8", "task": "math"} for i, q in enumerate(QUESTIONS)])
    out = tmp_path / "trees.jsonl"
    args = ["search", str(problems), "--model", str(tiny_model_dir), "--out", str(out), "--prompt-format", "plain",
            "--shots", "0", "--iterations", "1", "--children", "2", "--root-children", "2", "--depth-limit", "2",
            "--max-depth", "2", "--max-step-tokens", "6", "--top-p", "1.0", "--kv-cache-mb", "4"]
    runner = CliRunner()
    res = runner.invoke(app, args + ["--limit", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output
    assert sorted(r["problem_id"] for r in read_jsonl(out)) == ["p0", "p1"]


def test_negative_cap_is_refused(tiny_model_dir):
    from mcts_pref.backends import load_backend
    from mcts_pref.records import MctsPrefError

    with pytest.raises(MctsPrefError, match="--kv-cache-mb must be >= 0"):
        load_backend(PolicySpec(model=str(tiny_model_dir), kv_cache_mb=-1))


@pytest.mark.slow
def test_smollm2_trees_identical_with_cache_on_and_off(default_model_dir):
    """The real policy, a small search at a fixed seed: the same trees with the prefix cache on and off."""
    from mcts_pref.backends import load_backend

    problems = [{"id": f"p{i}", "question": f"What is {3 + i} + {4 + i} + 2?", "answer": str(9 + 2 * i), "task": "math"}
                for i in range(3)]
    cfg = Config(iterations=1, children=2, root_children=3, depth_limit=2, max_depth=3, max_step_tokens=24,
                 batch_trees=3, seed=3, value="self-eval,outcome,rollout", rollouts=2, rollout_max_tokens=32)
    trees = {}
    for mb in (0, 256):
        b = load_backend(PolicySpec(model=str(default_model_dir), kv_cache_mb=mb))
        recs = sorted(search_trees(b, problems, cfg), key=lambda r: r["problem_id"])
        trees[mb] = recs
        if mb:
            assert b.kv.hit_rate() > 0.8
    for on, off in zip(trees[256], trees[0]):
        # the same sampled steps; log-probs and values up to float rounding
        assert [(n["text"], n["parent"]) for n in on["nodes"]] == [(n["text"], n["parent"]) for n in off["nodes"]]
        assert on["path"] == off["path"]
        for key in ("prior", "value", "Q"):
            assert [n[key] for n in on["nodes"]] == pytest.approx([n[key] for n in off["nodes"]], abs=1e-3)
