"""Ministral 3 (llama.cpp's mistral3): YaRN whose betas and mscale_all_dim its loader reads, and Llama 4's attention
temperature, whose period llama.cpp takes from rope.scaling.original_context_length.

The oracles: transformers' Ministral3ForCausalLM on the fixture (YaRN x16 over 16 positions, mscale = mscale_all_dim
= 1, llama_4_scaling_beta 0.1: the released rope with a tiny original context), configured alike for each file, and
llama.cpp's own graph (its rope ops' parameters).  tests/test_recent_archs.py has the extensions at convert (YaRN x32,
betas 8/2) and by set-rope (linear x4), the probe on each and on a tampered key, and check --end-to-end."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fixture_config, fixture_dir, hf_logits, llama_cpp_logits, token_ids
from test_convert import TOLERANCE, assert_logits_match

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import set_keys, unset_keys
from ropetool.inspect import inspect_gguf
from ropetool.llamacpp.graph import run_graph
from ropetool.model import lint_gguf

NAME = "mistral3"
ROPE = fixture_config(NAME)["rope_parameters"]
IDS = token_ids(160, fixture_config(NAME)["vocab_size"])


def _keys(path) -> dict:
    return {f.name: f.contents() for f in gguf.GGUFReader(path).fields.values() if f.name.startswith(NAME)}


def _hf(rope: dict) -> np.ndarray:
    return hf_logits(NAME, IDS, rope)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path = tmp_path_factory.mktemp("mistral3") / "plain.gguf"
    convert(fixture_dir(NAME), path, outtype="f32")
    return path


def test_the_released_rope_is_written_as_llama_cpp_reads_it(plain):
    """YaRN x16 with mscale_all_dim as yarn_log_multiplier (llama.cpp's mistral3 loader reads it unscaled: the cos/sin
    magnitude is then transformers' mscale ratio, 1), the temperature's beta as attention.temperature_scale, the
    original context (its period) kept; llama.cpp's rope ops carry that magnitude and the betas 32/1."""
    keys = _keys(plain)
    assert keys[f"{NAME}.rope.scaling.yarn_log_multiplier"] == 1.0
    assert keys[f"{NAME}.attention.temperature_scale"] == pytest.approx(0.1)
    assert keys[f"{NAME}.rope.scaling.original_context_length"] == 16 and keys[f"{NAME}.context_length"] == 256
    assert f"{NAME}.rope.scaling.attn_factor" not in keys
    op = run_graph(plain, [0, 200], 4).ropes[0]
    assert (op.beta_fast, op.beta_slow, op.freq_scale) == (32.0, 1.0, 1 / 16)
    assert op.attn_factor * (1 + 0.1 * np.log(16)) == pytest.approx(1.0, rel=1e-6)  # ggml's magnitude: 1
    rope = inspect_gguf(plain)["rope"]
    assert rope["inferred_method"] == "yarn" and rope["attention_factor"] == 1
    assert rope["llama_cpp"]["attention_temperature"] == {"scale": 0.1, "period": 16,
                                                          "period_source": "original_context_length", "offset": 0.0}
    assert "queries scaled by 1 + 0.1 ln(floor(position / 16) + 1) after rope" in rope["description"]


def test_betas_llama_cpp_reads_are_written_as_keys(tmp_path):
    """mistral3 reads yarn_beta_fast/slow: a YaRN with betas 8/2 is written as those keys (no rope_freqs tensor) and
    llama.cpp's rope ops carry them; the logits equal transformers' with the same betas (test_recent_archs)."""
    path = tmp_path / "betas.gguf"
    convert(fixture_dir(NAME), path, outtype="f32", method="yarn", factor=32.0, beta_fast=8.0, beta_slow=2.0)
    keys = _keys(path)
    assert keys[f"{NAME}.rope.scaling.yarn_beta_fast"] == 8.0 and keys[f"{NAME}.rope.scaling.yarn_beta_slow"] == 2.0
    assert "rope_freqs.weight" not in {t.name for t in gguf.GGUFReader(path).tensors}
    op = run_graph(path, [0, 300], 4).ropes[0]
    assert (op.beta_fast, op.beta_slow) == (8.0, 2.0)
    assert not [f for f in lint_gguf(path) if f.id == "ignored-key"]


def test_the_temperature_is_what_makes_it_match(plain, tmp_path):
    """Without attention.temperature_scale llama.cpp no longer matches the fixture, and matches transformers with
    llama_4_scaling_beta 0 instead: the key carries the temperature, and nothing else does."""
    bare = tmp_path / "bare.gguf"
    unset_keys(plain, [f"{NAME}.attention.temperature_scale"], bare)
    ours, model = llama_cpp_logits(bare, IDS), _hf(ROPE)
    assert np.abs(ours - model).max() > 5 * TOLERANCE["f32"] * np.abs(model).max()
    assert_logits_match(ours, _hf({**ROPE, "llama_4_scaling_beta": 0.0}), TOLERANCE["f32"])


def test_the_temperature_period_follows_the_original_context_key(tmp_path):
    """A linear x4 file (set-rope) without rope.scaling.original_context_length: lint warns, and llama.cpp then steps
    the temperature every context_length (64) tokens, as transformers does with original_max_position_embeddings 64,
    not every 16 as the model was trained."""
    plain, linear, bare = tmp_path / "p.gguf", tmp_path / "l.gguf", tmp_path / "b.gguf"
    convert(fixture_dir(NAME), plain, outtype="f32")
    result = CliRunner().invoke(cli, ["set-rope", str(plain), "-o", str(linear), "--rope", "linear", "--factor", "4"])
    assert result.exit_code == 0, result.output
    unset_keys(linear, [f"{NAME}.rope.scaling.original_context_length"], bare)
    found = [f for f in lint_gguf(bare) if f.id == "temperature-period-from-context"]
    assert len(found) == 1 and "every 64 tokens (context_length)" in found[0].message
    assert not [f for f in lint_gguf(linear) if f.id == "temperature-period-from-context"]
    linear4 = {"rope_type": "linear", "factor": 4.0, "rope_theta": ROPE["rope_theta"], "llama_4_scaling_beta": 0.1}
    ours = llama_cpp_logits(bare, IDS)
    trained = _hf({**linear4, "original_max_position_embeddings": 16})
    assert_logits_match(llama_cpp_logits(linear, IDS), trained, TOLERANCE["f32"])
    assert np.abs(ours - trained).max() > 5 * TOLERANCE["f32"] * np.abs(trained).max()
    assert_logits_match(ours, _hf({**linear4, "original_max_position_embeddings": 64}), TOLERANCE["f32"])


def test_set_rope_none_keeps_the_temperature_period(plain, tmp_path):
    """Plain rope by set-rope still writes the original context, so the temperature keeps its period of 16: llama.cpp
    equals transformers with the default rope and the same temperature."""
    none = tmp_path / "none.gguf"
    result = CliRunner().invoke(cli, ["set-rope", str(plain), "-o", str(none), "--rope", "none"])
    assert result.exit_code == 0, result.output
    assert _keys(none)[f"{NAME}.rope.scaling.original_context_length"] == 16
    default = {"rope_type": "default", "rope_theta": ROPE["rope_theta"], "llama_4_scaling_beta": 0.1,
               "original_max_position_embeddings": 16}
    assert_logits_match(llama_cpp_logits(none, IDS), _hf(default), TOLERANCE["f32"])


def test_the_temperature_key_is_ignored_elsewhere(tmp_path):
    """attention.temperature_scale on an architecture whose loader does not read it: lint names it."""
    path = tmp_path / "llama.gguf"
    convert(fixture_dir("llama"), path, outtype="f32")
    marked = tmp_path / "marked.gguf"
    set_keys(path, ["llama.attention.temperature_scale=f32:0.1"], marked)
    found = [f for f in lint_gguf(marked) if f.id == "ignored-key"]
    assert found and "llama.attention.temperature_scale is ignored by llama.cpp's llama loader" in found[0].message


def test_a_sliding_window_is_refused(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(fixture_dir(NAME), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "sliding_window": 8}))
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(tmp_path / "o.gguf")])
    assert result.exit_code == 2 and "llama.cpp's mistral3 has no sliding-window layers" in result.output


def test_the_released_contexts_probe_to_their_end(tmp_path):
    """The fixture with Ministral 3's released contexts (YaRN x16 over 16384, max_position_embeddings 262144): the
    probe reaches 1.25 x 262144 and every rope op equals the meant YaRN (betas 32/1 read, magnitude 1)."""
    from ropetool.probe import probe_gguf

    folder = tmp_path / "m"
    shutil.copytree(fixture_dir(NAME), folder)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 262144
    config["rope_parameters"] = {**config["rope_parameters"], "original_max_position_embeddings": 16384,
                                 "rope_theta": 1e6}
    (folder / "config.json").write_text(json.dumps(config))
    path = tmp_path / "released.gguf"
    convert(folder, path, outtype="f32")
    report = probe_gguf(path)
    assert report.verdict == "pass" and report.max_position == int(1.25 * 262144), report.summary()
    op = report.kinds[0].op_params
    assert op["freq_scale"] == 1 / 16 and op["n_ctx_orig"] == 16384 and (op["beta_fast"], op["beta_slow"]) == (32, 1)
    assert report.kinds[0].meant["magnitude"] == pytest.approx(1.0)
