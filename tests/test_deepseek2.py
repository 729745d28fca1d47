"""deepseek2 (DeepseekV3ForCausalLM; Kimi K2 the same layout): convert, set-rope, inspect and lint against
transformers and llama.cpp.

The fixture (fixtures/models/deepseek-v3) is DeepSeek V3's layout in tiny: multi-head latent attention (q_lora 64,
kv_lora 32, the rope on the last 16 of each head's 48 key dims, values of 24), one dense layer then mixtures of 8
experts in 4 groups with a shared expert and sigmoid routing, and DeepSeek V3's YaRN (factor 40, mscale =
mscale_all_dim = 1) over the fixtures' original context of 64.  transformers' DeepSeek V3 multiplies the attention
scale by get_mscale(factor, mscale_all_dim)^2 (``yarn_apply_mscale``); llama.cpp's deepseek2 folds the same factor into
its kq_scale from rope.scaling.yarn_log_multiplier (0.1 x mscale_all_dim).  The logits are compared on 160 tokens.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import convert_refusal, edited_fixture, fixture_config, fixture_dir, hf_folder_logits, hf_logits, llama_cpp_logits, token_ids
from llama_loads import refused, runs_without_each
from test_convert import TOLERANCE, assert_logits_match

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import set_keys, set_rope, unset_keys
from ropetool.errors import RopetoolError
from ropetool.families import FAMILIES
from ropetool.inspect import inspect_gguf
from ropetool.io.gguf_file import GGUFFile
from ropetool.llamacpp import keys as K
from ropetool.model import lint_gguf

NAME = "deepseek-v3"
N = 160  # past the original context (64)
ROPE = fixture_config(NAME)["rope_parameters"]  # yarn, factor 40, mscale 1, mscale_all_dim 1
UNSCALED = {"rope_type": "default", "rope_theta": ROPE["rope_theta"]}
NO_TEMPERATURE = {k: v for k, v in ROPE.items() if k not in ("mscale", "mscale_all_dim")}  # YaRN, the scale unmoved


def ids(n: int = N) -> list[int]:
    return token_ids(n, fixture_config(NAME)["vocab_size"])


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def hf_attention_scale(rope: dict) -> float:
    """transformers' DeepSeek V3 attention scale for ``rope``, over the plain 1/sqrt(qk_head_dim)."""
    from transformers import AutoConfig
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    config = AutoConfig.from_pretrained(fixture_dir(NAME))
    config.rope_parameters = rope
    attention = DeepseekV3Attention(config, layer_idx=0)
    return attention.scaling / attention.qk_head_dim ** -0.5


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path = tmp_path_factory.mktemp("deepseek2") / "plain.gguf"
    convert(fixture_dir(NAME), path, outtype="f32")
    return path


def test_built_in_yarn_and_its_attention_scale(plain):
    """The model as converted (its YaRN, exact): llama.cpp equals transformers; without mscale_all_dim (the same YaRN
    frequencies and magnitude, the attention scale not moved) and without YaRN they do not match.  The key is 0.1 x
    mscale_all_dim, as llama.cpp's converter writes it; no rope.scaling.attn_factor."""
    with GGUFFile(plain) as gf:
        assert gf.get("deepseek2.rope.scaling.yarn_log_multiplier") == pytest.approx(0.1)
        assert gf.get("deepseek2.rope.scaling.attn_factor") is None and gf.get("ropetool.rope.exact") is True
        assert gf.get("deepseek2.rope.dimension_count") == fixture_config(NAME)["qk_rope_head_dim"]
    x = ids()
    ours = llama_cpp_logits(plain, x)
    assert_logits_match(ours, hf_logits(NAME, x), TOLERANCE["f32"])
    for control in (NO_TEMPERATURE, UNSCALED):
        assert rel(ours, hf_logits(NAME, x, control)) > 5 * TOLERANCE["f32"]


def test_inspect_says_rope_on_part_of_the_head_and_the_attention_scale(plain):
    """inspect: the rope on the last qk_rope_head_dim of each head's qk_nope + qk_rope key dims, and the attention
    scale llama.cpp computes, which is transformers' DeepSeek V3 scale (its yarn_apply_mscale)."""
    rope = inspect_gguf(plain)["rope"]
    config = fixture_config(NAME)
    head = config["qk_nope_head_dim"] + config["qk_rope_head_dim"]
    assert rope["rotary_dim"] == config["qk_rope_head_dim"]
    assert f"rope on the last {config['qk_rope_head_dim']} of each head's {head} key dims" in rope["description"]
    assert rope["llama_cpp"]["attention_scale"] == pytest.approx(hf_attention_scale(ROPE), rel=1e-6)
    assert hf_attention_scale(ROPE) == pytest.approx((1 + 0.1 * math.log(40)) ** 2)  # > 1: the scale did move
    assert rope["llama_cpp"]["magnitude"] == 1


