"""GPU check: bf16 search and LoRA DPO on CUDA, measured against raw decode, in one short run.

    python benchmarks/gpu_check.py --out runs/gpu-check                  # CUDA, bf16, both shapes
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gc     # CPU smoke run (CI), < 1 min
    scripts/gpu_check.sh --out runs/gpu-check                             # on a machine without network

Nothing is downloaded. Each model is built in code with random weights in the
shape of SmolLM2-135M (Llama) and of a 1.5B Qwen2 (``--tiny`` shrinks both to
two layers), next to a byte-level BPE tokenizer trained at run time on
synthetic arithmetic text and padded with filler tokens up to the model's
vocabulary, so that every id a random model samples decodes to text. Each is
saved as safetensors and driven through the project's own code paths:

1. search: ``mcts_pref.mcts.search_trees`` on synthetic problems with all
   trees in flight, against raw batched decode (forward passes with a KV cache
   and sampling, nothing else) of as many tokens at the search's mean decode
   batch rows. Random weights rarely end a line, so small ``--max-step-tokens``
   and ``--max-depth`` make the trees finish.
2. train-dpo (the real ``mcts-pref train-dpo`` command, in-process) with LoRA
   on synthetic pairs whose chosen step ends " yes" and rejected " no": seconds
   per step, peak memory, and a check that the loss falls (mean of the last 5
   steps below the first 5 and below log 2).
3. QLoRA: ``train-dpo`` and ``sample`` with ``--load-in-4bit``, when CUDA is
   here and bitsandbytes imports; otherwise recorded as skipped, with why.

Writes OUT/gpu_check.json and OUT/gpu_check.txt and prints the summary; exits
1 when a check failed, 2 on bad arguments. Peak memory is
``torch.cuda.max_memory_allocated`` per part on CUDA and the process's peak RSS
so far on CPU. Figures from random weights measure speed, not quality.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# mcts_pref, torch and transformers are imported inside functions: --help and bad arguments
# answer at once, and the tests import this file cheaply.

EOS, PAD = "<|endoftext|>", "<|pad|>"
LOSS_WINDOW = 5  # steps averaged at each end of the DPO loss curve
LOSS_MARGIN = 0.01  # nats the loss must fall by, below both the first steps and log 2

# Shapes of the real models (their config.json values); weights are random.
SHAPES = {
    "smollm2-135m": dict(family="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0,
                         max_position_embeddings=8192),
    "qwen2-1.5b": dict(family="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0,
                       max_position_embeddings=32768),
}
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1024, max_position_embeddings=2048)

# Sizes: full (CUDA, fits ~8 min on an H200 with room to spare) and --tiny (CPU CI).
FULL = dict(problems=64, batch_trees=64, batch_rows=256, max_step_tokens=16, max_depth=3, depth_limit=2,
            iterations=1, root_children=3, children=2, temperature=0.7, top_p=1.0, pairs=256, dpo_steps=20,
            dpo_batch=8, lr=2e-3, lora_r=16, qlora_steps=20, sample_problems=32, sample_tokens=32, bpe_vocab=4096,
            threads=0)
# One CPU thread: tiny matmuls gain nothing from more, and on a loaded machine (CI) more threads
# spin against each other (measured: 42 s -> 5 s for one tiny model on 2 busy cores).
TINY = dict(FULL, problems=8, batch_trees=8, batch_rows=64, max_step_tokens=8, pairs=32, dpo_batch=4,
            qlora_steps=10, sample_problems=4, sample_tokens=16, bpe_vocab=512, threads=1)


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- pure helpers (tested by hand in tests/test_gpu_check.py) --------------------


def loss_check(losses: list[float], window: int = LOSS_WINDOW, margin: float = LOSS_MARGIN) -> dict:
    """Did DPO learn? Mean loss of the last ``window`` steps below the first ``window`` and below log 2.

    log 2 is the loss when policy == reference (a fresh LoRA): below it, the
    chosen step gained on the rejected one. Both gaps must exceed ``margin``
    (nats), so that a run whose adapter barely moves (a learning rate of
    1e-9, say) fails. Needs ``2 * window`` steps.
    """
    if len(losses) < 2 * window or not all(math.isfinite(x) for x in losses):
        return {"passed": False, "why": f"need {2 * window} finite losses, got {losses}"}
    first, last = statistics.fmean(losses[:window]), statistics.fmean(losses[-window:])
    passed = last < first - margin and last < math.log(2) - margin
    why = (f"last-{window} mean {last:.4f} vs first-{window} mean {first:.4f} and log 2 = {math.log(2):.4f}, "
           f"margin {margin}")
    return {"passed": passed, "first_mean": first, "last_mean": last, "why": why}


def raw_decode_plan(tokens: int, decode_rows: list[int]) -> tuple[int, int]:
    """``(rows, steps)`` of a raw decode that makes ``tokens`` tokens at the search's mean decode batch."""
    if tokens < 1 or not decode_rows:
        raise ValueError("the search made no tokens or no decode forward passes")
    rows = max(1, round(sum(decode_rows) / len(decode_rows)))
    return rows, math.ceil(tokens / rows)


