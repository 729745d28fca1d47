"""ropetool inspect: the header reader, the RoPE/ALiBi summary and robustness against bad files.

The GGUFs here are built with gguf-py the way llama.cpp's converter writes them (rope_freqs from
the formula of llama.cpp's conversion/llama.py, written out below; NTK-aware bases, YaRN, linear
and longrope keys) or by ropetool's convert/set-rope, and every inferred value is checked against
formulas written out in this file or against transformers' ROPE_INIT_FUNCTIONS, never against
ropetool's own output.
"""

from __future__ import annotations

import json
import math
import struct

import gguf
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import fixture_config, fixture_dir
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import set_rope, unset_keys
from ropetool.errors import RopetoolError
from ropetool.families import Dims, family_for_arch
from ropetool.inspect import inspect_gguf
from ropetool.io.gguf_file import GGUFFile
from ropetool.llamacpp import keys as K

R = gguf.Keys.Rope


# --------------------------------------------------------------------------------------------
# Builders and independent formulas


def build(path, arch="llama", *, d=16, n_head=4, n_embd=64, ctx=4096, base=10000.0, extra=None, tensors=None,
          endian=gguf.GGUFEndian.LITTLE, alignment=None, rope_dim=True, complete=True):
    """A small GGUF written with gguf-py; ``extra(writer)`` adds keys.  ``complete``: for an architecture
    ropetool has a family for, the tensors llama.cpp requires that ``tensors`` lacks are added (zeros), so
    that lint finds only what a test puts there."""
    w = gguf.GGUFWriter(str(path), arch, endianess=endian)
    if alignment:
        w.add_custom_alignment(alignment)
    if ctx is not None:
        w.add_context_length(ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    if rope_dim:
        w.add_rope_dimension_count(d)
    if base is not None:
        w.add_rope_freq_base(base)
    family = family_for_arch(arch)
    if complete and family is not None:  # the keys its llama.cpp loader requires
        w.add_feed_forward_length(2 * n_embd)
        w.add_float32(family.eps_key.format(arch=arch), 1e-5)
    if extra:
        extra(w)
    tensors = dict(tensors or {"token_embd.weight": np.arange(8 * n_embd, dtype=np.float32).reshape(8, n_embd)})
    if complete and family is not None:
        shapes = family.tensor_shapes(Dims(n_embd, n_head, n_head, n_embd // n_head, 2 * n_embd, 8))
        for name in family.required_tensors(1):
            want = shapes[name.split(".")[-2]]
            tensors.setdefault(name, np.zeros(want[:1] if name.endswith(".bias") else want, np.float32))
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_cpp_llama3_rope_freqs(base, dim, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, old_context_len=8192):
    """llama.cpp conversion/llama.py (LlamaModel.generate_extra_tensors), written out."""
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(rope_factors, dtype=np.float32)


def ggml_yarn_divisor(d, base, factor, orig, beta_fast=32.0, beta_slow=1.0):
    """ggml_rope_yarn_corr_dims + rope_yarn (ggml-cpu ops.cpp): per pair, theta0 / theta."""
    def corr(beta):
        return d * math.log(orig / (beta * 2 * math.pi)) / (2 * math.log(base))

    low = max(0, math.floor(corr(beta_fast)))
    high = min(d - 1, math.ceil(corr(beta_slow)))
    i = np.arange(d // 2)
    ramp = 1 - np.clip((i - low) / max(0.001, high - low), 0, 1)  # extrapolation weight
    theta_scale = (1 / factor) * (1 - ramp) + ramp
    return 1 / theta_scale, (low, high)


def hf_inv_freq(rope: dict, head_dim: int, max_pos: int, theta: float):
    cfg = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, num_key_value_heads=4, head_dim=head_dim,
                      max_position_embeddings=max_pos, rope_parameters={"rope_theta": theta, **rope})
    inv, attn = ROPE_INIT_FUNCTIONS[rope["rope_type"]](cfg, "cpu")
    return inv.double().numpy(), float(attn)


def report(path, full=False):
    return inspect_gguf(path, full=full)


def effective_inv(rep):
    r = rep["rope"]
    d = r["rotary_dim"]
    inv0 = r["base"] ** (-np.arange(0, d, 2) / d)
    return inv0 / np.array(r["llama_cpp"]["pair_divisor"])


# --------------------------------------------------------------------------------------------
# The reader against gguf-py


def test_reader_matches_gguf_py(tmp_path):
    path = tmp_path / "m.gguf"
    convert(fixture_dir("llama3"), path, outtype="f16")
    ref = gguf.GGUFReader(path)
    with GGUFFile(path) as gf:
        assert list(gf.fields) == [f.name for f in ref.fields.values() if not f.name.startswith("GGUF.")]
        for name, f in gf.fields.items():
            rf = ref.fields[name]
            want = rf.contents()
            got = f.value
            if isinstance(got, np.ndarray):
                got = got.tolist()
            if isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-7)
            else:
                assert got == want, name
        assert gf.data_offset == ref.data_offset
        assert gf.alignment == ref.alignment
        assert [(t.name, list(t.shape), t.type.name, t.data_offset, t.nbytes) for t in gf.tensors] == [
            (t.name, [int(x) for x in t.shape], t.tensor_type.name, int(t.data_offset), int(t.n_bytes)) for t in ref.tensors
        ]
        rf = ref.get_tensor([t.name for t in ref.tensors].index("rope_freqs.weight"))
        np.testing.assert_array_equal(gf.read_tensor("rope_freqs.weight"), rf.data.astype(np.float64))


def test_reader_big_endian(tmp_path):
    path = build(tmp_path / "be.gguf", endian=gguf.GGUFEndian.BIG,
                 extra=lambda w: (w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR), w.add_rope_scaling_factor(4.0),
                                  w.add_array("test.ints", [1, -2, 3]), w.add_token_list(["a", "bc", "déf"])))
    rep = report(path)
    assert rep["file"]["endianness"] == "big"
    md = rep["metadata"]
    assert md["llama.context_length"]["value"] == 4096
    assert md["test.ints"]["value"] == [1, -2, 3]
    assert md["tokenizer.ggml.tokens"]["value"] == ["a", "bc", "déf"]
    assert rep["rope"]["method"] == "linear" and rep["rope"]["factor"] == 4.0
    assert rep["tensors"][0]["shape"] == [64, 8]


# --------------------------------------------------------------------------------------------
# The summary, method by method


def test_llama3_rope_freqs_from_llama_cpp_formula(tmp_path):
    """Llama 3.1 as llama.cpp's converter writes it: no scaling keys, only rope_freqs."""
    d, base = 128, 500000.0
    ff = llama_cpp_llama3_rope_freqs(base, d, 8.0, 1.0, 4.0, 8192)
    path = build(tmp_path / "l3.gguf", d=d, n_embd=512, ctx=131072, base=base, tensors={
        "token_embd.weight": np.zeros((8, 512), np.float32), "rope_freqs.weight": ff})
    r = report(path)["rope"]
    assert r["method"] == "llama3" and r["method_source"] == "inferred"
    p = r["params"]
    assert (p["factor"], p["low_freq_factor"], p["high_freq_factor"], p["original_context"]) == (8.0, 1.0, 4.0, 8192)
    assert r["base"] == base and r["extended_context"] == 131072 and r["trained_context"] == 8192
    np.testing.assert_allclose(r["llama_cpp"]["pair_divisor"], ff, rtol=1e-6)
    wavelen = 2 * math.pi * base ** (np.arange(0, d, 2) / d)
    assert r["pairs"]["kept"] == [int(j) for j in np.nonzero(wavelen < 8192 / 4)[0]]
    assert r["pairs"]["interpolated"] == [int(j) for j in np.nonzero(wavelen > 8192 / 1)[0]]
    assert r["attention_factor"] == 1.0
    # transformers' llama3 inv_freq is what llama.cpp computes with this tensor.
    inv_hf, _ = hf_inv_freq({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192}, d, 131072, base)
    np.testing.assert_allclose(effective_inv(report(path)), inv_hf, rtol=2e-6)


@pytest.mark.parametrize("factor,low,high,old", [(8.0, 1.0, 4.0, 8192), (32.0, 1.0, 4.0, 8192), (16.0, 1.0, 8.0, 4096)])
def test_llama3_other_parameters(tmp_path, factor, low, high, old):
    d, base = 128, 500000.0
    ff = llama_cpp_llama3_rope_freqs(base, d, factor, low, high, old)
    path = build(tmp_path / "l3.gguf", d=d, n_embd=512, ctx=int(old * factor), base=base,
                 tensors={"token_embd.weight": np.zeros((8, 512), np.float32), "rope_freqs.weight": ff})
    p = report(path)["rope"]["params"]
    assert (p["factor"], p["low_freq_factor"], p["high_freq_factor"], p["original_context"]) == (factor, low, high, old)


@pytest.mark.parametrize("alpha,base,d", [(8.0, 10000.0, 128), (2.0, 500000.0, 64), (4.5, 1e6, 128), (3.0, 10000.0, 16)])
def test_ntk_alpha_from_freq_base(tmp_path, alpha, base, d):
    freq_base = base * alpha ** (d / (d - 2))  # bloc97's NTK-aware base, as HunYuan's converter folds it
    path = build(tmp_path / "ntk.gguf", d=d, n_embd=d * 4, base=freq_base,
                 extra=lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.NONE),
                 tensors={"token_embd.weight": np.zeros((8, d * 4), np.float32)})
    r = report(path)["rope"]
    assert r["method"] == "ntk" and r["alpha"] == alpha and r["base"] == base
    j = np.arange(d // 2)
    np.testing.assert_allclose(r["llama_cpp"]["pair_divisor"], (np.float32(freq_base) / base) ** (2 * j / d), rtol=1e-6)
    assert r["pairs"]["kept"] == [0] and r["pairs"]["interpolated"] == [d // 2 - 1]


def test_plain_base_is_not_ntk(tmp_path):
    for base in (10000.0, 500000.0, 1e6, 12345.0):
        r = report(build(tmp_path / "p.gguf", base=base))["rope"]
        assert r["method"] == "none", base


def test_linear_keys(tmp_path):
    path = build(tmp_path / "lin.gguf", extra=lambda w: (w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR),
                                                         w.add_rope_scaling_factor(4.0)))
    r = report(path)["rope"]
    assert r["method"] == "linear" and r["factor"] == 4.0
    assert r["llama_cpp"]["freq_scale"] == 0.25
    assert r["pairs"]["interpolated"] == list(range(8)) and r["pairs"]["kept"] == []
    inv_hf, _ = hf_inv_freq({"rope_type": "linear", "factor": 4.0}, 16, 4096, 10000.0)
    np.testing.assert_allclose(effective_inv(report(path)), inv_hf, rtol=2e-6)


@pytest.mark.parametrize("d,base,factor,orig", [(128, 1e6, 4.0, 32768), (64, 10000.0, 8.0, 4096), (16, 10000.0, 4.0, 64)])
def test_yarn_keys_qwen_style(tmp_path, d, base, factor, orig):
    """Qwen2.5-style YaRN keys: the correction range, divisors and magnitude as ggml computes them."""
    ctx = int(factor * orig)
    path = build(tmp_path / "y.gguf", "qwen2", d=d, n_embd=d * 4, ctx=ctx, base=base,
                 extra=lambda w: (w.add_rope_scaling_type(gguf.RopeScalingType.YARN), w.add_rope_scaling_factor(factor),
                                  w.add_rope_scaling_orig_ctx_len(orig)),
                 tensors={"token_embd.weight": np.zeros((8, d * 4), np.float32)})
    r = report(path)["rope"]
    div, (low, high) = ggml_yarn_divisor(d, base, factor, orig)
    assert r["method"] == "yarn" and r["factor"] == factor
    assert r["trained_context"] == orig and r["extended_context"] == ctx
    assert r["correction_range"] == [low, high]
    np.testing.assert_allclose(r["llama_cpp"]["pair_divisor"], div, rtol=1e-6)
    assert r["attention_factor"] == pytest.approx(0.1 * math.log(factor) + 1, rel=1e-6)
    kept = [int(j) for j in np.nonzero(np.isclose(div, 1, rtol=1e-4))[0]]
    interp = [int(j) for j in np.nonzero(np.isclose(div, factor, rtol=1e-4))[0]]
    assert r["pairs"]["kept"] == kept and r["pairs"]["interpolated"] == interp
    inv_hf, attn_hf = hf_inv_freq({"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": orig},
                                  d, ctx, base)
    np.testing.assert_allclose(effective_inv(report(path)), inv_hf, rtol=2e-6)
    assert r["attention_factor"] == pytest.approx(attn_hf, rel=1e-6)


def _yarn_ff(d, base, factor, orig):
    div, rng = ggml_yarn_divisor(d, base, factor, orig)
    return div.astype(np.float32), rng


def test_yarn_via_rope_freqs(tmp_path):
    """YaRN written as a rope_freqs tensor plus rope.scaling.attn_factor (type none)."""
    d, base, s, orig = 64, 10000.0, 8.0, 2048
    ff, rng = _yarn_ff(d, base, s, orig)
    path = build(tmp_path / "yf.gguf", d=d, n_embd=256, ctx=int(s * orig), base=base,
                 extra=lambda w: (w.add_rope_scaling_type(gguf.RopeScalingType.NONE), w.add_rope_scaling_orig_ctx_len(orig),
                                  w.add_rope_scaling_attn_factors(1 + 0.1 * math.log(s))),
                 tensors={"token_embd.weight": np.zeros((8, 256), np.float32), "rope_freqs.weight": ff})
    r = report(path)["rope"]
    assert r["method"] == "yarn" and r["factor"] == s and r["correction_range"] == list(rng)
    assert r["params"]["beta_fast"] == 32.0 and r["params"]["beta_slow"] == 1.0
    assert r["attention_factor"] == pytest.approx(1 + 0.1 * math.log(s), rel=1e-6)


def test_ntk_by_parts_via_rope_freqs(tmp_path):
    d, base, s, orig = 64, 10000.0, 4.0, 2048
    ff, rng = _yarn_ff(d, base, s, orig)
    path = build(tmp_path / "nbp.gguf", d=d, n_embd=256, ctx=int(s * orig), base=base,
                 extra=lambda w: (w.add_rope_scaling_type(gguf.RopeScalingType.NONE), w.add_rope_scaling_orig_ctx_len(orig)),
                 tensors={"token_embd.weight": np.zeros((8, 256), np.float32), "rope_freqs.weight": ff})
    r = report(path)["rope"]
    assert r["method"] == "ntk-by-parts" and r["factor"] == s and r["correction_range"] == list(rng)
    assert r["attention_factor"] == 1.0


def test_yarn_ramp_without_original_context(tmp_path):
    """No original_context_length: the ramp (correction range) is still recovered from the tensor."""
    d, base, s, orig = 128, 10000.0, 4.0, 4096
    ff, rng = _yarn_ff(d, base, s, orig)
    path = build(tmp_path / "yf.gguf", d=d, n_embd=512, ctx=int(s * orig), base=base,
                 extra=lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.NONE),
                 tensors={"token_embd.weight": np.zeros((8, 512), np.float32), "rope_freqs.weight": ff})
    r = report(path)["rope"]
    assert r["method"] == "ntk-by-parts" and r["factor"] == s and r["correction_range"] == list(rng)


