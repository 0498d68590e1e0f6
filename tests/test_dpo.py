"""train-dpo: the loss against hand-worked numbers, log-prob slicing, and the CLI on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from mcts_pref.cli import app
from mcts_pref.dpo import collate, dpo_loss, encode_pairs, sequence_logps
from mcts_pref.records import MctsPrefError
from mcts_pref.train import epoch_batches
from mcts_pref.dpo_config import DpoConfig
from tests.conftest import read_jsonl, write_jsonl

runner = CliRunner()

# One pair worked by hand, beta = 0.1:
#   policy chosen -10, ref chosen -12  -> chosen logratio   =  2
#   policy rejected -15, ref rejected -14 -> rejected logratio = -1
#   h = 2 - (-1) = 3, beta * h = 0.3
#   -log sigmoid(0.3)  = log(1 + e^-0.3) = log(1.7408182) = 0.5543552
#   -log sigmoid(-0.3) = log(1 + e^0.3)  = log(2.3498588) = 0.8543552
PC, PR, RC, RR = -10.0, -15.0, -12.0, -14.0


def _t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_loss_plain_dpo_by_hand():
    out = dpo_loss(_t(PC), _t(PR), _t(RC), _t(RR), beta=0.1)
    assert out.loss.item() == pytest.approx(0.5543552, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.2)  # 0.1 * 2
    assert out.rejected_rewards.item() == pytest.approx(-0.1)  # 0.1 * -1
    assert out.margin.item() == pytest.approx(0.3)
    assert out.reward_acc.item() == 1.0


def test_loss_label_smoothing_by_hand():
    # eps = 0.3: 0.7 * 0.5543552 + 0.3 * 0.8543552 = 0.3880487 + 0.2563066 = 0.6443552
    out = dpo_loss(_t(PC), _t(PR), _t(RC), _t(RR), beta=0.1, label_smoothing=0.3)
    assert out.loss.item() == pytest.approx(0.6443552, abs=1e-6)
    # Per-pair eps: pair 1 (eps 0) and pair 2 (eps 0.3) average to (0.5543552 + 0.6443552) / 2.
    out = dpo_loss(_t(PC, PC), _t(PR, PR), _t(RC, RC), _t(RR, RR), beta=0.1, label_smoothing=_t(0.0, 0.3))
    assert out.losses.tolist() == pytest.approx([0.5543552, 0.6443552], abs=1e-6)
    assert out.loss.item() == pytest.approx(0.5993552, abs=1e-6)
    # At h = 0 every eps gives log 2, and the chosen reward does not beat the rejected one.
    out = dpo_loss(_t(-5.0), _t(-5.0), _t(-5.0), _t(-5.0), label_smoothing=0.4)
    assert out.loss.item() == pytest.approx(math.log(2)) and out.reward_acc.item() == 0.0


def test_loss_ipo_by_hand():
    # (h - 1 / (2 beta))^2 = (3 - 5)^2 = 4; eps does not enter.
    out = dpo_loss(_t(PC), _t(PR), _t(RC), _t(RR), beta=0.1, loss_type="ipo", label_smoothing=0.3)
    assert out.loss.item() == pytest.approx(4.0)
    with pytest.raises(ValueError):
        dpo_loss(_t(PC), _t(PR), _t(RC), _t(RR), loss_type="hinge")


def test_loss_length_norm_by_hand():
    # chosen 4 tokens, rejected 2: chosen logratio = -10/4 + 12/4 = 0.5, rejected = -15/2 + 14/2 = -0.5,
    # h = 1, beta * h = 0.1, loss = log(1 + e^-0.1) = log(1.9048374) = 0.6443967.
    out = dpo_loss(_t(PC), _t(PR), _t(RC), _t(RR), beta=0.1, chosen_tokens=torch.tensor([4]),
                   rejected_tokens=torch.tensor([2]))
    assert out.loss.item() == pytest.approx(0.6443967, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.05)


def test_loss_gradient_pushes_chosen_up():
    pc, pr = _t(PC).requires_grad_(), _t(PR).requires_grad_()
    dpo_loss(pc, pr, _t(RC), _t(RR), beta=0.1).loss.backward()
    # dL/d(pc) = -beta * sigmoid(-beta h) = -0.1 * 0.4255575
    assert pc.grad.item() == pytest.approx(-0.04255575, abs=1e-7) and pr.grad.item() == pytest.approx(0.04255575, abs=1e-7)


def test_loss_nll_term_value_and_gradient_by_hand():
    # nll_weight W = 0.5, chosen step of 4 tokens: nll = -(-10) / 4 = 2.5 nats per token,
    # loss = 0.5543552 + 0.5 * 2.5 = 1.8043552.
    pc, pr = _t(PC).requires_grad_(), _t(PR).requires_grad_()
    out = dpo_loss(pc, pr, _t(RC), _t(RR), beta=0.1, nll_weight=0.5, chosen_lengths=torch.tensor([4]))
    assert out.loss.item() == pytest.approx(1.8043552, abs=1e-6)
    assert out.nll.item() == pytest.approx(2.5) and out.chosen_rewards.item() == pytest.approx(0.2)
    out.loss.backward()
    # dL/d(pc) = -beta * sigmoid(-beta h) - W / |y_w| = -0.04255575 - 0.125; the rejected side is untouched.
    assert pc.grad.item() == pytest.approx(-0.16755575, abs=1e-7)
    assert pr.grad.item() == pytest.approx(0.04255575, abs=1e-7)
    # Weight 0 is plain DPO; the NLL is still reported (for the metrics).
    out = dpo_loss(_t(PC), _t(PR), _t(RC), _t(RR), beta=0.1, chosen_lengths=torch.tensor([4]))
    assert out.loss.item() == pytest.approx(0.5543552, abs=1e-6) and out.nll.item() == pytest.approx(2.5)
    assert math.isnan(dpo_loss(_t(PC), _t(PR), _t(RC), _t(RR)).nll.item())
    # With length normalisation the NLL still uses the raw log-prob: 0.6443967 + 0.5 * 2.5 = 1.8943967.
    out = dpo_loss(_t(PC), _t(PR), _t(RC), _t(RR), beta=0.1, chosen_tokens=torch.tensor([4]),
                   rejected_tokens=torch.tensor([2]), nll_weight=0.5)
    assert out.loss.item() == pytest.approx(1.8943967, abs=1e-6)
    # Per pair, then the mean: pairs of 4 and 2 tokens, -10 and -6 nats: (2.5 + 3) / 2 = 2.75;
    # IPO: (4 + 0.2 * 2.5) and (4 + 0.2 * 3) averaged = 4.55.
    out = dpo_loss(_t(PC, -6.0), _t(PR, -11.0), _t(RC, -8.0), _t(RR, -10.0), beta=0.1, loss_type="ipo",
                   nll_weight=0.2, chosen_lengths=torch.tensor([4, 2]))
    assert out.nll.item() == pytest.approx(2.75) and out.loss.item() == pytest.approx(4.55)
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(_t(PC), _t(PR), _t(RC), _t(RR), nll_weight=0.5)


def test_config_checks_name_the_flag():
    with pytest.raises(MctsPrefError, match="--loss"):
        DpoConfig(pairs=["p"], model="m", out="o", loss="hinge")
    with pytest.raises(MctsPrefError, match="--label-smoothing"):
        DpoConfig(pairs=["p"], model="m", out="o", label_smoothing=0.7)
    with pytest.raises(MctsPrefError, match="--nll-weight"):
        DpoConfig(pairs=["p"], model="m", out="o", nll_weight=-1.0)
    assert "nll_weight" in DpoConfig(pairs=["p"], model="m", out="o", nll_weight=0.5).result_knobs()
    with pytest.raises(MctsPrefError, match="--resume and --overwrite"):
        DpoConfig(pairs=["p"], model="m", out="o", resume=True, overwrite=True)
    assert DpoConfig(pairs=["p"], model="m", out="o", lora_targets="q_proj, v_proj").targets == ["q_proj", "v_proj"]


def test_epoch_batches_deterministic_and_sharded():
    a = epoch_batches(10, 0, seed=0, batch_size=4)
    assert a == epoch_batches(10, 0, seed=0, batch_size=4) and [len(b) for b in a] == [4, 4, 2]
    assert sorted(i for b in a for i in b) == list(range(10))
    assert a != epoch_batches(10, 1, seed=0, batch_size=4)
    r0, r1 = (epoch_batches(5, 0, 0, 2, rank=r, world=2) for r in (0, 1))
    assert [len(b) for b in r0] == [len(b) for b in r1] == [2, 1]  # padded to 6 by wrapping
    assert {i for b in r0 + r1 for i in b} == set(range(5))


# --- the tiny model -------------------------------------------------------------


def _pairs(n=8):
    out = []
    for i in range(n):
        a, b = i + 2, i + 5
        out.append({"v": 1, "prompt": f"Question: what is {a} + {b}?\nAnswer: Let's add.\n",
                    "chosen": f"{a} + {b} = {a + b}.\n", "rejected": f"{a} + {b} = {a + b + 1}, so\n",
                    "problem_id": f"p{i}", "depth": 1, "label_smoothing": 0.1 * (i % 3),
                    "chosen_terminal": i % 2 == 0, "rejected_terminal": False})
    return out


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_encoding_keeps_the_boundary_and_adds_no_eos(tiny):
    _, tok = tiny
    pair = {"prompt": "Total: ", "chosen": "$5 each.\n", "rejected": "$6 each.\n", "eps": 0.0}
    (enc,) = encode_pairs(tok, [pair], max_length=64)
    assert enc["prompt"] == tok("Total: ", add_special_tokens=False)["input_ids"]
    assert enc["chosen"] == tok("$5 each.\n", add_special_tokens=False)["input_ids"]
    assert tok.eos_token_id not in enc["chosen"] + enc["rejected"]
    # Tokenised as one string, " " + "$" merge into one token " $": the step's first token would be
    # part of the prompt. Tokenising the two apart keeps the step's tokens whole.
    joint = tok("Total: $5 each.\n", add_special_tokens=False)["input_ids"]
    assert joint[: len(enc["prompt"])] != enc["prompt"]
    # A chat-templated prompt keeps its own special tokens, not doubled.
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    (enc,) = encode_pairs(tok, [{**pair, "prompt": chat}], max_length=64)
    assert enc["prompt"] == tok(chat, add_special_tokens=False)["input_ids"]
    # A step the pair marks terminal ends with EOS (unless --no-terminal-eos); the other does not.
    (enc,) = encode_pairs(tok, [{**pair, "rejected_terminal": True}], max_length=64)
    assert enc["rejected"] == tok("$6 each.\n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok.eos_token_id not in enc["chosen"]
    (enc,) = encode_pairs(tok, [{**pair, "rejected_terminal": True}], max_length=64, terminal_eos=False)
    assert tok.eos_token_id not in enc["rejected"]
    # Over max_length the prompt loses its start.
    (enc,) = encode_pairs(tok, [{**pair, "prompt": "word " * 50}], max_length=16)
    assert len(enc["prompt"]) + len(enc["chosen"]) == 16


@pytest.mark.parametrize("logits_by_mask", [True, False])
def test_sequence_logps_match_a_per_token_loop(tiny, logits_by_mask, monkeypatch):
    import mcts_pref.dpo as dpo_mod

    if not logits_by_mask:  # the fallback: full logits, then the mask
        monkeypatch.setattr(dpo_mod, "_keeps_logits_by_mask", lambda model: False)
    model, tok = tiny
    pairs = [{**p, "eps": 0.0} for p in _pairs(3)]
    pairs[1]["prompt"] = "A much longer question so that the rows need padding: what is 3 + 6?\n"
    enc = encode_pairs(tok, pairs, max_length=128)
    batch = collate(enc, pad_id=tok.pad_token_id)
    with torch.no_grad():
        sums, counts = sequence_logps(model, batch)
    expected, n_tokens = [], []
    for key in ("chosen", "rejected"):
        for e in enc:
            total = 0.0
            for t, token in enumerate(e[key]):  # one forward per token on the unpadded prefix
                ids = torch.tensor([e["prompt"] + e[key][:t]])
                with torch.no_grad():
                    logits = model(input_ids=ids).logits[0, -1].float()
                total += torch.log_softmax(logits, -1)[token].item()
            expected.append(total)
            n_tokens.append(len(e[key]))
    assert counts.tolist() == n_tokens
    assert sums.tolist() == pytest.approx(expected, abs=1e-4)


# --- the command ----------------------------------------------------------------


def _train(model_dir, pairs, out, *extra):
    args = ["train-dpo", *map(str, pairs), "--model", str(model_dir), "--out", str(out),
            "--batch-size", "4", "--lr", "5e-3", "--seed", "3", *map(str, extra)]
    return runner.invoke(app, args)


def _adapter_weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


@pytest.fixture
def pair_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", _pairs())


def test_train_dpo_learns_and_reuses_the_reference_cache(tiny_model_dir, pair_file, tmp_path, monkeypatch):
    import mcts_pref.train as train_mod

    calls = []
    real = train_mod._compute_reference
    monkeypatch.setattr(train_mod, "_compute_reference", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "adapter"
    r = _train(tiny_model_dir, [pair_file], out, "--epochs", "6")
    assert r.exit_code == 0, r.output
    rows = read_jsonl(out / "metrics.jsonl")
    assert [x["step"] for x in rows] == list(range(1, 13))
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # fresh LoRA: policy == reference
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.02
    assert rows[0]["reward_acc"] == 0.0 and rows[-1]["reward_acc"] == 1.0 and rows[-1]["margin"] > 0
    assert rows[0]["eps"] == pytest.approx(sum(0.1 * (i % 3) for i in range(8)) / 8, abs=0.1)
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["finished"] and cfg["steps"] == 12 and cfg["n_pairs"] == 8 and len(cfg["pairs"][0]["sha256"]) == 64
    assert calls == [1]

    # The adapter loads with plain peft and changes the model's log-probs.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = collate(encode_pairs(tok, [{**p, "eps": 0.0} for p in _pairs(2)], 128), tok.pad_token_id)
    with torch.no_grad():
        before, _ = sequence_logps(base, batch)
        tuned = PeftModel.from_pretrained(base, str(out)).eval()
        after, _ = sequence_logps(tuned, batch)
    assert (after[:2] - before[:2]).mean() > (after[2:] - before[2:]).mean()  # chosen gained on rejected

    # A finished run is not overwritten by accident; --resume of it is a no-op; --overwrite retrains
    # and takes the reference log-probs from the cache.
    r = _train(tiny_model_dir, [pair_file], out, "--epochs", "6")
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = _train(tiny_model_dir, [pair_file], out, "--epochs", "6", "--resume")
    assert r.exit_code == 0 and "nothing to do" in r.output
    r = _train(tiny_model_dir, [pair_file], out, "--epochs", "1", "--overwrite")
    assert r.exit_code == 0, r.output
    assert calls == [1] and "reusing" in r.output and len(read_jsonl(out / "metrics.jsonl")) == 2


def test_nll_weight_through_the_command(tiny_model_dir, pair_file, tmp_path):
    """At step 1 the LoRA is fresh (policy == reference): loss = log 2 + W * nll, and nll is logged."""
    out = tmp_path / "rpo"
    r = _train(tiny_model_dir, [pair_file], out, "--epochs", "1", "--nll-weight", "0.5")
    assert r.exit_code == 0, r.output
    rows = read_jsonl(out / "metrics.jsonl")
    assert rows[0]["nll"] > 0 and rows[0]["loss"] == pytest.approx(math.log(2) + 0.5 * rows[0]["nll"], abs=1e-4)
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["config"]["nll_weight"] == 0.5 and cfg["signature"]["nll_weight"] == 0.5
    r = _train(tiny_model_dir, [pair_file], out, "--epochs", "1", "--resume")  # another weight: another run
    assert r.exit_code == 2 and "nll_weight" in r.output


def test_resume_gives_the_same_adapter(tiny_model_dir, pair_file, tmp_path, monkeypatch):
    import mcts_pref.train as train_mod

    common = ["--epochs", "3", "--lora-dropout", "0.2", "--batch-size", "3"]  # dropout: the RNG must carry over
    whole = tmp_path / "whole"
    assert _train(tiny_model_dir, [pair_file], whole, *common).exit_code == 0
    expected = _adapter_weights(whole)

    # 1) --max-steps stops early with a checkpoint; --resume finishes the same run.
    split = tmp_path / "split"
    r = _train(tiny_model_dir, [pair_file], split, *common, "--max-steps", "4")
    assert r.exit_code == 0 and "--resume" in r.output and not (split / "adapter_model.safetensors").exists()
    r = _train(tiny_model_dir, [pair_file], split, *common)
    assert r.exit_code == 2 and "--resume" in r.output and "step 4" in r.output
    r = _train(tiny_model_dir, [pair_file], split, *common, "--resume", "--lr", "1e-3")
    assert r.exit_code == 2 and "lr" in r.output
    r = _train(tiny_model_dir, [pair_file], split, *common, "--resume")
    assert r.exit_code == 0, r.output

    # 2) a crash after step 5 with checkpoints every 2 steps: step 5 is redone from step 4.
    crash = tmp_path / "crash"
    real_log = train_mod._log_metrics

    def crash_after_5(path, row):
        real_log(path, row)
        if row["step"] == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_log_metrics", crash_after_5)
    r = _train(tiny_model_dir, [pair_file], crash, *common, "--save-every", "2")
    assert r.exit_code == 130
    monkeypatch.setattr(train_mod, "_log_metrics", real_log)
    r = _train(tiny_model_dir, [pair_file], crash, *common, "--save-every", "2", "--resume")
    assert r.exit_code == 0, r.output
    assert [x["step"] for x in read_jsonl(crash / "metrics.jsonl")] == list(range(1, 10))

    for out in (split, crash):
        got = _adapter_weights(out)
        assert got.keys() == expected.keys()
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-6)
    assert read_jsonl(whole / "metrics.jsonl")[-1]["loss"] == pytest.approx(
        read_jsonl(crash / "metrics.jsonl")[-1]["loss"], abs=1e-5)


def test_continue_an_adapter_replay_files_and_grad_accum(tiny_model_dir, pair_file, tmp_path):
    first = tmp_path / "round1"
    assert _train(tiny_model_dir, [pair_file], first, "--epochs", "2").exit_code == 0
    more = write_jsonl(tmp_path / "more.jsonl", _pairs(4))
    second = tmp_path / "round2"
    r = _train(tiny_model_dir, [pair_file, more], second, "--epochs", "1", "--adapter", first)
    assert r.exit_code == 0, r.output
    rows = read_jsonl(second / "metrics.jsonl")
    assert len(rows) == 3  # 12 pairs / 4
    # The reference is the base with adapters disabled, so the continued adapter starts ahead of it.
    assert rows[0]["loss"] < math.log(2) and rows[0]["reward_acc"] > 0.5
    assert json.loads((second / "train_config.json").read_text())["adapter"] == str(first)
    r = _train(tiny_model_dir, [pair_file], first, "--adapter", first, "--overwrite")
    assert r.exit_code == 2 and "--out must differ from --adapter" in r.output

    # One step over 8 pairs: a batch of 8 == two micro-batches of 4 accumulated.
    a, b = tmp_path / "a", tmp_path / "b"
    flags = ["--epochs", "1", "--warmup-ratio", "0", "--adapter", first]
    assert _train(tiny_model_dir, [pair_file], a, *flags, "--batch-size", "8").exit_code == 0
    assert _train(tiny_model_dir, [pair_file], b, *flags, "--batch-size", "4", "--grad-accum", "2").exit_code == 0
    ra, rb = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert len(ra) == len(rb) == 1 and ra[0]["loss"] == pytest.approx(rb[0]["loss"], abs=1e-6)
    # ... and gradient checkpointing changes memory, not the result.
    c = tmp_path / "c"
    assert _train(tiny_model_dir, [pair_file], c, *flags, "--batch-size", "8", "--gradient-checkpointing").exit_code == 0
    wa, wb, wc = _adapter_weights(a), _adapter_weights(b), _adapter_weights(c)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(wa[k], wc[k], rtol=1e-4, atol=1e-5)


def test_input_errors_exit_2_before_loading(tmp_path, pair_file):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    r = runner.invoke(app, ["train-dpo", str(empty), "--model", "/nonexistent", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no pairs to train on" in r.output
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "c", "problem_id": "x"}])
    r = runner.invoke(app, ["train-dpo", str(bad), "--model", "/nonexistent", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and f"{bad}:1: pair record is missing required key 'rejected'" in r.output
    eps = write_jsonl(tmp_path / "eps.jsonl", [{**_pairs(1)[0], "label_smoothing": 0.9}])
    r = runner.invoke(app, ["train-dpo", str(eps), "--model", "/nonexistent", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "label_smoothing" in r.output
    r = runner.invoke(app, ["train-dpo", str(pair_file), "--model", "/nonexistent", "--out", str(tmp_path / "o"),
                            "--adapter", str(tmp_path)])
    assert r.exit_code == 2 and "adapter_config.json" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_ddp_two_processes_match_one(tiny_model_dir, pair_file, tmp_path):
    """`torchrun` (what `accelerate launch` runs) with 2 CPU processes x 2 pairs == 1 process x 4 pairs."""
    import os
    import subprocess
    import sys

    one, two = tmp_path / "one", tmp_path / "two"
    assert _train(tiny_model_dir, [pair_file], one, "--epochs", "2").exit_code == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "mcts_pref", "train-dpo",
           str(pair_file), "--model", str(tiny_model_dir), "--out", str(two), "--batch-size", "2", "--lr", "5e-3",
           "--seed", "3", "--epochs", "2", "--save-every", "2"]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (two / "checkpoint").glob("rng_*.pt")) == ["rng_0.pt", "rng_1.pt"]
    r1, r2 = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert [x["loss"] for x in r1] == pytest.approx([x["loss"] for x in r2], abs=1e-5)
    w1, w2 = _adapter_weights(one), _adapter_weights(two)
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)


# --- the real model --------------------------------------------------------------


@pytest.mark.slow
def test_train_dpo_real_smollm2(pair_file, tmp_path, default_model_dir):
    out = tmp_path / "real"
    r = runner.invoke(app, ["train-dpo", str(pair_file), "--out", str(out), "--model", "default",
                            "--batch-size", "4", "--epochs", "1", "--lr", "1e-3"])
    assert r.exit_code == 0, r.output
    rows = read_jsonl(out / "metrics.jsonl")
    assert len(rows) == 2 and rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert (out / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_train_dpo_qlora_4bit_on_cpu(pair_file, tmp_path, default_model_dir):
    import warnings

    out = tmp_path / "qlora"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = runner.invoke(app, ["train-dpo", str(pair_file), "--out", str(out), "--model", "default",
                                "--load-in-4bit", "--batch-size", "4", "--epochs", "1", "--lr", "1e-3"])
    assert r.exit_code == 0, r.output
    # Backprop through a bitsandbytes kernel without autograd support would make gradients wrong.
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    rows = read_jsonl(out / "metrics.jsonl")
    assert len(rows) == 2 and all(math.isfinite(x["loss"]) for x in rows)
    assert (out / "adapter_model.safetensors").exists()


def test_shared_prefix_logps_match_two_full_sequences(tiny):
    """Encoding each prompt once (KV copied to chosen and rejected) changes no number, nor the gradient."""
    from mcts_pref.dpo import shared_prefix_logps

    model, tok = tiny
    pairs = [{**p, "eps": 0.0} for p in _pairs(3)]
    pairs[1]["prompt"] = "A much longer question so that the rows need padding: what is 3 + 6?\n"
    pairs[2]["chosen_terminal"] = True
    batch = collate(encode_pairs(tok, pairs, max_length=128), pad_id=tok.pad_token_id)
    grads = []
    for fn in (sequence_logps, shared_prefix_logps):
        model.zero_grad()
        sums, counts = fn(model, batch)
        sums.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        if fn is sequence_logps:
            ref_sums, ref_counts = sums.detach(), counts
    assert torch.equal(counts, ref_counts)
    assert torch.allclose(sums.detach(), ref_sums, atol=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-4)
    model.zero_grad(set_to_none=True)
