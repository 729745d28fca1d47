"""Lint rules: every rule has a file that triggers it and a near-identical one that does not.

The facts the rules rest on (what llama.cpp ignores, refuses or defaults) are checked against
llama.cpp itself (llama-cpp-python) at the end of this file.
"""

from __future__ import annotations

import json
import subprocess
import sys

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fixture_dir, llama_cpp_logits, token_ids
from test_inspect import build, llama_cpp_llama3_rope_freqs

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import set_keys, unset_keys
from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import GGUFFile, TensorOut, write_gguf
from ropetool.lint import RULES, Finding
from ropetool.llamacpp import keys as K
from ropetool.model import lint_gguf

R = gguf.Keys.Rope


def key(template: str, arch: str = "llama") -> str:
    return template.format(arch=arch)


def emb(n_embd=64):
    return {"token_embd.weight": np.zeros((8, n_embd), np.float32)}


def yarn(factor=4.0, orig=1024):
    def f(w):
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        if orig:
            w.add_rope_scaling_orig_ctx_len(orig)
    return f


def _temperature(w):
    w.add_float32(K.k(K.ATTENTION_TEMPERATURE_SCALE, "mistral3"), 0.1)


def provenance(method: str, params: dict):
    def f(w):
        w.add_string(K.RT_METHOD, method)
        w.add_string(K.RT_PARAMS, json.dumps({"method": method, **params}))
        w.add_bool(K.RT_EXACT, True)
    return f


def both(*fs):
    def f(w):
        for g in fs:
            g(w)
    return f


def _llama3(tmp, with_tensor):
    ff = llama_cpp_llama3_rope_freqs(500000.0, 16, 8.0, 1.0, 4.0, 64)
    t = {**emb(), "rope_freqs.weight": ff} if with_tensor else emb()
    return build(tmp / "l3.gguf", ctx=512, base=500000.0, tensors=t,
                 extra=both(lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.NONE),
                            lambda w: w.add_rope_scaling_orig_ctx_len(64),
                            provenance("llama3", {"base": 500000.0, "factor": 8.0, "original_context": 64})))


def _swapped_layout(tmp, swap):
    path = build(tmp / "lay.gguf", tensors={"a.weight": np.ones(64, np.float32), "b.weight": np.zeros(64, np.float32)})
    if swap:
        reader = gguf.GGUFReader(path, "r+")
        offs = [t.field.parts[-1] for t in reader.tensors]
        offs[0][0], offs[1][0] = int(offs[1][0]), int(offs[0][0])
        del reader
    return path


def _no_arch(tmp, drop):
    path = build(tmp / "a.gguf")
    if not drop:
        return path
    unset_keys(path, [K.ARCHITECTURE], tmp / "noarch.gguf", force=True)
    return tmp / "noarch.gguf"


def _without_key(tmp, drop, template):
    path = build(tmp / "k.gguf")
    if not drop:
        return path
    unset_keys(path, [key(template)], tmp / "dropped.gguf", force=True)
    return tmp / "dropped.gguf"


def _gemma3_window(tmp, window):
    path = tmp / "g3.gguf"
    convert(fixture_dir("gemma3"), path, outtype="f32", method="linear", factor=4.0)
    set_keys(path, [f"gemma3.attention.sliding_window=u32:{window}"], tmp / "w.gguf")
    return tmp / "w.gguf"


def _without_tensor(tmp, drop):
    path = build(tmp / "t.gguf")
    if not drop:
        return path
    with GGUFFile(path) as gf:
        write_gguf(tmp / "dropped.gguf", list(gf.fields.values()),
                   [TensorOut.copy_of(t) for t in gf.tensors if t.name != "blk.0.ffn_up.weight"], source=gf)
    return tmp / "dropped.gguf"


def _converted_yarn(tmp, edit):
    path = tmp / "y.gguf"
    convert(fixture_dir("llama-yarn"), path, outtype="f32")
    if not edit:
        return path
    set_keys(path, [f"{key(R.SCALING_FACTOR)}=f32:2"], tmp / "edited.gguf")
    return tmp / "edited.gguf"