def test_phi3_longrope_as_llama_cpp_writes_it(tmp_path):
    """Phi-3's converter writes no scaling.type: orig ctx, attn_factor and the two factor tensors."""
    d, orig, ctx = 96, 4096, 131072
    rng = np.random.default_rng(0)
    long_f = (1 + rng.random(d // 2) * 40).astype(np.float32)
    short_f = (1 + rng.random(d // 2) * 2).astype(np.float32)
    s = ctx / orig
    attn = math.sqrt(1 + math.log(s) / math.log(orig))
    path = build(tmp_path / "phi3.gguf", "phi3", d=d, n_head=32, n_embd=3072, ctx=ctx,
                 extra=lambda w: (w.add_rope_scaling_orig_ctx_len(orig), w.add_rope_scaling_attn_factors(attn)),
                 tensors={"token_embd.weight": np.zeros((8, 3072), np.float32),
                          "rope_factors_long.weight": long_f, "rope_factors_short.weight": short_f})
    r = report(path)["rope"]
    assert r["method"] == "longrope" and r["params"]["factor"] == s
    assert r["trained_context"] == orig and r["extended_context"] == ctx
    assert r["attention_factor"] == pytest.approx(attn, rel=1e-6)
    np.testing.assert_allclose(r["llama_cpp"]["pair_divisor"], long_f, rtol=1e-6)
    np.testing.assert_allclose(r["llama_cpp"]["pair_divisor_short"], short_f, rtol=1e-6)
    assert {t["name"] for t in r["rope_tensors"]} == {"rope_factors_long.weight", "rope_factors_short.weight"}


def alibi_paper_slopes(n):
    """Press et al.: 2^(-8h/n) for the power-of-two heads, the odd powers of the 2n schedule after."""
    p = 2 ** math.floor(math.log2(n))
    slopes = [2 ** (-8 * (h + 1) / p) for h in range(p)]
    extra = [2 ** (-8 * (2 * k + 1) / (2 * p)) for k in range(n - p)]
    return slopes + extra


@pytest.mark.parametrize("arch,n_head,bias", [("bloom", 4, None), ("bloom", 12, None), ("mpt", 16, 8.0)])
def test_alibi(tmp_path, arch, n_head, bias):
    path = build(tmp_path / "a.gguf", arch, n_head=n_head, n_embd=n_head * 16, rope_dim=False, base=None,
                 extra=(lambda w: w.add_max_alibi_bias(bias)) if bias else None,
                 tensors={"token_embd.weight": np.zeros((8, n_head * 16), np.float32)})
    r = report(path)["rope"]
    assert r["position_encoding"] == "alibi" and r["method"] == "alibi"
    assert r["alibi"]["max_bias"] == 8.0
    assert r["alibi"]["source"] == ("key" if bias else "hard-coded")
    np.testing.assert_allclose(r["alibi"]["slopes"], alibi_paper_slopes(n_head), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Files written by ropetool: the recorded method, and the same method inferred from keys alone


def _strip_provenance(path, out):
    with GGUFFile(path) as gf:
        present = [k for k in K.RT_KEYS if k in gf.fields]
    unset_keys(path, present, out)
    return out


@pytest.mark.parametrize("name", ["llama-yarn", "llama-linear", "llama3", "qwen2", "phi3", "llama"])
def test_converted_fixtures(tmp_path, name):
    cfg = fixture_config(name)
    rope = cfg.get("rope_parameters") or {**(cfg.get("rope_scaling") or {}), "rope_theta": cfg.get("rope_theta")}
    kind = rope.get("rope_type") or rope.get("type")
    path = tmp_path / f"{name}.gguf"
    convert(fixture_dir(name), path, outtype="f32")
    r = report(path)["rope"]
    want = {"default": "none"}.get(kind, kind)
    assert r["method"] == want and r["method_source"] == "ropetool"
    assert r["base"] == rope["rope_theta"]
    if "factor" in rope:
        assert r["factor"] == rope["factor"]
    # A config's max_position_embeddings is the trained context unless it names an original one.
    orig = rope.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
    assert r["trained_context"] == orig
    assert r["extended_context"] == max(cfg["max_position_embeddings"], int((rope.get("factor") or 1) * orig))
    bare = report(_strip_provenance(path, tmp_path / "bare.gguf"))["rope"]
    assert bare["method_source"] == "inferred" and bare["method"] == want
    assert bare["base"] == rope["rope_theta"]
    if kind in ("yarn", "llama3", "linear"):
        assert bare["factor"] == rope["factor"]
    if kind == "llama3":
        assert bare["params"]["low_freq_factor"] == rope["low_freq_factor"]
        assert bare["params"]["high_freq_factor"] == rope["high_freq_factor"]
        assert bare["params"]["original_context"] == rope["original_max_position_embeddings"]
    if kind in ("yarn", "llama3", "linear"):
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        inv_hf, attn_hf = hf_inv_freq({k: v for k, v in rope.items() if k != "rope_theta"} | {"rope_type": kind},
                                      head_dim, cfg["max_position_embeddings"], rope["rope_theta"])
        np.testing.assert_allclose(effective_inv(report(path)), inv_hf, rtol=2e-6)
        assert r["attention_factor"] == pytest.approx(attn_hf, rel=1e-6)


def test_set_rope_ntk_is_reported_as_recorded_and_inferred(tmp_path):
    src = tmp_path / "l.gguf"
    convert(fixture_dir("llama"), src, outtype="f32")
    set_rope(src, "ntk", tmp_path / "ntk.gguf", alpha=8.0)
    r = report(tmp_path / "ntk.gguf")["rope"]
    assert r["method"] == "ntk" and r["alpha"] == 8.0 and r["method_source"] == "ropetool"
    assert r["llama_cpp"]["freq_base"] == pytest.approx(10000 * 8 ** (16 / 14), rel=1e-6)
    bare = report(_strip_provenance(tmp_path / "ntk.gguf", tmp_path / "bare.gguf"))["rope"]
    assert bare["method"] == "ntk" and bare["alpha"] == 8.0 and bare["base"] == 10000.0


# --------------------------------------------------------------------------------------------
# JSON, --full, CLI


def test_json_schema_and_full(tmp_path):
    path = build(tmp_path / "t.gguf", extra=lambda w: w.add_token_list([f"t{i}" for i in range(20)]))
    res = CliRunner().invoke(cli, ["inspect", "--json", str(path)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["schema_version"] == 2
    assert set(rep) == {"schema_version", "file", "metadata", "tensors", "rope", "lint", "memory"}
    toks = rep["metadata"]["tokenizer.ggml.tokens"]
    assert toks["type"] == "arr[str]" and toks["count"] == 20 and toks["truncated"] and len(toks["value"]) == 8
    full = json.loads(CliRunner().invoke(cli, ["inspect", "--json", "--full", str(path)]).output)
    assert full["metadata"]["tokenizer.ggml.tokens"]["value"] == [f"t{i}" for i in range(20)]
    for key in ("method", "method_source", "params", "factor", "alpha", "base", "trained_context", "extended_context",
                "rotary_dim", "pairs", "correction_range", "attention_factor", "rope_tensors", "alibi", "llama_cpp",
                "notes", "description", "position_encoding", "architecture", "arch_known", "exact", "inferred_method"):
        assert key in rep["rope"], key
    t = rep["tensors"][0]
    assert t == {"name": "token_embd.weight", "type": "F32", "shape": [64, 8], "elements": 512, "bytes": 2048, "offset": 0}
    text = CliRunner().invoke(cli, ["inspect", str(path)]).output
    assert "tokenizer.ggml.tokens" in text and "20 items" in text and "position encoding" in text


def test_large_vocab_is_summarised(tmp_path):
    """A 150,000-entry vocabulary: the report counts it and shows its head; its speed is benchmarks/bench_inspect.py's."""
    n = 150_000
    tokens = [f"tok{i}" + "x" * (i % 7) for i in range(n)]
    path = build(tmp_path / "v.gguf", extra=lambda w: (w.add_tokenizer_model("gpt2"), w.add_token_list(tokens),
                                                       w.add_token_types([1] * n),
                                                       w.add_token_merges([f"a{i} b{i}" for i in range(n)])))
    rep = inspect_gguf(path)
    assert rep["metadata"]["tokenizer.ggml.tokens"]["count"] == n
    assert rep["metadata"]["tokenizer.ggml.tokens"]["value"] == tokens[:8]
    with GGUFFile(path) as gf:
        assert gf.fields["tokenizer.ggml.tokens"].value == tokens
        assert gf.fields["tokenizer.ggml.merges"].head(3) == ["a0 b0", "a1 b1", "a2 b2"]
        np.testing.assert_array_equal(gf.fields["tokenizer.ggml.token_type"].value, np.ones(n))


# --------------------------------------------------------------------------------------------
# Truncated and corrupted files: one line, non-zero exit, no traceback, no big allocation


def _assert_one_line_error(path):
    res = CliRunner().invoke(cli, ["inspect", str(path)])
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    return lines[0]


@pytest.fixture(scope="module")
def sample_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "s.gguf"
    build(path, extra=lambda w: (w.add_token_list([f"t{i}" for i in range(300)]), w.add_token_types([1] * 300)),
          tensors={"token_embd.weight": np.ones((8, 64), np.float32), "output_norm.weight": np.ones(64, np.float32)})
    data = path.read_bytes()
    ref = gguf.GGUFReader(path)
    return data, ref


def test_truncated_at_many_offsets(tmp_path, sample_bytes):
    data, ref = sample_bytes
    tok = ref.fields["tokenizer.ggml.tokens"]
    cuts = {
        0, 3, 10, 20, 30,  # magic, version, counts
        int(ref.fields["general.architecture"].offset) + 5,  # inside a key
        int(tok.offset) + 40, int(tok.offset) + 2000,  # inside the token array
        ref.data_offset - 20,  # inside the tensor infos
        ref.data_offset + 100, len(data) - 1,  # inside tensor data
    }
    for cut in sorted(cuts):
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(data[:cut])
        line = _assert_one_line_error(p)
        assert "GGUF" in line or "bytes" in line, line


def _patched(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def test_corrupted_headers(tmp_path, sample_bytes):
    data, ref = sample_bytes
    tok = ref.fields["tokenizer.ggml.tokens"]
    arch = ref.fields["general.architecture"]
    t0 = ref.tensors[0].field
    cases = {
        "magic": data[:0] + b"GGUX" + data[4:],
        "version1": _patched(data, 4, "<I", 1),
        "version99": _patched(data, 4, "<I", 99),
        "kv_count": _patched(data, 16, "<Q", 2**60),
        "tensor_count": _patched(data, 8, "<Q", 2**40),
        "key_length": _patched(data, int(arch.offset), "<Q", 2**62),
        "value_type": _patched(data, int(arch.offset) + 8 + len("general.architecture"), "<I", 77),
        "array_count": _patched(data, int(tok.offset) + 8 + len("tokenizer.ggml.tokens") + 8, "<Q", 2**59),
        "string_length": _patched(data, int(tok.offset) + 8 + len("tokenizer.ggml.tokens") + 16, "<Q", 2**63 + 5),
        "n_dims": _patched(data, int(t0.offset) + 8 + len(ref.tensors[0].name), "<I", 9),
        "tensor_type": _patched(data, int(t0.offset) + 8 + len(ref.tensors[0].name) + 4 + 16, "<I", 999),
        "misaligned": _patched(data, int(t0.offset) + 8 + len(ref.tensors[0].name) + 4 + 16 + 4, "<Q", 3),
        "beyond_file": _patched(data, int(t0.offset) + 8 + len(ref.tensors[0].name) + 4 + 16 + 4, "<Q", 2**40),
        "huge_dim": _patched(data, int(t0.offset) + 8 + len(ref.tensors[0].name) + 4, "<Q", 2**62),
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(blob)
        _assert_one_line_error(p)


def test_overlapping_tensors(tmp_path, sample_bytes):
    data, ref = sample_bytes
    t1 = ref.tensors[1].field
    off_pos = int(t1.offset) + 8 + len(ref.tensors[1].name) + 4 + 8 * len(ref.tensors[1].shape) + 4
    p = tmp_path / "overlap.gguf"
    p.write_bytes(_patched(data, off_pos, "<Q", 0))
    assert "overlap" in _assert_one_line_error(p)


def test_implausible_values_do_not_crash(tmp_path):
    """Values that would make huge arrays (rotary dim 2^31) or break the math (base 1) are reported, not run."""
    p1 = build(tmp_path / "d.gguf", d=2**31)
    p2 = build(tmp_path / "b.gguf", base=1.0)
    p3 = build(tmp_path / "h.gguf", n_head=2**31)
    for p in (p1, p2, p3):
        res = CliRunner().invoke(cli, ["inspect", "--json", str(p)])
        assert res.exit_code == 0, res.output
        rep = json.loads(res.output)
        assert any(x["id"] == "implausible-value" for x in rep["lint"])


def test_missing_file_and_folder(tmp_path):
    _assert_one_line_error(tmp_path / "nope.gguf")
    (tmp_path / "d.gguf").mkdir()
    res = CliRunner().invoke(cli, ["inspect", str(tmp_path / "d.gguf")])
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_library_raises_ropetool_error(tmp_path, sample_bytes):
    data, _ = sample_bytes
    p = tmp_path / "t.gguf"
    p.write_bytes(data[:50])
    with pytest.raises(RopetoolError):
        inspect_gguf(p)


def test_gemma3_summary_names_both_layer_kinds(tmp_path):
    """Both bases, the window and the pattern, in the text and in the JSON."""
    path = tmp_path / "g3.gguf"
    convert(fixture_dir("gemma3"), path, outtype="f32", method="linear", factor=8.0)
    report = inspect_gguf(path)
    sw = report["rope"]["sliding_window"]
    assert sw == {"window": 16, "layers": [0, 1, 2, 3, 4], "global_layers": [5], "pattern_source": "default",
                  "freq_base": 10000.0, "freq_base_source": "key", "freq_scale": 1.0, "magnitude": 1.0}
    assert report["rope"]["llama_cpp"]["freq_base"] == 1e6 and report["rope"]["llama_cpp"]["freq_scale"] == 0.125
    text = CliRunner().invoke(cli, ["inspect", str(path)]).output
    assert "global:     layers 5: freq_base 1e+06, freq_scale 0.125" in text
    assert "sliding:    layers 0-4 (pattern: default), window 16: freq_base 10000 (key), freq_scale 1" in text
    assert json.loads(CliRunner().invoke(cli, ["inspect", "--json", str(path)]).output)["rope"]["sliding_window"] == sw
