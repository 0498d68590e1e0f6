"""The vllm backend: its mapping logic against fakes (no vLLM needed), the CLI wiring, and a GPU check.

``FakeLLM`` plays a vLLM engine that continues each prompt with a fixed
script, honouring ``stop_token_ids`` and ``max_tokens`` as vLLM does, so the
continuation rounds, HFBackend's stopping rule and the log-prob sums are
exercised here; only the real-GPU test at the end needs vLLM.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import types
from types import SimpleNamespace as NS

import pytest
from typer.testing import CliRunner

from mcts_pref.policy_spec import PolicySpec
from mcts_pref.steps import ANSWER, EOS, STEP, STEP_CAP, StepCutter
from mcts_pref.cli import app
from mcts_pref.backends import load_backend
from mcts_pref.prompts import judge_prompt
from mcts_pref.records import MctsPrefError
from mcts_pref.backends.vllm import (
    _Row,
    INSTALL_HINT,
    JUDGE_TOP,
    VLLMBackend,
    judge_probability,
    load_vllm_backend,
    lora_rank_slot,
    row_seed,
    sampled_logprobs,
)
from tests.conftest import write_jsonl

runner = CliRunner()
HAS_VLLM = importlib.util.find_spec("vllm") is not None


class FakeTokenizer:
    """Characters, plus the merged pieces '\\n\\n' and '.\\n' (tokens that hold a newline and more)."""

    eos_token_id = 0
    chat_template = None

    def __init__(self):
        self.vocab = ["<eos>", "\n\n", ".\n", "\n"] + [chr(c) for c in range(32, 127)]
        self.index = {p: i for i, p in enumerate(self.vocab)}

    def __len__(self):
        return len(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            for size in (5, 2, 1):
                if text[i:i + size] in self.index:
                    ids.append(self.index[text[i:i + size]])
                    i += size
                    break
            else:
                raise ValueError(f"untokenizable {text[i]!r}")
        return ids

    def __call__(self, text: str, add_special_tokens: bool = True):
        return NS(input_ids=self.encode(text))

    def decode(self, ids, **kwargs) -> str:
        return "".join(self.vocab[i] for i in ids)

    def batch_decode(self, rows, **kwargs) -> list[str]:
        return [self.decode(r) for r in rows]


def lp(tid: int) -> float:
    return -(tid % 5 + 1) / 10


class FakeLLM:
    """Continues a prompt with the script of the longest scripted prompt it starts with."""

    def __init__(self, tok: FakeTokenizer, scripts: dict[str, str], judge: dict[int, float] | None = None):
        self.tok = tok
        self.scripts = [(tok.encode(k), tok.encode(v)) for k, v in scripts.items()]
        self.judge = judge or {}
        self.calls: list[tuple[list[list[int]], list, object]] = []

    def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
        ids_list = [p["prompt_token_ids"] for p in prompts]
        self.calls.append((ids_list, list(sampling_params), lora_request))
        outs = []
        for ids, sp in zip(ids_list, sampling_params):
            if sp.max_tokens == 1 and sp.logprobs == JUDGE_TOP:
                top = {t: NS(logprob=v) for t, v in self.judge.items()}
                outs.append(NS(outputs=[NS(token_ids=[0], logprobs=[top], finish_reason="length")]))
                continue
            key, script = max(((k, s) for k, s in self.scripts if ids[:len(k)] == k), key=lambda ks: len(ks[0]))
            done = ids[len(key):]
            assert script[:len(done)] == done, "a continuation must resume exactly where the last round stopped"
            out, reason = [], "length"  # a script that runs out plays max_model_len
            for t in script[len(done):][:sp.max_tokens]:
                out.append(t)
                if t in sp.stop_token_ids:
                    reason = "stop"
                    break
            outs.append(NS(outputs=[NS(token_ids=out, logprobs=[{t: NS(logprob=lp(t))} for t in out],
                                       finish_reason=reason)]))
        return outs


SOLUTION = "\nTom has 3\n\n3 + 5 = 8\nThe answer is 8.\n<eos>"
SCRIPTS = {"Q1": SOLUTION, "Q2": "Half a line<eos>", "Q3": "The answer is 4<eos>", "Q4": "abc\n"}


@pytest.fixture
def fake():
    tok = FakeTokenizer()
    prompts = {q: f"QUESTION: {q}\n\nANSWER:\n" for q in SCRIPTS}
    judge = {tok.index["A"]: math.log(0.2), tok.index["B"]: math.log(0.6), tok.index["C"]: -2.3}
    llm = FakeLLM(tok, {prompts[q]: s for q, s in SCRIPTS.items()}, judge=judge)
    backend = VLLMBackend(llm, tok, PolicySpec(model="fake", prompt_format="plain"), shots=[], sampling_params=NS)
    return backend, llm, tok, prompts


def expect(step, tok, text, finish, eos=False):
    """``eos``: the step ended on an EOS, whose log-prob counts in the step's (the token is not in its text)."""
    assert (step.text, step.finish) == (text, finish)
    assert step.token_ids == tok.encode(text)
    assert step.logprob == pytest.approx(sum(lp(t) for t in step.token_ids) + (lp(tok.eos_token_id) if eos else 0.0))