def median_step_seconds(seconds: list[float]) -> float:
    """Median seconds per optimizer step, leaving out the first (allocator and kernel warm-up)."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def filler_tokens(n: int, taken) -> list[str]:
    """``n`` distinct byte-level tokens (" zq" + letters) not in ``taken``: they decode to plain words."""
    out, i = [], 0
    while len(out) < n:
        s = "\u0120zq" + "".join(chr(97 + (i // 26**k) % 26) for k in range(4))  # \u0120 is a space
        i += 1
        if s not in taken:
            out.append(s)
    return out


# --- synthetic data --------------------------------------------------------------


def problems(n: int, seed: int, prefix: str = "gc") -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
        out.append({"v": 1, "id": f"{prefix}{i}", "question": f"What is {a} + {b} + {c}?",
                    "answer": str(a + b + c), "task": "math"})
    return out


def pairs(n: int, seed: int) -> list[dict]:
    """Learnable preference: the same arithmetic step, chosen ending " yes", rejected " no"."""
    out = []
    for p in problems(n, seed, "pair"):
        a, b, c = (int(x) for x in p["question"][8:-1].split(" + "))
        step = f"{a} + {b} = {a + b}"
        out.append({"v": 1, "prompt": f"QUESTION: {p['question']}\n\nANSWER:\n", "chosen": f"{step} yes\n",
                    "rejected": f"{step} no\n", "problem_id": p["id"], "depth": 1, "label_smoothing": 0.0})
    return out


def corpus(n: int, seed: int) -> list[str]:
    from mcts_pref.prompts import DEFAULT_SHOTS, JUDGE_INSTRUCTION, JUDGE_PREFILL, SYSTEM

    fixed = [SYSTEM, JUDGE_INSTRUCTION, JUDGE_PREFILL, "Question: Partial solution: (no steps yet) yes no"]
    fixed += [s["question"] + "\n" + s["rationale"] for s in DEFAULT_SHOTS]
    rng, text = random.Random(seed), []
    for p in problems(n, seed):
        a, b, c = (int(x) for x in p["question"][8:-1].split(" + "))
        text.append(f"QUESTION: {p['question']}\n\nANSWER:\n{a} + {b} = {a + b}\n{a + b} + {c} = {p['answer']}\n"
                    f"The answer is {p['answer']}.\n\n{rng.choice(['yes', 'no'])}")
    return fixed * 20 + text


def build_tokenizer(vocab_size: int, bpe_vocab: int, seed: int):
    """A byte-level BPE trained on synthetic arithmetic, padded to exactly ``vocab_size`` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(bpe_vocab, vocab_size), special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(4000, seed), trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    trained = len(vocab)
    # Fillers are vocabulary no merge reaches: encoding never makes them, decoding any id works.
    for s in filler_tokens(vocab_size - len(vocab), vocab):
        vocab[s] = len(vocab)
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token=EOS,
                                   pad_token=PAD, clean_up_tokenization_spaces=False, model_max_length=4096)
    assert len(fast) == vocab_size, (len(fast), vocab_size)
    return fast, trained