def test_yarn_extension_moves_the_attention_scale_as_transformers(plain, tmp_path):
    """set-rope --rope yarn --factor 80 (DeepSeek's mscale and mscale_all_dim kept from ropetool's record): llama.cpp
    equals transformers' DeepSeek V3 with that rope, whose attention scale is larger again; the model's own YaRN and
    the same factor without mscale_all_dim do not match."""
    out = tmp_path / "yarn80.gguf"
    set_rope(plain, "yarn", out, factor=80.0)
    yarn80 = {**ROPE, "factor": 80.0}
    assert inspect_gguf(out)["rope"]["llama_cpp"]["attention_scale"] == pytest.approx(hf_attention_scale(yarn80), rel=1e-6)
    assert hf_attention_scale(yarn80) > hf_attention_scale(ROPE)
    x = ids()
    ours = llama_cpp_logits(out, x)
    assert_logits_match(ours, hf_logits(NAME, x, yarn80), TOLERANCE["f32"])
    for control in (ROPE, {**NO_TEMPERATURE, "factor": 80.0}):
        assert rel(ours, hf_logits(NAME, x, control)) > 5 * TOLERANCE["f32"]


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_yarn_extension_at_convert_in_every_type(outtype, tmp_path):
    """convert --rope yarn --factor 80: llama.cpp equals transformers in f16, bf16 and q8_0 (the weights rounded as
    stored for the oracle, as for every mixture of experts: tests/test_convert.py)."""
    path = tmp_path / "y.gguf"
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir(NAME)), "-o", str(path), "--outtype", outtype,
                                      "--rope", "yarn", "--factor", "80"])
    assert result.exit_code == 0, result.output
    x = ids()
    ours = llama_cpp_logits(path, x, f32_kv=True)
    assert_logits_match(ours, hf_logits(NAME, x, {**ROPE, "factor": 80.0}, weights_as=outtype), TOLERANCE[outtype])
    assert rel(ours, hf_logits(NAME, x, ROPE, weights_as=outtype)) > 5 * TOLERANCE["f32"]


@pytest.mark.parametrize("mscale,mscale_all_dim", [(0.5, 0.5), (0.5, 1.0)])
def test_other_mscales_are_exact(tmp_path, mscale, mscale_all_dim):
    """Other temperatures llama.cpp can compute: mscale = mscale_all_dim = 0.5 (DeepSeek V2's kind), and mscale below
    mscale_all_dim (the cos/sin magnitude below 1, written as rope.scaling.attn_factor, with a yarn_log_multiplier
    that gives the attention scale transformers computes)."""
    path = tmp_path / "m.gguf"
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir(NAME)), "-o", str(path), "--outtype", "f32", "--rope",
                                      "yarn", "--factor", "8", "--mscale", str(mscale), "--mscale-all-dim",
                                      str(mscale_all_dim)])
    assert result.exit_code == 0, result.output
    rope = {**ROPE, "factor": 8.0, "mscale": mscale, "mscale_all_dim": mscale_all_dim}
    x = ids()
    ours = llama_cpp_logits(path, x)
    assert_logits_match(ours, hf_logits(NAME, x, rope), TOLERANCE["f32"])
    assert rel(ours, hf_logits(NAME, x, {**NO_TEMPERATURE, "factor": 8.0})) > 5 * TOLERANCE["f32"]


def test_ntk_is_exact_and_linear_is_refused(plain, tmp_path):
    """A method without a factor (NTK-aware: the base) leaves llama.cpp's attention scale alone and matches
    transformers; linear interpolation does not: llama.cpp's deepseek2 folds (1 + 0.1 ln s)^2 into the attention scale
    for any factor, transformers' DeepSeek V3 only for YaRN with mscale_all_dim.  So linear is refused unless
    --approximate, and the file --approximate writes is measurably not transformers' model."""
    ntk = tmp_path / "ntk.gguf"
    set_rope(plain, "ntk", ntk, alpha=4.0)
    d = fixture_config(NAME)["qk_rope_head_dim"]
    x = ids()
    assert_logits_match(llama_cpp_logits(ntk, x), hf_logits(NAME, x, {"rope_type": "default",
                                                                      "rope_theta": 10000.0 * 4 ** (d / (d - 2))}),
                        TOLERANCE["f32"])
    linear = tmp_path / "linear.gguf"
    result = CliRunner().invoke(cli, ["set-rope", str(plain), "-o", str(linear), "--rope", "linear", "--factor", "4"])
    assert result.exit_code == 2 and "attention scale" in result.output and not linear.exists()
    set_rope(plain, "linear", linear, factor=4.0, approximate=True)
    with GGUFFile(linear) as gf:
        assert gf.get("ropetool.rope.exact") is False
    expected = {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}
    assert rel(llama_cpp_logits(linear, x), hf_logits(NAME, x, expected)) > 5 * TOLERANCE["f32"]


