"""The numpy reference forward pass against transformers (torch, float32): the independent oracle.

Every expected number comes from transformers run on the same weights, configured with the same
rope (or, for the ALiBi methods transformers lacks, with its BLOOM slopes replaced by the published
formulas written out below).  Sequences are longer than the fixtures' original context (64).
Tolerance: max |diff| <= 1e-4 x max |logit|.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers.models.bloom.modeling_bloom as modeling_bloom  # noqa: E402
from conftest import tanh_gelu_  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import ropetool.reference as reference_module  # noqa: E402
from ropetool.convert import plan_conversion, write_gguf  # noqa: E402
from ropetool.errors import RopetoolError  # noqa: E402
from ropetool.families import family_for_config  # noqa: E402
from ropetool.io.gguf_file import NewValue  # noqa: E402
from ropetool.llamacpp import keys as K  # noqa: E402
from ropetool.llamacpp.archs import ARCHS  # noqa: E402
from ropetool.reference import ReferenceModel  # noqa: E402
from ropetool.rope import make_params  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "models"
ALL = sorted(p.name for p in FIXTURES.iterdir()  # transformers' own (Baichuan's, with an auto_map: test_baichuan.py)
             if (p / "config.json").exists() and "auto_map" not in json.loads((p / "config.json").read_text())
             and family_for_config(json.loads((p / "config.json").read_text())).reference)  # the families it runs
TOL = 1e-4
N = 160  # > 64, the fixtures' original context


def config_of(name: str) -> dict:
    return json.loads((FIXTURES / name / "config.json").read_text())


def token_ids(name: str, n: int = N) -> list[int]:
    vocab = config_of(name)["vocab_size"]
    return [int((i * 37 + 11) % (vocab - 8)) + 4 for i in range(n)]


def hf_logits(name: str, ids, rope_parameters: dict | None = None) -> np.ndarray:
    """transformers' float32 logits; a fresh model each call (dynamic rope keeps state between calls).  Its exact
    GELU (GPT-NeoX, Falcon, MPT) is swapped for the tanh one llama.cpp's graph, and so the reference, computes."""
    config = AutoConfig.from_pretrained(FIXTURES / name)
    if rope_parameters is not None:
        config.rope_parameters = dict(rope_parameters)
    if getattr(config, "max_seq_len", None) is not None:  # MPT builds its ALiBi bias for max_seq_len positions only
        config.max_seq_len = max(config.max_seq_len, len(ids))
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / name, config=config, dtype=torch.float32)
    model.eval()
    tanh_gelu_(model)
    ids = torch.tensor([list(ids)])
    with torch.no_grad():  # an explicit mask: BLOOM then builds its ALiBi tensor through build_alibi_tensor
        return model(ids, attention_mask=torch.ones_like(ids)).logits[0].double().numpy()


