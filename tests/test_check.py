"""ropetool check: which rope setting llama.cpp (the real one, CPU) computes, against the numpy reference under the
meant setting and its nearest alternatives (tests/test_check_real.py does the same on a real trained model)."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import snapshot
from click.testing import CliRunner
from conftest import fixture_dir

from ropetool.check import check_gguf
from ropetool.cli import cli
from ropetool.convert import convert

# Every fixture architecture with every method llama.cpp can express on it (lowering.md).
LLAMA_METHODS = {
    "config": {},
    "none": {"method": "none"},
    "linear": {"method": "linear", "factor": 4.0},
    "ntk": {"method": "ntk", "alpha": 4.0},
    "dynamic-ntk": {"method": "dynamic-ntk", "factor": 2.0},
    "ntk-by-parts": {"method": "ntk-by-parts", "factor": 4.0},
    "yarn": {"method": "yarn", "factor": 4.0},
    "yarn-betas": {"method": "yarn", "factor": 4.0, "original_context": 32, "beta_fast": 1.5, "beta_slow": 0.5},
    "yarn-attn": {"method": "yarn", "factor": 4.0, "attention_factor": 1.3},
    "dynamic-yarn": {"method": "dynamic-yarn", "factor": 2.0},
    "llama3": {"method": "llama3", "factor": 8.0},
}
ALIBI_METHODS = {  # MPT reads ALiBi's max_bias from the file: the ALiBi methods approximated by the nearest one
    "config": {},
    "alibi-interp": {"method": "alibi-interp", "alpha": 2.0, "approximate": True},
    "ntk-alibi": {"method": "ntk-alibi", "alpha": 4.0, "approximate": True},
    "dynamic-ntk-alibi": {"method": "dynamic-ntk-alibi", "alpha": 1.0, "target_context": 256, "approximate": True},
}
NEOX_METHODS = {k: LLAMA_METHODS[k] for k in ("config", "none", "linear", "ntk", "dynamic-ntk", "ntk-by-parts", "yarn",
                                              "yarn-attn", "dynamic-yarn")}
MATRIX = (
    [("llama", m) for m in LLAMA_METHODS]
    + [("llama3", "config"), ("llama-yarn", "config"), ("llama-linear", "config"), ("llama-dynamic", "config")]
    + [("mistral", m) for m in ("config", "yarn", "yarn-betas", "llama3")]
    + [("qwen2", m) for m in NEOX_METHODS]
    + [("qwen3", m) for m in ("config", "linear", "yarn", "ntk")]
    + [("phi3", m) for m in ("config", "linear", "yarn")]
    + [("bloom", "config")]
    + [(moe, m) for moe in ("mixtral", "qwen2moe", "qwen3moe") for m in ("config", "linear", "yarn")]
    + [(gemma, m) for gemma in ("gemma2", "gemma3") for m in ("config", "linear", "yarn", "ntk")]
    + [("gptneox", m) for m in ("config", "linear", "ntk", "dynamic-ntk", "yarn")]
    + [(falcon, m) for falcon in ("falcon", "falcon-mq") for m in ("config", "linear", "ntk", "yarn")]
    + [("mpt", m) for m in ("config", "alibi-interp", "ntk-alibi", "dynamic-ntk-alibi")]
)
# llama.cpp's CPU GELU goes through a float16 table (gemma's GeGLU, the GELU of gptneox, falcon and mpt): enough to
# tip a near-tied top-1 or two.
GELU_TABLE = ("gemma2", "gemma3", "gptneox", "falcon", "falcon-mq", "mpt")


@pytest.mark.parametrize("name,method", MATRIX, ids=[f"{n}-{m}" for n, m in MATRIX])
def test_check_passes_and_every_alternative_is_farther(name, method, tmp_gguf):
    convert(fixture_dir(name), tmp_gguf, outtype="f32", **(ALIBI_METHODS if name == "mpt" else LLAMA_METHODS)[method])
    report = check_gguf(tmp_gguf)
    snapshot.check(f"{name}-{method}", report)
    snapshot.inspect(f"{name}-{method}", tmp_gguf)
    assert report.verdict == "pass", report.summary()
    assert report.alternatives and all(a.outcome == "farther" for a in report.alternatives), report.summary()
    assert all(a.ratio > 0.99 for a in report.alternatives), report.summary()  # f32: llama.cpp is the meant setting
    assert report.llama_vs_meant.top1_agreement >= (0.99 if name in GELU_TABLE else 1.0)


@pytest.mark.parametrize("name", ["llama", "mixtral", "qwen2moe", "qwen3moe", "gemma2", "gemma3", "gptneox", "falcon", "mpt"])
@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_check_quantized_fixture(name, outtype, tmp_gguf):
    method = ALIBI_METHODS["ntk-alibi"] if name == "mpt" else LLAMA_METHODS["yarn"]  # mpt: ALiBi, max_bias from the file
    convert(fixture_dir(name), tmp_gguf, outtype=outtype, **method)
    report = check_gguf(tmp_gguf)
    snapshot.check(f"{name}-{outtype}", report)
    snapshot.inspect(f"{name}-{outtype}", tmp_gguf)
    assert report.verdict == "pass", report.summary()
    assert report.weight_type == outtype.upper()


def _rewrite(src, dst, drop=(), add=()):
    """Copy a GGUF with gguf-py, dropping keys by prefix and adding raw (key, value, type) triples."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if any(field.name.startswith(p) for p in drop):
            continue
        vtype = field.types[0]
        value = field.contents()
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    for key, value, vtype in add:
        writer.add_key_value(key, value, vtype)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data), raw_shape=list(reversed(t.shape.tolist())), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_ignored_yarn_beta_fast_fails_and_is_named(tmp_path):
    """llama.cpp ignores yarn_beta_fast on llama (practical.md); the key's documented meaning changes the ramp."""
    base = tmp_path / "base.gguf"
    convert(fixture_dir("llama"), base, outtype="f32", method="yarn", factor=4.0, original_context=4096)
    plain, beta8 = tmp_path / "plain.gguf", tmp_path / "beta8.gguf"
    _rewrite(base, plain, drop=("ropetool.",))  # as llama.cpp's own converter writes a yarn model
    _rewrite(base, beta8, drop=("ropetool.",),
             add=[("llama.rope.scaling.yarn_beta_fast", 8.0, gguf.GGUFValueType.FLOAT32)])

    assert check_gguf(plain, n_tokens=200).verdict == "pass"
    snapshot.check("beta-fast-8", check_gguf(beta8, n_tokens=200))
    snapshot.inspect("beta-fast-8", beta8)
    result = CliRunner().invoke(cli, ["check", str(beta8), "--end-to-end", "--tokens", "200"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "llama.rope.scaling.yarn_beta_fast" in result.output


def test_check_cli_json_and_text(tmp_path):
    out = tmp_path / "q.gguf"
    convert(fixture_dir("qwen2"), out, outtype="f32")
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 12)
    result = CliRunner().invoke(cli, ["check", str(out), "--end-to-end", "--text", str(text), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verdict"] == "pass" and report["method"] == "yarn" and report["n_tokens"] > 64
    assert set(report["llama_vs_meant"]) >= {"max_abs_diff", "rel_error", "top1_agreement", "kl_mean", "kl_max"}
    assert report["alternatives"] and {"label", "separation", "gap", "ratio", "noise", "outcome"} <= set(report["alternatives"][0])
    assert report["wall_seconds"] > 0 and report["settings"]["kv_cache"] == "f32"


def test_check_json_error_is_json(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    result = CliRunner().invoke(cli, ["check", str(bad), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.output)["error"].startswith(str(bad))


def test_check_with_source_weights(tmp_path):
    out = tmp_path / "m.gguf"
    convert(fixture_dir("mistral"), out, outtype="bf16", method="yarn", factor=4.0)
    report = check_gguf(out, source=fixture_dir("mistral"))
    assert report.verdict == "pass", report.summary()


def test_check_bad_file_one_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    result = CliRunner().invoke(cli, ["check", str(bad)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:")


# --- files llama.cpp reads differently from what they say: check fails and names the cause --------------

def _converted(tmp_path, name="llama", **options):
    path = tmp_path / f"{name}.gguf"
    convert(fixture_dir(name), path, outtype="f32", **options)
    return path


def test_factor_changed_behind_the_record_fails_and_names_the_key(tmp_path):
    from ropetool.edit import set_keys

    base = _converted(tmp_path, method="yarn", factor=4.0)
    changed = tmp_path / "changed.gguf"
    set_keys(base, ["llama.rope.scaling.factor=f32:8"], changed)
    report = check_gguf(changed)
    snapshot.check("factor-changed", report)
    snapshot.inspect("factor-changed", changed)
    assert report.verdict == "fail", report.summary()
    assert "llama.rope.scaling.factor = 8.0" in report.closest


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_sliding_base_changed_behind_the_record_fails_and_names_the_key(name, tmp_path):
    """The sliding-window layers' base (rope.freq_base_swa) moved after ropetool wrote the file: llama.cpp computes
    the key, check fails naming it; the file as written passes."""
    from ropetool.edit import set_keys

    base = tmp_path / "base.gguf"
    convert(fixture_dir(name), base, outtype="f32", method="linear", factor=4.0)
    if name == "gemma2":  # gemma2's sliding layers take the global base unless the key says otherwise
        set_keys(base, [f"{name}.rope.freq_base_swa=f32:10000", "ropetool.rope.sliding_base=f32:10000"], tmp_path / "b.gguf")
        base = tmp_path / "b.gguf"
    assert check_gguf(base).verdict == "pass"
    changed = tmp_path / "changed.gguf"
    set_keys(base, [f"{name}.rope.freq_base_swa=f32:20000"], changed)
    report = check_gguf(changed)
    snapshot.check(f"{name}-sliding-base-changed", report)
    snapshot.inspect(f"{name}-sliding-base-changed", changed)
    assert report.verdict == "fail", report.summary()
    assert f"{name}.rope.freq_base_swa = 20000" in report.closest, report.summary()


def test_alibi_key_bloom_ignores_fails(tmp_path):
    """bloom hard-codes max_bias 8: a file whose key says 4 is computed with 8."""
    base = tmp_path / "bloom.gguf"
    convert(fixture_dir("bloom"), base, outtype="f32")
    plain = tmp_path / "bloom4.gguf"
    _rewrite(base, plain, drop=("ropetool.",), add=[("bloom.attention.max_alibi_bias", 4.0, gguf.GGUFValueType.FLOAT32)])
    report = check_gguf(plain)
    snapshot.check("bloom-alibi-key", report)
    snapshot.inspect("bloom-alibi-key", plain)
    assert report.verdict == "fail", report.summary()
    assert "bloom.attention.max_alibi_bias" in report.closest
    _rewrite(base, tmp_path / "bloom-plain.gguf", drop=("ropetool.",))
    assert check_gguf(tmp_path / "bloom-plain.gguf").verdict == "pass"


def test_alpha_key_only_hunyuan_reads_fails_on_llama(tmp_path):
    base = _converted(tmp_path, method="none")
    plain = tmp_path / "alpha.gguf"
    _rewrite(base, plain, drop=("ropetool.",), add=[("llama.rope.scaling.alpha", 4.0, gguf.GGUFValueType.FLOAT32)])
    report = check_gguf(plain)
    snapshot.check("llama-alpha-key", report)
    snapshot.inspect("llama-alpha-key", plain)
    assert report.verdict == "fail" and "llama.rope.scaling.alpha" in report.closest, report.summary()


def test_legacy_scale_linear_behind_a_zero_factor_passes_as_plain_rope(tmp_path):
    """No scaling.type, scaling.factor 0 and the legacy scale_linear 2: llama.cpp reads scale 1 (tests/test_state.py
    proves it); inspect and check both call it plain RoPE, and check passes."""
    base = _converted(tmp_path, method="none")
    odd = tmp_path / "odd.gguf"
    _rewrite(base, odd, drop=("ropetool.", "llama.rope.scaling."),
             add=[("llama.rope.scaling.factor", 0.0, gguf.GGUFValueType.FLOAT32),
                  ("llama.rope.scale_linear", 2.0, gguf.GGUFValueType.FLOAT32)])
    report = check_gguf(odd)
    snapshot.check("legacy-scale-linear", report)
    snapshot.inspect("legacy-scale-linear", odd)
    assert report.verdict == "pass" and report.method == "none", report.summary()
    inspected = json.loads(CliRunner().invoke(cli, ["inspect", str(odd), "--json"]).output)["rope"]
    assert inspected["method"] == report.method and inspected["llama_cpp"]["freq_scale"] == 1.0
