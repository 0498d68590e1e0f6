"""train-dpo under `accelerate launch` with DeepSpeed ZeRO-2/3, on CPU (DS_ACCELERATOR=cpu, gloo).

The launch tests skip when deepspeed is not importable; scripts/install.sh installs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import read_jsonl, write_jsonl
from tests.test_dpo import _adapter_weights, _pairs, _train

needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "accelerate"


@pytest.fixture
def pair_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", _pairs())


def _launch(config, *args):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "-m", "mcts_pref", "train-dpo", *map(str, args)]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)


# ZeRO-3 keeps parameters under stage3_param_persistence_threshold (1e5 elements) whole on
# every process, which covers LoRA matrices of ordinary ranks: this config shards them too.
SHARDED_ADAPTER = {
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
    "gradient_clipping": 1.0, "gradient_accumulation_steps": 1,
    "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
}


def _config(kind: str, tmp_path: Path) -> Path:
    config = tmp_path / "ds.yaml"
    if kind == "zero3-sharded-adapter":
        (tmp_path / "ds.json").write_text(json.dumps(SHARDED_ADAPTER))
        config.write_text(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: {tmp_path / 'ds.json'}\n"
                          "  zero3_init_flag: true\nnum_machines: 1\nnum_processes: 2\nuse_cpu: false\n")
        return config
    # The shipped config, fp32 for the CPU (ZeRO-3's shards the base while it loads: zero3_init_flag).
    stage = kind[-1]
    shipped = (EXAMPLES / f"deepspeed_zero{stage}.yaml").read_text()
    assert f"zero_stage: {stage}" in shipped and "mixed_precision: bf16" in shipped
    config.write_text(shipped.replace("mixed_precision: bf16", "mixed_precision: 'no'"))
    return config


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zero2", "zero3", "zero3-sharded-adapter"])
def test_deepspeed_two_processes_match_one(kind, tiny_model_dir, pair_file, tmp_path):
    """ZeRO-2/3 with 2 processes x 2 pairs == 1 plain process x 4 pairs: same losses, same adapter."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert _train(tiny_model_dir, [pair_file], one, "--epochs", "2").exit_code == 0
    config = _config(kind, tmp_path)
    proc = _launch(config, pair_file, "--model", tiny_model_dir, "--out", two, "--batch-size", "2",
                   "--lr", "5e-3", "--seed", "3", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r1, r2 = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert len(r1) == len(r2) == 4
    assert [x["loss"] for x in r1] == pytest.approx([x["loss"] for x in r2], abs=1e-5)
    assert all(x["grad_norm"] is not None and x["grad_norm"] > 0 for x in r2)
    w1, w2 = _adapter_weights(one), _adapter_weights(two)
    assert set(w1) == set(w2)
    for k in w1:  # ZeRO-3 saves gathered weights, not empty shards
        assert w2[k].shape == w1[k].shape
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)
    assert w1 and any(w.abs().sum() > 0 for k, w in w2.items() if "lora_B" in k)


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zero2", "zero3-sharded-adapter"])
def test_deepspeed_stop_and_resume_match_one_run(kind, tiny_model_dir, pair_file, tmp_path):
    """--max-steps 2, then --resume: DeepSpeed's own shards carry the run on exactly."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert _train(tiny_model_dir, [pair_file], one, "--epochs", "2").exit_code == 0
    config = _config(kind, tmp_path)
    args = [pair_file, "--model", tiny_model_dir, "--out", two, "--batch-size", "2", "--lr", "5e-3", "--seed", "3",
            "--epochs", "2"]
    first = _launch(config, *args, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (two / "checkpoint" / "deepspeed").is_dir() and not (two / "adapter_model.safetensors").exists()
    assert len(read_jsonl(two / "metrics.jsonl")) == 2
    # A run without DeepSpeed cannot take the checkpoint over, and leaves it as it was.
    plain = _train(tiny_model_dir, [pair_file], two, "--batch-size", "2", "--epochs", "2", "--resume")
    assert plain.exit_code == 2 and "a DeepSpeed checkpoint" in plain.output
    second = _launch(config, *args, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    r1, r2 = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert [x["step"] for x in r2] == [1, 2, 3, 4]
    assert [x["loss"] for x in r1] == pytest.approx([x["loss"] for x in r2], abs=1e-5)
    w1, w2 = _adapter_weights(one), _adapter_weights(two)
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)


def test_deepspeed_refuses_what_it_cannot_do(tiny_model_dir, pair_file, tmp_path, monkeypatch):
    """Checked before any model loads, so no DeepSpeed install is needed to see the errors."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    for extra, needle in ((("--grad-accum", "2"), "--grad-accum 2: under DeepSpeed"),
                          (("--load-in-4bit",), "--load-in-4bit is not supported under ZeRO-3")):
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3" if "--load-in-4bit" in extra else "2")
        out = tmp_path / f"out{extra[0]}"
        r = _train(tiny_model_dir, [pair_file], out, *extra)
        assert r.exit_code == 2, r.output
        assert needle in r.output
        assert not (out / "metrics.jsonl").exists()
