"""ropetool check's probe: llama.cpp (the real one, CPU) runs one small batch and its own graph is read.

The oracles: the verdicts tests/test_check.py expects of the logits check on the same files; llama.cpp's own
rope op (its output on its input, read from its graph), against transformers' rotary functions; the keys each
wrong file changes.  No mocks of llama.cpp."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fixture_dir
from test_check import ALIBI_METHODS, LLAMA_METHODS, MATRIX, _rewrite

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import set_keys
from ropetool.probe import probe_gguf

F32 = gguf.GGUFValueType.FLOAT32


def _convert(name, method, path, outtype="f32"):
    convert(fixture_dir(name), path, outtype=outtype, **(ALIBI_METHODS if name == "mpt" else LLAMA_METHODS)[method])
    return path


@pytest.mark.parametrize("name,method", MATRIX, ids=[f"{n}-{m}" for n, m in MATRIX])
def test_probe_passes_the_fixture_matrix(name, method, tmp_gguf):
    """Every file the logits check passes (tests/test_check.py), the probe passes: every layer roped as meant,
    every rope op's output within the float32 bound of the meant rotation of its own input."""
    report = probe_gguf(_convert(name, method, tmp_gguf))
    assert report.verdict == "pass", report.summary()
    if report.encoding == "rope":
        assert report.layers_seen == report.layers_expected and report.layers_seen
        assert all(k.numerics_checked == k.rope_ops > 0 for k in report.kinds), report.summary()
        assert all(k.worst_ratio <= 1 and k.inv_freq_rel_error < 1e-5 for k in report.kinds), report.summary()
    else:
        assert not report.kinds and report.attention["ops"] > 0


@pytest.mark.parametrize("name", ["llama", "gemma2", "gptneox", "falcon", "mpt"])
@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_probe_quantized_fixture(name, outtype, tmp_gguf):
    report = probe_gguf(_convert(name, "ntk-alibi" if name == "mpt" else "yarn", tmp_gguf, outtype))
    assert report.verdict == "pass", report.summary()


def test_probe_reads_what_transformers_computes(tmp_path):
    """The numerics' oracle is independent: llama.cpp's own rope op output (read from its graph) against
    transformers' YaRN inverse frequencies and attention factor, applied with transformers' rotate_half on the
    op's own input (qwen2: NEOX pairing)."""
    import torch
    from transformers import Qwen2Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from ropetool.llamacpp.graph import run_graph

    path = _convert("qwen2", "yarn", tmp_path / "q.gguf")
    config = Qwen2Config(**json.loads((fixture_dir("qwen2") / "config.json").read_text()))
    config.rope_parameters = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                              "rope_theta": config.rope_parameters["rope_theta"]}
    inv, attn = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    worst = []

    def on_rope(op):
        x = torch.from_numpy(op.x.astype(np.float64))  # [tokens, heads, dim]
        pos = torch.from_numpy(op.positions.astype(np.float64))
        freqs = pos[:, None] * inv.double()[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]
        cos, sin = emb.cos() * attn, emb.sin() * attn
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        want = x * cos + rotated * sin
        err = (torch.from_numpy(op.y.astype(np.float64)) - want).abs().max().item()
        worst.append((err, float(pos.max())))

    run = run_graph(path, [0, 100, 5000, 30000], 4, on_rope=on_rope)
    assert len(worst) == 2 * 2 and run.positions[-1] == [30000, 30003]
    # float32 angles at position 30003: |d theta| <= theta (2i + 8) 2^-24 (docs/check.md); |x| < 4
    assert max(e for e, _ in worst) < 4 * 30003 * 16 * 2 ** -24, worst


# --- files llama.cpp reads differently from what they say: the probe fails and names the key ------------

def test_ignored_yarn_beta_fast_fails_and_is_named(tmp_path):
    base = tmp_path / "base.gguf"
    convert(fixture_dir("llama"), base, outtype="f32", method="yarn", factor=4.0, original_context=4096)
    plain, beta8 = tmp_path / "plain.gguf", tmp_path / "beta8.gguf"
    _rewrite(base, plain, drop=("ropetool.",))
    _rewrite(base, beta8, drop=("ropetool.",), add=[("llama.rope.scaling.yarn_beta_fast", 8.0, F32)])
    assert probe_gguf(plain).verdict == "pass"
    result = CliRunner().invoke(cli, ["check", str(beta8)])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "beta_fast 32 where the file says 8" in result.output
    assert "llama.rope.scaling.yarn_beta_fast is ignored by llama.cpp's llama loader" in result.output