def test_yarn_without_mscale_all_dim_is_refused(tmp_path):
    """A DeepSeek-layout config whose YaRN has no mscale_all_dim: transformers scales cos/sin by 0.1 ln s + 1 and leaves
    the attention scale alone, which llama.cpp's deepseek2 cannot compute: refused in one line naming
    --mscale-all-dim; with it, exact."""
    folder = edited_fixture(NAME, tmp_path / "m", rope_parameters=NO_TEMPERATURE)
    out = tmp_path / "o.gguf"
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(out)])
    assert result.exit_code == 2 and "--mscale-all-dim" in result.output and not out.exists(), result.output
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(out), "--outtype", "f32", "--rope", "yarn",
                                      "--factor", "40", "--mscale", "1", "--mscale-all-dim", "1"])
    assert result.exit_code == 0, result.output
    x = ids()
    assert_logits_match(llama_cpp_logits(out, x), hf_logits(NAME, x, ROPE), TOLERANCE["f32"])


def test_grouped_routing_is_llama_cpps(tmp_path):
    """With the selection bias removed every token routes by its own scores (near-ties no rounding would survive, but
    f32 does): llama.cpp still equals transformers; and transformers without the group restriction (topk_group =
    n_group) is another model, so the groups are computed."""
    from safetensors.torch import load_file, save_file

    folder = edited_fixture(NAME, tmp_path / "m")
    tensors = load_file(folder / "model.safetensors")
    for name in tensors:
        if name.endswith("e_score_correction_bias"):
            tensors[name].zero_()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "r.gguf"
    convert(folder, out, outtype="f32")
    x = ids()
    ours = llama_cpp_logits(out, x)
    theirs = hf_folder_logits(folder, x)
    assert_logits_match(ours, theirs, TOLERANCE["f32"])
    config = fixture_config(NAME)
    ungrouped = hf_folder_logits(fixture_dir(NAME), x, topk_group=config["n_group"])
    assert rel(llama_cpp_logits(_converted(tmp_path), x), ungrouped) > 5 * TOLERANCE["f32"]


def test_required_tensors_are_what_llama_cpp_requires(plain, tmp_path):
    """Each tensor outside the blocks, of the dense block 0 and of the mixture block 1 removed in turn: llama.cpp refuses
    the file exactly when the family lists the tensor as required (the MLA projections and norms, k_b and v_b, the
    shared expert; not the output matrix nor the selection bias)."""
    family = FAMILIES["deepseek2"]
    results = runs_without_each(plain, (0, 1), tmp_path)
    cut = refused(results)
    required = set(family.required_tensors(3, experts=True, dense_lead=1))
    assert cut == required & set(results), results
    assert {"output.weight", "blk.1.exp_probs_b.bias"} <= set(results) - cut
    for name, (path, _) in results.items():
        assert ("missing-tensor" in {f.id for f in lint_gguf(path)}) == (name in required), name


def test_keys_alone_read_as_deepseeks_yarn(plain, tmp_path):
    """A deepseek2 GGUF without ropetool's record (as llama.cpp's converter writes it): the keys read as YaRN with
    mscale = mscale_all_dim = yarn_log_multiplier / 0.1, and set-rope keeps that temperature."""
    bare = tmp_path / "bare.gguf"
    with GGUFFile(plain) as gf:
        recorded = [k for k in K.RT_KEYS if k in gf.fields]
    unset_keys(plain, recorded, bare)
    rope = inspect_gguf(bare)["rope"]
    assert rope["method"] == "yarn" and rope["method_source"] == "inferred"
    assert rope["params"]["mscale"] == 1 and rope["params"]["mscale_all_dim"] == 1
    out = tmp_path / "y.gguf"
    set_rope(bare, "yarn", out, factor=80.0)
    x = ids()
    assert_logits_match(llama_cpp_logits(out, x), hf_logits(NAME, x, {**ROPE, "factor": 80.0}), TOLERANCE["f32"])


def test_lint_traps_on_deepseek2(plain, tmp_path):
    """A YaRN beta on deepseek2 is a key its loader never reads; a context_length left at the original 64 under factor
    40 is flagged; the file as converted is clean."""
    beta = tmp_path / "beta.gguf"
    set_keys(plain, ["deepseek2.rope.scaling.yarn_beta_fast=f32:4"], beta)
    assert "ignored-key" in {f.id for f in lint_gguf(beta)}
    short = tmp_path / "short.gguf"
    set_keys(plain, ["deepseek2.context_length=u32:64"], short)
    assert "context-length-mismatch" in {f.id for f in lint_gguf(short)}
    assert not lint_gguf(plain)


