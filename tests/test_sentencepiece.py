"""SentencePiece tokenizers (Llama-2, Mistral): every stage sees the ids of the whole text.

A SentencePiece tokenizer puts "▁" (a space) before the start of any text it
tokenizes. Tokenized on its own, a step, the prompt after a cached header, or
the verdict letter "A" starts with a token the policy never produced after
the text before it. Here a real SentencePiece model (trained offline, see
``tests/sp_tokenizer.py``) and a tiny random Llama over its vocabulary check
that the transformers backend, the vLLM backend's mapping, DPO encoding and
the self-evaluation all see exactly the ids of tokenizing ``prompt + steps``
as one text; and that steps decode faithfully (``encode(decode(ids)) == ids``)
even with a tokenizer whose default decode rewrites " ," to ",".
"""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
import torch

from mcts_pref.policy_spec import PolicySpec
from mcts_pref.backends import load_backend
from mcts_pref.backends.vllm import VLLMBackend
from mcts_pref.dpo import encode_pairs
from mcts_pref.prompts import judge_prompt
from mcts_pref.steps import EOS, STEP
from tests.sp_tokenizer import llama_tokenizer, save_model_dir, tiny_llama, train_sentencepiece

QUESTIONS = ["What is 3 + 4 + 2?", "Tom has 5 apples and eats 2. How many are left?"]
STEPS = ["3 + 4 = 7\n", "7 + 2 = 9\n"]


@pytest.fixture(scope="module")
def sp():
    return train_sentencepiece()


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory, sp):
    tok = llama_tokenizer(sp)
    return save_model_dir(tmp_path_factory.mktemp("sp-llama"), tiny_llama(len(tok)), tok)


@pytest.fixture(scope="module")
def hf(sp_dir):
    return load_backend(PolicySpec(model=str(sp_dir), prompt_format="plain", device="cpu"))  # built-in exemplars: a cached header


def whole(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=True).input_ids


def test_the_tokenizer_is_sentencepiece(hf, sp):
    """The wrapped tokenizer tokenizes as SentencePiece does: a leading '▁', newlines as bytes."""
    tok = hf.tok
    for text in [hf.format_prompt({"question": QUESTIONS[0]}) + STEPS[0], "A", "(A", "x , y .\n"]:
        assert tok(text, add_special_tokens=False).input_ids == sp.encode(text)
    assert tok.convert_ids_to_tokens(tok("A", add_special_tokens=False).input_ids) == ["▁A"]
    assert tok.convert_ids_to_tokens(tok("(A", add_special_tokens=False).input_ids)[-1] == "A"
    assert tok.decode(tok("x , y", add_special_tokens=False).input_ids) == "x, y"  # the lossy default decode
    assert hf.prompt_header is not None and hf.judge_header is not None


def test_dpo_encoding_is_the_whole_text(hf):
    tok = hf.tok
    prompt = hf.format_prompt({"question": QUESTIONS[0]}) + STEPS[0]
    pairs = [{"prompt": prompt, "chosen": STEPS[1], "rejected": "The answer is 9.", "eps": 0.0,
              "rejected_terminal": True}]
    (enc,) = encode_pairs(tok, pairs, max_length=1024)
    assert enc["prompt"] + enc["chosen"] == whole(tok, prompt + STEPS[1])
    assert enc["prompt"] + enc["rejected"] == whole(tok, prompt + "The answer is 9.") + [tok.eos_token_id]


def test_expand_prefills_the_whole_text(hf, monkeypatch):
    """The prompt after the cached header is the whole text's tokens, not the rest tokenized alone."""
    tok, header = hf.tok, hf.prompt_header
    prefixes = [hf.format_prompt({"question": q}) + "".join(STEPS[:i]) for i, q in enumerate(QUESTIONS)]
    seen = []
    real = hf._forward

    def spy(**kw):
        seen.append((kw["input_ids"].clone(), kw["attention_mask"].clone()))
        return real(**kw)

    monkeypatch.setattr(hf, "_forward", spy)
    hf.expand(prefixes, [1, 1], temperature=0, top_p=1.0, max_step_tokens=1)
    ids, mask = seen[0]  # the prefill; the header's KV covers its first header.length positions
    header_ids = whole(tok, header.text)
    assert len(header_ids) == header.length
    for row, prefix in enumerate(prefixes):
        rest = ids[row][mask[row, header.length:] == 1].tolist()
        assert header_ids + rest == whole(tok, prefix)


def test_self_evaluation_reads_the_verdict_in_context(hf):
    """C from the backend (header, shared prefill) == C from one forward over the whole judgement prompt."""
    tok = hf.tok
    partials = [STEPS[0], STEPS[0] + STEPS[1], STEPS[0] + "7 + 2 = 8\n"]
    questions = [QUESTIONS[0]] * 3
    expected = []
    for q, p in zip(questions, partials):
        text = judge_prompt(q, p, tok, hf.fmt)
        a, b = whole(tok, text + "A")[-1], whole(tok, text + "B")[-1]
        assert whole(tok, text + "A")[:-1] == whole(tok, text)  # the letter is one token after the prompt
        assert hf.judge_ids == [a, b]
        with torch.no_grad():
            logits = hf.model(torch.tensor([whole(tok, text)])).logits[0, -1].float()
        expected.append(torch.softmax(logits[[a, b]], -1)[1].item())
    assert hf.judge_ids != [tok("A", add_special_tokens=False).input_ids[0], tok("B", add_special_tokens=False).input_ids[0]]
    assert hf.self_evaluate(questions, partials) == pytest.approx(expected, abs=1e-4)