def test_factor_changed_behind_the_record_fails_and_names_the_key(tmp_path):
    base = _convert("llama", "yarn", tmp_path / "y.gguf")
    changed = tmp_path / "changed.gguf"
    set_keys(base, ["llama.rope.scaling.factor=f32:8"], changed)
    report = probe_gguf(changed)
    assert report.verdict == "fail", report.summary()
    assert "llama.rope.scaling.factor = 8 where ropetool's record means 4" in report.reason


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_sliding_base_changed_behind_the_record_fails_and_names_the_key(name, tmp_path):
    base = tmp_path / "base.gguf"
    convert(fixture_dir(name), base, outtype="f32", method="linear", factor=4.0)
    if name == "gemma2":
        set_keys(base, [f"{name}.rope.freq_base_swa=f32:10000", "ropetool.rope.sliding_base=f32:10000"], tmp_path / "b.gguf")
        base = tmp_path / "b.gguf"
    assert probe_gguf(base).verdict == "pass"
    changed = tmp_path / "changed.gguf"
    set_keys(base, [f"{name}.rope.freq_base_swa=f32:20000"], changed)
    report = probe_gguf(changed)
    assert report.verdict == "fail", report.summary()
    assert report.reason.startswith("sliding layers")
    assert f"{name}.rope.freq_base_swa = 20000 where ropetool's record means 10000" in report.reason


def test_bloom_alibi_key_ignored_fails(tmp_path):
    base = tmp_path / "bloom.gguf"
    convert(fixture_dir("bloom"), base, outtype="f32")
    four = tmp_path / "bloom4.gguf"
    _rewrite(base, four, drop=("ropetool.",), add=[("bloom.attention.max_alibi_bias", 4.0, F32)])
    report = probe_gguf(four)
    assert report.verdict == "fail" and "bloom.attention.max_alibi_bias = 4.0 is ignored" in report.reason, report.summary()


def test_alpha_key_only_hunyuan_reads_fails_on_llama(tmp_path):
    base = _convert("llama", "none", tmp_path / "n.gguf")
    alpha = tmp_path / "alpha.gguf"
    _rewrite(base, alpha, drop=("ropetool.",), add=[("llama.rope.scaling.alpha", 4.0, F32)])
    report = probe_gguf(alpha)
    assert report.verdict == "fail" and "llama.rope.scaling.alpha is ignored" in report.reason, report.summary()


# --- far positions: what a short logits check cannot reach ------------------------------------------------

def test_far_positions_a_factor_changed_behind_the_record(tmp_path):
    """YaRN x4 over an original context of 32768, tampered to factor 2 behind the record: the probe reaches
    1.25 x 131072 and fails, naming the key, from the op's own frequencies (pairs past the ramp differ by 0.43).
    The logits check at its default (2048 tokens, all inside the original context) fails too on this f32
    fixture, but only through the cos/sin magnitude (1 + 0.1 ln 2 against 1 + 0.1 ln 4): a gap of ~1e-5 nats
    per position; it never reaches a position where the interpolated pairs' angles differ."""
    from ropetool.check import check_gguf

    good = tmp_path / "far.gguf"
    convert(fixture_dir("llama"), good, outtype="f32", method="yarn", factor=4.0, original_context=32768)
    bad = tmp_path / "far2.gguf"
    set_keys(good, ["llama.rope.scaling.factor=f32:2"], bad)
    ok, probed = probe_gguf(good), probe_gguf(bad)
    assert ok.verdict == "pass" and ok.max_position == int(1.25 * 4 * 32768), ok.summary()
    assert probed.verdict == "fail" and "llama.rope.scaling.factor = 2 where ropetool's record means 4" in probed.reason
    assert "the cos/sin magnitude is 1.06931 where 1.13863 is meant" in probed.reason
    logits = check_gguf(bad)
    assert logits.n_tokens == 2048 and logits.positions[1] < 32768
    assert logits.verdict == "fail" and -min(a.gap for a in logits.alternatives) < 1e-3, logits.summary()


