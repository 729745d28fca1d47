"""gpt-oss (GptOssForCausalLM): convert, set-rope, inspect and lint against transformers and llama.cpp.

The fixture (fixtures/models/gpt-oss) has the released models' config (transformers' GptOssConfig defaults): YaRN
factor 32 over an original context of 4096, base 150000, betas 32/1, truncate false; sliding (window 128) and full
layers alternating; attention sinks; biased experts with the clamped SwiGLU.  Only the sizes are tiny, so the logits
are compared past 4096 tokens (N_LONG).  The oracle is transformers' own class (float32); llama.cpp runs the file.

``truncate: false`` has no GGUF key: llama.cpp rounds YaRN's correction range to whole pairs, as transformers does
with truncate true.  So llama.cpp's logits are compared with transformers told ``truncate: true``, and the distance
to the model as configured (truncate false) is measured (docs/convert.md gives the figure).
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import convert_refusal, edited_fixture, fixture_config, fixture_dir, hf_folder_logits, hf_logits, llama_cpp_logits, token_ids
from llama_loads import refused, runs_without_each
from test_convert import TOLERANCE, assert_logits_match

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import set_keys, set_rope
from ropetool.errors import RopetoolError
from ropetool.families import FAMILIES
from ropetool.inspect import inspect_gguf
from ropetool.io.gguf_file import GGUFFile
from ropetool.model import lint_gguf

NAME = "gpt-oss"
N_LONG = 4600  # past the original context (4096) and many times the sliding window (128)
ROPE = fixture_config(NAME)["rope_parameters"]  # the model's own: yarn, factor 32, original 4096, truncate false
ROUNDED = {**ROPE, "truncate": True}  # what llama.cpp computes for it
UNSCALED = {"rope_type": "default", "rope_theta": ROPE["rope_theta"]}


def ids(n: int = N_LONG) -> list[int]:
    return token_ids(n, fixture_config(NAME)["vocab_size"])


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The model converted as it is (its built-in YaRN; --approximate for truncate false), float32."""
    path = tmp_path_factory.mktemp("gpt-oss") / "plain.gguf"
    convert(fixture_dir(NAME), path, outtype="f32", approximate=True)
    return path


def test_built_in_yarn_is_carried_over_past_4096(plain):
    """llama.cpp on the converted file equals transformers (truncate true) at 4600 tokens; the unscaled rope does not
    match; and the model as configured (truncate false) is measurably elsewhere, three orders of magnitude farther."""
    with GGUFFile(plain) as gf:
        keys = {k: gf.get(k) for k in ("gpt-oss.rope.scaling.type", "gpt-oss.rope.scaling.factor",
                                       "gpt-oss.rope.scaling.original_context_length", "gpt-oss.rope.freq_base",
                                       "gpt-oss.context_length", "ropetool.rope.exact")}
    assert keys == {"gpt-oss.rope.scaling.type": "yarn", "gpt-oss.rope.scaling.factor": 32.0,
                    "gpt-oss.rope.scaling.original_context_length": 4096, "gpt-oss.rope.freq_base": 150000.0,
                    "gpt-oss.context_length": 131072, "ropetool.rope.exact": False}
    x = ids()
    ours = llama_cpp_logits(plain, x)
    assert_logits_match(ours, hf_logits(NAME, x, ROUNDED), TOLERANCE["f32"])
    unscaled = hf_logits(NAME, x, UNSCALED)
    assert rel(ours, unscaled) > 5 * TOLERANCE["f32"]
    as_configured = rel(ours, hf_logits(NAME, x))  # truncate false: the cost of its missing key
    assert as_configured > 100 * rel(ours, hf_logits(NAME, x, ROUNDED))
    print(f"\nmax |dlogit| of llama.cpp against transformers at {N_LONG} tokens: truncate false {as_configured:.3g}, "
          f"truncate true {rel(ours, hf_logits(NAME, x, ROUNDED)):.3g} (x max |logit|)")