def build_model(name: str, tiny: bool, out: Path, device: str, dtype, bpe_vocab: int, seed: int) -> dict:
    """Random-init model + tokenizer saved to ``out``; returns the shape and parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = dict(SHAPES[name])
    family = shape.pop("family")
    if tiny:
        shape.update(TINY_SHAPE)
    tok, trained = build_tokenizer(shape["vocab_size"], bpe_vocab, seed)
    cfg_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if family == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    # Llama's default bos/eos ids (1, 2) would make ordinary BPE tokens end sequences.
    cfg = cfg_cls(**shape, tie_word_embeddings=True, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_cls(cfg).to(dtype)
    n_params = sum(p.numel() for p in model.parameters())
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None))  # what this transformers made of it
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    return {"family": family, **shape, "tie_word_embeddings": True, "params": n_params,
            "rope_theta_effective": theta, "tokenizer_trained_tokens": trained}


# --- measuring -------------------------------------------------------------------


class Meter:
    """Wall time and peak memory of one part; CUDA is synchronized at both ends."""

    def __init__(self, device: str):
        import torch

        self.torch, self.cuda = torch, device.startswith("cuda")

    def __enter__(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.torch.cuda.synchronize()
        self.wall_s = time.perf_counter() - self.t0
        if self.cuda:
            self.peak_mb = self.torch.cuda.max_memory_allocated() / 2**20
        else:
            import resource

            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return False


def load_backend_fn():
    """``mcts_pref.backends.load_backend`` (imported late: this script sets threads and paths first)."""
    from mcts_pref.backends import load_backend

    return load_backend


def guarded_outcome(errors: list):
    """The search's answer check (``tasks.score``); a checker failure (math-verify missing) counts as wrong."""
    from mcts_pref.errors import MctsPrefError
    from mcts_pref.tasks import score

    def outcome(completion: str, problem: dict) -> bool:
        try:
            return bool(score(completion, problem["answer"], problem.get("task") or "math")[1])
        except MctsPrefError as e:
            errors.append(str(e))
            return False

    return outcome


