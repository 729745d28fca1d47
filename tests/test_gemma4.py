"""Gemma 4 (llama.cpp's gemma4, Gemma4ForCausalLM): five sliding-window layers then a global one, the global layers'
proportional rope (a quarter of each of their own, larger heads rotated; the rest held still by a rope_freqs tensor of
1e30) and the sliding layers' own head size and rotary count.

The oracles: transformers' Gemma4ForCausalLM on the fixture (6 layers, window 16, global heads of 32 dims with a
quarter rotated and one key/value head that is also the value, sliding heads of 16) for the logits, its proportional
rope's factor being the extension it can express on the global layers; and llama.cpp's own graph (every GGML_OP_ROPE
node) for what each kind of layer rotates.  tests/test_convert.py compares every output type of the plain conversion."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
from bad_inputs import ABSENT
from click.testing import CliRunner
from conftest import convert_refusal, extended_files, fixture_config, fixture_dir, hf_logits, llama_cpp_logits, token_ids
from llama_loads import refused, runs_without_each
from test_convert import TOLERANCE, assert_logits_match

from ropetool.cli import cli
from ropetool.edit import set_keys
from ropetool.families import FAMILIES
from ropetool.inspect import inspect_gguf
from ropetool.io.gguf_file import GGUFFile, TensorOut, write_gguf
from ropetool.model import lint_gguf
from ropetool.probe import probe_gguf

NAME = "gemma4"
N_TOKENS = 160  # past the trained context (64)
ROTATED, PAIRS = 4, 16  # the global heads' 32 dims: 16 pairs, a quarter of the dims (4 pairs) rotated
# Each file: how ropetool writes it, and (where transformers can express it) the global layers' rope_parameters.
FILES = {
    "linear": (["convert", "--rope", "linear", "--factor", "4"], {"factor": 4.0}),
    "set-linear": (["set-rope", "--rope", "linear", "--factor", "4"], {"factor": 4.0}),
    # NTK-aware alpha 4 is a base: 1e6 x 4^(32/30) over the whole head, as the proportional rope's rope_theta
    "ntk": (["set-rope", "--rope", "ntk", "--alpha", "4"], {"rope_theta": 1e6 * 4 ** (32 / 30)}),
    # transformers' Gemma 4 has no YaRN or llama3 rope for its proportional layers (its yarn would rotate 8 dims of a
    # 32-dim head and fails): these are checked by the probe alone, against ggml's formulas over the whole head
    "yarn": (["set-rope", "--rope", "yarn", "--factor", "4"], None),
    "llama3": (["set-rope", "--rope", "llama3", "--factor", "8"], None),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return extended_files(tmp_path_factory.mktemp(NAME), NAME, FILES)


def _rope(full: dict | None = None, sliding: dict | None = None) -> dict:
    rope = fixture_config(NAME)["rope_parameters"]
    return {"full_attention": {**rope["full_attention"], **(full or {})},
            "sliding_attention": {**rope["sliding_attention"], **(sliding or {})}}


def _tensors(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {t.name: np.array(t.data) for t in reader.tensors}, {f.name: f.contents() for f in reader.fields.values()}


def test_the_fixture_has_both_kinds_of_layer():
    config = fixture_config(NAME)
    assert config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert config["per_layer_config"] == {"5": {"head_dim": 32, "num_key_value_heads": 1}} and config["head_dim"] == 16
    assert config["rope_parameters"]["full_attention"] == {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                                           "rope_theta": 1e6}
    assert config["attention_k_eq_v"] and config["hidden_size_per_layer_input"] == 0


def test_the_keys_and_the_proportional_pattern(files):
    """The keys as llama.cpp's converter writes them (the global head as key_length and rope.dimension_count, the
    sliding one as the _swa keys, key/value heads per layer, the pattern), and rope_freqs: 1 on the rotated pairs,
    1e30 on the rest, in every file; a setting that goes into the tensor (llama3) multiplies the rotated pairs only."""
    tensors, keys = _tensors(files["plain"])
    assert (keys[f"{NAME}.attention.key_length"], keys[f"{NAME}.attention.key_length_swa"]) == (32, 16)
    assert (keys[f"{NAME}.rope.dimension_count"], keys[f"{NAME}.rope.dimension_count_swa"]) == (32, 16)
    assert list(keys[f"{NAME}.attention.head_count_kv"]) == [2, 2, 2, 2, 2, 1]
    assert list(keys[f"{NAME}.attention.sliding_window_pattern"]) == [True] * 5 + [False]
    assert keys[f"{NAME}.rope.freq_base_swa"] == 10000.0 and keys["ropetool.rope.unrotated_pairs"] == PAIRS - ROTATED
    assert "blk.5.attn_v.weight" not in tensors and "blk.0.attn_v.weight" in tensors  # attention_k_eq_v
    for which in ("plain", *FILES):
        ff, keys = _tensors(files[which])
        ff = ff["rope_freqs.weight"]
        assert ff.shape == (PAIRS,) and np.all(ff[ROTATED:] == np.float32(1e30)), which
        assert keys["ropetool.rope.unrotated_pairs"] == PAIRS - ROTATED, which
        if which == "llama3":
            assert np.all(ff[:ROTATED] >= 1) and np.any(ff[:ROTATED] > 1), which
        else:
            np.testing.assert_array_equal(ff[:ROTATED], 1.0)


@pytest.mark.parametrize("which", ["linear", "set-linear", "ntk"])
def test_an_extension_of_the_global_layers_matches_transformers(files, which):
    """llama.cpp equals transformers' proportional rope with the same factor (or base) on the global layers, the
    sliding layers unscaled, past the trained context; the unscaled model does not, and neither does transformers
    with the sliding layers scaled too (llama.cpp leaves them untouched)."""
    ids = token_ids(N_TOKENS, fixture_config(NAME)["vocab_size"])
    full = FILES[which][1]
    ours = llama_cpp_logits(files[which], ids)
    assert_logits_match(ours, hf_logits(NAME, ids, _rope(full), ggml_gelu=True), TOLERANCE["f32"])
    scale = np.abs(ours).max()
    unscaled = hf_logits(NAME, ids, ggml_gelu=True)
    assert np.abs(ours - unscaled).max() > 5 * TOLERANCE["f32"] * scale
    sliding = {"rope_type": "linear", "factor": 4.0} if "factor" in full else {"rope_theta": 1e4 * 4 ** (16 / 14)}
    both = hf_logits(NAME, ids, _rope(full, sliding), ggml_gelu=True)
    assert np.abs(ours - both).max() > 5 * TOLERANCE["f32"] * scale


def test_the_plain_file_matches_transformers_past_the_window(files):
    ids = token_ids(N_TOKENS, fixture_config(NAME)["vocab_size"])
    assert_logits_match(llama_cpp_logits(files["plain"], ids), hf_logits(NAME, ids, ggml_gelu=True), TOLERANCE["f32"])


@pytest.mark.parametrize("which", ["plain", *FILES])
def test_probe_passes_each_kind_of_layer(files, which):
    """llama.cpp's rope ops: the global layer's over its 32-dim heads with the unrotated pairs still, the sliding layers'
    over their 16-dim heads without rope_freqs, each equal to the meant setting (the method over the whole global head,
    the last 12 pairs still; the sliding layers' base 1e4, unscaled)."""
    report = probe_gguf(files[which])
    assert report.verdict == "pass", report.summary()
    kinds = {k.kind: k for k in report.kinds}
    assert kinds["global"].layers == [5] and kinds["sliding"].layers == [0, 1, 2, 3, 4], report.summary()
    assert kinds["global"].op_params["n_dims"] == 32 and kinds["global"].op_params["freq_factors"]
    assert kinds["sliding"].op_params["n_dims"] == 16 and not kinds["sliding"].op_params["freq_factors"]
    assert kinds["sliding"].op_params["freq_scale"] == 1.0 and kinds["sliding"].op_params["freq_base"] == 10000.0
    assert all(k.numerics_checked == k.rope_ops > 0 and k.worst_ratio <= 1 for k in report.kinds), report.summary()


def test_probe_fails_on_a_tampered_key_or_pattern(files, tmp_path):
    tampered = tmp_path / "factor.gguf"
    set_keys(files["set-linear"], [f"{NAME}.rope.scaling.factor=f32:8"], tampered)
    report = probe_gguf(tampered)
    assert report.verdict == "fail" and f"{NAME}.rope.scaling.factor = 8 where ropetool's record means 4" in report.reason
    # the proportional pattern lost (every pair rotated): llama.cpp then turns pairs 4-15, which the record holds still
    with GGUFFile(files["plain"]) as gf:
        flat = tmp_path / "flat.gguf"
        write_gguf(flat, list(gf.fields.values()),
                   [TensorOut.copy_of(t) for t in gf.tensors if t.name != "rope_freqs.weight"]
                   + [TensorOut.from_array("rope_freqs.weight", np.ones(PAIRS, np.float32))], source=gf)
    report = probe_gguf(flat)
    assert report.verdict == "fail" and "global layers" in report.reason and "pairs 4..15" in report.reason, report.reason


def test_a_magnitude_llama_cpp_would_give_the_sliding_layers_too_needs_approximate(files, tmp_path):
    """YaRN with betas 8/2 (keys gemma4 does not read) goes into rope_freqs, its magnitude into rope.scaling.attn_factor,
    which llama.cpp applies to every layer: the sliding layers' rope would be scaled too (the probe sees it: their
    magnitude 1.139 where 1 is meant).  set-rope refuses it unless --approximate, which records the error."""
    out = tmp_path / "betas.gguf"
    args = ["set-rope", str(files["plain"]), "-o", str(out), "--rope", "yarn", "--factor", "4", "--beta-fast", "8",
            "--beta-slow", "2"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and refused.output.count("\n") == 1 and "the sliding-window layers' too" in refused.output
    assert not out.exists()
    assert CliRunner().invoke(cli, [*args, "--approximate"]).exit_code == 0
    tensors, keys = _tensors(out)
    assert keys["ropetool.rope.exact"] is False and keys["ropetool.rope.approx_max_rel_error"] == pytest.approx(0.1386, abs=1e-3)
    assert np.all(tensors["rope_freqs.weight"][ROTATED:] == np.float32(1e30))
    report = probe_gguf(out)  # against what its keys say (the approximation recorded)
    assert report.verdict == "pass", report.summary()
    assert {k.kind: k for k in report.kinds}["sliding"].op_params["attn_factor"] == pytest.approx(1.13863, rel=1e-5)


def test_inspect_says_what_each_kind_of_layer_does(files):
    rope = inspect_gguf(files["set-linear"])["rope"]
    assert rope["pairs"]["unrotated"] == list(range(ROTATED, PAIRS)) and rope["pairs"]["interpolated"] == [0, 1, 2, 3]
    sw = rope["sliding_window"]
    assert (sw["layers"], sw["global_layers"], sw["head_dim"], sw["n_rot"]) == ([0, 1, 2, 3, 4], [5], 16, 16)
    assert sw["freq_scale"] == 1.0 and sw["freq_base"] == 10000.0
    d = rope["description"]
    assert "4-15 unrotated (proportional rope: only the first 8 of each 32-dim head turn" in d
    assert "5 sliding-window layers (0-4, window 16, heads of 16 dims, 16 rotated (all), no rope_freqs)" in d
    text = CliRunner().invoke(cli, ["inspect", str(files["set-linear"])]).output
    assert "unrotated 4-15" in text and "head 16, n_rot 16" in text
    assert [f.id for f in lint_gguf(files["set-linear"])] == ["runtime-flags-miss-sliding"]


def test_required_tensors_are_what_llama_cpp_requires(files, tmp_path):
    """Each tensor outside the blocks, of sliding block 0 and of global block 5 removed in turn: llama.cpp refuses the
    file exactly when the family lists it as required (rope_freqs among them; not the per-layer output scale, not the
    sliding layers' attn_v), and lint says so."""
    results = runs_without_each(files["plain"], (0, 5), tmp_path)
    cut = refused(results)
    required = set(FAMILIES[NAME].required_tensors(6))
    assert cut == required & set(results), results
    assert "rope_freqs.weight" in cut
    assert {"blk.0.attn_v.weight", "blk.0.layer_output_scale.weight"} <= set(results) - cut
    for name, (path, _) in results.items():
        assert ("missing-tensor" in {f.id for f in lint_gguf(path)}) == (name in required), name


REFUSALS = [  # config.json changes ropetool does not convert (or llama.cpp would compute otherwise), and the words
    ({"hidden_size_per_layer_input": ABSENT}, "without per-layer embeddings"),  # absent: transformers' default 256
    ({"hidden_size_per_layer_input": 256}, "without per-layer embeddings"),
    ({"num_kv_shared_layers": 2}, "without shared key/value layers"),
    ({"enable_moe_block": True}, "without mixture blocks"),
    ({"use_double_wide_mlp": True}, "without the double-wide MLP"),
    ({"attention_bias": True}, "loads no attention biases"),
    ({"use_bidirectional_attention": "all"}, "is causal"),
    ({"per_layer_config": {"4": {"head_dim": 32}, "5": {"head_dim": 32, "num_key_value_heads": 1}}},
     "the sliding layers differ in head size"),
    ({"layer_types": ["sliding_attention"] * 6}, "both sliding_attention and full_attention"),
]


@pytest.mark.parametrize("changes,words", REFUSALS, ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(REFUSALS)])
def test_a_config_ropetool_does_not_convert_is_refused(changes, words, tmp_path):
    assert words in convert_refusal(NAME, changes, tmp_path)


def test_a_released_config_without_per_layer_config(tmp_path):
    """Gemma 4's released config.json names the global heads by global_head_dim and num_global_key_value_heads (no
    per_layer_config, which transformers derives from them): the same file as from the fixture's own config."""
    folder = tmp_path / "m"
    shutil.copytree(fixture_dir(NAME), folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("per_layer_config")
    (folder / "config.json").write_text(json.dumps({**config, "global_head_dim": 32, "num_global_key_value_heads": 1}))
    ours, theirs = tmp_path / "released.gguf", tmp_path / "fixture.gguf"
    for src, out in ((folder, ours), (fixture_dir(NAME), theirs)):
        result = CliRunner().invoke(cli, ["convert", str(src), "-o", str(out), "--outtype", "f32"])
        assert result.exit_code == 0, result.output
    a, b = _tensors(ours), _tensors(theirs)
    assert a[1] == {**b[1], "general.name": a[1]["general.name"]}
    assert a[0].keys() == b[0].keys() and all(np.array_equal(a[0][n], b[0][n]) for n in a[0])


def test_eval_tries_a_keys_only_setting_as_load_time_overrides(files):
    """eval's linear x4 on the plain file leaves rope_freqs as it is (the proportional pattern): applied as load-time
    overrides, with the perplexities of the file set-rope writes; llama3 changes the tensor and takes a temporary file."""
    def rows(path, *tries):
        result = CliRunner().invoke(cli, ["eval", str(path), "--lengths", "64,128", "--json",
                                          *[a for t in tries for a in ("--try", t)]])
        assert result.exit_code == 0, result.output
        return [r for r in json.loads(result.output[result.output.index("["):]) if r["kind"] == "window"]

    tried = rows(files["plain"], "linear:factor=4", "llama3:factor=8")
    applied = {r["setting"]: r["applied"] for r in tried}
    assert applied["linear:factor=4"] == "overrides" and applied["llama3:factor=8"] != "overrides"
    written = {r["length"]: r["perplexity"] for r in rows(files["set-linear"]) if r["setting"] == "file"}
    for r in tried:
        if r["setting"] == "linear:factor=4":
            assert r["perplexity"] == pytest.approx(written[r["length"]], rel=1e-6)
