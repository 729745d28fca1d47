"""The one reader of llama.cpp's semantics (ropetool/llamacpp/state.py), proved by running llama.cpp.

Each default or rule the reader applies is shown twice: llama.cpp gives the same logits for a file that
relies on it and for a file that spells the same setting out (or, where no twin exists, llama.cpp's
logits equal the reference's under the setting the reader resolves, and differ from the alternative
reading); and the reader, inspect and check say what llama.cpp did.  The files are written with gguf-py,
as other tools write them, without ropetool's record.
"""

from __future__ import annotations

import json
import math

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fixture_dir, llama_cpp_logits, token_ids

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.io.gguf_file import GGUFFile
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.readback import infer_method
from ropetool.llamacpp.state import KEYS, read_state
from ropetool.rope import ggml

T = gguf.GGUFValueType
ARCH = "llama"
N = 160  # tokens: past the fixture's original context of 64
SCALING = (K.ROPE_SCALING_TYPE, K.ROPE_SCALING_FACTOR, K.ROPE_SCALING_ORIG_CTX, K.ROPE_SCALING_ATTN_FACTOR,
           K.ROPE_SCALE_LINEAR, K.ROPE_FREQ_BASE)


def key(template: str) -> str:
    return K.k(template, ARCH)


def rewrite(src, dst, add: dict, drop=SCALING, tensors: dict | None = None):
    """Copy a GGUF with gguf-py without ropetool's record and the scaling keys, adding typed ``add`` keys."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(str(dst), ARCH)
    dropped = {key(t) for t in drop}
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name == "general.architecture" or name.startswith("ropetool.") or name in dropped:
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == T.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for template, (value, vtype) in add.items():
        writer.add_key_value(key(template), value, vtype)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data), raw_shape=list(reversed(t.shape.tolist())), raw_dtype=t.tensor_type)
    for name, arr in (tensors or {}).items():
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The llama fixture, f32, plain RoPE base 1e4 (what llama.cpp computes with no scaling at all)."""
    path = tmp_path_factory.mktemp("state") / "plain.gguf"
    convert(fixture_dir("llama"), path, outtype="f32", method="none")
    return path


def logits(path):
    return llama_cpp_logits(path, token_ids(N, 384), n_ctx=256)


def state(path, reading="llama.cpp"):
    with GGUFFile(path) as gf:
        return read_state(gf, reading)


