"""Generation backends behind one small interface (:class:`base.Backend`).

``load_backend(spec)`` builds the backend ``spec.backend`` for the policy a
:class:`~mcts_pref.policy_spec.PolicySpec` names. ``hf`` (transformers, CPU or
one GPU) and ``vllm`` (GPUs, the optional extra) are built in;
:func:`register_backend` adds more, which is how the tests plug a scripted
backend into the real CLI.
"""

from __future__ import annotations

from typing import Callable

from mcts_pref.backends.base import Backend, Step
from mcts_pref.errors import MctsPrefError
from mcts_pref.policy import load_model
from mcts_pref.policy_spec import PolicySpec
from mcts_pref.prompts import load_shots

__all__ = ["BACKENDS", "Backend", "Step", "load_backend", "register_backend"]


def _load_hf(spec: PolicySpec, shots: list[dict]) -> Backend:
    if spec.tensor_parallel_size != 1:
        raise MctsPrefError("--tensor-parallel-size needs --backend vllm (the hf backend runs on one device)")
    from mcts_pref.backends.hf import HFBackend  # lazy: imports torch

    net, tok = load_model(spec)
    return HFBackend(net, tok, spec, shots=shots)


def _load_vllm(spec: PolicySpec, shots: list[dict]) -> Backend:
    from mcts_pref.backends.vllm import load_vllm_backend  # lazy: the vllm extra may be missing

    return load_vllm_backend(spec, shots=shots)


Loader = Callable[..., Backend]
BACKENDS: dict[str, Loader] = {"hf": _load_hf, "vllm": _load_vllm}


def register_backend(name: str, loader: Loader) -> None:
    """Make ``--backend name`` build a backend with ``loader(spec, shots)`` (shots: the exemplars, read)."""
    BACKENDS[name] = loader


def load_backend(spec: PolicySpec, shots: list[dict] | None = None) -> Backend:
    """The backend ``spec.backend`` for the policy ``spec`` names.

    ``shots``: the exemplars, when the caller has read them already (a
    command reads them before it opens its output); by default
    ``spec.shots`` of them from ``spec.shots_from`` or the built-in ones.
    """
    if spec.kv_cache_mb < 0:
        raise MctsPrefError(f"--kv-cache-mb must be >= 0 (0 turns the cache off), got {spec.kv_cache_mb}")
    if spec.backend not in BACKENDS:
        raise MctsPrefError(f"--backend must be one of {', '.join(BACKENDS)}, got {spec.backend!r}")
    return BACKENDS[spec.backend](spec, load_shots(spec.shots, spec.shots_from) if shots is None else shots)
