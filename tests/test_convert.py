"""ropetool convert: llama.cpp on the output against transformers on the source (the oracle).

The tolerances are the issue's: f32 within 2e-3 x max|logit|, f16/bf16 within 1e-2 x, q8_0 within
5e-2 x, and the same top-1 token wherever transformers' top-2 margin exceeds the tolerance.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import gguf
import numpy as np
import pytest
from bad_inputs import ABSENT, set_config
from click.testing import CliRunner
from conftest import (
    ALL_FIXTURES,
    convert_refusal,
    fixture_config,
    fixture_dir,
    hf_bf16_spread,
    hf_logits,
    is_gemma,
    is_moe,
    llama_cpp_logits,
    post_normed,
    token_ids,
)

from ropetool.check import check_gguf
from ropetool.cli import cli
from ropetool.convert import convert

TOLERANCE = {"f32": 2e-3, "f16": 1e-2, "bf16": 1e-2, "q8_0": 5e-2}
N_TOKENS = 100  # longer than every fixture's original context (64)


def assert_logits_match(ours: np.ndarray, theirs: np.ndarray, rel_tol: float) -> float:
    scale = np.abs(theirs).max()
    diff = np.abs(ours - theirs).max()
    assert diff <= rel_tol * scale, f"max |diff| {diff:.3g} > {rel_tol} x {scale:.3g}"
    top2 = np.sort(theirs, axis=-1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > rel_tol * scale
    assert decisive.any()
    np.testing.assert_array_equal(ours.argmax(-1)[decisive], theirs.argmax(-1)[decisive])
    return diff / scale


def fixture_options(name: str, n: int) -> dict:
    # llama.cpp has no dynamic NTK: ropetool bakes the base for a target length, exact at that length.
    if name == "llama-dynamic":
        return {"target_context": n}
    # gpt-oss's truncate false has no GGUF key (llama.cpp rounds YaRN's correction range): refused unless --approximate.
    return {"approximate": True} if name == "gpt-oss" else {}


def llama_cpp_rope(name: str) -> dict | None:
    """The rope_parameters transformers must be given to compute what llama.cpp computes for a fixture's own config,
    where they differ: gpt-oss's YaRN with the correction range rounded (truncate true); tests/test_gpt_oss.py
    measures the difference."""
    if name == "gpt-oss":
        return {**fixture_config(name)["rope_parameters"], "truncate": True}
    return None


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_fixture_logits_match_transformers(name, outtype, tmp_gguf):
    vocab = fixture_config(name)["vocab_size"]
    ids = token_ids(N_TOKENS, vocab)
    convert(fixture_dir(name), tmp_gguf, outtype=outtype, **fixture_options(name, N_TOKENS))
    # A mixture of experts' routing is a discrete choice that llama.cpp's f16 KV cache or a weight's rounding
    # can flip where two experts score alike (see hf_logits); gemma's and olmo2's post-norms scale every block's
    # output back to the residual's size, so each weight's (and the cache's) rounding reaches the logits undiluted
    # (bf16: about 2% of their range on the tiny gemma fixtures, 1.03% on olmo2's, against 1% allowed).  For those
    # the oracle computes with the weights as stored and llama.cpp with an f32 cache, so that the comparison is of
    # the computation.
    as_stored = (is_moe(name) or post_normed(name)) and outtype != "f32"
    ours = llama_cpp_logits(tmp_gguf, ids, f32_kv=(outtype == "f32" or as_stored))
    oracle = hf_logits(name, ids, llama_cpp_rope(name), weights_as=outtype if as_stored else None, ggml_gelu=is_gemma(name))
    tolerance = TOLERANCE[outtype]
    if is_gemma(name) and outtype == "bf16":  # llama.cpp's CPU rounds bf16 matmuls' activations to bf16 too;
        tolerance = max(tolerance, hf_bf16_spread(name, tuple(ids)))  # transformers in bf16 is this far from f32
    assert_logits_match(ours, oracle, tolerance)


def written_keys(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {f.name: f.contents() for f in reader.fields.values()}


def test_auto_outtype_follows_source(tmp_path):
    convert(fixture_dir("mistral"), tmp_path / "m.gguf")  # bf16 source
    convert(fixture_dir("llama"), tmp_path / "l.gguf")  # f32 source -> f16, as llama.cpp's converter
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == "BF16" and types["blk.0.attn_norm.weight"] == "F32"
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "l.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == "F16"


# --- rope chosen on the command line, against transformers configured the same way -----------

BASE_THETA = 10000.0
D = 16  # the llama fixture's head_dim


CLI_CASES = {
    "linear": (["--rope", "linear", "--factor", "4"], {"rope_type": "linear", "factor": 4.0}),
    # NTK-aware alpha 4: base * alpha^(d/(d-2)), written out from bloc97's formula.
    "ntk": (["--rope", "ntk", "--alpha", "4"], {"rope_type": "default", "rope_theta": BASE_THETA * 4 ** (D / (D - 2))}),
    # NTK-by-parts is YaRN's frequencies without its attention factor.
    "ntk-by-parts": (["--rope", "ntk-by-parts", "--factor", "4"],
                     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "attention_factor": 1.0}),
    "yarn": (["--rope", "yarn", "--factor", "4"],
             {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
    "yarn-betas": (["--rope", "yarn", "--factor", "4", "--beta-fast", "8", "--beta-slow", "2"],
                   {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 8.0,
                    "beta_slow": 2.0}),
    "llama3": (["--rope", "llama3", "--factor", "8"],
               {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_rope_on_llama_matches_transformers(case, tmp_gguf):
    args, rope = CLI_CASES[case]
    rope = {"rope_theta": BASE_THETA, **rope}
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("llama")), "-o", str(tmp_gguf), "--outtype", "f32", *args])
    assert result.exit_code == 0, result.output
    ids = token_ids(160, 384)
    ours = llama_cpp_logits(tmp_gguf, ids)
    assert_logits_match(ours, hf_logits("llama", ids, rope), TOLERANCE["f32"])
    # The setting took effect: the unscaled model does not match.
    plain = hf_logits("llama", ids)
    assert np.abs(ours - plain).max() > 5 * TOLERANCE["f32"] * np.abs(plain).max()


def test_cli_yarn_on_qwen2_matches_transformers(tmp_gguf):
    rope = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 8.0, "original_max_position_embeddings": 32}
    args = ["--rope", "yarn", "--factor", "8", "--original-context", "32"]
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("qwen2")), "-o", str(tmp_gguf), "--outtype", "f32", *args])
    assert result.exit_code == 0, result.output
    ids = token_ids(160, 400)
    ours = llama_cpp_logits(tmp_gguf, ids)
    assert_logits_match(ours, hf_logits("qwen2", ids, rope), TOLERANCE["f32"])
    assert np.abs(ours - hf_logits("qwen2", ids)).max() > 5 * TOLERANCE["f32"] * np.abs(ours).max()


@pytest.mark.parametrize("name", ["mixtral", "qwen2moe", "qwen3moe", "gemma2", "gemma3", "gptneox", "falcon", "falcon-mq"])
def test_new_architectures_rope_matches_transformers(name, tmp_path):
    """YaRN at convert and linear by set-rope on the mixtures of experts, on Gemma's sliding-window layers
    (window 16) and global ones, on GPT-NeoX's partial rotary (half of each head) and parallel residual, and on
    Falcon's two layouts: llama.cpp against transformers configured alike on 160 tokens (the original context is
    64; gemma3 scales the global layers only, as both compute it); the unscaled model does not match, and check
    passes on each file."""
    config = fixture_config(name)
    ids = token_ids(160, config["vocab_size"])
    gemma = is_gemma(name)
    yarn, plain, linear = tmp_path / "yarn.gguf", tmp_path / "plain.gguf", tmp_path / "linear.gguf"
    for args in (["convert", str(fixture_dir(name)), "-o", str(yarn), "--outtype", "f32", "--rope", "yarn", "--factor", "4"],
                 ["convert", str(fixture_dir(name)), "-o", str(plain), "--outtype", "f32"],
                 ["set-rope", str(plain), "-o", str(linear), "--rope", "linear", "--factor", "4"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output

    def rope(extra):
        params = config["rope_parameters"]
        if "full_attention" in params:  # per layer type: the extension reaches the global layers
            return {**params, "full_attention": {**params["full_attention"], **extra}}
        kept = {k: params[k] for k in ("rope_theta", "partial_rotary_factor") if k in params}
        return {**kept, **extra}

    for path, extra in ((yarn, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
                        (linear, {"rope_type": "linear", "factor": 4.0})):
        ours = llama_cpp_logits(path, ids)
        assert_logits_match(ours, hf_logits(name, ids, rope(extra), ggml_gelu=gemma), TOLERANCE["f32"])
        unscaled = hf_logits(name, ids, ggml_gelu=gemma)
        assert np.abs(ours - unscaled).max() > 5 * TOLERANCE["f32"] * np.abs(unscaled).max()
        assert check_gguf(path).verdict == "pass"
    assert_logits_match(llama_cpp_logits(plain, ids), hf_logits(name, ids, ggml_gelu=gemma), TOLERANCE["f32"])


def test_moe_config_llama_cpp_would_compute_differently_is_refused(tmp_path):
    """llama.cpp's qwen3moe always renormalises the top-k routing weights and qwen2moe never does; every layer is
    a mixture.  A config.json that says otherwise is refused, naming the reason."""
    for name, changes, words in (("qwen3moe", {"norm_topk_prob": False}, "renormalises"),
                                 ("qwen2moe", {"norm_topk_prob": True}, "renormalises"),
                                 ("qwen3moe", {"mlp_only_layers": [1]}, "dense layers"),
                                 ("qwen2moe", {"decoder_sparse_step": 2}, "dense layers"),
                                 ("mixtral", {"num_experts_per_tok": 5}, "more than the 4 experts")):
        case = tmp_path / f"{name}-{next(iter(changes))}"
        case.mkdir()
        assert words in convert_refusal(name, changes, case)


def test_yarn_betas_refused_where_llama_cpp_cannot(tmp_gguf):
    """qwen2 loads no rope_freqs and ignores yarn_beta_*: refused unless --approximate, then recorded."""
    args = ["convert", str(fixture_dir("qwen2")), "-o", str(tmp_gguf), "--rope", "yarn", "--factor", "8",
            "--original-context", "32", "--beta-fast", "1.5", "--beta-slow", "0.5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and "--approximate" in result.output and not tmp_gguf.exists()
    result = CliRunner().invoke(cli, [*args, "--approximate"])
    assert result.exit_code == 0, result.output
    keys = written_keys(tmp_gguf)
    assert keys["ropetool.rope.exact"] is False and keys["ropetool.rope.approx_max_rel_error"] > 0


# --- tensor layout ------------------------------------------------------------------------------

def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, written out."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_f32_tensors_equal_source_after_permutation(tmp_gguf):
    from safetensors.numpy import load_file

    convert(fixture_dir("llama"), tmp_gguf, outtype="f32")
    src = load_file(fixture_dir("llama") / "model.safetensors")
    out = {t.name: np.array(t.data).reshape(list(reversed(t.shape.tolist()))) for t in gguf.GGUFReader(tmp_gguf).tensors}
    cfg = fixture_config("llama")
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        np.testing.assert_array_equal(out[f"blk.{i}.attn_q.weight"],
                                      llama_cpp_permute(src[p + "self_attn.q_proj.weight"], cfg["num_attention_heads"]))
        np.testing.assert_array_equal(out[f"blk.{i}.attn_k.weight"],
                                      llama_cpp_permute(src[p + "self_attn.k_proj.weight"], cfg["num_key_value_heads"]))
        np.testing.assert_array_equal(out[f"blk.{i}.attn_v.weight"], src[p + "self_attn.v_proj.weight"])
        np.testing.assert_array_equal(out[f"blk.{i}.ffn_gate.weight"], src[p + "mlp.gate_proj.weight"])
        np.testing.assert_array_equal(out[f"blk.{i}.attn_norm.weight"], src[p + "input_layernorm.weight"])
    np.testing.assert_array_equal(out["token_embd.weight"], src["model.embed_tokens.weight"])
    np.testing.assert_array_equal(out["output.weight"], src["lm_head.weight"])


def test_bf16_source_widened_exactly(tmp_gguf):
    import torch
    from safetensors.torch import load_file

    convert(fixture_dir("mistral"), tmp_gguf, outtype="f32")
    src = load_file(fixture_dir("mistral") / "model.safetensors")
    out = {t.name: np.array(t.data) for t in gguf.GGUFReader(tmp_gguf).tensors}
    np.testing.assert_array_equal(out["blk.1.attn_v.weight"].reshape(-1),
                                  src["model.layers.1.self_attn.v_proj.weight"].to(torch.float32).numpy().reshape(-1))


# --- metadata -------------------------------------------------------------------------------------

def test_context_length_extended_and_original_kept(tmp_gguf):
    convert(fixture_dir("llama"), tmp_gguf, outtype="f32", method="yarn", factor=4.0)
    keys = written_keys(tmp_gguf)
    assert keys["llama.context_length"] == 256
    assert keys["llama.rope.scaling.original_context_length"] == 64
    assert keys["llama.rope.scaling.type"] == "yarn" and keys["llama.rope.scaling.factor"] == 4.0
    assert keys["ropetool.rope.method"] == "yarn" and keys["ropetool.rope.exact"] is True


def test_llama3_rope_freqs_follow_llama_cpp_formula(tmp_gguf):
    """The rope_freqs tensor equals llama.cpp's converter formula (conversion/llama.py), written out."""
    convert(fixture_dir("llama3"), tmp_gguf, outtype="f32")
    reader = gguf.GGUFReader(tmp_gguf)
    ff = np.array(next(t for t in reader.tensors if t.name == "rope_freqs.weight").data)
    base, dim, factor, low, high, old = 500000.0, 16, 8.0, 1.0, 4.0, 64
    expected = []
    for i in range(0, dim, 2):
        freq = 1.0 / (base ** (i / dim))
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            expected.append(1.0)
        elif wavelen > old / low:
            expected.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            expected.append(1 / ((1 - smooth) / factor + smooth))
    np.testing.assert_allclose(ff, expected, rtol=1e-6)