def test_multi_token_prediction_layers_are_skipped(tmp_path):
    """DeepSeek V3's checkpoints carry a multi-token-prediction module as layer num_hidden_layers
    (num_nextn_predict_layers): left out, as llama.cpp's converter leaves it; the rest converts as before."""
    from safetensors.torch import load_file, save_file

    folder = edited_fixture(NAME, tmp_path / "m", num_nextn_predict_layers=1)
    tensors = load_file(folder / "model.safetensors")
    n = fixture_config(NAME)["num_hidden_layers"]
    for name in [k for k in tensors if k.startswith("model.layers.2.")]:
        tensors[name.replace("model.layers.2.", f"model.layers.{n}.")] = tensors[name].clone()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "mtp.gguf"
    plan = convert(folder, out, outtype="f32")
    assert any(s.startswith(f"model.layers.{n}.") for s in plan.skipped)
    with GGUFFile(out) as gf:
        assert not any(t.name.startswith(f"blk.{n}.") for t in gf.tensors)
    x = ids(80)
    assert_logits_match(llama_cpp_logits(out, x), hf_logits(NAME, x), TOLERANCE["f32"])


@pytest.mark.parametrize("changes,words", [
    ({"rope_interleave": False}, "interleaved pairs"),
    ({"scoring_func": "softmax"}, "sigmoid"),
    ({"topk_method": "group_limited_greedy"}, "noaux_tc"),
    ({"q_lora_rank": None}, "q_lora_rank"),
    ({"n_shared_experts": 0}, "shared expert"),
    ({"quantization_config": {"quant_method": "fp8", "fmt": "e4m3"}}, "2x"),
])
def test_configs_llama_cpp_would_compute_differently_are_refused(tmp_path, changes, words):
    assert words in convert_refusal(NAME, changes, tmp_path)


def test_reference_refuses_deepseek2(plain):
    from ropetool.reference import ReferenceModel

    with pytest.raises(RopetoolError, match="does not run deepseek2"):
        ReferenceModel.from_gguf(plain)


# --- helpers ---------------------------------------------------------------------------------------------------

def _converted(tmp_path):
    path = tmp_path / "fixture.gguf"
    if not path.exists():
        convert(fixture_dir(NAME), path, outtype="f32")
    return path


# --- the probe: llama.cpp's own rope ops (and, here, its attention scale) against the meant setting ----------

def test_probe_passes_each_file_and_fails_a_tampered_key(plain, tmp_path):
    """check's probe: the model as converted, set-rope's YaRN x80 and NTK pass (the rope on 16 dims of q_pe and k_pe,
    every op within the float32 bound, and each attention softmax's scale the meant mscale^2 / sqrt(48)); a
    yarn_log_multiplier changed behind ropetool's record (the rope ops unchanged: only the attention scale moves) and
    a changed freq_base fail, naming the key."""
    from ropetool.probe import probe_gguf

    yarn80, ntk = tmp_path / "yarn80.gguf", tmp_path / "ntk.gguf"
    set_rope(plain, "yarn", yarn80, factor=80.0)
    set_rope(plain, "ntk", ntk, alpha=4.0)
    head = fixture_config(NAME)["qk_nope_head_dim"] + fixture_config(NAME)["qk_rope_head_dim"]
    for path, rope in ((plain, ROPE), (yarn80, {**ROPE, "factor": 80.0}), (ntk, UNSCALED)):
        report = probe_gguf(path)
        assert report.verdict == "pass", report.summary()
        assert all(k.numerics_checked == k.rope_ops > 0 and k.worst_ratio <= 1 for k in report.kinds), report.summary()
        assert report.kinds[0].op_params["n_dims"] == fixture_config(NAME)["qk_rope_head_dim"]
        assert report.attention["scale"] == pytest.approx([hf_attention_scale(rope) / math.sqrt(head)], rel=1e-5)
        assert report.attention["attention_scale"]["llama_cpp"] == pytest.approx([hf_attention_scale(rope)], rel=1e-6)
    tampered = tmp_path / "log_mul.gguf"
    set_keys(plain, ["deepseek2.rope.scaling.yarn_log_multiplier=f32:0.2"], tampered)
    report = probe_gguf(tampered)
    assert report.verdict == "fail" and "yarn_log_multiplier" in report.reason, report.summary()
    assert all(k.inv_freq_rel_error < 1e-5 and k.magnitude_rel_error < 1e-5 for k in report.kinds)  # rope ops as meant
    base = tmp_path / "base.gguf"
    set_keys(plain, ["deepseek2.rope.freq_base=f32:20000"], base)
    report = probe_gguf(base)
    assert report.verdict == "fail" and "freq_base" in report.reason, report.summary()
