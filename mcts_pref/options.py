"""Typer option types shared by every stage that loads a model, and their defaults.

:class:`PolicyOptions` is the one place the shared defaults live; each
command writes ``model: Model = POLICY.model`` and so on. Stage-specific
knobs live in each stage's own config dataclass (``search.Config``,
``sample.SampleConfig``, ``train_dpo.DpoConfig``), from which its options
take their defaults in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import typer


@dataclass(frozen=True)
class PolicyOptions:
    """Defaults of the options that load and prompt a policy (shared by sample, search, train-dpo)."""

    model: str = "default"
    adapter: Optional[str] = None
    dtype: str = "auto"
    load_in_4bit: bool = False
    trust_remote_code: bool = False
    device: str = "auto"
    prompt_format: str = "auto"
    shots: int = 2
    shots_from: Optional[str] = None
    batch_rows: int = 64
    backend: str = "hf"
    tensor_parallel_size: int = 1
    seed: int = 0
    kv_cache_mb: int = 2048  # ~45k tokens of SmolLM2-135M's KV in fp32: small beside a 24 GB machine


POLICY = PolicyOptions()

Model = Annotated[
    str,
    typer.Option("--model", "-m", help="Base model: Hugging Face id, local dir, a .gguf file (converted once), or 'default' (bundled SmolLM2-135M-Instruct)."),
]
Adapter = Annotated[
    Optional[str], typer.Option("--adapter", "-a", help="LoRA adapter dir written by train-dpo (optional).")
]
Dtype = Annotated[str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16.")]
LoadIn4bit = Annotated[
    bool, typer.Option("--load-in-4bit", help="Load the base model 4-bit nf4 with bitsandbytes (QLoRA path).")
]
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow model repos to run their own Python code (off by default).")
]
Device = Annotated[
    str, typer.Option("--device", help="auto | cpu | cuda | cuda:N (one GPU by index; --backend hf, vllm places the model itself).")
]
# train-dpo places the model through accelerate, which picks the GPU itself.
TrainDevice = Annotated[
    str,
    typer.Option("--device", help="auto | cpu | cuda. Pick GPUs with CUDA_VISIBLE_DEVICES or accelerate launch, not cuda:N."),
]
PromptFormat = Annotated[
    str,
    typer.Option(
        "--prompt-format",
        help="auto (chat template if the tokenizer has one) | chat | plain ('QUESTION: q\\n\\nANSWER:'). "
             "Both put --shots exemplars before the question.",
    ),
]
Out = Annotated[Optional[str], typer.Option("--out", "-o", help="Write records here instead of stdout; an existing file is resumed.")]
# For stages that compute their whole output at once (merge, instance-pairs): nothing to resume.
OutReplaced = Annotated[
    Optional[str], typer.Option("--out", "-o", help="Write records here instead of stdout (replaced if it exists).")
]
Shard = Annotated[Optional[str], typer.Option("--shard", help="Process only problems with index % N == i, written 'i/N'.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
Shots = Annotated[
    int, typer.Option("--shots", help="Number of few-shot exemplars (one step per line) put before each question.")
]
ShotsFrom = Annotated[
    Optional[str],
    typer.Option("--shots-from", help="Problem JSONL whose gold rationales serve as exemplars (default: built-in ones)."),
]
BatchRows = Annotated[int, typer.Option("--batch-rows", help="Most sequences decoded together in one forward pass.")]
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Generation backend: hf (transformers, CPU or one GPU) | vllm (GPUs; the 'vllm' extra, see examples/vllm.md).",
    ),
]
TensorParallel = Annotated[
    int, typer.Option("--tensor-parallel-size", help="GPUs one model is sharded over (--backend vllm only).")
]
KvCacheMb = Annotated[
    int,
    typer.Option(
        "--kv-cache-mb",
        help="Memory cap (MiB) of the hf backend's prefix KV cache, kept across model calls so a node's prefix "
             "is encoded once (0: off, only the exemplar header is reused).",
    ),
]