def raw_decode(net, tok, prompt: str, rows: int, steps: int, temperature: float, seed: int) -> int:
    """Forward passes with a KV cache and plain sampling, nothing else; returns tokens made."""
    import inspect

    import torch
    from transformers import DynamicCache

    dev = next(net.parameters()).device
    cache_kw = "cache" if "cache" in inspect.signature(type(net).forward).parameters else "past_key_values"
    ids = torch.tensor([tok(prompt, add_special_tokens=False).input_ids] * rows, device=dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    with torch.inference_mode():
        res = net(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_kw: DynamicCache()})
        for _ in range(steps):
            probs = torch.softmax(res.logits[:, -1, :].float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
            cache = getattr(res, "cache", None) or res.past_key_values
            res = net(input_ids=nxt, use_cache=True, **{cache_kw: cache})
    return rows * steps


def check_search(model_dir: Path, a, device: str, dtype: str) -> dict:
    from mcts_pref.mcts import Config, search_trees
    from mcts_pref.policy_spec import PolicySpec

    backend = load_backend_fn()(PolicySpec(model=str(model_dir), device=device, dtype=dtype, prompt_format="plain",
                                           batch_rows=a.batch_rows))
    net, tok = backend.model, backend.tok
    # top_p 1 by default: a random model's next-token distribution is nearly flat, so nucleus
    # sampling would fall back to a full-vocabulary sort at every step (a cost trained models
    # rarely pay), and raw decode samples the same way.
    knobs = dict(iterations=a.iterations, children=a.children, root_children=a.root_children,
                 depth_limit=a.depth_limit, max_depth=a.max_depth, max_step_tokens=a.max_step_tokens,
                 temperature=a.temperature, top_p=a.top_p, seed=a.seed)
    errors: list[str] = []
    outcome = guarded_outcome(errors)
    decode_rows: list[int] = []
    recording = [False]

    def count_rows(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if recording[0] and ids is not None and ids.shape[1] == 1:
            decode_rows.append(int(ids.shape[0]))

    hook = net.register_forward_pre_hook(count_rows, with_kwargs=True)
    warm = problems(2, a.seed + 1, "warm")
    list(search_trees(backend, warm, Config(batch_trees=2, **knobs), outcome_fn=outcome))  # kernels, allocator
    todo = problems(a.problems, a.seed)
    recording[0] = True
    with Meter(device) as m:
        trees = list(search_trees(backend, todo, Config(batch_trees=a.batch_trees, **knobs), outcome_fn=outcome))
    recording[0] = False
    hook.remove()
    tokens = sum(t["stats"]["tokens"] for t in trees)
    search = {"problems": len(todo), "trees": len(trees), "batch_trees": a.batch_trees, "batch_rows": a.batch_rows,
              "config": knobs, "tokens": tokens, "wall_s": m.wall_s, "tok_per_s": tokens / m.wall_s,
              "decode_forwards": len(decode_rows), "mean_decode_rows": sum(decode_rows) / max(1, len(decode_rows)),
              "nodes": sum(len(t["nodes"]) for t in trees), "outcome_errors": len(errors), "peak_mem_mb": m.peak_mb}

    rows, steps = raw_decode_plan(tokens, decode_rows)
    prompt = backend.format_prompt(todo[0])
    raw_decode(net, tok, prompt, rows, 4, a.temperature, a.seed)  # warm-up at this batch size
    with Meter(device) as m:
        made = raw_decode(net, tok, prompt, rows, steps, a.temperature, a.seed)
    raw = {"rows": rows, "steps": steps, "prompt_tokens": len(tok(prompt, add_special_tokens=False).input_ids),
           "tokens": made, "wall_s": m.wall_s, "tok_per_s": made / m.wall_s, "peak_mem_mb": m.peak_mb}
    search["raw_decode"] = raw
    search["ratio"] = search["tok_per_s"] / raw["tok_per_s"]
    ok = len(trees) == len(todo) and tokens > 0 and all(math.isfinite(x) and x > 0 for x in
                                                        (search["tok_per_s"], raw["tok_per_s"], search["ratio"]))
    search["check"] = {"passed": ok, "why": f"{len(trees)}/{len(todo)} trees finished, {tokens} tokens"}
    del backend, net
    return search


def invoke(argv: list[str]):
    from typer.testing import CliRunner

    from mcts_pref.cli import app

    return CliRunner().invoke(app, argv)


def failure(r) -> str:
    """The end of a failed command's output, and the traceback of an unexpected exception."""
    import traceback

    text = (r.output or "")[-600:]
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        text += "".join(traceback.format_exception(*r.exc_info)[-4:])[-1500:]
    return text


def check_dpo(model_dir: Path, work: Path, a, device: str, dtype: str, steps: int, four_bit: bool) -> dict:
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs(a.pairs, a.seed)))
    out = work / ("dpo-4bit" if four_bit else "dpo")
    per_epoch = math.ceil(a.pairs / a.dpo_batch)
    argv = ["train-dpo", str(data), "--model", str(model_dir), "--out", str(out), "--overwrite",
            "--lora-r", str(a.lora_r), "--lora-alpha", str(2 * a.lora_r), "--lr", str(a.lr),
            "--batch-size", str(a.dpo_batch), "--epochs", str(math.ceil(steps / per_epoch)), "--max-steps", str(steps),
            "--device", device, "--dtype", dtype, "--seed", str(a.seed)] + (["--load-in-4bit"] if four_bit else [])
    with Meter(device) as m:
        r = invoke(argv)
    res = {"pairs": a.pairs, "steps": steps, "batch_size": a.dpo_batch, "lora_r": a.lora_r, "lr": a.lr,
           "load_in_4bit": four_bit, "exit_code": r.exit_code, "wall_s": m.wall_s, "peak_mem_mb": m.peak_mb}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()] if r.exit_code == 0 else []
    if r.exit_code != 0 or len(rows) != steps:
        res["check"] = {"passed": False, "why": f"train-dpo exit {r.exit_code}, {len(rows)} steps logged: "
                                                f"{failure(r)}"}
        return res
    losses = [x["loss"] for x in rows]
    res.update(sec_per_step=median_step_seconds([x["seconds"] for x in rows]), losses=losses,
               final_reward_acc=rows[-1]["reward_acc"], check=loss_check(losses))
    return res


def check_sample(model_dir: Path, work: Path, a, device: str) -> dict:
    data, out = work / "sample-problems.jsonl", work / "samples.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in problems(a.sample_problems, a.seed + 2, "s")))
    out.unlink(missing_ok=True)
    argv = ["sample", str(data), "--model", str(model_dir), "--load-in-4bit", "--prompt-format", "plain",
            "--max-tokens", str(a.sample_tokens), "--batch-problems", str(a.sample_problems), "--device", device,
            "--out", str(out)]
    with Meter(device) as m:
        r = invoke(argv)
    recs = [json.loads(x) for x in out.read_text().splitlines()] if r.exit_code == 0 and out.exists() else []
    tokens = sum(x["n_tokens"] for x in recs)
    ok = r.exit_code == 0 and len(recs) == a.sample_problems and tokens > 0
    return {"problems": a.sample_problems, "records": len(recs), "tokens": tokens, "exit_code": r.exit_code,
            "wall_s": m.wall_s, "tok_per_s_incl_load": tokens / m.wall_s, "peak_mem_mb": m.peak_mb,
            "check": {"passed": ok, "why": f"{len(recs)}/{a.sample_problems} samples, {tokens} tokens"
                      + ("" if r.exit_code == 0 else f": {failure(r)}")}}