def rel_diff(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def assert_close(ours: np.ndarray, theirs: np.ndarray, tol: float = TOL) -> float:
    assert ours.shape == theirs.shape
    r = rel_diff(ours, theirs)
    assert r <= tol, f"max |diff| = {r:.3g} x max|logit| > {tol}"
    return r


_REF_CACHE: dict = {}


def reference(name: str, **options) -> ReferenceModel:
    key = (name, json.dumps(options, sort_keys=True))
    if key not in _REF_CACHE:
        _REF_CACHE[key] = ReferenceModel.from_hf(FIXTURES / name, **options)
    return _REF_CACHE[key]


def gguf_of(name: str, folder: Path, outtype: str = "f32", drop=(), add=None, **options) -> Path:
    """An f32 (or other) GGUF of a fixture, without vocabulary; ``drop``/``add`` edit its keys."""
    plan = plan_conversion(FIXTURES / name, outtype, approximate=True, with_vocab=False, **options)
    arch = plan.arch
    changed = {K.k(template, arch) for template in list(drop) + list(add or {})}
    plan.values = [v for v in plan.values if v.key not in changed]
    for template, value in (add or {}).items():
        vtype = gguf.GGUFValueType.STRING if isinstance(value, str) else gguf.GGUFValueType.FLOAT32
        plan.values.append(NewValue(K.k(template, arch), vtype, value))
    path = folder / f"{name}-{outtype}-{len(list(folder.iterdir()))}.gguf"
    return write_gguf(plan, path)


# --- every fixture, with its own rope, from the HF folder and from a GGUF ---------------------

@pytest.mark.parametrize("name", ALL)
def test_fixture_from_hf_matches_transformers(name):
    ids = token_ids(name)
    model = reference(name)
    ours = model.logits(ids)
    assert ours.dtype == np.float32 and ours.shape == (N, config_of(name)["vocab_size"])
    assert_close(ours, hf_logits(name, ids))


@pytest.mark.parametrize("name", ALL)
def test_fixture_from_gguf_matches_transformers(name, tmp_path):
    ids = token_ids(name)
    model = ReferenceModel.from_gguf(gguf_of(name, tmp_path))
    assert model.file_rope.source == "provenance"
    ours = model.logits(ids)
    assert_close(ours, hf_logits(name, ids))
    # The same data as the conversion plan: the same numbers.
    np.testing.assert_allclose(ours, reference(name).logits(ids), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_fixture_gguf_keys_alone_match_transformers(name, tmp_path):
    """Without ropetool's provenance keys, llama.cpp's keys and tensors (their documented meaning) suffice."""
    model = ReferenceModel.from_gguf(gguf_of(name, tmp_path), use_provenance=False)
    assert model.file_rope.source == "keys"
    # llama.cpp has no dynamic NTK: the file holds the base baked for 128 tokens (2 x 64), exact there.
    n = 128 if name == "llama-dynamic" else N
    ids = token_ids(name, n)
    assert_close(model.logits(ids), hf_logits(name, ids))


def test_dynamic_baked_keys_differ_at_other_lengths(tmp_path):
    model = ReferenceModel.from_gguf(gguf_of("llama-dynamic", tmp_path), use_provenance=False)
    ids = token_ids("llama-dynamic", N)
    assert rel_diff(model.logits(ids), hf_logits("llama-dynamic", ids)) > 100 * TOL


@pytest.mark.parametrize("outtype,tol", [("f16", 2e-3), ("bf16", 1e-2), ("q8_0", 3e-2)])
def test_quantized_gguf_dequantized(outtype, tol, tmp_path):
    ids = token_ids("qwen2")
    model = ReferenceModel.from_gguf(gguf_of("qwen2", tmp_path, outtype))
    assert_close(model.logits(ids), hf_logits("qwen2", ids), tol)
    assert rel_diff(model.logits(ids), hf_logits("qwen2", ids)) > 1e-6  # the weights really were rounded


def test_bf16_source_through_bf16_gguf_is_exact(tmp_path):
    ids = token_ids("mistral")  # the mistral fixture is stored in bf16: a bf16 GGUF loses nothing
    model = ReferenceModel.from_gguf(gguf_of("mistral", tmp_path, "bf16"))
    assert_close(model.logits(ids), hf_logits("mistral", ids))


# --- every rope type transformers has, on three layouts ----------------------------------------
# llama: "normal" pairs after the Q/K permutation; qwen3: neox pairs, head_dim 32 != n_embd/n_head;
# phi3: neox with partial rotary (8 of 16 dims), fused qkv and gate/up.

LAYOUTS = {
    # name: (base, rotary dim, extra rope_parameters transformers needs)
    "llama": (1e4, 16, {}),
    "qwen3": (1e6, 32, {}),
    "phi3": (1e4, 8, {"partial_rotary_factor": 0.5}),
}


def rope_cases(rot: int):
    j = np.arange(rot // 2)
    short = [float(x) for x in 1.0 + 0.25 * j]
    long = [float(x) for x in 1.5 + 2.0 * j]
    yarn = {"factor": 4.0, "original_max_position_embeddings": 64}
    return {
        # case: (method, rope_options, transformers rope_parameters, lengths)
        "default": ("none", {}, {"rope_type": "default"}, (N,)),
        "linear": ("linear", {"factor": 4.0}, {"rope_type": "linear", "factor": 4.0}, (N,)),
        # transformers' dynamic NTK scales from max_position_embeddings (see rope-methods.md):
        # the reference gets that as original_context; the length is the sequence length.
        "dynamic": ("dynamic-ntk", {"factor": 2.0}, {"rope_type": "dynamic", "factor": 2.0}, "dynamic"),
        "yarn": ("yarn", {"factor": 4.0, "original_context": 64}, {"rope_type": "yarn", **yarn}, (N,)),
        "yarn-betas-attn": (
            "yarn", {"factor": 4.0, "original_context": 64, "beta_fast": 8.0, "beta_slow": 2.0, "attention_factor": 1.3},
            {"rope_type": "yarn", **yarn, "beta_fast": 8.0, "beta_slow": 2.0, "attention_factor": 1.3}, (N,)),
        "yarn-factor-8": ("yarn", {"factor": 8.0, "original_context": 64},
                          {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64}, (N,)),
        "llama3": ("llama3", {"factor": 8.0, "original_context": 64, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
                   {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64,
                    "low_freq_factor": 1.0, "high_freq_factor": 4.0}, (N,)),
        # LongRoPE: the short table up to 64 tokens, the long one beyond.
        "longrope": ("longrope", {"factor": 4.0, "original_context": 64, "short_factor": short, "long_factor": long},
                     {"rope_type": "longrope", "factor": 4.0, "original_max_position_embeddings": 64,
                      "short_factor": short, "long_factor": long}, (48, N)),
    }


ROPE_GRID = [(layout, case) for layout in LAYOUTS for case in rope_cases(LAYOUTS[layout][1])]


@pytest.mark.parametrize("layout,case", ROPE_GRID, ids=[f"{a}-{b}" for a, b in ROPE_GRID])
def test_rope_types_match_transformers(layout, case):
    base, rot, extra = LAYOUTS[layout]
    method, options, hf_rope, lengths = rope_cases(rot)[case]
    max_pos = config_of(layout)["max_position_embeddings"]
    if lengths == "dynamic":
        options = {**options, "original_context": max_pos}
        lengths = (max_pos + max_pos // 2, 3 * max_pos)  # two lengths past max_position_embeddings
    hf_rope = {**hf_rope, "rope_theta": base, **extra}
    params = make_params(method, base=base, **options)

    # Through convert's options where llama.cpp can hold the method on this arch, else through rope=.
    try:
        converted = reference(layout, method=method, **options)
    except RopetoolError as e:  # qwen3/phi3 load no rope_freqs, qwen3 no rope_factors: llama3/longrope refused
        assert (layout, method) in {("qwen3", "llama3"), ("qwen3", "longrope"), ("phi3", "llama3")}, e
        converted = None
    plain = reference(layout)
    for n in lengths:
        ids = token_ids(layout, n)
        theirs = hf_logits(layout, ids, hf_rope)
        assert_close(plain.logits(ids, rope=params), theirs)
        if converted is not None:
            assert converted.rope.method == params.method
            assert_close(converted.logits(ids), theirs)


def test_dynamic_lengths_really_differ():
    """The two dynamic lengths above test different bases: the reference tracks the length."""
    model = reference("llama-dynamic")
    ids = token_ids("llama-dynamic", 192)
    short = model.logits(ids[:96])
    long = model.logits(ids)[:96]
    assert rel_diff(long, short) > 100 * TOL
    assert_close(long, hf_logits("llama-dynamic", ids)[:96])


def test_longrope_tables_switch_at_original_context():
    model = reference("phi3")
    ids = token_ids("phi3", 65)
    at_64 = model.logits(ids[:64])
    at_65 = model.logits(ids)[:64]
    assert rel_diff(at_65, at_64) > 100 * TOL
    assert_close(at_64, hf_logits("phi3", ids[:64]))
    assert_close(at_65, hf_logits("phi3", ids)[:64])


# --- the negative control: removing the rope must matter ---------------------------------------

SCALED = ["llama-linear", "llama-dynamic", "llama3", "llama-yarn", "qwen2", "phi3"]


@pytest.mark.parametrize("name", SCALED)
def test_rope_removed_differs_by_far_more_than_tolerance(name):
    ids = token_ids(name)
    model = reference(name)
    theirs = hf_logits(name, ids)
    removed = model.logits(ids, rope=make_params("none", base=model.rope.base))
    assert rel_diff(removed, theirs) > 100 * TOL
    assert_close(model.logits(ids), theirs)


def test_alibi_removed_differs():
    ids = token_ids("bloom")
    model = reference("bloom")
    assert rel_diff(model.logits(ids, rope=make_params("none")), hf_logits("bloom", ids)) > 100 * TOL


# --- ALiBi methods, against BLOOM with its slopes replaced by the published formulas -------------

def press_slopes(n_heads: int) -> list[float]:
    """ALiBi's slopes as published (ofirpress/attention_with_linear_biases, get_slopes)."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_2(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(closest) + press_slopes(2 * closest)[0::2][: n_heads - closest]


def alibi_pi(a):
    """ALiBi interpolation: every slope divided by a = L_infer / L_train."""
    return lambda H, L: [m / a for m in press_slopes(H)]


def ntk_alibi(a):
    """NTK-ALiBi (keezen/ntk_alibi): m_h * a^(-(h-1)/(H-1)), h = 1..H."""
    return lambda H, L: [m * a ** (-(h - 1) / (H - 1)) for h, m in enumerate(press_slopes(H), start=1)]


def dynamic_ntk_alibi(a0, l_train):
    """Dynamic NTK-ALiBi: NTK-ALiBi with a = max(a0 * L / L_train, 1), L the sequence length."""
    return lambda H, L: ntk_alibi(max(a0 * L / l_train, 1.0))(H, L)


def patched_alibi(slopes_for):
    """transformers' build_alibi_tensor with the slopes replaced (the bias itself, slope * key position, kept)."""

    def build_alibi_tensor(attention_mask, num_heads, dtype):
        build_alibi_tensor.calls += 1
        batch, seq = attention_mask.shape
        length = int(attention_mask.sum(-1).max())
        slopes = torch.tensor(slopes_for(num_heads, length), dtype=torch.float32)
        arange = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :]
        return (slopes[None, :, None] * arange).reshape(batch * num_heads, 1, seq).to(dtype)

    build_alibi_tensor.calls = 0
    return build_alibi_tensor


def test_bloom_slopes_are_the_published_ones():
    mask = torch.ones(1, 5)
    theirs = modeling_bloom.build_alibi_tensor(mask, 4, torch.float32)[:, 0, 1].numpy()
    np.testing.assert_allclose(theirs, press_slopes(4), rtol=1e-6)
    assert press_slopes(4) == [0.25, 0.0625, 0.015625, 0.00390625]


ALIBI_CASES = {
    "alibi": ({}, lambda: press_slopes_fn, (N,)),
    "alibi-interp": ({"alpha": 2.0}, lambda: alibi_pi(2.0), (N,)),
    "ntk-alibi": ({"alpha": 4.0}, lambda: ntk_alibi(4.0), (N,)),
    "dynamic-ntk-alibi": ({"alpha": 1.0, "original_context": 64}, lambda: dynamic_ntk_alibi(1.0, 64), (48, 100, N)),
}


def press_slopes_fn(H, L):
    return press_slopes(H)


@pytest.mark.parametrize("method", list(ALIBI_CASES))
def test_alibi_methods_match_patched_bloom(method, monkeypatch):
    options, slopes, lengths = ALIBI_CASES[method]
    model = reference("bloom", method=method, **options)
    assert model.rope.method == method and model.rope.alpha == options.get("alpha")
    patched = patched_alibi(slopes())
    monkeypatch.setattr(modeling_bloom, "build_alibi_tensor", patched)
    plain = reference("bloom")
    for n in lengths:
        ids = token_ids("bloom", n)
        theirs = hf_logits("bloom", ids)
        assert patched.calls > 0
        assert_close(model.logits(ids), theirs)
        assert_close(plain.logits(ids, rope=model.rope), theirs)
        # Plain ALiBi is not what was asked (slopes move less than rope angles do: a smaller, still clear gap),
        # except for dynamic NTK-ALiBi within L_train, where a = max(a0 L / L_train, 1) = 1.
        if method == "dynamic-ntk-alibi" and n <= 64:
            assert_close(plain.logits(ids), theirs)
        elif method != "alibi":
            assert rel_diff(plain.logits(ids), theirs) > 5 * TOL


# --- the documented meaning of llama.cpp's keys, on GGUFs written the way other tools write them --

def test_missing_scaling_type_means_linear(tmp_path):
    ids = token_ids("llama-linear")
    path = gguf_of("llama-linear", tmp_path, drop=K.RT_KEYS + (K.ROPE_SCALING_TYPE,))
    model = ReferenceModel.from_gguf(path)
    assert model.rope.method == "linear" and model.rope.factor == 2.0
    assert_close(model.logits(ids), hf_logits("llama-linear", ids))
    # ... and with no factor either, llama.cpp's freq_scale is 1: plain rope.
    path = gguf_of("llama-linear", tmp_path, drop=K.RT_KEYS + (K.ROPE_SCALING_TYPE, K.ROPE_SCALING_FACTOR))
    plain = {"rope_type": "default", "rope_theta": 1e4}
    assert_close(ReferenceModel.from_gguf(path).logits(ids), hf_logits("llama-linear", ids, plain))


def test_yarn_keys_beta_and_attn_factor(tmp_path):
    """yarn_beta_fast/slow and yarn_attn_factor (as llama.cpp's converter writes HF's attention_factor)."""
    ids = token_ids("qwen2")
    add = {K.ROPE_YARN_BETA_FAST: 8.0, K.ROPE_YARN_BETA_SLOW: 2.0, K.ROPE_YARN_ATTN_FACTOR: 1.3}
    model = ReferenceModel.from_gguf(gguf_of("qwen2", tmp_path, drop=K.RT_KEYS, add=add))
    hf_rope = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 64,
               "beta_fast": 8.0, "beta_slow": 2.0, "attention_factor": 1.3}
    assert_close(model.logits(ids), hf_logits("qwen2", ids, hf_rope))
    # rope.scaling.attn_factor multiplies the YaRN magnitude (0.1 ln 4 + 1): 1/that cancels it.
    cancel = {K.ROPE_SCALING_ATTN_FACTOR: 1.0 / (1.0 + 0.1 * math.log(4.0))}
    model = ReferenceModel.from_gguf(gguf_of("qwen2", tmp_path, drop=K.RT_KEYS, add=cancel))
    by_parts = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 64,
                "attention_factor": 1.0}
    assert_close(model.logits(ids), hf_logits("qwen2", ids, by_parts))


def test_phi3_as_llama_cpp_converts_it(tmp_path):
    """llama.cpp's converter writes phi3 with no scaling.type (so linear, factor 1), the long/short
    tensors and rope.scaling.attn_factor: the tables still apply, long beyond original_context_length."""
    path = gguf_of("phi3", tmp_path, drop=K.RT_KEYS + (K.ROPE_SCALING_TYPE,))
    model = ReferenceModel.from_gguf(path)
    assert model.rope.method == "linear" and model.file_rope.factors is not None
    for n in (48, N):
        ids = token_ids("phi3", n)
        assert_close(model.logits(ids), hf_logits("phi3", ids))


def test_rope_freqs_tensor_divides_frequencies(tmp_path):
    """llama3 as llama.cpp's converter writes it: type none + rope_freqs (no provenance)."""
    model = ReferenceModel.from_gguf(gguf_of("llama3", tmp_path, drop=K.RT_KEYS))
    assert model.rope.method == "none" and model.file_rope.rope_freqs is not None
    ids = token_ids("llama3")
    assert_close(model.logits(ids), hf_logits("llama3", ids))


def test_unknown_scaling_type_refused(tmp_path):
    path = gguf_of("llama", tmp_path, drop=K.RT_KEYS, add={K.ROPE_SCALING_TYPE: "ntk"})
    with pytest.raises(RopetoolError, match="scaling.type"):
        ReferenceModel.from_gguf(path)


# --- the API ------------------------------------------------------------------------------------

def test_api_float64_and_overrides():
    model = reference("llama-yarn")
    assert model.facts is ARCHS["llama"]
    assert model.rope == make_params("yarn", factor=4.0, original_context=64)
    ids = token_ids("llama-yarn")
    f32, f64 = model.logits(ids), model.logits(ids, dtype=np.float64)
    assert f64.dtype == np.float64
    assert rel_diff(f32, f64) < 1e-5
    assert_close(f64, hf_logits("llama-yarn", ids))
    # rope= is the same as converting with that method.
    linear = make_params("linear", factor=2.0)
    np.testing.assert_allclose(reference("llama").logits(ids, rope=linear),
                               reference("llama", method="linear", factor=2.0).logits(ids), rtol=0, atol=1e-6)
    with pytest.raises(RopetoolError):
        model.logits(ids, rope=make_params("alibi"))
    with pytest.raises(RopetoolError):
        reference("bloom").logits(ids, rope=linear)
    with pytest.raises(RopetoolError):
        model.logits([10**6])


def test_check_helpers(tmp_path):
    """What ``check`` asks of the reference: stored types, vocabulary size, original context, source weights."""
    quantized = ReferenceModel.from_gguf(gguf_of("llama-yarn", tmp_path, "q8_0"))
    types = {name: qtype for name, qtype, _ in quantized.tensor_types()}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    assert quantized.n_vocab == 384 and quantized.original_context == 64
    assert reference("llama").original_context == 64 and reference("bloom").original_context == 2048
    exact = quantized.with_weights_from(reference("llama-yarn"))
    assert exact.rope == quantized.rope and {q for _, q, _ in exact.tensor_types()} == {"F32"}
    ids = token_ids("llama-yarn")
    theirs = hf_logits("llama-yarn", ids)
    assert_close(exact.logits(ids), theirs)
    assert rel_diff(quantized.logits(ids), theirs) > 1e-4  # q8_0 rounding, gone with the source weights
    with pytest.raises(RopetoolError):
        quantized.with_weights_from(reference("qwen3"))


def test_positions_are_causal():
    """Appending tokens never changes earlier logits (for a method that does not depend on the length)."""
    model = reference("qwen3")
    ids = token_ids("qwen3", 80)
    np.testing.assert_allclose(model.logits(ids)[:50], model.logits(ids[:50]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["bloom", "qwen3"])
def test_query_blocks_give_the_same_logits(name, monkeypatch):
    """Long inputs are attended block by block (bounded memory); the blocks must not change the numbers."""
    model = reference(name)
    ids = token_ids(name)
    whole = model.logits(ids)
    monkeypatch.setattr(reference_module, "QUERY_BLOCK", 48)
    np.testing.assert_allclose(model.logits(ids), whole, rtol=0, atol=1e-6)
