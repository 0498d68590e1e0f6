"""benchmarks/gpu_check.py: its pure helpers by hand, and the whole check in --device cpu --tiny mode.

The end-to-end run blocks the packages the GPU machine lacks and the check
must not need (math-verify, gguf, reasoning-gym, bitsandbytes, vLLM,
DeepSpeed), so it also shows the check never imports them. jsonlines is
not blocked: ``records.py`` imports it, so it travels as a wheel.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
ABSENT_ON_GPU_MACHINE = ("math_verify", "latex2sympy2_extended", "gguf", "reasoning_gym",
                         "bitsandbytes", "vllm", "deepspeed")


gc = load_script(SCRIPT, "gpu_check")


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    """The script in a fresh interpreter where the blocked packages cannot be imported."""
    argv = [str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out), *args]
    boot = (f"import runpy, sys; sys.modules.update(dict.fromkeys({ABSENT_ON_GPU_MACHINE!r})); "
            f"sys.argv = {argv!r}; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", boot], capture_output=True, text=True, timeout=600, cwd=REPO)


# --- pure helpers, checked by hand -----------------------------------------------


def test_loss_check_needs_a_fall_below_log2():
    falling = [0.69, 0.69, 0.68, 0.67, 0.66, 0.60, 0.55, 0.50, 0.45, 0.40]
    c = gc.loss_check(falling)
    assert c["passed"]
    assert c["first_mean"] == pytest.approx(0.678) and c["last_mean"] == pytest.approx(0.50)
    # Falls, but stays above log 2 (0.693): the chosen step never gained on the rejected one.
    assert not gc.loss_check([0.9] * 5 + [0.8] * 5)["passed"]
    # Flat at log 2: what a LoRA that never moves gives.
    assert not gc.loss_check([math.log(2)] * 20)["passed"]
    # Below log 2 throughout but rising: not learning either.
    assert not gc.loss_check([0.3] * 5 + [0.5] * 5)["passed"]
    # Falls, but by less than the margin (0.01): an adapter that barely moved.
    assert not gc.loss_check([0.693] * 5 + [0.685] * 5)["passed"]
    assert gc.loss_check([0.693] * 5 + [0.68] * 5)["passed"]
    assert not gc.loss_check(falling[:9])["passed"]  # too few steps for two windows
    assert not gc.loss_check(falling[:9] + [float("nan")])["passed"]


def test_raw_decode_plan_matches_tokens_at_the_mean_rows():
    # 4 decode forwards at 100, 100, 50, 50 rows: mean 75 rows; 1000 tokens need ceil(1000 / 75) = 14 steps.
    assert gc.raw_decode_plan(1000, [100, 100, 50, 50]) == (75, 14)
    assert gc.raw_decode_plan(7, [2, 3]) == (2, 4)  # mean 2.5 rounds to 2 (half to even)
    with pytest.raises(ValueError):
        gc.raw_decode_plan(0, [4])
    with pytest.raises(ValueError):
        gc.raw_decode_plan(10, [])


def test_median_step_seconds_leaves_out_the_first_step():
    assert gc.median_step_seconds([5.0, 1.0, 2.0, 3.0]) == 2.0
    assert gc.median_step_seconds([4.0]) == 4.0


def test_tokenizer_is_padded_to_the_model_vocab_and_every_id_decodes():
    taken = {"\u0120zqaaaa"}
    fillers = gc.filler_tokens(30, taken)
    assert len(set(fillers)) == 30 and not taken & set(fillers)

    tok, trained = gc.build_tokenizer(vocab_size=700, bpe_vocab=300, seed=0)
    assert len(tok) == 700 and trained <= 300
    assert tok.eos_token_id != tok.pad_token_id
    pieces = tok.batch_decode([[i] for i in range(len(tok))])
    assert all(isinstance(p, str) and p for p in pieces)
    assert pieces[-1].startswith(" zq") and "\n" not in "".join(pieces[trained:])  # fillers: plain words
    text = "QUESTION: What is 12 + 30 + 4?\n\nANSWER:\n12 + 30 = 42 yes\n"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text and max(ids) < trained  # encoding never makes a filler


def test_bad_arguments_exit_2(capsys):
    for argv in (["--dpo-steps", "5"], ["--models", "gpt5"], ["--parts", "train"], ["--device", "tpu"],
                 ["--problems", "0"]):
        with pytest.raises(SystemExit) as e:
            gc.parse_args(argv)
        assert e.value.code == 2, argv
    assert gc.parse_args(["--tiny"]).problems == gc.TINY["problems"]
    assert gc.parse_args(["--tiny", "--problems", "3"]).problems == 3


def test_cuda_requested_without_cuda_exits_2(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    assert gc.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


# --- the whole check, CPU tiny mode ----------------------------------------------


def test_cpu_tiny_run_writes_a_passing_report(tmp_path):
    out = tmp_path / "gc"
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    text = (out / "gpu_check.txt").read_text()
    assert proc.stdout == text and text.rstrip().splitlines()[-1].startswith("PASS")
    assert report["passed"] and report["failed"] == []
    assert report["device"] == "cpu" and report["dtype"] == "fp32" and report["tiny"]
    assert set(report["models"]) == {"smollm2-135m", "qwen2-1.5b"}

    def positive(x):
        return isinstance(x, (int, float)) and math.isfinite(x) and x > 0

    for name, m in report["models"].items():
        shape = m["shape"]
        assert shape["family"] == ("llama" if name.startswith("smollm2") else "qwen2")
        assert shape["num_hidden_layers"] == 2 and positive(shape["params"])
        s = m["search"]
        assert s["check"]["passed"] and s["trees"] == s["problems"] == gc.TINY["problems"]
        assert s["batch_trees"] == gc.TINY["batch_trees"] and s["outcome_errors"] == 0
        raw = s["raw_decode"]
        for x in (s["tokens"], s["tok_per_s"], s["peak_mem_mb"], s["mean_decode_rows"], s["ratio"],
                  raw["tok_per_s"], raw["wall_s"], raw["peak_mem_mb"]):
            assert positive(x)
        assert raw["tokens"] == raw["rows"] * raw["steps"] >= s["tokens"] > raw["tokens"] - raw["rows"]
        assert s["ratio"] == pytest.approx(s["tok_per_s"] / raw["tok_per_s"])

        d = m["train_dpo"]
        assert d["check"]["passed"] and d["exit_code"] == 0 and d["lora_r"] == 16
        assert len(d["losses"]) == d["steps"] == 20 and all(math.isfinite(x) for x in d["losses"])
        assert d["losses"][0] == pytest.approx(math.log(2), abs=1e-4)  # fresh LoRA: policy == reference
        assert d["check"]["last_mean"] < d["check"]["first_mean"] and d["check"]["last_mean"] < math.log(2)
        assert positive(d["sec_per_step"]) and positive(d["peak_mem_mb"])
        assert "no CUDA" in m["qlora"]["skipped"]


def test_the_dpo_check_fails_when_nothing_is_learned(tmp_path):
    out = tmp_path / "gc"
    # train-dpo refuses --lr 0; at 1e-9 the adapter moves, but by far too little to count.
    proc = _run(out, "--models", "smollm2-135m", "--parts", "train_dpo", "--lr", "1e-9")
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert not report["passed"] and report["failed"] == ["smollm2-135m.train_dpo"]
    d = report["models"]["smollm2-135m"]["train_dpo"]
    assert d["exit_code"] == 0 and d["losses"] == pytest.approx([math.log(2)] * 20, abs=1e-4)
    assert "search" not in report["models"]["smollm2-135m"] and "FAIL" in proc.stdout


def test_qlora_parts_drive_train_dpo_and_sample_in_4bit(tmp_path):
    """The QLoRA part runs on CUDA only; its two commands are checked here on bitsandbytes' CPU 4-bit path."""
    pytest.importorskip("bitsandbytes")
    import torch

    a = gc.parse_args(["--tiny", "--device", "cpu"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gc.build_model("qwen2-1.5b", True, tmp_path / "model", "cpu", torch.float32, a.bpe_vocab, a.seed)
        d = gc.check_dpo(tmp_path / "model", tmp_path, a, "cpu", "fp32", a.qlora_steps, True)
        s = gc.check_sample(tmp_path / "model", tmp_path, a, "cpu")
    finally:
        torch.set_num_threads(threads)
    assert d["load_in_4bit"] and d["exit_code"] == 0 and d["check"]["passed"], d["check"]
    assert len(d["losses"]) == a.qlora_steps and d["losses"][0] == pytest.approx(math.log(2), abs=1e-4)
    assert s["check"]["passed"] and s["records"] == a.sample_problems and s["tokens"] > 0, s["check"]


def test_wrapper_puts_the_project_on_the_path_and_runs_the_check(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(tmp_path / "none")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--help"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--device cpu --tiny" in proc.stdout and "--dpo-steps" in proc.stdout