def test_truncate_false_is_refused_without_approximate(tmp_path):
    """The built-in YaRN cannot be written exactly (no key says truncate false, and gpt-oss loads no rope_freqs):
    one line naming it, nothing written; --approximate writes it and records the approximation."""
    out = tmp_path / "o.gguf"
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir(NAME)), "-o", str(out)])
    assert result.exit_code == 2 and "truncate false" in result.output and "--approximate" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
def test_yarn_extension_at_convert_matches_transformers(outtype, tmp_path):
    """--rope yarn --factor 64 (over the original 4096; the ramp llama.cpp computes, so exact): llama.cpp equals
    transformers with that rope at 4600 tokens in every output type; neither the model's own YaRN nor the unscaled
    rope matches."""
    path = tmp_path / "yarn64.gguf"
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir(NAME)), "-o", str(path), "--outtype", outtype,
                                      "--rope", "yarn", "--factor", "64"])
    assert result.exit_code == 0, result.output
    with GGUFFile(path) as gf:
        assert gf.get("gpt-oss.context_length") == 64 * 4096 and gf.get("ropetool.rope.exact") is True
    x = ids()
    yarn64 = {**ROUNDED, "factor": 64.0}
    stored = None if outtype == "f32" else outtype  # a mixture's routing: the oracle computes with the weights as stored
    ours = llama_cpp_logits(path, x, f32_kv=True)
    assert_logits_match(ours, hf_logits(NAME, x, yarn64, weights_as=stored), TOLERANCE[outtype])
    for control in (ROUNDED, UNSCALED):
        theirs = hf_logits(NAME, x, control, weights_as=stored)
        assert rel(ours, theirs) > 5 * TOLERANCE["f32"]


def test_set_rope_extension_matches_transformers(plain, tmp_path):
    """set-rope on the converted file (its trained context 4096 and base from ropetool's record): YaRN x64 and linear
    x2 equal transformers configured alike at 4600 tokens; the file's own YaRN no longer matches."""
    x = ids()
    for method, factor, rope in (("yarn", 64.0, {**ROUNDED, "factor": 64.0}),
                                 ("linear", 2.0, {"rope_type": "linear", "factor": 2.0, "rope_theta": 150000.0})):
        out = tmp_path / f"{method}.gguf"
        set_rope(plain, method, out, factor=factor)
        with GGUFFile(out) as gf:
            assert gf.get("gpt-oss.context_length") == int(factor * 4096)
        ours = llama_cpp_logits(out, x)
        assert_logits_match(ours, hf_logits(NAME, x, rope), TOLERANCE["f32"])
        assert rel(ours, hf_logits(NAME, x, ROUNDED)) > 5 * TOLERANCE["f32"]


def test_inspect_names_sliding_and_full_layers(plain):
    """inspect: the layers transformers' config makes sliding (layer_types) slide, with window 128, the global base
    and the global scale (1/32): one rope for every layer, as transformers' GptOssRotaryEmbedding has."""
    rope = inspect_gguf(plain)["rope"]
    types = fixture_config(NAME)["layer_types"]
    sw = rope["sliding_window"]
    assert sw["layers"] == [i for i, t in enumerate(types) if t == "sliding_attention"]
    assert sw["global_layers"] == [i for i, t in enumerate(types) if t == "full_attention"]
    assert sw["window"] == fixture_config(NAME)["sliding_window"]
    assert sw["freq_base"] == 150000.0 and sw["freq_base_source"] == "global" and sw["freq_scale"] == 1 / 32
    assert rope["llama_cpp"]["freq_scale"] == 1 / 32
    assert "sliding-window layers (0, window 128)" in rope["description"]