def qlora_skip_reason(device: str) -> str | None:
    if not device.startswith("cuda"):
        return "no CUDA device: 4-bit loading (bitsandbytes) is checked on CUDA only"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # an ImportError, or a broken build raising on import
        return (f"bitsandbytes does not import here ({type(e).__name__}: {e}); carry its wheel "
                "(bitsandbytes 0.50.2: 41 MiB, py3-none-manylinux) in .whl/ for scripts/gpu_check.sh")
    return None


# --- the run ---------------------------------------------------------------------


def run(a) -> dict:
    import torch

    device = a.device
    dtype = a.dtype if a.dtype != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[dtype]
    import accelerate
    import peft
    import tokenizers
    import transformers

    from mcts_pref import __version__

    report = {"v": 1, "device": device, "dtype": dtype, "tiny": a.tiny, "weights": "random-init",
              "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
              "peak_mem": "torch.cuda.max_memory_allocated per part" if device.startswith("cuda")
              else "process peak RSS so far (ru_maxrss)",
              "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                           "transformers": transformers.__version__, "peft": peft.__version__,
                           "accelerate": accelerate.__version__, "tokenizers": tokenizers.__version__,
                           "mcts_pref": __version__},
              "knobs": {k: v for k, v in vars(a).items() if k not in ("out", "work")}, "models": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=a.work) as tmp:
        for name in a.models:
            work = Path(tmp) / name
            work.mkdir()
            log(f"{name}: building random-init model ({'tiny' if a.tiny else 'full'} shape)")
            t0 = time.perf_counter()
            entry = {"shape": build_model(name, a.tiny, work / "model", device, torch_dtype, a.bpe_vocab, a.seed)}
            entry["build_s"] = time.perf_counter() - t0
            report["models"][name] = entry
            parts = [("search", lambda: check_search(work / "model", a, device, dtype)),
                     ("train_dpo", lambda: check_dpo(work / "model", work, a, device, dtype, a.dpo_steps, False))]
            skip = qlora_skip_reason(device) if "qlora" in a.parts else None
            if skip:
                entry["qlora"] = {"skipped": skip}
            elif "qlora" in a.parts:
                parts += [("qlora", lambda: {
                    "train_dpo": check_dpo(work / "model", work, a, device, dtype, a.qlora_steps, True),
                    "sample": check_sample(work / "model", work, a, device)})]
            for part, fn in parts:
                if part not in a.parts:
                    continue
                log(f"{name}: {part}")
                try:
                    entry[part] = fn()
                except Exception as e:  # one broken part must not cost the figures of the others
                    import traceback

                    tb = "".join(traceback.format_exception(e)[-4:])[-1500:]
                    entry[part] = {"check": {"passed": False, "why": f"{type(e).__name__}: {e}", "traceback": tb}}
                gc.collect()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    report["wall_s"] = time.perf_counter() - start
    report["failed"] = [f"{m}.{p}" + (f".{q}" if q else "") for m, e in report["models"].items()
                        for p, q, c in _checks(e) if not c["passed"]]
    report["passed"] = not report["failed"]
    return report


def _checks(entry: dict):
    for part in ("search", "train_dpo"):
        if part in entry:
            yield part, None, entry[part]["check"]
    q = entry.get("qlora", {})
    if "check" in q:
        yield "qlora", None, q["check"]
    for sub in ("train_dpo", "sample"):
        if sub in q:
            yield "qlora", sub, q[sub]["check"]