def _longrope(tmp, tensors):
    t = {**emb(), "rope_factors_long.weight": np.full(8, 2.0, np.float32),
         "rope_factors_short.weight": np.ones(8, np.float32)} if tensors else emb()
    return build(tmp / "lr.gguf", tensors=t, extra=both(lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE),
                                                       lambda w: w.add_rope_scaling_orig_ctx_len(1024)))


def _tokenizer(model="gpt2", pre="gpt-2", token_types=8, bos=1):
    """A tokenizer of the 8 tokens the builder's embedding has (the keys llama.cpp's vocabulary loader reads)."""
    def f(w):
        w.add_string(K.TOKENIZER_MODEL, model)
        w.add_string(K.TOKENIZER_PRE, pre)
        w.add_array(K.TOKENIZER_TOKENS, [f"t{i}" for i in range(8)])
        w.add_array(K.TOKENIZER_TOKEN_TYPE, [1] * token_types)
        w.add_array(K.TOKENIZER_MERGES, ["t 0"])
        w.add_uint32(K.SPECIAL_TOKEN_IDS[0], bos)
    return f


# rule -> (a builder that triggers it, a near-identical builder that does not)
CASES = {
    "unknown-tensor": (lambda t: build(t / "x.gguf", tensors={**emb(), "outputxweight": np.ones(4, np.float32)}),
                       lambda t: build(t / "x.gguf", tensors={**emb(), "output_norm.weight": np.ones(64, np.float32)})),
    "unknown-tokenizer": (lambda t: build(t / "x.gguf", extra=_tokenizer(pre="bogus")),
                          lambda t: build(t / "x.gguf", extra=_tokenizer())),
    "tokenizer-array-length": (lambda t: build(t / "x.gguf", extra=_tokenizer(token_types=7)),
                               lambda t: build(t / "x.gguf", extra=_tokenizer(token_types=9))),
    "special-token-out-of-range": (lambda t: build(t / "x.gguf", extra=_tokenizer(bos=8)),
                                   lambda t: build(t / "x.gguf", extra=_tokenizer(bos=7))),
    "unknown-scaling-type": (
        lambda t: build(t / "x.gguf", extra=lambda w: w.add_string(key(R.SCALING_TYPE), "dynamic")),
        lambda t: build(t / "x.gguf", extra=lambda w: w.add_string(key(R.SCALING_TYPE), "linear")),
    ),
    "wrong-key-type": (
        lambda t: build(t / "x.gguf", base=None, extra=lambda w: w.add_float64(key(R.FREQ_BASE), 10000.0)),
        lambda t: build(t / "x.gguf", base=None, extra=lambda w: w.add_float32(key(R.FREQ_BASE), 10000.0)),
    ),
    "missing-architecture": (lambda t: _no_arch(t, True), lambda t: _no_arch(t, False)),
    "missing-context-length": (lambda t: build(t / "x.gguf", ctx=None), lambda t: build(t / "x.gguf")),
    "missing-key": (lambda t: _without_key(t, True, K.BLOCK_COUNT), lambda t: _without_key(t, False, K.BLOCK_COUNT)),
    "missing-tensor": (lambda t: _without_tensor(t, True), lambda t: _without_tensor(t, False)),
    "shape-mismatch": (
        lambda t: build(t / "x.gguf", tensors={"token_embd.weight": np.zeros((8, 32), np.float32)}),
        lambda t: build(t / "x.gguf", tensors={"token_embd.weight": np.zeros((8, 64), np.float32)}),
    ),
    "rope-tensor-shape": (
        lambda t: build(t / "x.gguf", tensors={**emb(), "rope_freqs.weight": np.ones(7, np.float32)}),
        lambda t: build(t / "x.gguf", tensors={**emb(), "rope_freqs.weight": np.ones(8, np.float32)}),
    ),
    "implausible-value": (lambda t: build(t / "x.gguf", base=1.0), lambda t: build(t / "x.gguf", base=10000.0)),
    "rope-dim-mismatch": (lambda t: build(t / "x.gguf", "qwen2", d=8), lambda t: build(t / "x.gguf", "phi3", d=8)),
    "llama3-without-rope-freqs": (lambda t: _llama3(t, False), lambda t: _llama3(t, True)),
    "rope-tensor-unused": (
        lambda t: build(t / "x.gguf", "qwen2", tensors={**emb(), "rope_freqs.weight": np.ones(8, np.float32)}),
        lambda t: build(t / "x.gguf", "llama", tensors={**emb(), "rope_freqs.weight": np.ones(8, np.float32)}),
    ),
    "tensor-layout": (lambda t: _swapped_layout(t, True), lambda t: _swapped_layout(t, False)),
    "yarn-no-original-context": (
        lambda t: build(t / "x.gguf", extra=yarn(orig=None)), lambda t: build(t / "x.gguf", extra=yarn()),
    ),
    "ignored-key": (
        lambda t: build(t / "x.gguf", extra=both(yarn(), lambda w: w.add_rope_scaling_yarn_beta_fast(8.0))),
        lambda t: build(t / "x.gguf", "grok", extra=both(yarn(), lambda w: w.add_rope_scaling_yarn_beta_fast(8.0))),
    ),
    "alibi-key-ignored": (
        lambda t: build(t / "x.gguf", "bloom", rope_dim=False, base=None, extra=lambda w: w.add_max_alibi_bias(8.0)),
        lambda t: build(t / "x.gguf", "mpt", rope_dim=False, base=None, extra=lambda w: w.add_max_alibi_bias(8.0)),
    ),
    # baichuan's graph: rope only at 32 layers, ALiBi only at 40 (the builder writes 1 block); llama always rotates.
    "no-position-encoding": (lambda t: build(t / "x.gguf", "baichuan"), lambda t: build(t / "x.gguf", "llama")),
    "context-length-mismatch": (
        lambda t: build(t / "x.gguf", ctx=1024, extra=yarn(4.0, 1024)),
        lambda t: build(t / "x.gguf", ctx=4096, extra=yarn(4.0, 1024)),
    ),
    "sliding-window-past-training": (lambda t: _gemma3_window(t, 128), lambda t: _gemma3_window(t, 32)),
    # mistral3's attention temperature: its period is rope.scaling.original_context_length, else context_length
    "temperature-period-from-context": (
        lambda t: build(t / "x.gguf", "mistral3", extra=_temperature),
        lambda t: build(t / "x.gguf", "mistral3", extra=both(_temperature, lambda w: w.add_rope_scaling_orig_ctx_len(1024))),
    ),
    "legacy-scale-linear": (
        lambda t: build(t / "x.gguf", extra=lambda w: w.add_float32(key(K.ROPE_SCALE_LINEAR), 2.0)),
        lambda t: build(t / "x.gguf", extra=lambda w: (w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR),
                                                       w.add_rope_scaling_factor(2.0))),
    ),
    "factor-without-type": (
        lambda t: build(t / "x.gguf", extra=lambda w: w.add_rope_scaling_factor(4.0)),
        lambda t: build(t / "x.gguf", extra=lambda w: (w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR),
                                                       w.add_rope_scaling_factor(4.0))),
    ),
    "longrope-factors-missing": (lambda t: _longrope(t, False), lambda t: _longrope(t, True)),
    "provenance-mismatch": (lambda t: _converted_yarn(t, True), lambda t: _converted_yarn(t, False)),
    # An architecture name llama.cpp does not know (every name it knows has a loader record).
    "unknown-architecture": (lambda t: build(t / "x.gguf", "future-arch"), lambda t: build(t / "x.gguf", "llama")),
}