def test_expand_continues_past_a_blank_line_and_keeps_the_whole_newline_token(fake):
    backend, llm, tok, prompts = fake
    assert backend.format_prompt({"question": "Q1"}) == prompts["Q1"]
    out = backend.expand([prompts["Q1"]], [2], temperature=0.7, top_p=0.9, max_step_tokens=50, seed=3)
    assert len(out) == 1 and len(out[0]) == 2
    for step in out[0]:  # the leading blank line is not a step; '\n\n' ends the first line, as in HFBackend
        expect(step, tok, "\nTom has 3\n\n", STEP)
    assert len(llm.calls) == 2  # one round, then one continuation for the blank line
    (_, params0, _), (ids1, params1, _) = llm.calls
    assert ids1[0] == tok.encode(prompts["Q1"]) + [tok.index["\n"]]  # prompt ids + tokens so far
    assert params1[0].max_tokens == 49 and params0[0].temperature == 0.7 and params0[0].top_p == 0.9
    seeds = [p.seed for p in params0 + params1]
    assert len(set(seeds)) == 4 and all(isinstance(s, int) for s in seeds)
    assert set(params0[0].stop_token_ids) == {0, 1, 2, 3} and params0[0].logprobs == 0
    assert backend.stats["tokens"] == 2 * len(tok.encode("\nTom has 3\n\n")) and backend.stats["expand_calls"] == 1


def test_expand_terminal_steps_and_the_token_cap(fake):
    backend, llm, tok, prompts = fake
    out = backend.expand([prompts["Q2"], prompts["Q3"], prompts["Q4"], prompts["Q1"]], [1, 1, 0, 1],
                         temperature=0.0, top_p=1.0, max_step_tokens=5)
    expect(out[0][0], tok, "Half ", STEP_CAP)
    assert out[2] == []
    expect(out[3][0], tok, "\nTom ", STEP_CAP)  # the blank line's token counts against the cap
    out = backend.expand([prompts["Q2"], prompts["Q3"], prompts["Q4"]], [1, 1, 1], temperature=0.0, top_p=1.0,
                         max_step_tokens=50)
    expect(out[0][0], tok, "Half a line", EOS, eos=True)  # EOS ends the step and is not part of its text
    expect(out[1][0], tok, "The answer is 4", ANSWER, eos=True)
    expect(out[2][0], tok, "abc\n", STEP)
    assert all(p.temperature == 0.0 and not hasattr(p, "seed") for _, ps, _ in llm.calls for p in ps)


