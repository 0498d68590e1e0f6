"""The `train-dpo` loop: LoRA on accelerate, cached reference, exact resume.

Read top to bottom, ``train`` does: check pairs and the output dir, load the
base once, wrap it in LoRA (or continue ``--adapter``), compute the reference
log-probs with the adapter disabled (cached on disk), then run AdamW with a
cosine schedule and write the adapter.

The data order is a pure function of (seed, epoch, process), and a step's
micro-batches are found from the step number alone, so a resumed run replays
exactly the steps an uninterrupted one would; the checkpoint holds everything
else that carries over (trainable weights, optimizer, scheduler, RNG).
Gradient accumulation is done here rather than by accelerate so that a step
is always ``grad_accum`` micro-batches of one epoch, weighted by pair count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mcts_pref import __version__
from mcts_pref.checkpoint import (
    CHECKPOINT, METRICS, TRAIN_CONFIG, clear_out, inspect_out, load_checkpoint, save_checkpoint,
)
from mcts_pref.console import console
from mcts_pref.dpo_config import DpoConfig
from mcts_pref.dpo import collate, dpo_loss, encode_pairs, sequence_logps, shared_prefix_logps
from mcts_pref.policy import load_model
from mcts_pref.policy_spec import PolicySpec
from mcts_pref.errors import MctsPrefError
from mcts_pref.records import dumps, read_records

REF_CACHE = "ref_logps.pt"
# Per-step metrics, means over the step's pairs (one metrics.jsonl row each).
# "nll": the chosen steps' NLL per token (logged whatever --nll-weight is: it shows when DPO
# pushes the chosen step down too).
METRIC_NAMES = ("loss", "reward_acc", "margin", "chosen_reward", "rejected_reward", "eps", "nll")


def signature(cfg: DpoConfig, pair_hashes: list[str]) -> dict:
    """The knobs that decide the result; a resumed run must match them."""
    return {**cfg.result_knobs(), "pair_sha256": pair_hashes}


@dataclass
class PairFile:
    path: str
    sha256: str
    n: int


def load_pairs(paths: list[str], label_smoothing: float | None = None) -> tuple[list[dict], list[PairFile]]:
    """Read and check every pair file before any model is loaded."""
    pairs: list[dict] = []
    files: list[PairFile] = []
    for path in paths:
        recs = read_records(path, "pair")
        if path == "-":
            digest = hashlib.sha256("\n".join(dumps(r) for r in recs).encode()).hexdigest()
        else:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for i, rec in enumerate(recs, 1):
            where = f"{path}: pair record {i}"
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(rec[key], str):
                    raise MctsPrefError(f"{where}: '{key}' must be a string")
            if not rec["chosen"] or not rec["rejected"]:
                raise MctsPrefError(f"{where}: empty 'chosen' or 'rejected' step")
            eps = rec.get("label_smoothing", 0.0) if label_smoothing is None else label_smoothing
            if not isinstance(eps, (int, float)) or not 0 <= eps <= 0.5:
                raise MctsPrefError(f"{where}: label_smoothing must be a number in [0, 0.5], got {eps!r}")
            pairs.append({"prompt": rec["prompt"], "chosen": rec["chosen"], "rejected": rec["rejected"],
                          "eps": float(eps), "chosen_terminal": bool(rec.get("chosen_terminal", False)),
                          "rejected_terminal": bool(rec.get("rejected_terminal", False))})
        files.append(PairFile(path, digest, len(recs)))
    if not pairs:
        raise MctsPrefError(f"no pairs to train on in {', '.join(paths)}")
    return pairs, files


def epoch_batches(n: int, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's micro-batches (lists of pair indices) for one epoch.

    One permutation per (seed, epoch); with several processes it is padded by
    wrapping to a multiple of ``world`` (as torch's DistributedSampler does) so
    every process runs the same number of equally sized micro-batches.
    """
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    perm += perm[: (-n) % world]
    mine = perm[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


# --- model ---------------------------------------------------------------------


def load_trainable(cfg: DpoConfig, device: str):
    """The base model wrapped in a trainable LoRA adapter (new, or ``--adapter`` continued)."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    # The base alone: the adapter is attached below, after the k-bit preparation that
    # would otherwise freeze it.
    base, tokenizer = load_model(PolicySpec(model=cfg.model, dtype=cfg.dtype, load_in_4bit=cfg.load_in_4bit,
                                            trust_remote_code=cfg.trust_remote_code, device=device))
    ckpt_kwargs = {"use_reentrant": False}
    if cfg.load_in_4bit:
        for module in base.modules():
            # bitsandbytes repacks 4-bit weights on CPU for inference on its first eval-mode,
            # no-grad forward (the reference pass) and from then on multiplies with a kernel
            # that has no backward: gradients to earlier layers would be silently wrong.
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                               gradient_checkpointing_kwargs=ckpt_kwargs)
    elif cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
    if cfg.adapter:
        model = PeftModel.from_pretrained(base, cfg.adapter, is_trainable=True)
    else:
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.targets, bias="none", task_type="CAUSAL_LM")
        try:
            model = get_peft_model(base, lora)
        except ValueError as e:
            raise MctsPrefError(f"LoRA: {e} (set --lora-targets to module names of this model)") from None
    return model, tokenizer


# --- reference log-probs -------------------------------------------------------


def _cache_key(cfg: DpoConfig, encoded: list[dict], model, mixed_precision: str) -> str:
    h = hashlib.sha256()
    base = model.get_base_model()
    meta = {"model": cfg.model, "path": str(getattr(base.config, "_name_or_path", "")), "dtype": cfg.dtype,
            "param_dtype": str(base.dtype), "load_in_4bit": cfg.load_in_4bit, "mixed_precision": mixed_precision}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for enc in encoded:  # the token ids cover pair contents, tokenizer and truncation at once
        h.update(json.dumps([enc["prompt"], enc["chosen"], enc["rejected"]]).encode())
    return h.hexdigest()


def pick_logps(cfg: DpoConfig, accelerator):
    """Encode each prompt once when we can: one process, no DeepSpeed, no gradient checkpointing."""
    from accelerate.utils import DistributedType

    if (accelerator.num_processes == 1 and not cfg.gradient_checkpointing
            and accelerator.distributed_type != DistributedType.DEEPSPEED):
        return shared_prefix_logps
    return sequence_logps


def _compute_reference(model, encoded: list[dict], batch_size: int, pad_id: int, accelerator,
                       logps_fn=sequence_logps) -> dict:
    import torch

    n = len(encoded)
    chosen, rejected = torch.zeros(n), torch.zeros(n)
    chosen_tokens, rejected_tokens = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    was_training = model.training
    model.eval()
    progress = _progress(accelerator)
    with progress, torch.no_grad(), model.disable_adapter(), accelerator.autocast():
        task = progress.add_task("reference log-probs", total=n, stats="")
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            logps, counts = logps_fn(model, collate([encoded[i] for i in idx], pad_id))
            b = len(idx)
            chosen[idx], rejected[idx] = logps[:b].cpu(), logps[b:].cpu()
            chosen_tokens[idx], rejected_tokens[idx] = counts[:b].cpu(), counts[b:].cpu()
            progress.advance(task, b)
    model.train(was_training)
    return {"chosen": chosen, "rejected": rejected, "chosen_tokens": chosen_tokens, "rejected_tokens": rejected_tokens}


def reference_logps(model, encoded, cfg: DpoConfig, accelerator, out: Path, pad_id: int) -> dict:
    """Reference (adapter disabled) log-probs of every pair, from OUT/ref_logps.pt when it matches."""
    import torch

    key = _cache_key(cfg, encoded, model, accelerator.mixed_precision)
    path = out / REF_CACHE
    # Main computes and writes; the others then read. Under ZeRO-3 every forward is a
    # collective (it gathers sharded weights), so all processes compute together.
    together = _zero_stage(accelerator) == 3
    with nullcontext() if together else accelerator.main_process_first():
        if path.exists():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("key") == key:
                _say(accelerator, f"reference log-probs: reusing {path}")
                return cached
        ref = _compute_reference(model, encoded, cfg.batch_size, pad_id, accelerator, pick_logps(cfg, accelerator))
        if accelerator.is_main_process:
            torch.save({"key": key, **ref}, path)
        return ref


# --- the loop ------------------------------------------------------------------


def _progress(accelerator):
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=console,
                    disable=not accelerator.is_main_process)


def _write_train_config(out: Path, cfg: DpoConfig, files, sig: dict, extra: dict) -> None:
    import peft
    import torch
    import transformers

    record = {"v": 1, "base_model": cfg.model, "adapter": cfg.adapter, "config": asdict(cfg),
              "pairs": [asdict(f) for f in files], "signature": sig, **extra,
              "versions": {"mcts_pref": __version__, "torch": torch.__version__,
                           "transformers": transformers.__version__, "peft": peft.__version__}}
    (out / TRAIN_CONFIG).write_text(json.dumps(record, indent=1) + "\n")


def train(cfg: DpoConfig) -> None:
    pairs, files = load_pairs(cfg.pairs, cfg.label_smoothing)
    if cfg.adapter and not (Path(cfg.adapter) / "adapter_config.json").exists():
        raise MctsPrefError(f"--adapter {cfg.adapter}: no adapter_config.json there (expected a train-dpo output dir)")
    out = Path(cfg.out)
    if cfg.adapter and Path(cfg.adapter).resolve() == out.resolve():
        raise MctsPrefError("--out must differ from --adapter: write the continued adapter to a new dir")
    sig = signature(cfg, [f.sha256 for f in files])
    state = inspect_out(out, sig, resume=cfg.resume, overwrite=cfg.overwrite)
    if state == "done":
        console.print(f"{out} already holds the finished adapter of this run; nothing to do")
        return

    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise MctsPrefError("--device cuda: no CUDA device is available here")
    on_cuda = cfg.device != "cpu" and torch.cuda.is_available()
    mixed = "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "no"
    deepspeed = _deepspeed_launch(cfg)
    if deepspeed and not torch.cuda.is_available():
        # DeepSpeed on CPU (DS_ACCELERATOR=cpu, how the tests run it): accelerate finds no
        # backend there by itself and would count one process; name gloo for it.
        from accelerate import PartialState

        PartialState(backend="gloo")
    # cpu=True would make accelerate ignore the DeepSpeed launch.
    accelerator = Accelerator(cpu=not on_cuda and not deepspeed, mixed_precision=mixed)
    if deepspeed:
        # No DataLoader goes through prepare(), so DeepSpeed learns the micro-batch here;
        # one optimizer step is one micro-batch (accelerate's DeepSpeed backward also steps).
        ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
        ds_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
        ds_config["gradient_accumulation_steps"] = 1
        ds_config["train_batch_size"] = cfg.batch_size * accelerator.num_processes
    if accelerator.is_main_process:
        if out.exists() and (cfg.overwrite or state is None):
            clear_out(out)
        out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)  # before LoRA init, so the initial adapter is a function of the seed

    model, tokenizer = load_trainable(cfg, str(accelerator.device))
    encoded = encode_pairs(tokenizer, pairs, cfg.max_length, cfg.terminal_eos)
    pad_id = tokenizer.pad_token_id

    n, world, rank = len(encoded), accelerator.num_processes, accelerator.process_index
    n_micro = len(epoch_batches(n, 0, cfg.seed, cfg.batch_size, rank, world))
    steps_per_epoch = math.ceil(n_micro / cfg.grad_accum)
    total = steps_per_epoch * cfg.epochs
    stop_at = min(total, cfg.max_steps or total)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Not passed to accelerator.prepare: it would step num_processes times per call,
    # while `total` already counts steps over the whole (sharded) run.
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total), total)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    engine = model if deepspeed else None  # the DeepSpeedEngine: it checkpoints its own shards
    logps_fn = pick_logps(cfg, accelerator)
    # After prepare(): under ZeRO-3 the weights are sharded from load time on, and only
    # the prepared model gathers them for a forward.
    ref = reference_logps(unwrapped, encoded, cfg, accelerator, out, pad_id)

    start = 0
    metrics_path = out / METRICS
    if isinstance(state, dict):
        start = load_checkpoint(out, unwrapped, optimizer, scheduler, accelerator, engine)
        _say(accelerator, f"resuming from {out / CHECKPOINT} at step {start} of {total}")
        if accelerator.is_main_process and metrics_path.exists():  # drop rows of steps that will be redone
            rows = [r for r in metrics_path.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= start]
            metrics_path.write_text("".join(r + "\n" for r in rows))
    elif accelerator.is_main_process:
        metrics_path.write_text("")

    dev = accelerator.device
    model.train()
    batches: dict[int, list[list[int]]] = {}
    t_start = time.perf_counter()
    with _progress(accelerator) as progress:
        task = progress.add_task("train-dpo", total=total, completed=start, stats="")
        for step in range(start, stop_at):
            epoch, k = divmod(step, steps_per_epoch)
            if epoch not in batches:
                batches = {epoch: epoch_batches(n, epoch, cfg.seed, cfg.batch_size, rank, world)}
            group = batches[epoch][k * cfg.grad_accum : (k + 1) * cfg.grad_accum]
            n_group = sum(len(mb) for mb in group)
            t0 = time.perf_counter()
            sums = dict.fromkeys(METRIC_NAMES, 0.0)  # pair-weighted sums over the step's micro-batches
            for j, mb in enumerate(group):
                batch = collate([encoded[i] for i in mb], pad_id)
                b, idx = len(mb), torch.tensor(mb)
                sync = nullcontext() if j == len(group) - 1 else accelerator.no_sync(model)
                with sync:
                    logps, counts = logps_fn(model, batch)
                    res = dpo_loss(
                        logps[:b], logps[b:], ref["chosen"][idx].to(dev), ref["rejected"][idx].to(dev),
                        beta=cfg.beta, label_smoothing=batch["eps"].to(dev), loss_type=cfg.loss,
                        chosen_tokens=counts[:b] if cfg.length_norm else None,
                        rejected_tokens=counts[b:] if cfg.length_norm else None,
                        nll_weight=cfg.nll_weight, chosen_lengths=counts[:b],
                    )
                    accelerator.backward(res.loss * (b / n_group))
                batch_means = {"loss": res.loss.detach(), "reward_acc": res.reward_acc, "margin": res.margin,
                               "chosen_reward": res.chosen_rewards.mean(), "rejected_reward": res.rejected_rewards.mean(),
                               "eps": batch["eps"].mean().to(dev), "nll": res.nll}
                for name, value in batch_means.items():
                    sums[name] = sums[name] + b * value
            grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            # One reduce for all processes' sums; the pair count goes along as the last entry.
            totals = accelerator.reduce(torch.stack([torch.as_tensor(sums[name], device=dev, dtype=torch.float32)
                                                     for name in METRIC_NAMES] + [torch.tensor(float(n_group), device=dev)]),
                                        reduction="sum")
            means = dict(zip(METRIC_NAMES, (totals[:-1] / totals[-1]).tolist()))
            row = {"step": step + 1, "epoch": epoch + (k + 1) / steps_per_epoch, **means, "lr": lr,
                   "grad_norm": None if grad_norm is None else float(grad_norm),
                   "seconds": time.perf_counter() - t0}
            if accelerator.is_main_process:
                _log_metrics(metrics_path, row)
            progress.update(task, advance=1, stats=f"loss {means['loss']:.4f}  acc {means['reward_acc']:.2f}")
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or (step + 1 == stop_at < total):
                save_checkpoint(out, step + 1, unwrapped, optimizer, scheduler, sig, accelerator, engine)

    extra = {"n_pairs": n, "steps": total, "steps_per_epoch": steps_per_epoch, "steps_done": stop_at,
             "seconds": round(time.perf_counter() - t_start, 3), "finished": stop_at == total}
    with _gathered_adapter(unwrapped, accelerator):
        if accelerator.is_main_process:
            if stop_at == total:
                unwrapped.save_pretrained(str(out))
            _write_train_config(out, cfg, files, sig, extra)
    accelerator.wait_for_everyone()
    if stop_at < total:
        _say(accelerator, f"stopped at step {stop_at} of {total} (--max-steps); rerun with --resume to finish")
    else:
        _say(accelerator, f"adapter written to {out} ({total} steps, {n} pairs)")


def _gathered_adapter(model, accelerator):
    """Under ZeRO-3 (which shards even the adapter): the trainable weights whole, on every process.

    Entering is a collective, so every process calls it; only the adapter is
    gathered, never the (possibly huge) base. Elsewhere: a no-op.
    """
    if _zero_stage(accelerator) != 3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([p for p in model.parameters() if p.requires_grad], modifier_rank=None)


def _zero_stage(accelerator) -> int:
    """The DeepSpeed ZeRO stage of this run (0: no DeepSpeed)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return int(plugin.zero_stage) if plugin is not None else 0


def _deepspeed_launch(cfg: DpoConfig) -> bool:
    """True under ``accelerate launch`` with a DeepSpeed config; refuses what it cannot do there."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return False
    if cfg.grad_accum != 1:
        raise MctsPrefError(f"--grad-accum {cfg.grad_accum}: under DeepSpeed one optimizer step is one "
                            "micro-batch; use --grad-accum 1 and raise --batch-size instead")
    if cfg.load_in_4bit and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        raise MctsPrefError("--load-in-4bit is not supported under ZeRO-3; use ZeRO-2 or DDP for QLoRA")
    if cfg.device == "cpu":
        raise MctsPrefError("--device cpu: under DeepSpeed the device is DeepSpeed's (set DS_ACCELERATOR=cpu "
                            "for a CPU run)")
    return True


def _say(accelerator, msg: str) -> None:
    if accelerator.is_main_process:
        console.print(msg)


def _log_metrics(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