def test_layer_types_other_than_llama_cpps_default_are_written(tmp_path):
    """config.json's layer_types decide which layers slide: the reverse of llama.cpp's default (layer 0 full, 1 sliding)
    is written as attention.sliding_window_pattern, and llama.cpp then equals transformers at 400 tokens (past the
    window of 128), which the default pattern would not."""
    folder = edited_fixture(NAME, tmp_path / "m", layer_types=["full_attention", "sliding_attention"])
    out = tmp_path / "swapped.gguf"
    convert(folder, out, outtype="f32", approximate=True)
    with GGUFFile(out) as gf:
        assert list(gf.get("gpt-oss.attention.sliding_window_pattern")) == [False, True]
    assert inspect_gguf(out)["rope"]["sliding_window"]["layers"] == [1]
    x = ids(400)
    ours = llama_cpp_logits(out, x)
    assert_logits_match(ours, hf_folder_logits(folder, x, rope_parameters=ROUNDED), TOLERANCE["f32"])
    assert rel(ours, hf_folder_logits(fixture_dir(NAME), x, rope_parameters=ROUNDED)) > 5 * TOLERANCE["f32"]


def test_lint_traps_on_gpt_oss(plain, tmp_path):
    """A YaRN beta on gpt-oss is a key its loader never reads (llama.cpp's logits are the same with it), and a
    context_length left at the original 4096 under factor 32 is flagged."""
    beta = tmp_path / "beta.gguf"
    set_keys(plain, ["gpt-oss.rope.scaling.yarn_beta_fast=f32:4"], beta)
    found = {f.id: f for f in lint_gguf(beta)}
    assert "ignored-key" in found and "gpt-oss" in found["ignored-key"].message
    x = ids(300)
    np.testing.assert_array_equal(llama_cpp_logits(beta, x), llama_cpp_logits(plain, x))
    short = tmp_path / "short.gguf"
    set_keys(plain, ["gpt-oss.context_length=u32:4096"], short)
    assert "context-length-mismatch" in {f.id for f in lint_gguf(short)}
    assert [f.id for f in lint_gguf(plain)] == ["runtime-flags-miss-sliding"]  # an info: the runtime flags miss layer 0


def test_required_tensors_are_what_llama_cpp_requires(plain, tmp_path):
    """Each tensor outside the blocks and each of block 0 removed in turn: llama.cpp refuses the file exactly when
    the family lists the tensor as required (the attention sinks, the biases of the output, router and experts, the
    post-attention norm; not the q/k/v biases)."""
    family = FAMILIES[NAME]
    results = runs_without_each(plain, (0,), tmp_path)
    cut = refused(results)
    assert cut == set(family.required_tensors(2)) & set(results), results
    assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"} <= set(results) - cut


def test_experts_are_converted_one_at_a_time(tmp_path, monkeypatch):
    """The stacked experts (gate_up_proj [E, n_embd, 2 ff], down_proj [E, ff, n_embd]) are read an expert at a time:
    every read of an expert tensor is one expert's matrix, never the stack."""
    import ropetool.conversion as conversion
    import ropetool.convert as convert_module

    shapes = []

    def recording(ref, real=conversion.load_tensor):
        if ".experts." in ref.name and not ref.name.endswith((".bias", "_bias")):
            shapes.append(tuple(ref.shape))
        return real(ref)

    monkeypatch.setattr(convert_module, "load_tensor", recording)
    monkeypatch.setattr(conversion, "load_tensor", recording)
    convert(fixture_dir(NAME), tmp_path / "q.gguf", outtype="q8_0", approximate=True)
    config = fixture_config(NAME)
    e, ff = config["hidden_size"], config["intermediate_size"]
    # per layer: gate and up each read every expert's [n_embd, 2 ff], down every expert's [ff, n_embd]
    assert sorted(set(shapes)) == sorted({(e, 2 * ff), (ff, e)})
    assert len(shapes) == config["num_hidden_layers"] * config["num_local_experts"] * 3


