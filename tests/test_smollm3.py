"""SmolLM3 (llama.cpp's smollm3): no rope in every 4th layer, which llama.cpp's graph hard-codes.

The oracles: transformers' SmolLM3ForCausalLM on the fixture (4 layers, layer 3 without rope, as its config's
no_rope_layers says) for the logits, and llama.cpp's own graph (every GGML_OP_ROPE node it builds) for which layers
rotate.  tests/test_convert.py compares every output type; tests/test_recent_archs.py the extensions at convert and by
set-rope, the probe on a tampered key and check --end-to-end."""

from __future__ import annotations

import pytest
from bad_inputs import ABSENT
from click.testing import CliRunner
from conftest import convert_refusal, fixture_config, fixture_dir

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.inspect import inspect_gguf
from ropetool.probe import probe_gguf

NAME = "smollm3"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm3")
    plain, yarn, linear = root / "plain.gguf", root / "yarn.gguf", root / "linear.gguf"
    convert(fixture_dir(NAME), plain, outtype="f32")
    convert(fixture_dir(NAME), yarn, outtype="f32", method="yarn", factor=4.0)
    result = CliRunner().invoke(cli, ["set-rope", str(plain), "-o", str(linear), "--rope", "linear", "--factor", "4"])
    assert result.exit_code == 0, result.output
    return {"plain": plain, "yarn": yarn, "linear": linear}


def test_the_fixture_has_a_layer_without_rope():
    config = fixture_config(NAME)
    assert config["num_hidden_layers"] == 4 and config["no_rope_layers"] == [1, 1, 1, 0]


@pytest.mark.parametrize("which", ["plain", "yarn", "linear"])
def test_probe_sees_no_rope_op_in_the_no_rope_layer(files, which):
    """llama.cpp's graph has rope ops in layers 0-2 only, each equal to the meant setting, on the plain file, the
    YaRN one (convert) and the linear one (set-rope): no setting reaches layer 3."""
    report = probe_gguf(files[which])
    assert report.verdict == "pass", report.summary()
    assert report.layers_seen == [0, 1, 2] and report.layers_expected == [0, 1, 2], report.summary()
    assert all(k.numerics_checked == k.rope_ops > 0 and k.worst_ratio <= 1 for k in report.kinds), report.summary()
    assert "layer 3 has no rope in llama.cpp's smollm3 graph" in "\n".join(report.notes)


def test_inspect_names_the_no_rope_layers(files):
    for which in ("plain", "linear"):
        rope = inspect_gguf(files[which])["rope"]
        assert rope["llama_cpp"]["no_rope_layers"] == [3]
        assert "rope in layers 0-2 only" in rope["description"] and "(layer 3: no position information" in rope["description"]
    result = CliRunner().invoke(cli, ["inspect", str(files["linear"])])
    assert "no rope:    layer 3 " in result.output


@pytest.mark.parametrize("changes", [{"no_rope_layers": [1, 0, 1, 1]}, {"no_rope_layers": [1, 1, 1, 1]},
                                     {"no_rope_layers": ABSENT, "no_rope_layer_interval": 2},
                                     {"attention_bias": True}, {"use_sliding_window": True, "sliding_window": 16}])
def test_a_config_llama_cpp_would_compute_differently_is_refused(changes, tmp_path):
    """llama.cpp's smollm3 skips rope in layer 3 of 4 and nowhere else, and loads no attention biases or sliding
    window: a config.json asking otherwise is refused in one line, nothing written."""
    assert "llama.cpp's smollm3" in convert_refusal(NAME, changes, tmp_path)