# --- bad input: one line, non-zero exit, no output ------------------------------------------------

def _copy_fixture(tmp_path, name="llama"):
    dst = tmp_path / name
    shutil.copytree(fixture_dir(name), dst)
    return dst


def bad_no_weights(tmp_path):
    d = _copy_fixture(tmp_path)
    (d / "model.safetensors").unlink()
    return d, [], "no weight files"


def bad_tensor_missing_from_shard(tmp_path):
    import json

    d = _copy_fixture(tmp_path, "qwen3")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00003.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d, [], "model.layers.9.mlp.up_proj.weight"


def bad_shape(tmp_path):
    d = _copy_fixture(tmp_path)
    set_config(d, intermediate_size=96)
    return d, [], "shape"


def bad_architecture(tmp_path):
    d = _copy_fixture(tmp_path)
    set_config(d, architectures=["FancyNetForCausalLM"], model_type="fancynet")
    return d, [], "unknown architecture"


def bad_rope_type(tmp_path):
    d = _copy_fixture(tmp_path)
    set_config(d, rope_parameters={"rope_type": "spiral", "rope_theta": 10000.0})
    return d, [], "spiral"


def bad_factor(tmp_path):
    return fixture_dir("llama"), ["--rope", "linear", "--factor", "0.5"], "factor"