@pytest.mark.parametrize("changes,words", [
    ({"swiglu_limit": 10.0}, "hard-codes the experts' SwiGLU limit 7"),
    ({"swiglu_alpha": 1.5}, "hard-codes the experts' SwiGLU alpha 1.702"),
    ({"sliding_window": None}, "sliding_window"),
    ({"quantization_config": {"quant_method": "mxfp4"}}, "about 4x"),
])
def test_configs_llama_cpp_would_compute_differently_are_refused(tmp_path, changes, words):
    assert words in convert_refusal(NAME, changes, tmp_path, "--approximate")


def test_mxfp4_experts_are_refused(tmp_path):
    """The released checkpoints' experts are MXFP4 (``..._blocks`` and ``..._scales``, uint8): refused in one line,
    saying ropetool does not dequantize them (a file about 4x the checkpoint), even without quantization_config."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = edited_fixture(NAME, tmp_path / "m")
    tensors = load_file(folder / "model.safetensors")
    w = tensors.pop("model.layers.0.mlp.experts.gate_up_proj")  # [E, n_embd, 2 ff]; MXFP4 packs 32 values per block
    e, rows, cols = w.shape[0], w.shape[2], w.shape[1]
    tensors["model.layers.0.mlp.experts.gate_up_proj_blocks"] = torch.zeros((e, rows, cols // 32, 16), dtype=torch.uint8)
    tensors["model.layers.0.mlp.experts.gate_up_proj_scales"] = torch.zeros((e, rows, cols // 32), dtype=torch.uint8)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "o.gguf"
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(out), "--approximate"])
    assert result.exit_code == 2 and "MXFP4" in result.output and "about 4x" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_reference_refuses_gpt_oss_in_one_line(plain):
    """ropetool's numpy reference has no attention sinks or clamped SwiGLU: it says so rather than compute another
    model (check --end-to-end and eval's reference need it)."""
    from ropetool.reference import ReferenceModel

    with pytest.raises(RopetoolError, match="does not run gpt-oss"):
        ReferenceModel.from_gguf(plain)
    with pytest.raises(RopetoolError, match="does not run gpt-oss"):
        ReferenceModel.from_hf(fixture_dir(NAME))


# --- the probe: llama.cpp's own rope ops against the meant setting ------------------------------------------

def test_probe_passes_each_file_and_fails_a_tampered_key(plain, tmp_path):
    """check's probe on the files above: the model as converted (approximate: checked against its keys), the YaRN x64
    conversion (exact: against ropetool's record) and set-rope's linear x2 pass, both kinds of layer seen, every rope
    op's output within the float32 bound of the meant rotation; a beta the gpt-oss loader ignores, and a freq_base
    changed behind the record, fail naming the key."""
    from ropetool.probe import probe_gguf

    yarn64, linear = tmp_path / "yarn64.gguf", tmp_path / "linear.gguf"
    convert(fixture_dir(NAME), yarn64, outtype="f32", method="yarn", factor=64.0)
    set_rope(plain, "linear", linear, factor=2.0)
    for path in (plain, yarn64, linear):
        report = probe_gguf(path)
        assert report.verdict == "pass", report.summary()
        assert {k.kind for k in report.kinds} == {"global", "sliding"}
        assert all(k.numerics_checked == k.rope_ops > 0 and k.worst_ratio <= 1 for k in report.kinds), report.summary()
        assert report.max_position > 4096
    beta = tmp_path / "beta.gguf"
    set_keys(plain, ["gpt-oss.rope.scaling.yarn_beta_fast=f32:8"], beta)
    report = probe_gguf(beta)
    assert report.verdict == "fail" and "yarn_beta_fast" in report.reason, report.summary()
    base = tmp_path / "base.gguf"
    set_keys(yarn64, ["gpt-oss.rope.freq_base=f32:100000"], base)
    report = probe_gguf(base)
    assert report.verdict == "fail" and "freq_base" in report.reason, report.summary()