def inspect_json(path):
    result = CliRunner().invoke(cli, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["rope"]


F32 = T.FLOAT32
BASE = {K.ROPE_FREQ_BASE: (10000.0, F32)}


def test_factor_key_zero_wins_over_legacy_scale_linear(plain, tmp_path):
    """load_hparams reads rope.scaling.factor when the key exists (0 means 1) and the legacy scale_linear only
    when it is absent: factor 0 + scale_linear 2, no type, is plain RoPE in llama.cpp."""
    both = rewrite(plain, tmp_path / "both.gguf", {**BASE, K.ROPE_SCALING_FACTOR: (0.0, F32), K.ROPE_SCALE_LINEAR: (2.0, F32)})
    legacy = rewrite(plain, tmp_path / "legacy.gguf", {**BASE, K.ROPE_SCALE_LINEAR: (2.0, F32)})
    linear2 = rewrite(plain, tmp_path / "linear2.gguf", {**BASE, K.ROPE_SCALING_TYPE: ("linear", T.STRING),
                                                        K.ROPE_SCALING_FACTOR: (2.0, F32)})
    bare = rewrite(plain, tmp_path / "bare.gguf", BASE)
    np.testing.assert_array_equal(logits(both), logits(bare))  # the ground truth: scale 1
    np.testing.assert_array_equal(logits(legacy), logits(linear2))  # scale_linear counts when factor is absent
    assert np.abs(logits(legacy) - logits(bare)).max() > 1e-3
    st = state(both)
    assert st.freq_scale == 1.0 and st.factor is None and st.scaling_type == "linear"
    assert state(legacy).freq_scale == 0.5 and state(legacy).factor_source == "scale_linear"
    r = inspect_json(both)
    assert r["llama_cpp"]["freq_scale"] == 1.0 and r["method"] == "none"
    assert inspect_json(legacy)["method"] == "linear" and inspect_json(legacy)["factor"] == 2.0


def test_missing_type_is_linear_and_type_none_ignores_the_factor(plain, tmp_path):
    untyped = rewrite(plain, tmp_path / "untyped.gguf", {**BASE, K.ROPE_SCALING_FACTOR: (4.0, F32)})
    linear4 = rewrite(plain, tmp_path / "linear4.gguf", {**BASE, K.ROPE_SCALING_TYPE: ("linear", T.STRING),
                                                        K.ROPE_SCALING_FACTOR: (4.0, F32)})
    none4 = rewrite(plain, tmp_path / "none4.gguf", {**BASE, K.ROPE_SCALING_TYPE: ("none", T.STRING),
                                                    K.ROPE_SCALING_FACTOR: (4.0, F32)})
    bare = rewrite(plain, tmp_path / "bare.gguf", BASE)
    np.testing.assert_array_equal(logits(untyped), logits(linear4))
    np.testing.assert_array_equal(logits(none4), logits(bare))
    assert state(untyped).scaling_type == "linear" and state(untyped).freq_scale == 0.25
    assert state(none4).freq_scale == 1.0 and infer_method(state(none4)).method == "none"


def test_yarn_original_context_defaults_to_context_length(plain, tmp_path):
    ctx = GGUFFile(plain).get(key(K.CONTEXT_LENGTH))
    yarn = {**BASE, K.ROPE_SCALING_TYPE: ("yarn", T.STRING), K.ROPE_SCALING_FACTOR: (4.0, F32)}
    implicit = rewrite(plain, tmp_path / "implicit.gguf", yarn)
    explicit = rewrite(plain, tmp_path / "explicit.gguf", {**yarn, K.ROPE_SCALING_ORIG_CTX: (ctx, T.UINT32)})
    other = rewrite(plain, tmp_path / "other.gguf", {**yarn, K.ROPE_SCALING_ORIG_CTX: (32, T.UINT32)})
    np.testing.assert_array_equal(logits(implicit), logits(explicit))
    assert np.abs(logits(other) - logits(implicit)).max() > 1e-3
    assert state(implicit).n_ctx_orig == ctx and state(implicit).orig_ctx_key is None


def test_yarn_beta_fast_is_ignored_on_llama(plain, tmp_path):
    yarn = {**BASE, K.ROPE_SCALING_TYPE: ("yarn", T.STRING), K.ROPE_SCALING_FACTOR: (4.0, F32),
            K.ROPE_SCALING_ORIG_CTX: (64, T.UINT32)}
    native = rewrite(plain, tmp_path / "native.gguf", yarn)
    beta8 = rewrite(plain, tmp_path / "beta8.gguf", {**yarn, K.ROPE_YARN_BETA_FAST: (8.0, F32)})
    np.testing.assert_array_equal(logits(beta8), logits(native))
    st, documented = state(beta8), state(beta8, KEYS)
    assert st.beta_fast == 32.0 and documented.beta_fast == 8.0
    assert [i.key for i in st.ignored] == [key(K.ROPE_YARN_BETA_FAST)]


def test_yarn_attention_factor_and_rope_attn_factor(plain, tmp_path):
    """llama_context: YaRN's magnitude is 0.1 ln s + 1 (HF's), times rope.scaling.attn_factor: a yarn file with
    attn_factor 1/(0.1 ln 4 + 1) has magnitude 1, the same angles and so equals NTK-by-parts written that way."""
    yarn = {**BASE, K.ROPE_SCALING_TYPE: ("yarn", T.STRING), K.ROPE_SCALING_FACTOR: (4.0, F32),
            K.ROPE_SCALING_ORIG_CTX: (64, T.UINT32)}
    cancel = 1.0 / (1.0 + 0.1 * math.log(4.0))
    by_parts = rewrite(plain, tmp_path / "byparts.gguf", {**yarn, K.ROPE_SCALING_ATTN_FACTOR: (cancel, F32)})
    full = rewrite(plain, tmp_path / "yarn.gguf", yarn)
    assert abs(state(full).magnitude - (1 + 0.1 * math.log(4.0))) < 1e-12
    assert abs(state(by_parts).magnitude - 1.0) < 1e-7
    assert infer_method(state(by_parts)).method == "ntk-by-parts" and infer_method(state(full)).method == "yarn"
    # The reader's magnitude is what llama.cpp applies: the reference under each reading matches llama.cpp.
    from ropetool.reference import FileRope, ReferenceModel

    for path in (full, by_parts):
        model = ReferenceModel.from_gguf(path)
        model.file_rope = FileRope(model.rope, "keys", state(path))
        ours = model.logits(token_ids(N, 384))
        assert np.abs(ours - logits(path)).max() < 1e-4 * np.abs(ours).max()
    assert np.abs(logits(full) - logits(by_parts)).max() > 1e-3


def test_ggml_ramp_guard_when_the_correction_range_is_empty(plain, tmp_path):
    """ggml clamps the YaRN correction dims to [0, d-1] and divides by max(0.001, high - low): with a small base
    and a huge original context, low > high and every pair keeps its original angle (transformers' guard would
    interpolate them all).  llama.cpp then computes plain RoPE scaled by YaRN's magnitude."""
    base = 100.0
    yarn = {K.ROPE_FREQ_BASE: (base, F32), K.ROPE_SCALING_TYPE: ("yarn", T.STRING), K.ROPE_SCALING_FACTOR: (4.0, F32),
            K.ROPE_SCALING_ORIG_CTX: (10_000_000, T.UINT32)}
    path = rewrite(plain, tmp_path / "guard.gguf", yarn)
    st = state(path)
    low, high = st.correction_range()
    assert low > high
    np.testing.assert_allclose(st.inv_freq(), base ** (-np.arange(0, 16, 2) / 16), rtol=1e-12)
    twin = rewrite(plain, tmp_path / "twin.gguf", {K.ROPE_FREQ_BASE: (base, F32), K.ROPE_SCALING_TYPE: ("none", T.STRING),
                                                  K.ROPE_SCALING_ATTN_FACTOR: (st.magnitude, F32)})
    a, b = logits(path), logits(twin)
    assert np.abs(a - b).max() < 1e-5 * np.abs(a).max()
    # transformers' rule (methods.yarn_ramp) would interpolate every pair instead.
    from ropetool.rope import make_params, yarn_ramp

    assert yarn_ramp(make_params("yarn", base=base, factor=4.0, original_context=10_000_000), 16).min() == 1.0
    assert ggml.ramp(low, high, 8).min() == 1.0  # ggml: 1 = keep the original angle


def test_plain_file_written_by_llama_cpp_is_named_the_same_everywhere(plain, tmp_path):
    """No rope.scaling.type and no factor (as llama.cpp's converter writes a plain model): type linear by default,
    scale 1; inspect, set-rope and check all call it plain RoPE."""
    bare = rewrite(plain, tmp_path / "bare.gguf", BASE)
    st = state(bare)
    assert st.scaling_type == "linear" and st.scaling_type_raw is None and st.freq_scale == 1.0
    assert infer_method(st).method == "none" and inspect_json(bare)["method"] == "none"