def test_positions_option_and_json(tmp_path):
    path = _convert("llama", "yarn", tmp_path / "y.gguf")
    result = CliRunner().invoke(cli, ["check", str(path), "--positions", "5000", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verdict"] == "pass" and report["max_position"] == 5000
    assert report["positions"][-1][1] == 5000 and report["positions"][0][0] == 0
    assert report["kinds"][0]["op_params"]["freq_scale"] == 0.25 and report["wall_seconds"] > 0
    bad = CliRunner().invoke(cli, ["check", str(path), "--tokens", "100"])
    assert bad.exit_code == 2 and "--end-to-end" in bad.output


# --- an architecture ropetool has no family for ----------------------------------------------------------

def _olmo(path: Path, rope: dict, record=None) -> Path:
    """A tiny OLMo (llama.cpp's src/models/olmo.cpp: no norm weights; q, k, v, o, gate, up, down per layer),
    random weights, the vocabulary of the llama fixture's GGUF."""
    vocab = path.parent / "vocab-src.gguf"
    if not vocab.exists():
        convert(fixture_dir("llama"), vocab, outtype="f32")
    src = gguf.GGUFReader(vocab)
    n_vocab = int(src.fields["llama.vocab_size"].contents()) if "llama.vocab_size" in src.fields else \
        len(src.fields["tokenizer.ggml.tokens"].contents())
    n_embd, n_head, n_layer, n_ff, ctx = 64, 4, 3, 128, 2048
    w = gguf.GGUFWriter(str(path), "olmo")
    for f in src.fields.values():
        if f.name.startswith("tokenizer."):
            vt = f.types[0]
            w.add_key_value(f.name, f.contents(), vt, sub_type=f.types[1] if vt == gguf.GGUFValueType.ARRAY else None)
    w.add_context_length(ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_eps(1e-5)
    for key, (value, vtype) in rope.items():
        w.add_key_value(f"olmo.{key}", value, vtype)
    for v in record or ():
        w.add_key_value(v.key, v.value, gguf.GGUFValueType(int(v.type)))
    rng = np.random.default_rng(0)

    def t(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    t("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(f"blk.{i}.{part}.weight", n_embd, n_embd)
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_an_architecture_without_a_family(tmp_path):
    """OLMo: llama.cpp loads it, ropetool has no family (no reference forward) for it.  The probe needs none:
    YaRN x4 with ropetool's record passes, the factor changed behind it fails, naming the key."""
    from ropetool.families import family_for_arch
    from ropetool.llamacpp.provenance import record
    from ropetool.rope import make_params

    assert family_for_arch("olmo") is None
    yarn = {"rope.freq_base": (10000.0, F32), "rope.scaling.type": ("yarn", gguf.GGUFValueType.STRING),
            "rope.scaling.factor": (4.0, F32), "rope.scaling.original_context_length": (512, gguf.GGUFValueType.UINT32)}
    rec = record(make_params("yarn", factor=4.0, original_context=512), True, 0.0, [], "test")
    good = _olmo(tmp_path / "olmo.gguf", yarn, rec)
    report = probe_gguf(good)
    assert report.verdict == "pass", report.summary()
    assert report.layers_seen == [0, 1, 2] and report.max_position == int(1.25 * 2048)
    assert math.isclose(report.kinds[0].op_params["freq_scale"], 0.25)
    bad = tmp_path / "olmo2.gguf"
    set_keys(good, ["olmo.rope.scaling.factor=f32:2"], bad)
    report = probe_gguf(bad)
    assert report.verdict == "fail" and "olmo.rope.scaling.factor = 2 where ropetool's record means 4" in report.reason
    ignored = _olmo(tmp_path / "olmo3.gguf", {**yarn, "rope.scaling.yarn_beta_fast": (8.0, F32)})
    report = probe_gguf(ignored)
    assert report.verdict == "fail" and "olmo.rope.scaling.yarn_beta_fast is ignored" in report.reason, report.summary()


# --- the real SmolLM2-135M ------------------------------------------------------------------------------

REAL_PASS = ["llama.cpp's Q4_1 (plain, no ropetool keys)", "f16", "bf16", "q8_0", "bf16 dynamic-ntk x2 (baked at 16384)",
             "bf16 yarn x4", "Q4_K_M by llama.cpp's quantizer", "bf16 ntk alpha 4", "bf16 llama3 x4", "bf16 linear x4"]


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))
    import real_model
    from real_files import build_real_files

    work = tmp_path_factory.mktemp("real-probe")
    files = build_real_files(real_model.find_smollm2_gguf(), work, with_kquant=True)
    for label, name, options in (("bf16 ntk alpha 4", "ntk4", {"method": "ntk", "alpha": 4.0}),
                                 ("bf16 llama3 x4", "llama3", {"method": "llama3", "factor": 4.0}),
                                 ("bf16 linear x4", "linear4", {"method": "linear", "factor": 4.0})):
        path = work / f"{name}.gguf"
        convert(work / "hf-bf16", path, outtype="bf16", **options)
        files[label] = (path, "pass")
    return files


@pytest.mark.parametrize("name", REAL_PASS)
def test_probe_on_the_real_model(name, real_files):
    """Up to 4 x the trained context (8192): every file passes, and the wrong ones fail naming their key."""
    path, expected = real_files[name]
    report = probe_gguf(path, positions=4 * 8192)
    assert report.verdict == expected, report.summary()
    assert report.layers_seen == list(range(30)) and all(k.worst_ratio <= 1 for k in report.kinds)


@pytest.mark.parametrize("name,key", [("yarn x4 + yarn_beta_fast 8 (plain, llama ignores the key)", "llama.rope.scaling.yarn_beta_fast"),
                                      ("yarn x4 record, rope.scaling.factor set to 8", "llama.rope.scaling.factor")])
def test_probe_fails_the_real_wrong_files(name, key, real_files):
    report = probe_gguf(real_files[name][0])
    assert report.verdict == "fail" and key in report.reason, report.summary()


def test_a_crash_in_the_child_is_one_line():
    """What llama.cpp's GGML_ASSERT does (abort) or a segfault does, in the child: a one-line RopetoolError."""
    from ropetool.errors import RopetoolError
    from ropetool.llamacpp.isolate import call_isolated

    for module, function, kwargs, name in (("os", "abort", {}, "SIGABRT"), ("ctypes", "string_at", {"ptr": 0}, "SIGSEGV")):
        with pytest.raises(RopetoolError, match=f"llama.cpp aborted \\({name}\\) running it"):
            call_isolated(module, function, kwargs, "running it")
    assert call_isolated("json", "loads", {"s": '{"a": 1}'}, "running it") == {"a": 1}
