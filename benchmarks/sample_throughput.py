"""Tokens/s of `sample`'s batched decoder at batch 1, 8 and 32 vs plain `model.generate`.

    python benchmarks/sample_throughput.py [--model default] [--tokens 48]

Both sides decode the same prompts greedily with the same token cap and each
counts the tokens it actually generated; `sample` also stops a row at its
answer line and drops finished rows from the batch, as it does in real use.
Run it on an idle machine; it prints one line per batch size.
"""

from __future__ import annotations

import argparse
import time

import torch

from mcts_pref.backends import load_backend
from mcts_pref.policy_spec import PolicySpec

QUESTIONS = [f"State the final answer to the following arithmetic problem: {a} + {b} - {c} ="
             for a, b, c in [(3, 4, 2), (9, 1, 5), (7, 7, 3), (2, 8, 6)] * 8]


def ours(backend, prompts, tokens):
    start, before = time.perf_counter(), backend.stats["tokens"]
    backend.complete(prompts, [1] * len(prompts), temperature=0, top_p=1.0, max_tokens=tokens)
    return (backend.stats["tokens"] - before) / (time.perf_counter() - start)


def plain(backend, prompts, tokens):
    tok, model = backend.tok, backend.model
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=tokens, pad_token_id=tok.pad_token_id)
    new = out[:, enc.input_ids.shape[1]:]
    n = int((new != tok.pad_token_id).sum())
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--tokens", type=int, default=48)
    args = ap.parse_args()
    backend = load_backend(PolicySpec(model=args.model))
    for batch in (1, 8, 32):
        prompts = [backend.format_prompt({"question": q}) for q in QUESTIONS[:batch]]
        ours(backend, prompts[:1], 4)  # warm-up
        a, b = ours(backend, prompts, args.tokens), plain(backend, prompts, args.tokens)
        print(f"batch {batch:>2}: sample decoder {a:6.1f} tok/s   model.generate {b:6.1f} tok/s   ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