def bad_yarn_without_original(tmp_path):
    d = _copy_fixture(tmp_path, "llama-yarn")
    set_config(d, max_position_embeddings=ABSENT,
                 rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0})
    return d, [], "original_context"


BAD_INPUTS = [bad_no_weights, bad_tensor_missing_from_shard, bad_shape, bad_architecture, bad_rope_type, bad_factor,
              bad_yarn_without_original]


@pytest.mark.parametrize("make", BAD_INPUTS, ids=[f.__name__ for f in BAD_INPUTS])
def test_bad_input_one_line_error(make, tmp_path):
    folder, args, words = make(tmp_path)
    out = tmp_path / "out" / "x.gguf"
    out.parent.mkdir()
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(out), *args])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert words in lines[0]
    assert list(out.parent.iterdir()) == []  # no output, no temporary file left


def test_existing_output_kept_without_force(tmp_path):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"precious")
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("llama")), "-o", str(out)])
    assert result.exit_code != 0 and "--force" in result.output
    assert out.read_bytes() == b"precious"
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("llama")), "-o", str(out), "--force"])
    assert result.exit_code == 0 and out.read_bytes()[:4] == b"GGUF"


def test_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "x.gguf"
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("qwen3")), "-o", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "blk.0.attn_q_norm.weight" in result.output and "qwen3.rope.freq_base" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --- the tokenizer in the converted file ------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_llama_cpp_tokenizer_on_output_matches_hf(name, tmp_gguf):
    import llama_cpp
    from test_vocab import TEXT
    from transformers import AutoTokenizer

    convert(fixture_dir(name), tmp_gguf, **fixture_options(name, N_TOKENS))
    llm = llama_cpp.Llama(model_path=str(tmp_gguf), vocab_only=True, verbose=False)
    try:
        ours = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
    finally:
        llm.close()
    if (fixture_dir(name) / "tokenizer.model").exists():
        import sentencepiece  # the SentencePiece model's own tokenizer is the oracle here

        expected = sentencepiece.SentencePieceProcessor(model_file=str(fixture_dir(name) / "tokenizer.model")).encode(TEXT)
    else:
        expected = AutoTokenizer.from_pretrained(fixture_dir(name))(TEXT, add_special_tokens=False)["input_ids"]
    assert ours == expected