def test_complete_runs_line_by_line_to_the_answer_line(fake):
    backend, llm, tok, prompts = fake
    out = backend.complete([prompts["Q1"], prompts["Q4"]], [1, 1], temperature=0.0, top_p=1.0, max_tokens=200)
    expect(out[0][0], tok, "\nTom has 3\n\n3 + 5 = 8\nThe answer is 8.\n", ANSWER)
    expect(out[1][0], tok, "abc\n", "length")  # the engine could not go on: treated as the cap
    assert len(llm.calls) == 4 and backend.stats["expand_calls"] == 0
    cap = len(tok.encode("The answer is 4"))
    out = backend.complete([prompts["Q1"], prompts["Q3"]], [1, 1], temperature=0.0, top_p=1.0, max_tokens=cap)
    expect(out[0][0], tok, tok.decode(tok.encode(SOLUTION)[:cap]), "length")
    expect(out[1][0], tok, "The answer is 4", ANSWER)  # capped right after an answer line: still an answer


def test_consume_drops_tokens_past_the_stop_point(fake):
    backend, _, tok, _ = fake
    row = _Row(prompt_ids=[], index=0, cutter=StepCutter(backend.cut_rule))
    ids = tok.encode("ab\ncd")
    backend._consume(row, ids, [lp(t) for t in ids])
    assert tok.decode(row.cutter.tokens) == "ab\n" and row.cutter.finish == STEP and row.sampled == 3


def test_self_evaluate_reads_the_top_logprobs_and_lora_is_passed(fake):
    backend, llm, tok, _ = fake
    backend.lora_request = marker = object()
    scores = backend.self_evaluate(["What is 1 + 1?", "Q"], ["1 + 1 = 2", ""])
    assert scores == pytest.approx([0.75, 0.75])
    ids, params, lora = llm.calls[-1]
    assert ids[0] == tok.encode(judge_prompt("What is 1 + 1?", "1 + 1 = 2", tok, "plain"))
    assert params[0].max_tokens == 1 and params[0].temperature == 0.0 and lora is marker
    assert backend.stats["self_eval_calls"] == 1 and backend.self_evaluate([], []) == []


def test_judge_probability_floor_and_extremes():
    assert judge_probability({4: math.log(0.2), 5: math.log(0.6)}, 4, 5) == pytest.approx(0.75)
    assert judge_probability({4: math.log(0.5), 9: math.log(0.1)}, 4, 5) == pytest.approx(0.1 / 0.6)  # B at floor
    assert judge_probability({9: -1.0}, 4, 5) == 0.5 and judge_probability({}, 4, 5) == 0.5
    assert judge_probability({4: -1000.0, 5: 0.0}, 4, 5) == pytest.approx(1.0)
    assert judge_probability({4: 0.0, 5: -1000.0}, 4, 5) == pytest.approx(0.0)
    assert judge_probability({4: NS(logprob=0.0), 5: NS(logprob=0.0)}, 4, 5) == pytest.approx(0.5)


def test_small_helpers():
    assert [lora_rank_slot(r) for r in (1, 8, 9, 64, 300)] == [8, 8, 16, 64, 320]
    with pytest.raises(MctsPrefError):
        lora_rank_slot(1024)
    assert sampled_logprobs([7, 3], [{7: NS(logprob=-0.5), 1: -9.0}, {3: -0.25}]) == [-0.5, -0.25]
    with pytest.raises(MctsPrefError):
        sampled_logprobs([1], None)
    assert row_seed(None, 0, 0) is None
    seeds = {row_seed(5, r, k) for r in range(50) for k in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**31 for s in seeds)


def fake_vllm_modules(monkeypatch, made: list):
    class LLM:
        def __init__(self, **kwargs):
            made.append(kwargs)

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, NS
    lora_mod = types.ModuleType("vllm.lora.request")
    lora_mod.LoRARequest = lambda name, int_id, path: ("lora", name, int_id, path)
    for name, mod in (("vllm", vllm), ("vllm.lora", types.ModuleType("vllm.lora")), ("vllm.lora.request", lora_mod)):
        monkeypatch.setitem(sys.modules, name, mod)