def test_vllm_judge_ids_in_context(hf):
    vl = VLLMBackend(None, hf.tok, PolicySpec(model="x", prompt_format="plain"), shots=[], sampling_params=NS)
    text = judge_prompt(QUESTIONS[0], STEPS[0], hf.tok, "plain")
    assert vl.judge_ids == [whole(hf.tok, text + "A")[-1], whole(hf.tok, text + "B")[-1]]
    assert vl._ids(text) == whole(hf.tok, text)


# --- faithful decoding: encode(decode(ids)) == ids --------------------------------


def bigram_model(model, successor: dict[int, int], scale: float = 1.0):
    """Make a Llama predict ``successor[last token]``: a deterministic policy with real KV-cache mechanics.

    With every layer's output projections zero, the hidden state at a
    position is the normed embedding of its token, and the head then scores
    the successor of that token highest (random 64-d embeddings are far from
    parallel). Tokens without a successor score 0 everywhere.
    """
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        emb = model.model.embed_tokens.weight
        h = emb * torch.rsqrt(emb.pow(2).mean(-1, keepdim=True) + model.config.rms_norm_eps)
        head = torch.zeros_like(model.lm_head.weight)
        for prev, nxt in successor.items():
            head[nxt] += scale * h[prev] / h[prev].norm()
        model.lm_head.weight.copy_(head)
    return model


def scripted_ids(tok, prefix: str, step: str) -> list[int]:
    """The canonical ids of ``step`` after ``prefix`` (the whole text's), checked to be a clean split."""
    ids, head = whole(tok, prefix + step), whole(tok, prefix)
    assert ids[: len(head)] == head
    return ids[len(head):]


# Spaces before punctuation, which a cleaning decode rewrites ("x, y."), and a leading space, which a
# SentencePiece decoder drops from a text's first token ("▁x" alone decodes to "x").
LOSSY_STEP = " x , y .\n"


def test_hf_steps_decode_faithfully(sp_dir):

    b = load_backend(PolicySpec(model=str(sp_dir), prompt_format="plain", shots=0, device="cpu"))
    prefix = b.format_prompt({"question": QUESTIONS[0]}).rstrip("\n")  # "...ANSWER:", then " x , y ."
    script = scripted_ids(b.tok, prefix, LOSSY_STEP)
    assert b.tok.convert_ids_to_tokens(script)[0] == "▁x"
    last = whole(b.tok, prefix)[-1]
    chain = [last, *script]
    assert len(set(chain[:-1])) == len(chain) - 1  # a bigram can play it: each token has one successor
    bigram_model(b.model, dict(zip(chain[:-1], chain[1:])))
    (step,) = b.expand([prefix], [1], temperature=0, top_p=1.0, max_step_tokens=20)[0]
    assert step.token_ids == script and step.finish == STEP
    assert step.text == LOSSY_STEP != b.tok.decode(script)
    assert whole(b.tok, prefix + step.text) == whole(b.tok, prefix) + step.token_ids

    # The same text through `complete`, ended by EOS: the EOS log-prob counts in the step's log-prob.
    script = scripted_ids(b.tok, prefix, LOSSY_STEP.rstrip("\n"))
    chain = [last, *script, b.tok.eos_token_id]
    assert len(set(chain[:-1])) == len(chain) - 1
    bigram_model(b.model, dict(zip(chain[:-1], chain[1:])))
    (sol,) = b.complete([prefix], [1], temperature=0, top_p=1.0, max_tokens=20)[0]
    assert sol.text == LOSSY_STEP.rstrip("\n") and sol.finish == EOS and sol.token_ids == script
    with torch.no_grad():
        logp = torch.log_softmax(b.model(torch.tensor([whole(b.tok, prefix) + script])).logits[0].float(), -1)
    n = len(whole(b.tok, prefix))
    expected = sum(logp[n - 1 + i, t].item() for i, t in enumerate(chain[1:]))
    assert sol.logprob == pytest.approx(expected, abs=1e-3)


def test_vllm_steps_decode_faithfully(hf):
    from tests.test_vllm_backend import FakeLLM, lp

    tok = hf.tok
    vl = VLLMBackend(None, tok, PolicySpec(model="x", prompt_format="plain"), shots=[], sampling_params=NS)
    prefix = vl.format_prompt({"question": QUESTIONS[0]}).rstrip("\n")
    script = scripted_ids(tok, prefix, LOSSY_STEP)
    llm = FakeLLM.__new__(FakeLLM)
    llm.tok, llm.judge, llm.calls = tok, {}, []
    llm.scripts = [(vl._ids(prefix), script + [tok.eos_token_id])]
    vl.llm = llm
    (step,) = vl.expand([prefix], [1], temperature=0.0, top_p=1.0, max_step_tokens=20)[0]
    assert step.token_ids == script and step.text == LOSSY_STEP != tok.decode(script)
    assert whole(tok, prefix + step.text) == vl._ids(prefix) + step.token_ids
    (sol,) = vl.complete([prefix], [1], temperature=0.0, top_p=1.0, max_tokens=20)[0]
    assert sol.text == LOSSY_STEP and sol.finish == EOS
    assert sol.logprob == pytest.approx(sum(lp(t) for t in script + [tok.eos_token_id]))  # EOS counts