def test_option_the_method_does_not_read_is_an_error(tmp_gguf):
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("llama")), "-o", str(tmp_gguf),
                                      "--rope", "linear", "--factor", "2", "--alpha", "3"])
    assert result.exit_code == 2 and "--alpha does not apply to --rope linear" in result.output
    assert not tmp_gguf.exists()


def test_untied_model_without_lm_head_is_refused(tmp_path):
    import json

    from safetensors.numpy import load_file, save_file

    d = _copy_fixture(tmp_path)
    tensors = load_file(d / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    assert json.loads((d / "config.json").read_text())["tie_word_embeddings"] is False
    out = tmp_path / "x.gguf"
    result = CliRunner().invoke(cli, ["convert", str(d), "-o", str(out)])
    assert result.exit_code == 2 and "lm_head.weight" in result.output and not out.exists()


@pytest.mark.parametrize("name,outtype,options,linux_calls", [
    ("llama", "q8_0", {"method": "llama3", "factor": 8.0}, True),
    ("mistral", "auto", {}, True),
    ("mistral", "q8_0", {}, False),  # bf16 rows read with os.pread
    ("qwen3", "f16", {}, True),
    ("qwen3", "f16", {}, False),  # f16 tensors copied through a buffer
    ("phi3", "bf16", {}, True),
    ("bloom", "f32", {}, True),
])
def test_output_is_byte_identical_to_gguf_py_writer(name, outtype, options, linux_calls, tmp_path, monkeypatch):
    """ropetool streams the file itself; gguf-py's GGUFWriter, given the same plan, writes the same bytes.
    Also where os.preadv and os.copy_file_range are missing (macOS)."""
    from ropetool.convert import plan_conversion, write_gguf

    if not linux_calls:
        for call in ("preadv", "copy_file_range"):
            monkeypatch.delattr(os, call, raising=False)
    plan = plan_conversion(fixture_dir(name), outtype, **options)
    ours = tmp_path / "ours.gguf"
    write_gguf(plan, ours)

    theirs = tmp_path / "gguf-py.gguf"
    writer = gguf.GGUFWriter(str(theirs), plan.arch)
    for v in plan.values:  # the vocabulary's keys included
        if v.key != "general.architecture":
            writer.add_key_value(v.key, v.value, v.type, sub_type=v.sub_type)
    for t in plan.tensors:
        values = np.asarray(t.whole(), dtype=np.float32)
        if t.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(t.name, values.astype(np.float16 if t.qtype.name == "F16" else np.float32))
        else:
            writer.add_tensor(t.name, gguf.quants.quantize(values, t.qtype), raw_dtype=t.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert ours.read_bytes() == theirs.read_bytes()


# --- MPT: ALiBi with max_bias from the file, and the ALiBi methods it can approximate ------------------------

def mpt_logits(ids, slopes=None) -> np.ndarray:
    """transformers' MPT (float32) on ``ids``, its ALiBi slopes replaced by ``slopes`` (one per head) when given:
    its build_mpt_alibi_tensor's bias slope_h * (j - L + 1) with the slopes swapped."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.mpt import modeling_mpt

    config = AutoConfig.from_pretrained(fixture_dir("mpt"))
    config.max_seq_len = max(config.max_seq_len, len(ids))  # transformers builds the bias for max_seq_len positions
    model = AutoModelForCausalLM.from_pretrained(fixture_dir("mpt"), config=config, dtype=torch.float32).eval()
    original = modeling_mpt.build_mpt_alibi_tensor

    def build(num_heads, sequence_length, alibi_bias_max=8, device=None):
        positions = torch.arange(1 - sequence_length, 1, dtype=torch.float32).view(1, 1, sequence_length)
        return positions * torch.tensor(slopes, dtype=torch.float32).view(num_heads, 1, 1)

    modeling_mpt.build_mpt_alibi_tensor = original if slopes is None else build
    try:
        with torch.no_grad():
            return model(torch.tensor([list(ids)])).logits[0].double().numpy()
    finally:
        modeling_mpt.build_mpt_alibi_tensor = original


def mpt_slopes(n_heads: int, max_bias: float) -> np.ndarray:
    """The slopes transformers' MPT derives from alibi_bias_max (what llama.cpp derives from the key)."""
    import torch
    from transformers.models.mpt import modeling_mpt

    return -modeling_mpt.build_mpt_alibi_tensor(n_heads, 2, max_bias)[:, 0, 0].to(torch.float64).numpy()


def test_mpt_ntk_alibi_approximation_is_closer_and_its_error_is_the_recorded_one(tmp_path):
    """NTK-ALiBi (a = 4) on MPT, which reads max_bias from the file: refused without --approximate; with it, the
    file's llama.cpp logits on 200 tokens (the trained context is 128) are closer to transformers' MPT running
    NTK-ALiBi's slopes (keezen's formula) than plain ALiBi's are; llama.cpp runs exactly the slopes the written
    max_bias gives; and the error ropetool records is the slopes' measured one."""
    from test_reference import ntk_alibi

    from ropetool.llamacpp import keys as K

    plain, ntk = tmp_path / "plain.gguf", tmp_path / "ntk.gguf"
    args = ["convert", str(fixture_dir("mpt")), "-o", str(ntk), "--outtype", "f32", "--rope", "ntk-alibi", "--alpha", "4"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "--approximate" in refused.output and not ntk.exists()
    assert CliRunner().invoke(cli, args + ["--approximate"]).exit_code == 0
    convert(fixture_dir("mpt"), plain, outtype="f32")

    n_heads = fixture_config("mpt")["n_heads"]
    ids = token_ids(200, fixture_config("mpt")["vocab_size"])
    wanted = np.array(ntk_alibi(4.0)(n_heads, len(ids)))
    keys = written_keys(ntk)
    written = float(keys["mpt.attention.max_alibi_bias"])
    got = mpt_slopes(n_heads, written)
    measured = float(np.max(np.abs(got - wanted) / wanted))
    assert math.isclose(float(keys[K.RT_APPROX_ERROR]), measured, rel_tol=1e-5), (keys[K.RT_APPROX_ERROR], measured)

    oracle = mpt_logits(ids, wanted)
    ours, theirs_plain = llama_cpp_logits(ntk, ids), llama_cpp_logits(plain, ids)
    closer, plain_gap = np.abs(ours - oracle).max(), np.abs(theirs_plain - oracle).max()
    assert closer < 0.85 * plain_gap, (closer, plain_gap)
    # Why not the max_bias that gives NTK-ALiBi's ratio between heads exactly (8 + n log2(a) / (n - 1)): it leaves
    # one constant factor on every head, the first included, and lands farther than plain ALiBi.
    ratio_exact = mpt_slopes(n_heads, 8 + n_heads * math.log2(4.0) / (n_heads - 1))
    assert np.ptp(ratio_exact / wanted) < 1e-6 and np.abs(mpt_logits(ids, ratio_exact) - oracle).max() > plain_gap
    assert_logits_match(ours, mpt_logits(ids, got), TOLERANCE["f32"])  # what llama.cpp computes is the key's ALiBi
    assert_logits_match(theirs_plain, mpt_logits(ids), TOLERANCE["f32"])  # and plain ALiBi past the trained context
    assert check_gguf(ntk).verdict == "pass"
    # set-rope on the plain file writes the same setting.
    again = tmp_path / "again.gguf"
    result = CliRunner().invoke(cli, ["set-rope", str(plain), "-o", str(again), "--rope", "ntk-alibi", "--alpha", "4",
                                      "--approximate"])
    assert result.exit_code == 0, result.output
    assert written_keys(again)["mpt.attention.max_alibi_bias"] == keys["mpt.attention.max_alibi_bias"]


@pytest.mark.parametrize("name,changes,words", [
    ("falcon", {"alibi": True}, "rope, not ALiBi"),
    ("falcon", {"bias": True}, "no linear biases"),
    ("falcon-mq", {"parallel_attn": False}, "in parallel"),
    ("mpt", {"attn_config": {"alibi": False}}, "without ALiBi"),
    ("mpt", {"attn_config": {"alibi": True, "qk_ln": True}}, "q/k norms"),
    ("mpt", {"logit_scale": 2.0}, "does not scale the logits"),
    ("gptneox", {"attention_bias": False}, "attention biases"),
])
def test_config_llama_cpp_would_compute_differently_is_refused(name, changes, words, tmp_path):
    assert words in convert_refusal(name, changes, tmp_path)


def test_bloom_context_length_is_the_trained_one_and_says_where_it_came_from(tmp_path):
    """BLOOM's config.json gives no context length: ropetool writes 2048, the length the released models were
    trained at, and records why (llama.cpp's converter writes the hidden size when seq_length is missing)."""
    assert not {"seq_length", "max_position_embeddings", "n_positions"} & set(fixture_config("bloom"))
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("bloom")), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["keys"]["bloom.context_length"] == 2048
    assert any("context_length 2048" in n and "BLOOM" in n for n in plan["notes"]), plan["notes"]
    convert(fixture_dir("bloom"), tmp_path / "b.gguf", outtype="f32")
    keys = written_keys(tmp_path / "b.gguf")
    assert keys["bloom.context_length"] == 2048 and "2048-token" in keys["ropetool.rope.note"]


def test_gptneox_needs_its_parallel_residual_key(tmp_path):
    """llama.cpp's gptneox loader throws without use_parallel_residual: lint says so, and llama.cpp refuses."""
    from llama_loads import llama_cpp_runs

    from ropetool.edit import unset_keys
    from ropetool.model import lint_gguf

    src, out = tmp_path / "n.gguf", tmp_path / "without.gguf"
    convert(fixture_dir("gptneox"), src, outtype="f32")
    unset_keys(src, ["gptneox.use_parallel_residual"], out, force=True)
    runs = llama_cpp_runs([src, out])
    assert runs[str(src)] == "ok" and runs[str(out)].startswith("refused"), runs
    assert any(f.id == "missing-key" and "use_parallel_residual" in f.message for f in lint_gguf(out))