def summary(r: dict) -> str:
    gib = lambda mb: f"{mb / 1024:.2f} GiB"  # noqa: E731
    lines = [f"gpu_check: {r['device_name']} ({r['device']}), {r['dtype']}, {r['weights']} weights, "
             f"torch {r['versions']['torch']}, transformers {r['versions']['transformers']}; peak = {r['peak_mem']}"]
    for name, e in r["models"].items():
        s = e["shape"]
        lines.append(f"{name}: {s['params'] / 1e6:.1f}M params, {s['num_hidden_layers']} layers, "
                     f"hidden {s['hidden_size']}, vocab {s['vocab_size']} (built in {e['build_s']:.1f} s)")
        if "search" in e:
            x = e["search"]
            if "raw_decode" in x:
                w = x["raw_decode"]
                lines.append(f"  search     {x['trees']} trees, {x['batch_trees']} in flight: {x['tokens']} tok in "
                             f"{x['wall_s']:.1f} s = {x['tok_per_s']:.0f} tok/s, peak {gib(x['peak_mem_mb'])}; "
                             f"raw decode {w['rows']} rows x {w['steps']} steps = {w['tok_per_s']:.0f} tok/s, "
                             f"peak {gib(w['peak_mem_mb'])}; search/raw = {x['ratio']:.3f}")
            else:
                lines.append(f"  search     FAILED: {x['check']['why']}")
        for label, d in (("train-dpo", e.get("train_dpo")), ("qlora dpo", e.get("qlora", {}).get("train_dpo"))):
            if d and "losses" in d:
                c = d["check"]
                lines.append(f"  {label:<10} {d['pairs']} pairs, LoRA r={d['lora_r']}, {d['steps']} steps: "
                             f"{d['sec_per_step']:.3f} s/step, peak {gib(d['peak_mem_mb'])}; loss "
                             f"{d['losses'][0]:.3f} -> {d['losses'][-1]:.3f} ({c['why']}): "
                             f"{'PASS' if c['passed'] else 'FAIL'}")
            elif d:
                lines.append(f"  {label:<10} FAILED: {d['check']['why']}")
        q = e.get("qlora", {})
        if "skipped" in q:
            lines.append(f"  qlora      skipped: {q['skipped']}")
        elif "sample" in q:
            x = q["sample"]
            lines.append(f"  qlora smp  {x['records']} samples, {x['tokens']} tok in {x['wall_s']:.1f} s (load "
                         f"included), peak {gib(x['peak_mem_mb'])}: {'PASS' if x['check']['passed'] else 'FAIL'}")
    lines.append(f"{'PASS' if r['passed'] else 'FAIL: ' + ', '.join(r['failed'])} ({r['wall_s']:.0f} s)")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gpu-check", help="folder for gpu_check.json and gpu_check.txt")
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32", "fp16"),
                    help="auto: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--tiny", action="store_true", help="two-layer shapes and small sizes (CPU smoke run)")
    ap.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated, of: {', '.join(SHAPES)}")
    ap.add_argument("--parts", default="search,train_dpo,qlora", help="comma-separated: search, train_dpo, qlora")
    ap.add_argument("--work", default=None, help="where model dirs are built (a temp dir inside, removed after)")
    ap.add_argument("--seed", type=int, default=0)
    for k, v in FULL.items():
        what = "torch CPU threads, 0: torch's choice; " if k == "threads" else ""
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=None,
                        help=f"{what}default {v} ({TINY[k]} with --tiny)")
    a = ap.parse_args(argv)
    for k in FULL:
        if getattr(a, k) is None:
            setattr(a, k, (TINY if a.tiny else FULL)[k])
    a.models, a.parts = a.models.split(","), a.parts.split(",")
    bad = [m for m in a.models if m not in SHAPES] + [p for p in a.parts if p not in ("search", "train_dpo", "qlora")]
    if bad:
        ap.error(f"unknown model or part: {', '.join(bad)}")
    if a.dpo_steps < 2 * LOSS_WINDOW or a.qlora_steps < 2 * LOSS_WINDOW:
        ap.error(f"--dpo-steps and --qlora-steps must be >= {2 * LOSS_WINDOW} (the loss check compares two windows)")
    if min(getattr(a, k) for k, v in FULL.items() if isinstance(v, int) and k != "threads") < 1:
        ap.error("sizes (counts, steps, tokens) must be >= 1")
    if a.lr < 0 or a.threads < 0 or a.temperature <= 0 or not 0 < a.top_p <= 1:
        ap.error("need --lr >= 0, --threads >= 0, --temperature > 0 and 0 < --top-p <= 1")
    if a.device != "cpu" and not a.device.startswith("cuda"):
        ap.error(f"--device must be cuda, cuda:N or cpu, got {a.device!r}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {a.device}: no CUDA device here; use --device cpu --tiny", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    report = run(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    text = summary(report)
    (out / "gpu_check.txt").write_text(text)
    print(text, end="")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
