"""Llama 4 (llama.cpp's llama4, Llama4ForCausalLM): no rope in every 4th layer, chunked attention and the attention
temperature of the no-rope layers, all three hard-coded by llama.cpp's graph; a mixture every other layer.

The oracles: transformers' Llama4ForCausalLM on the fixture (4 layers, layer 3 without rope, mixtures in layers 1 and 3,
chunks of 8192, temperature 0.1 over 8192) for the logits, and llama.cpp's own graph (every GGML_OP_ROPE node it
builds) for which layers rotate.  tests/test_convert.py compares every output type of the plain conversion."""

from __future__ import annotations

import functools
import json

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, convert_refusal, extended_files, fixture_config, hf_logits, llama_cpp_logits, token_ids
from llama_loads import llama_cpp_runs, refused, runs_without_each
from test_convert import TOLERANCE, assert_logits_match

from ropetool.cli import cli
from ropetool.edit import set_keys
from ropetool.families import FAMILIES
from ropetool.inspect import inspect_gguf
from ropetool.model import lint_gguf
from ropetool.probe import probe_gguf

NAME = "llama4"
N_TOKENS = 160  # past the fixture's trained context (64)
THETA = {"rope_theta": 10000.0}
# What each file holds: (how ropetool writes it, the rope_parameters transformers is given for the same setting).
EXTENSIONS = {
    "yarn": (["convert", "--rope", "yarn", "--factor", "4"],
             {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
    "linear": (["set-rope", "--rope", "linear", "--factor", "4"], {"rope_type": "linear", "factor": 4.0}),
    # llama3 rope is a rope_freqs tensor, which llama.cpp's llama4 loader takes (Llama 4 Scout's released rope is llama3)
    "llama3": (["set-rope", "--rope", "llama3", "--factor", "8"],  # low and high_freq_factor 1 and 4 (the defaults)
               {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0}),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return extended_files(tmp_path_factory.mktemp(NAME), NAME, EXTENSIONS)


def test_the_fixture_has_what_llama_cpp_hard_codes():
    config = fixture_config(NAME)
    assert config["num_hidden_layers"] == 4 and config["no_rope_layers"] == [1, 1, 1, 0]
    assert config["moe_layers"] == [1, 3] and config["interleave_moe_layer_step"] == 2
    assert (config["attention_chunk_size"], config["floor_scale"], config["attn_scale"]) == (8192, 8192, 0.1)
    assert config["attn_temperature_tuning"] and config["use_qk_norm"]


def test_extensions_past_the_trained_context_match_transformers(files):
    """YaRN at convert, linear and llama3 by set-rope on the plain file: llama.cpp equals transformers with the same
    rope_parameters past the trained context; the unscaled model does not."""
    ids = token_ids(N_TOKENS, fixture_config(NAME)["vocab_size"])
    unscaled = hf_logits(NAME, ids)
    assert_logits_match(llama_cpp_logits(files["plain"], ids), unscaled, TOLERANCE["f32"])
    for which, (_, rope) in EXTENSIONS.items():
        ours = llama_cpp_logits(files[which], ids)
        assert_logits_match(ours, hf_logits(NAME, ids, {**THETA, **rope}), TOLERANCE["f32"])
        assert np.abs(ours - unscaled).max() > 5 * TOLERANCE["f32"] * np.abs(unscaled).max(), which


@pytest.mark.parametrize("which", ["plain", *EXTENSIONS])
def test_probe_sees_no_rope_op_in_the_no_rope_layer(files, which):
    """llama.cpp's graph has rope ops in layers 0-2 only (the chunked ones), each equal to the meant setting: no setting
    reaches layer 3."""
    report = probe_gguf(files[which])
    assert report.verdict == "pass", report.summary()
    assert report.layers_seen == [0, 1, 2] and report.layers_expected == [0, 1, 2], report.summary()
    assert all(k.numerics_checked == k.rope_ops > 0 and k.worst_ratio <= 1 for k in report.kinds), report.summary()
    assert "layer 3 has no rope in llama.cpp's llama4 graph" in "\n".join(report.notes)


def test_probe_fails_on_a_tampered_rope_key(files, tmp_path):
    tampered = tmp_path / "tampered.gguf"
    set_keys(files["linear"], [f"{NAME}.rope.scaling.factor=f32:8"], tampered)
    report = probe_gguf(tampered)
    assert report.verdict == "fail", report.summary()
    assert f"{NAME}.rope.scaling.factor = 8 where ropetool's record means 4" in report.reason


def test_inspect_says_what_each_kind_of_layer_does(files):
    for which in ("plain", "linear"):
        rope = inspect_gguf(files[which])["rope"]
        lc = rope["llama_cpp"]
        assert lc["no_rope_layers"] == [3]
        assert lc["attention_temperature"] == {"scale": 0.1, "period": 8192, "period_source": "hard-coded", "offset": 1.0,
                                               "no_rope_only": True}
        assert rope["sliding_window"]["attention"] == "chunked" and rope["sliding_window"]["layers"] == [0, 1, 2]
        d = rope["description"]
        assert "rope in layers 0-2 only" in d and "(layer 3: no position information" in d
        assert "the queries of the layers without rope (3) scaled by 1 + 0.1 ln(floor((position + 1) / 8192) + 1)" in d
        assert "3 chunked layers (0-2, chunks of 8192 tokens)" in d
    assert "freq_scale 0.25" in inspect_gguf(files["linear"])["rope"]["description"]
    result = CliRunner().invoke(cli, ["inspect", str(files["linear"])])
    assert "no rope:    layer 3 " in result.output and "chunked:    layers 0-2" in result.output


@functools.lru_cache(maxsize=4)
def _hf_long(ids: tuple[int, ...], changes: str) -> np.ndarray:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(FIXTURES / NAME)
    for k, v in json.loads(changes).items():
        setattr(config, k, v)
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / NAME, config=config, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].double().numpy()


def test_chunked_attention_and_the_temperature_past_8192_tokens(files):
    """Past 8192 tokens the chunks and the no-rope layers' temperature both act: llama.cpp equals transformers there,
    and transformers without the temperature, or without the chunks, lands at least 10 times farther from llama.cpp at
    the positions from 8191 on (the same before).  The temperature is small on these logits (x 1.069 on one layer's
    queries: 0.09% of their range), so the comparison is of distances, not of the f32 tolerance."""
    ids = tuple(token_ids(8300, fixture_config(NAME)["vocab_size"]))
    ours = llama_cpp_logits(files["plain"], ids)
    theirs = _hf_long(ids, "{}")
    assert_logits_match(ours, theirs, TOLERANCE["f32"])
    scale = np.abs(theirs).max()
    matched = np.abs(ours[8191:] - theirs[8191:]).max()
    for changes in ({"attn_temperature_tuning": False}, {"attention_chunk_size": 16384}):
        other = _hf_long(ids, json.dumps(changes))
        assert np.abs(other[:8191] - theirs[:8191]).max() <= 1e-5 * scale, changes  # the same before the first step
        assert np.abs(ours[8191:] - other[8191:]).max() > 10 * matched, (changes, matched)


def test_runtime_rope_flags_change_nothing(files):
    """lint's runtime-flags-miss-sliding: llama.cpp's --rope-freq-base/--rope-freq-scale (llama_context_params) do not
    reach the chunked layers, the only ones with rope: the logits are bit for bit the same, where the file's keys
    change them."""
    ids = token_ids(N_TOKENS, fixture_config(NAME)["vocab_size"])
    plain = llama_cpp_logits(files["plain"], ids)
    assert np.array_equal(llama_cpp_logits(files["plain"], ids, rope_freq_base=50000.0, rope_freq_scale=0.25), plain)
    assert np.abs(llama_cpp_logits(files["linear"], ids) - plain).max() > 0.1
    finding = next(f for f in lint_gguf(files["plain"]) if f.id == "runtime-flags-miss-sliding")
    assert "3 chunked layers (0-2)" in finding.message and "the flags change nothing" in finding.message


def test_required_tensors_are_what_llama_cpp_requires(files, tmp_path):
    """Each tensor outside the blocks, of the dense block 0 and of the mixture block 1 removed in turn: llama.cpp refuses
    the file exactly when the family lists the tensor as required (the output matrix not), and lint says so."""
    family = FAMILIES[NAME]
    results = runs_without_each(files["plain"], (0, 1), tmp_path)
    cut = refused(results)
    required = set(family.required_tensors(4, experts=True, moe_step=2))
    assert cut == required & set(results), results
    assert {"blk.0.ffn_gate.weight", "blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_shexp.weight"} <= cut
    assert "output.weight" in set(results) - cut
    for name, (path, _) in results.items():
        assert ("missing-tensor" in {f.id for f in lint_gguf(path)}) == (name in required), name


def test_a_window_of_zero_is_an_error_llama_cpp_aborts_on(files, tmp_path):
    """attention.sliding_window = 0 turns llama.cpp's chunked attention off and leaves the temperature's scale 0, which
    its graph input asserts against on the first decode: lint says so, set refuses to write it (unless --force), check
    refuses to run it, llama.cpp dies."""
    path = tmp_path / "window0.gguf"
    result = CliRunner().invoke(cli, ["set", str(files["plain"]), f"{NAME}.attention.sliding_window=u32:0", "-o", str(path)])
    assert result.exit_code != 0 and "aborts" in result.output and not path.exists(), result.output
    set_keys(files["plain"], [f"{NAME}.attention.sliding_window=u32:0"], path, force=True)
    assert llama_cpp_runs([path])[str(path)] == "died: SIGABRT"
    finding = next(f for f in lint_gguf(path) if f.id == "implausible-value")
    assert "aborts" in finding.message and finding.key == f"{NAME}.attention.sliding_window"
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code != 0 and result.output.count("\n") == 1, result.output


def test_yarn_betas_llama_cpp_does_not_read_become_the_rope_freqs_tensor(files, tmp_path):
    """llama.cpp's llama4 reads no YaRN beta keys but loads rope_freqs: YaRN with betas 8/2 is written exactly as that
    tensor (native YaRN with attn_factor for the magnitude, no beta keys), and equals transformers' YaRN with those
    betas past the trained context; the probe passes it."""
    out = tmp_path / "betas.gguf"
    result = CliRunner().invoke(cli, ["set-rope", str(files["plain"]), "-o", str(out), "--rope", "yarn", "--factor", "4",
                                      "--beta-fast", "8", "--beta-slow", "2"])
    assert result.exit_code == 0, result.output
    reader = gguf.GGUFReader(out)
    keys = {f.name: f.contents() for f in reader.fields.values()}
    assert keys["ropetool.rope.exact"] is True and "rope_freqs.weight" in {t.name for t in reader.tensors}
    assert not any(k.startswith(f"{NAME}.rope.scaling.yarn_beta") for k in keys)
    ids = token_ids(N_TOKENS, fixture_config(NAME)["vocab_size"])
    rope = {**THETA, **EXTENSIONS["yarn"][1], "beta_fast": 8.0, "beta_slow": 2.0}
    assert_logits_match(llama_cpp_logits(out, ids), hf_logits(NAME, ids, rope), TOLERANCE["f32"])
    assert probe_gguf(out).verdict == "pass"


REFUSALS = [  # config.json changes llama.cpp's llama4 graph would compute otherwise, and the words of the one-line error
    ({"attention_chunk_size": 4096}, "hard-codes chunked attention of 8192"),
    ({"attention_chunk_size": None}, "hard-codes chunked attention of 8192"),
    ({"attn_temperature_tuning": False}, "always scales the no-rope layers' queries"),
    ({"floor_scale": 4096}, "temperature's period, 8192"),
    ({"attn_scale": 0.2}, "temperature's scale, 0.1"),
    ({"use_qk_norm": False}, "L2-normalises q and k exactly on models without 128 experts"),
    ({"no_rope_layers": [1, 1, 0, 1]}, "applies no rope exactly in layers 3"),
    ({"moe_layers": [0, 2]}, "a mixture exactly when (il + 1) % interleave_moe_layer_step (2) == 0"),
    ({"attention_bias": True}, "loads no attention output bias"),
]


@pytest.mark.parametrize("changes,words", REFUSALS, ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(REFUSALS)])
def test_a_config_llama_cpp_would_compute_differently_is_refused(changes, words, tmp_path):
    assert words in convert_refusal(NAME, changes, tmp_path)


@pytest.mark.parametrize("which", ["plain", *EXTENSIONS])
def test_lint_says_only_what_the_runtime_flags_miss(files, which):
    """No other finding on what ropetool writes: the chunked layers take rope_freqs (llama3's scaling there), so
    sliding-window-past-training does not hold."""
    assert [f.id for f in lint_gguf(files[which])] == ["runtime-flags-miss-sliding"]