def test_load_vllm_backend_engine_arguments(monkeypatch, tmp_path, default_model_dir):
    made: list[dict] = []
    fake_vllm_modules(monkeypatch, made)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 12}))
    b = load_backend(PolicySpec(model=str(default_model_dir), adapter=str(adapter), backend="vllm", tensor_parallel_size=2, load_in_4bit=True))
    kw = made[0]
    assert kw["model"] == str(default_model_dir) and kw["enable_prefix_caching"] is True
    assert kw["tensor_parallel_size"] == 2 and kw["logprobs_mode"] == "raw_logprobs" and kw["dtype"] == "bfloat16"
    assert kw["enable_lora"] is True and kw["max_lora_rank"] == 16 and kw["quantization"] == "bitsandbytes"
    assert b.lora_request == ("lora", "mcts-pref-adapter", 1, str(adapter.resolve()))
    assert b.policy_id == f"{default_model_dir}+{adapter}" and b.eos_ids and "\n" in b.tok.decode([min(b.newline_ids)])
    with pytest.raises(MctsPrefError, match="adapter_config.json"):
        load_backend(PolicySpec(model=str(default_model_dir), adapter=str(tmp_path), backend="vllm"))


@pytest.mark.skipif(HAS_VLLM, reason="checks the message shown when vLLM is missing")
def test_cli_backend_vllm_without_vllm_is_a_clean_error(tmp_path):
    problems = write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "question": "What is 1 + 1?", "answer": "2"}])
    r = runner.invoke(app, ["sample", str(problems), "--backend", "vllm"])
    assert r.exit_code == 2 and INSTALL_HINT in r.output and "Traceback" not in r.output
    with pytest.raises(MctsPrefError, match="pip install"):
        load_backend(PolicySpec(model="default", backend="vllm"))


def test_cli_rejects_unknown_backend_and_tensor_parallel_without_vllm(tmp_path):
    problems = write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "question": "What is 1 + 1?", "answer": "2"}])
    r = runner.invoke(app, ["sample", str(problems), "--backend", "jax"])
    assert r.exit_code == 2 and "--backend must be one of hf, vllm, got 'jax'" in r.output
    r = runner.invoke(app, ["sample", str(problems), "--tensor-parallel-size", "2"])
    assert r.exit_code == 2 and "--tensor-parallel-size needs --backend vllm" in r.output


def test_search_passes_backend_options_through(tmp_path, backend_registry):
    problems = write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "question": "What is 1 + 1?", "answer": "2"}])
    seen = []

    def fake_load(spec, shots):
        seen.append(spec)
        raise MctsPrefError("stop here")

    backend_registry("vllm", fake_load)
    r = runner.invoke(app, ["search", str(problems), "--backend", "vllm", "--tensor-parallel-size", "4"])
    assert r.exit_code == 2 and "stop here" in r.output
    assert seen[0].tensor_parallel_size == 4


