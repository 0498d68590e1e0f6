"""Shared fixtures: the real bundled SmolLM2, a tiny random Llama, and a scripted backend.

The scripted backend plugs into the real CLI the way `llm`'s tests plug in a
mock model: :func:`backend_registry` registers a loader under a name, and the
test runs ``mcts-pref search ... --backend scripted``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcts_pref import backends
from mcts_pref.steps import ANSWER, STEP, Step

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as fp32 safetensors (converted once per cache)."""
    from mcts_pref.policy import default_model_dir as convert

    return convert()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir) -> Path:
    """A 2-layer random Llama that shares SmolLM2's tokenizer: fast mechanics tests."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(default_model_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def load_script(path: Path, name: str):
    """A benchmark or experiment script (not a package module) imported by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def easy_problems(tmp_path) -> Path:
    return write_jsonl(tmp_path / "problems.jsonl", [
        {"v": 1, "id": "p1", "question": "What is 3 + 4 + 2?", "answer": "9", "task": "math"},
        {"v": 1, "id": "p2", "question": "What is 5 + 1 + 2?", "answer": "8", "task": "math"},
    ])


class ScriptedBackend:
    """Answers expansions from ``script``: partial solution -> candidate steps, handed out in order.

    A partial not in the script gets ``default`` (cycled). A step containing
    "The answer is" ends with ANSWER (terminal); its log-prob is -0.5 per
    whitespace-separated token. ``evals`` maps a partial solution to its
    self-evaluation C (0.5 when absent). Every call is logged.
    """

    policy_id = "scripted"
    samples_without_replacement = False  # repeats are merged and asked for again by the search

    def __init__(self, script: dict[str, list[str]], evals: dict[str, float] | None = None, default=("more\n",),
                 completions: dict[str, list[str]] | None = None):
        self.script, self.evals, self.default = script, evals or {}, list(default)
        self.completions = completions or {}  # partial -> rollout completions, handed out in order (cycled)
        self.expand_calls: list[tuple[list[str], list[int], int | None]] = []
        self.self_eval_calls: list[list[str]] = []
        self.complete_calls: list[tuple[list[str], list[int]]] = []
        self.stats = {"tokens": 0}

    def format_prompt(self, problem: dict) -> str:
        return f"Q: {problem['question']}\nA:\n"

    def expand(self, prefixes, n, *, temperature, top_p, max_step_tokens, seed=None, tasks=None):
        self.expand_calls.append((list(prefixes), list(n), seed))
        out = []
        for prefix, k in zip(prefixes, n):
            partial = prefix.split("\nA:\n", 1)[1]
            cands = self.script.get(partial, self.default)
            out.append([scripted_step(cands[j % len(cands)]) for j in range(k)])
        self.stats["tokens"] += sum(s.n_tokens for steps in out for s in steps)
        return out

    def complete(self, prefixes, n, *, temperature, top_p, max_tokens, seed=None, tasks=None):
        self.complete_calls.append((list(prefixes), list(n)))
        out = []
        for prefix, k in zip(prefixes, n):
            partial = prefix.split("\nA:\n", 1)[1]
            cands = self.completions.get(partial, ["I give up."])
            used = sum(1 for ps, ns in self.complete_calls[:-1] for p, m in zip(ps, ns) if p == prefix for _ in range(m))
            out.append([scripted_step(cands[(used + j) % len(cands)]) for j in range(k)])
        return out

    def self_evaluate(self, questions, partials):
        self.self_eval_calls.append(list(partials))
        return [self.evals.get(p, 0.5) for p in partials]

    def release(self, prompt):
        """No prefix cache: nothing to free."""


def scripted_step(text: str) -> Step:
    toks = list(range(len(text.split())))
    return Step(text=text, token_ids=toks, logprob=-0.5 * len(toks), finish=ANSWER if "The answer is" in text else STEP)


@pytest.fixture
def backend_registry():
    """``register(name, loader)``: make ``--backend name`` use ``loader`` for this test only."""
    saved = dict(backends.BACKENDS)

    def register(name, loader):
        backends.register_backend(name, loader)

    yield register
    backends.BACKENDS.clear()
    backends.BACKENDS.update(saved)