# Hybrid models (issue 25), on the qwen35 fixture: a multi-section rope's sections that leave a pair at position 0, a
# file whose every layer is recurrent, and an extension (which reaches the attention layers only).
def _qwen35(t, sections=None, recurrent=None, **rope):
    out = t / "q.gguf"
    convert(fixture_dir("qwen35"), out, outtype="f32", **rope)
    edits = ([f"qwen35.rope.dimension_sections=arr[i32]:{sections}"] if sections else []) + (
        [f"qwen35.attention.recurrent_layers=arr[bool]:{recurrent}"] if recurrent else [])
    if edits:
        set_keys(out, edits, t / "e.gguf", force=True)
        return t / "e.gguf"
    return out


CASES.update({
    "sections-leave-pairs-still": (lambda t: _qwen35(t, sections="3,2,3,0"), lambda t: _qwen35(t, sections="3,3,2,0")),
    "no-attention-layer": (lambda t: _qwen35(t, recurrent="true,true,true,true"),
                           lambda t: _qwen35(t, recurrent="true,true,true,false")),
    "extension-reaches-attention-only": (lambda t: _qwen35(t, method="yarn", factor=4.0), lambda t: _qwen35(t)),
})


# Runtime rope flags against sliding-window layers: the gemma3 fixture's (window 16 on layers 0-4), and the same file with
# no window (gemma3 then runs every layer global).
def _gemma3_sliding(t, sliding):
    path = t / "g3.gguf"
    convert(fixture_dir("gemma3"), path, outtype="f32")
    if sliding:
        return path
    unset_keys(path, ["gemma3.attention.sliding_window"], t / "global.gguf", force=True)
    return t / "global.gguf"


