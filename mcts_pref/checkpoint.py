"""train-dpo's output dir: what a run finds there, and OUT/checkpoint for --resume.

:func:`inspect_out` decides whether a run starts fresh, resumes a checkpoint
or has nothing to do, and refuses to resume a run with other settings.
Checkpoints are written atomically and read back for --resume.

A checkpoint holds what a resumed run needs beyond the data order (which
train.py derives from the step number): the trainable weights and optimizer
state, the scheduler, every process's RNG state, and the run's signature.
Under DeepSpeed the weights and optimizer state are DeepSpeed's own
per-process shards.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from mcts_pref.errors import MctsPrefError

CHECKPOINT = "checkpoint"
DEEPSPEED_TAG = "deepspeed"  # OUT/checkpoint/deepspeed/: DeepSpeed's own per-process shards
METRICS = "metrics.jsonl"
TRAIN_CONFIG = "train_config.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md")


def inspect_out(out: Path, sig: dict, *, resume: bool, overwrite: bool) -> dict | str | None:
    """What is in ``out``: None (start fresh), a checkpoint state (resume) or "done".

    ``sig`` is the new run's signature; resuming a run with another one is refused.
    """
    if out.exists() and not out.is_dir():
        raise MctsPrefError(f"--out {out} is a file; train-dpo writes a directory")
    if overwrite or not out.exists():
        return None
    finished = (out / "adapter_config.json").exists()
    state_path = out / CHECKPOINT / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if finished:
        if not resume:
            raise MctsPrefError(f"{out} already holds a trained adapter; pass --overwrite to replace it or choose another --out")
        previous = json.loads((out / TRAIN_CONFIG).read_text()).get("signature") if (out / TRAIN_CONFIG).exists() else None
        _same_run(previous, sig, out, "a finished run")
        return "done"
    if state is None:
        return None
    if not resume:
        raise MctsPrefError(f"{out} holds an interrupted run (checkpoint at step {state['step']}); "
                            "pass --resume to continue it or --overwrite to start over")
    _same_run(state.get("signature"), sig, out, "its checkpoint")
    return state


def _same_run(previous: dict | None, sig: dict, out: Path, what: str) -> None:
    if previous is None:
        return
    diff = sorted(k for k in set(previous) | set(sig) if previous.get(k) != sig.get(k))
    if diff:
        raise MctsPrefError(f"--resume: settings differ from {what} in {out} ({', '.join(diff)}); "
                            "use the same settings, or --overwrite to start over")


def clear_out(out: Path) -> None:
    """Remove a previous run's files from ``out`` (--overwrite); other files stay."""
    for name in ADAPTER_FILES + (METRICS, TRAIN_CONFIG):
        (out / name).unlink(missing_ok=True)
    for name in (CHECKPOINT, CHECKPOINT + ".tmp"):
        shutil.rmtree(out / name, ignore_errors=True)



def _rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, sig: dict, accelerator, engine=None) -> None:
    """Write OUT/checkpoint atomically (build checkpoint.tmp, then swap).

    Under DeepSpeed (``engine``) every process writes its own shards of the
    trainable weights and optimizer state with DeepSpeed's checkpointing
    (frozen base weights excluded); otherwise rank 0 writes them whole.
    """
    import torch
    from safetensors.torch import save_file

    tmp, final = out / (CHECKPOINT + ".tmp"), out / CHECKPOINT
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if engine is not None:
        engine.save_checkpoint(str(tmp), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True)
    if accelerator.is_main_process:
        if engine is None:
            weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(weights, str(tmp / "trainable.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "signature": sig}, indent=1))
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()


def load_checkpoint(out: Path, model, optimizer, scheduler, accelerator, engine=None) -> int:
    import torch
    from safetensors.torch import load_file

    ckpt = out / CHECKPOINT
    if engine is not None:
        if not (ckpt / DEEPSPEED_TAG).is_dir():
            raise MctsPrefError(f"{ckpt}: not a DeepSpeed checkpoint; resume it without DeepSpeed or use --overwrite")
        engine.load_checkpoint(str(ckpt), tag=DEEPSPEED_TAG, load_module_strict=False,
                               load_optimizer_states=True, load_lr_scheduler_states=False)
    else:
        if not (ckpt / "trainable.safetensors").exists():
            raise MctsPrefError(f"{ckpt}: a DeepSpeed checkpoint; resume it under DeepSpeed or use --overwrite")
        weights = load_file(str(ckpt / "trainable.safetensors"))
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if set(weights) != set(params):
            raise MctsPrefError(f"{ckpt}: trainable weights do not match this model; use --overwrite to start over")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    rng = ckpt / f"rng_{accelerator.process_index}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((ckpt / "state.json").read_text())["step"]
