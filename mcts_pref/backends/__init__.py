"""Generation backends behind one small interface (:class:`base.Backend`).

``load_backend(model, adapter, backend=NAME, ...)`` builds the backend
``NAME`` for a policy. ``hf`` (transformers, CPU or one GPU) and ``vllm``
(GPUs, the optional extra) are built in; :func:`register_backend` adds more,
which is how the tests plug a scripted backend into the real CLI.
"""

from __future__ import annotations

from typing import Callable

from mcts_pref.backends.base import Backend, Step
from mcts_pref.options import POLICY
from mcts_pref.policy import load_model, policy_id
from mcts_pref.errors import MctsPrefError

__all__ = ["BACKENDS", "Backend", "Step", "load_backend", "register_backend"]


def _load_hf(model: str, adapter: str | None, *, dtype: str, load_in_4bit: bool, trust_remote_code: bool,
             device: str, prompt_format: str, shots: list[dict] | None, max_batch_rows: int,
             tensor_parallel_size: int, kv_cache_mb: int) -> Backend:
    if tensor_parallel_size != 1:
        raise MctsPrefError("--tensor-parallel-size needs --backend vllm (the hf backend runs on one device)")
    from mcts_pref.backends.hf import HFBackend  # lazy: imports torch

    net, tok = load_model(model, adapter, dtype=dtype, load_in_4bit=load_in_4bit,
                          trust_remote_code=trust_remote_code, device=device)
    return HFBackend(net, tok, policy_id=policy_id(model, adapter), prompt_format=prompt_format, shots=shots,
                     max_batch_rows=max_batch_rows, kv_cache_mb=kv_cache_mb)


def _load_vllm(model: str, adapter: str | None, *, dtype: str, load_in_4bit: bool, trust_remote_code: bool,
               device: str, prompt_format: str, shots: list[dict] | None, max_batch_rows: int,
               tensor_parallel_size: int, kv_cache_mb: int) -> Backend:
    # vLLM caches prefixes itself (automatic prefix caching); kv_cache_mb is the hf backend's.
    from mcts_pref.backends.vllm import load_vllm_backend  # lazy: the vllm extra may be missing

    return load_vllm_backend(model, adapter, dtype=dtype, load_in_4bit=load_in_4bit,
                             trust_remote_code=trust_remote_code, device=device,
                             tensor_parallel_size=tensor_parallel_size, prompt_format=prompt_format, shots=shots)


Loader = Callable[..., Backend]
BACKENDS: dict[str, Loader] = {"hf": _load_hf, "vllm": _load_vllm}


def register_backend(name: str, loader: Loader) -> None:
    """Make ``--backend name`` build a backend with ``loader(model, adapter, **options)``."""
    BACKENDS[name] = loader


def load_backend(
    model: str,
    adapter: str | None = None,
    *,
    backend: str = "hf",
    dtype: str = "auto",
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    device: str = "auto",
    prompt_format: str = "auto",
    shots: list[dict] | None = None,
    max_batch_rows: int = 64,
    tensor_parallel_size: int = 1,
    kv_cache_mb: int = POLICY.kv_cache_mb,
) -> Backend:
    """The backend ``backend`` for the policy ``model`` + ``adapter``.

    ``kv_cache_mb``: cap of the hf backend's prefix KV cache across calls (0: off).
    """
    if kv_cache_mb < 0:
        raise MctsPrefError(f"--kv-cache-mb must be >= 0 (0 turns the cache off), got {kv_cache_mb}")
    if backend not in BACKENDS:
        raise MctsPrefError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend](
        model, adapter, dtype=dtype, load_in_4bit=load_in_4bit, trust_remote_code=trust_remote_code, device=device,
        prompt_format=prompt_format, shots=shots, max_batch_rows=max_batch_rows,
        tensor_parallel_size=tensor_parallel_size, **({"kv_cache_mb": kv_cache_mb} if backend in ("hf", "vllm") else {}),
    )