class GenerateLLM:
    """A vLLM stand-in decoding with transformers' generate: stops at stop_token_ids, raw log-probs."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
        import torch
        from transformers import GenerationConfig

        self.calls += 1
        outs = []
        for p, sp in zip(prompts, sampling_params):
            ids = torch.tensor([p["prompt_token_ids"]])
            with torch.inference_mode():
                if sp.max_tokens == 1 and sp.logprobs == JUDGE_TOP:
                    top = self.model(ids).logits[0, -1].float().log_softmax(-1).topk(JUDGE_TOP)
                    entry = dict(zip(top.indices.tolist(), top.values.tolist()))
                    outs.append(NS(outputs=[NS(token_ids=[top.indices[0].item()], logprobs=[entry])]))
                    continue
                cfg = GenerationConfig(max_new_tokens=sp.max_tokens, do_sample=False, eos_token_id=list(sp.stop_token_ids),
                                       pad_token_id=0, output_logits=True, return_dict_in_generate=True)
                g = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
            new = g.sequences[0, ids.shape[1]:].tolist()
            lps = [{t: logits[0].float().log_softmax(-1)[t].item()} for t, logits in zip(new, g.logits)]
            reason = "stop" if new and new[-1] in sp.stop_token_ids else "length"
            outs.append(NS(outputs=[NS(token_ids=new, logprobs=lps, finish_reason=reason)]))
        return outs


@pytest.mark.slow
def test_mapping_matches_hf_backend_on_the_bundled_model(default_model_dir):
    """CPU: the same model behind both backends gives the same greedy steps, solutions and verdicts."""
    from mcts_pref.prompts import DEFAULT_SHOTS

    shots = DEFAULT_SHOTS[:1]  # one exemplar: short prompts that still get one step per line
    hf = load_backend(PolicySpec(model=str(default_model_dir), prompt_format="plain", device="cpu", dtype="fp32"), shots)
    vl = VLLMBackend(GenerateLLM(hf.model), hf.tok, PolicySpec(model="x", prompt_format="plain"), shots=shots,
                     eos_ids=[2], sampling_params=NS)
    prompts = [hf.format_prompt({"question": q}) for q in ("What is 3 + 4 + 2?", "What is 10 - 3 - 4?")]
    kw = {"temperature": 0.0, "top_p": 1.0}
    for mode, cap in (("expand", {"max_step_tokens": 16}), ("complete", {"max_tokens": 32})):
        ours = getattr(vl, mode)(prompts, [1, 1], **kw, **cap)
        theirs = getattr(hf, mode)(prompts, [1, 1], **kw, **cap)
        for a, b in zip(theirs, ours):
            assert (b[0].text, b[0].finish, b[0].token_ids) == (a[0].text, a[0].finish, a[0].token_ids)
            assert b[0].logprob == pytest.approx(a[0].logprob, abs=1e-3)
    questions, partials = ["What is 3 + 4 + 2?", "What is 10 - 3 - 4?"], ["3 + 4 = 7\n7 + 2 = 9\n", "10 - 3 = 6\n"]
    assert vl.self_evaluate(questions, partials) == pytest.approx(hf.self_evaluate(questions, partials), abs=1e-3)


def test_vllm_matches_hf_on_the_bundled_model(default_model_dir, tmp_path):
    """GPU only: greedy steps as HFBackend's; self-evaluation within 0.05; an identity LoRA changes nothing."""
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"  # fresh LoRA: B = 0, so the adapted policy is the base policy
    base = AutoModelForCausalLM.from_pretrained(default_model_dir)
    get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])).save_pretrained(adapter)
    del base

    hf = load_backend(PolicySpec(model="default", dtype="bf16"))
    vl = load_vllm_backend(PolicySpec(model="default", adapter=str(adapter), dtype="bf16"), gpu_memory_utilization=0.4)
    problems = [{"question": "What is 3 + 4 + 2?"}, {"question": "Tom has 5 apples and eats 2. How many are left?"}]
    prompts = [hf.format_prompt(p) for p in problems]
    assert prompts == [vl.format_prompt(p) for p in problems]
    kw = {"temperature": 0.0, "top_p": 1.0, "max_step_tokens": 48}
    for a, b in zip(hf.expand(prompts, [1, 1], **kw), vl.expand(prompts, [1, 1], **kw)):
        assert (b[0].text, b[0].finish) == (a[0].text, a[0].finish)
        assert b[0].logprob == pytest.approx(a[0].logprob, abs=0.1 + 0.02 * a[0].n_tokens)
    full_hf = hf.complete(prompts, [1, 1], temperature=0.0, top_p=1.0, max_tokens=96)
    full_vl = vl.complete(prompts, [1, 1], temperature=0.0, top_p=1.0, max_tokens=96)
    for a, b in zip(full_hf, full_vl):
        assert b[0].text.split("\n")[0] == a[0].text.split("\n")[0]
    sampled = vl.expand(prompts, [4, 4], temperature=0.8, top_p=0.95, max_step_tokens=48, seed=1)
    assert all(len(s) == 4 and all(x.token_ids and x.logprob <= 0 for x in s) for s in sampled)
    questions = [p["question"] for p in problems]
    partials = [full_hf[0][0].text, "2 + 2 = 5\n"]
    for c_hf, c_vl in zip(hf.self_evaluate(questions, partials), vl.self_evaluate(questions, partials)):
        assert c_vl == pytest.approx(c_hf, abs=0.05)
