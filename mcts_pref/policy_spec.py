"""The policy a stage loads and prompts, as one object: :class:`PolicySpec`.

Each knob's default and help live here once. Commands turn the fields into
their options (``options.options_from``: the flag is the field name with
dashes), build one spec and pass it whole to ``backends.load_backend`` and
``policy.load_model``. Typer-free, so the generation layer can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

DEFAULT_MODEL = "default"  # the --model that names the bundled SmolLM2 (policy.default_model_dir)


def knob(default: Any, help: str, *, short: str | None = None) -> Any:
    """A dataclass field with its CLI help (and an optional short flag) in its metadata."""
    return field(default=default, metadata={"help": help, "short": short})


@dataclass(frozen=True)
class PolicySpec:
    """A base model plus optional adapter, how to load it, and how to prompt it.

    ``shots`` is a count; the exemplars themselves are read from
    ``shots_from`` (or the built-in ones) by ``prompts.load_shots``.
    ``kv_cache_mb`` is used by the hf backend only, ``tensor_parallel_size``
    by vllm only.
    """

    model: str = knob(DEFAULT_MODEL, "Base model: Hugging Face id, local dir, a .gguf file (converted once), or "
                                     "'default' (bundled SmolLM2-135M-Instruct).", short="-m")
    adapter: Optional[str] = knob(None, "LoRA adapter dir written by train-dpo (optional).", short="-a")
    dtype: str = knob("auto", "auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16.")
    load_in_4bit: bool = knob(False, "Load the base model 4-bit nf4 with bitsandbytes (QLoRA path).")
    trust_remote_code: bool = knob(False, "Allow model repos to run their own Python code (off by default).")
    device: str = knob("auto", "auto | cpu | cuda | cuda:N (one GPU by index; --backend hf, vllm places the model itself).")
    prompt_format: str = knob("auto", "auto (chat template if the tokenizer has one) | chat | plain ('QUESTION: q\\n\\nANSWER:'). "
                                      "Both put --shots exemplars before the question.")
    shots: int = knob(2, "Number of few-shot exemplars (one step per line) put before each question.")
    shots_from: Optional[str] = knob(None, "Problem JSONL whose gold rationales serve as exemplars (default: built-in ones).")
    batch_rows: int = knob(64, "Most sequences decoded together in one forward pass.")
    # 2048 MiB: ~45k tokens of SmolLM2-135M's KV in fp32, small beside a 24 GB machine.
    kv_cache_mb: int = knob(2048, "Memory cap (MiB) of the hf backend's prefix KV cache, kept across model calls so a "
                                  "node's prefix is encoded once (0: off, only the exemplar header is reused).")
    backend: str = knob("hf", "Generation backend: hf (transformers, CPU or one GPU) | vllm (GPUs; the 'vllm' extra, "
                              "see examples/vllm.md).")
    tensor_parallel_size: int = knob(1, "GPUs one model is sharded over (--backend vllm only).")

    @property
    def policy_id(self) -> str:
        """What the records this policy produces carry as ``policy``: the model, ``+adapter`` if any."""
        return self.model if not self.adapter else f"{self.model}+{self.adapter}"