CASES["runtime-flags-miss-sliding"] = (lambda t: _gemma3_sliding(t, True), lambda t: _gemma3_sliding(t, False))


def test_every_rule_has_cases():
    assert set(CASES) == set(RULES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_triggers(tmp_path, rule):
    findings = lint_gguf(CASES[rule][0](tmp_path))
    hits = [f for f in findings if f.id == rule]
    assert hits, [str(f) for f in findings]
    f = hits[0]
    assert isinstance(f, Finding) and f.severity == RULES[rule][0]
    assert f.message and "\n" not in f.message


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_quiet(tmp_path, rule):
    findings = lint_gguf(CASES[rule][1](tmp_path))
    assert rule not in {f.id for f in findings}, [str(f) for f in findings]


def test_ignored_key_names_the_key(tmp_path):
    findings = lint_gguf(CASES["ignored-key"][0](tmp_path))
    assert any(f.id == "ignored-key" and f.key == key(R.SCALING_YARN_BETA_FAST) for f in findings)


@pytest.mark.parametrize("name", ["llama", "llama-yarn", "llama3", "llama-linear", "llama-dynamic", "qwen2", "qwen3",
                                  "phi3", "bloom", "mistral"])
def test_converted_fixtures_are_clean(tmp_path, name):
    path = tmp_path / "m.gguf"
    options = {"target_context": 128} if name == "llama-dynamic" else {}
    convert(fixture_dir(name), path, outtype="f16", **options)
    assert lint_gguf(path) == []


def test_strict_exit_codes(tmp_path):
    bad = CASES["yarn-no-original-context"][0](tmp_path)
    res = CliRunner().invoke(cli, ["inspect", str(bad)])
    assert res.exit_code == 0 and "yarn-no-original-context" in res.output
    res = CliRunner().invoke(cli, ["inspect", "--strict", str(bad)])
    assert res.exit_code == 1
    res = CliRunner().invoke(cli, ["inspect", "--strict", "--json", str(bad)])
    assert res.exit_code == 1
    good = build(tmp_path / "good.gguf")
    assert CliRunner().invoke(cli, ["inspect", "--strict", str(good)]).exit_code == 0
    info_only = build(tmp_path / "g.gguf", "gemma")  # info findings never fail --strict
    assert CliRunner().invoke(cli, ["inspect", "--strict", str(info_only)]).exit_code == 0


def test_json_lists_findings(tmp_path):
    bad = CASES["ignored-key"][0](tmp_path)
    rep = json.loads(CliRunner().invoke(cli, ["inspect", "--json", str(bad)]).output)
    ids = [x["id"] for x in rep["lint"]]
    assert "ignored-key" in ids
    assert set(rep["lint"][0]) == {"id", "severity", "message", "key"}


# --------------------------------------------------------------------------------------------
# The llama.cpp facts behind the rules, checked against llama.cpp itself


llama_cpp = pytest.importorskip("llama_cpp")
N = 100  # tokens; longer than the fixtures' original context of 64


@pytest.fixture(scope="module")
def llama_f32(tmp_path_factory):
    path = tmp_path_factory.mktemp("l") / "llama.gguf"
    convert(fixture_dir("llama"), path, outtype="f32")
    return path


def _edited(src, out, assignments, force=False):
    set_keys(src, assignments, out, force=force)
    return out


def test_llama_cpp_ignores_yarn_beta_fast_on_llama(tmp_path, llama_f32):
    ids = token_ids(N, 384)
    base = [f"{key(R.SCALING_TYPE)}=str:yarn", f"{key(R.SCALING_FACTOR)}=f32:4", f"{key(R.SCALING_ORIG_CTX_LEN)}=u32:64",
            f"{key(gguf.Keys.LLM.CONTEXT_LENGTH)}=u32:256"]
    a = _edited(llama_f32, tmp_path / "a.gguf", base + [f"{key(R.SCALING_YARN_BETA_FAST)}=f32:8"])
    b = _edited(llama_f32, tmp_path / "b.gguf", base + [f"{key(R.SCALING_YARN_BETA_FAST)}=f32:32"])
    np.testing.assert_array_equal(llama_cpp_logits(a, ids), llama_cpp_logits(b, ids))
    assert any(f.id == "ignored-key" for f in lint_gguf(a))


def test_ignored_beta_keys_name_the_values_llama_cpp_uses(tmp_path, llama_f32):
    """The warning says what llama.cpp uses instead: the values in its own rope ops (read from its graph)."""
    from ropetool.llamacpp.graph import run_graph

    base = [f"{key(R.SCALING_TYPE)}=str:yarn", f"{key(R.SCALING_FACTOR)}=f32:4", f"{key(R.SCALING_ORIG_CTX_LEN)}=u32:64",
            f"{key(gguf.Keys.LLM.CONTEXT_LENGTH)}=u32:256"]
    a = _edited(llama_f32, tmp_path / "a.gguf", base + [f"{key(R.SCALING_YARN_BETA_FAST)}=f32:8",
                                                        f"{key(R.SCALING_YARN_BETA_SLOW)}=f32:2"])
    op = run_graph(a, [0], 4).ropes[0]
    said = {f.key: f.message for f in lint_gguf(a) if f.id == "ignored-key"}
    assert said[key(R.SCALING_YARN_BETA_FAST)].endswith(f": it uses {op.beta_fast:g}")
    assert said[key(R.SCALING_YARN_BETA_SLOW)].endswith(f": it uses {op.beta_slow:g}")


def test_context_length_left_at_the_trained_length_names_the_cap(tmp_path, llama_f32):
    """A YaRN x4 file whose context_length stayed at the trained 64: llama.cpp itself reports 64 as the model's
    training context (llama_model_n_ctx_train, what llama-server caps each slot at: tools/server/server-context.cpp)."""
    import llama_cpp as L

    base = [f"{key(R.SCALING_TYPE)}=str:yarn", f"{key(R.SCALING_FACTOR)}=f32:4", f"{key(R.SCALING_ORIG_CTX_LEN)}=u32:64",
            f"{key(gguf.Keys.LLM.CONTEXT_LENGTH)}=u32:64"]
    a = _edited(llama_f32, tmp_path / "a.gguf", base)
    found = [f for f in lint_gguf(a) if f.id == "context-length-mismatch"]
    assert len(found) == 1 and "llama-server caps each slot's context at 64" in found[0].message
    params = L.llama_model_default_params()
    model = L.llama_model_load_from_file(str(a).encode(), params)
    try:
        assert L.llama_model_n_ctx_train(model) == 64
    finally:
        L.llama_model_free(model)
    extended = _edited(llama_f32, tmp_path / "b.gguf", base[:-1] + [f"{key(gguf.Keys.LLM.CONTEXT_LENGTH)}=u32:256"])
    assert not [f for f in lint_gguf(extended) if f.id == "context-length-mismatch"]


def test_llama_cpp_defaults_missing_type_to_linear(tmp_path, llama_f32):
    ids = token_ids(N, 384)
    src = tmp_path / "notype.gguf"
    unset_keys(llama_f32, [key(R.SCALING_TYPE)], src)
    a = _edited(src, tmp_path / "a.gguf", [f"{key(R.SCALING_FACTOR)}=f32:4"])
    b = _edited(llama_f32, tmp_path / "b.gguf", [f"{key(R.SCALING_TYPE)}=str:linear", f"{key(R.SCALING_FACTOR)}=f32:4"])
    la, lb = llama_cpp_logits(a, ids), llama_cpp_logits(b, ids)
    np.testing.assert_array_equal(la, lb)
    assert np.abs(la - llama_cpp_logits(llama_f32, ids)).max() > 1e-3  # the factor does act
    assert any(f.id == "factor-without-type" for f in lint_gguf(a))


def test_llama_cpp_yarn_without_original_uses_context_length(tmp_path, llama_f32):
    ids = token_ids(N, 384)
    yarn_keys = [f"{key(R.SCALING_TYPE)}=str:yarn", f"{key(R.SCALING_FACTOR)}=f32:4",
                 f"{key(gguf.Keys.LLM.CONTEXT_LENGTH)}=u32:256"]
    a = _edited(llama_f32, tmp_path / "a.gguf", yarn_keys)
    b = _edited(llama_f32, tmp_path / "b.gguf", yarn_keys + [f"{key(R.SCALING_ORIG_CTX_LEN)}=u32:256"])
    c = _edited(llama_f32, tmp_path / "c.gguf", yarn_keys + [f"{key(R.SCALING_ORIG_CTX_LEN)}=u32:64"])
    la = llama_cpp_logits(a, ids)
    np.testing.assert_array_equal(la, llama_cpp_logits(b, ids))
    assert np.abs(la - llama_cpp_logits(c, ids)).max() > 1e-3


def test_llama_cpp_ignores_alibi_key_on_bloom(tmp_path):
    ids = token_ids(N, 320)
    src = tmp_path / "bloom.gguf"
    convert(fixture_dir("bloom"), src, outtype="f32")
    a = _edited(src, tmp_path / "a.gguf", [f"{key(gguf.Keys.Attention.MAX_ALIBI_BIAS, 'bloom')}=f32:2"])
    np.testing.assert_array_equal(llama_cpp_logits(a, ids), llama_cpp_logits(src, ids))
    assert any(f.id == "alibi-key-ignored" for f in lint_gguf(a))


@pytest.mark.parametrize("assignment", [f"{key(R.FREQ_BASE)}=f64:10000", f"{key(R.SCALING_ORIG_CTX_LEN)}=i32:64"])
def test_llama_cpp_refuses_wrong_key_types(tmp_path, llama_f32, assignment):
    with pytest.raises(RopetoolError, match="is read by llama.cpp as"):  # set refuses without --force
        _edited(llama_f32, tmp_path / "bad.gguf", [assignment])
    bad = _edited(llama_f32, tmp_path / "bad.gguf", [assignment], force=True)
    assert any(f.id == "wrong-key-type" for f in lint_gguf(bad))
    with pytest.raises((ValueError, RuntimeError)):
        llama_cpp_logits(bad, token_ids(8, 384))


def _with_tensor(src, out, name, arr):
    with GGUFFile(src) as gf:
        write_gguf(out, list(gf.fields.values()), [TensorOut.copy_of(t) for t in gf.tensors] + [TensorOut.from_array(name, arr)],
                   source=gf)
    return out


def test_llama_cpp_refuses_unused_and_misshapen_rope_tensors(tmp_path, llama_f32):
    qwen = tmp_path / "q.gguf"
    convert(fixture_dir("qwen2"), qwen, outtype="f32")
    cases = [
        (_with_tensor(qwen, tmp_path / "q-rf.gguf", "rope_freqs.weight", np.ones(8, np.float32)), "rope-tensor-unused"),
        (_with_tensor(llama_f32, tmp_path / "l-long.gguf", "rope_factors_long.weight", np.ones(8, np.float32)), "rope-tensor-unused"),
        (_with_tensor(llama_f32, tmp_path / "l-rf7.gguf", "rope_freqs.weight", np.ones(7, np.float32)), "rope-tensor-shape"),
    ]
    for path, rule in cases:
        assert rule in {f.id for f in lint_gguf(path)}
        with pytest.raises((ValueError, RuntimeError)):
            llama_cpp_logits(path, token_ids(8, 384))
    ok = _with_tensor(llama_f32, tmp_path / "l-rf.gguf", "rope_freqs.weight", np.ones(8, np.float32))
    np.testing.assert_array_equal(llama_cpp_logits(ok, token_ids(N, 384)), llama_cpp_logits(llama_f32, token_ids(N, 384)))


def test_llama_cpp_aborts_on_unknown_scaling_type(tmp_path, llama_f32):
    with pytest.raises(RopetoolError, match="unknown-scaling-type"):  # set refuses without --force
        _edited(llama_f32, tmp_path / "bad.gguf", [f"{key(R.SCALING_TYPE)}=str:dynamic"])
    bad = _edited(llama_f32, tmp_path / "bad.gguf", [f"{key(R.SCALING_TYPE)}=str:dynamic"], force=True)
    assert any(f.id == "unknown-scaling-type" for f in lint_gguf(bad))
    code = ("import llama_cpp, sys; llama_cpp.Llama(model_path=sys.argv[1], verbose=False, n_ctx=64); print('loaded')")
    proc = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "loaded" not in proc.stdout


def test_runtime_rope_flags_do_not_reach_the_sliding_layers(tmp_path):
    """runtime-flags-miss-sliding: on gemma2 the file's rope.freq_base reaches every layer (its sliding layers take the
    global base unless rope.freq_base_swa says otherwise), but llama.cpp's --rope-freq-base (rope_freq_base of
    llama_context_params) only the global ones: the logits with the flag equal those of a file whose freq_base is set
    and whose sliding layers keep the old base (rope.freq_base_swa), not those of the file with freq_base alone."""
    ids = token_ids(N, 400)
    src = tmp_path / "gemma2.gguf"
    convert(fixture_dir("gemma2"), src, outtype="f32")
    flagged = llama_cpp_logits(src, ids, rope_freq_base=40000.0)
    global_only = _edited(src, tmp_path / "g.gguf", ["gemma2.rope.freq_base=f32:40000", "gemma2.rope.freq_base_swa=f32:10000"])
    every_layer = _edited(src, tmp_path / "e.gguf", ["gemma2.rope.freq_base=f32:40000"])
    np.testing.assert_array_equal(flagged, llama_cpp_logits(global_only, ids))
    assert np.abs(flagged - llama_cpp_logits(every_layer, ids)).max() > 1e-3
    finding = next(f for f in lint_gguf(src) if f.id == "runtime-flags-miss-sliding")
    assert "the 2 sliding-window layers (0,2)" in finding.message and "only the other layers with rope (1,3)" in finding.message
