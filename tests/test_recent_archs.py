"""The 2025-26 architectures llama.cpp already loads (issue 24): smollm3, olmo2, glm4moe, mistral3.

On each fixture (transformers' own class, tiny, trained context 64 unless the fixture says otherwise), with
transformers configured alike as the oracle: an extension at convert (YaRN) and one by set-rope (linear) past the
trained context match llama.cpp's logits, the unscaled model does not; check's probe (llama.cpp's own rope ops)
passes each file and fails one whose rope factor was changed behind ropetool's record.  Every output type of the
plain conversions: tests/test_convert.py (test_fixture_logits_match_transformers).
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import convert_refusal, fixture_config, fixture_dir, hf_logits, llama_cpp_logits, token_ids
from test_convert import TOLERANCE, assert_logits_match

from ropetool.cli import cli
from ropetool.edit import set_keys
from ropetool.probe import probe_gguf

ARCHS = ["smollm3", "olmo2", "glm4moe", "mistral3"]
N_TOKENS = 160
YARN4 = (["--rope", "yarn", "--factor", "4"], {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})
LINEAR4 = (["--rope", "linear", "--factor", "4"], {"rope_type": "linear", "factor": 4.0})
# Per architecture: the extension convert writes ("yarn") and the one set-rope writes on the plain file ("linear"), each
# as ropetool's options and as transformers' rope_parameters.  mistral3's fixture is trained on 16 positions and
# extended x16 by YaRN already: twice that (factor 32) with betas 8/2, which its loader reads, its mscale and
# mscale_all_dim kept (the cos/sin magnitude stays 1, as transformers' Ministral 3 computes it); linear x4 over 16.
EXTENSIONS = {
    "smollm3": {"yarn": YARN4, "linear": LINEAR4},
    "olmo2": {"yarn": YARN4, "linear": LINEAR4},
    "glm4moe": {"yarn": YARN4, "linear": LINEAR4},  # on the rotated half of each head (partial_rotary_factor kept)
    "mistral3": {
        "yarn": (["--rope", "yarn", "--factor", "32", "--beta-fast", "8", "--beta-slow", "2"],
                 {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 16, "beta_fast": 8.0,
                  "beta_slow": 2.0, "mscale": 1.0, "mscale_all_dim": 1.0}),
        "linear": LINEAR4,
    },
}


def _rope(name: str, extra: dict) -> dict:
    """The fixture's rope_parameters with the extension: its base and rotary fraction kept, and Ministral 3's
    temperature (llama_4_scaling_beta, whose period is original_max_position_embeddings) as the fixture has it."""
    params = fixture_config(name)["rope_parameters"]
    kept = ("rope_theta", "partial_rotary_factor", "llama_4_scaling_beta")
    kept += ("original_max_position_embeddings",) if "llama_4_scaling_beta" in params else ()
    return {**{k: params[k] for k in kept if k in params}, **extra}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Per architecture: the plain conversion, YaRN x4 at convert, linear x4 by set-rope on the plain file."""
    made = {}
    for name in ARCHS:
        root = tmp_path_factory.mktemp(name)
        plain, yarn, linear = root / "plain.gguf", root / "yarn.gguf", root / "linear.gguf"
        for args in (["convert", str(fixture_dir(name)), "-o", str(plain), "--outtype", "f32"],
                     ["convert", str(fixture_dir(name)), "-o", str(yarn), "--outtype", "f32", *EXTENSIONS[name]["yarn"][0]],
                     ["set-rope", str(plain), "-o", str(linear), *EXTENSIONS[name]["linear"][0]]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, result.output
        made[name] = {"plain": plain, "yarn": yarn, "linear": linear}
    return made


@pytest.mark.parametrize("name", ARCHS)
def test_extensions_past_the_trained_context_match_transformers(name, files):
    ids = token_ids(N_TOKENS, fixture_config(name)["vocab_size"])
    unscaled = hf_logits(name, ids)
    assert_logits_match(llama_cpp_logits(files[name]["plain"], ids), unscaled, TOLERANCE["f32"])
    for which, (_, rope) in EXTENSIONS[name].items():
        ours = llama_cpp_logits(files[name][which], ids)
        assert_logits_match(ours, hf_logits(name, ids, _rope(name, rope)), TOLERANCE["f32"])
        assert np.abs(ours - unscaled).max() > 5 * TOLERANCE["f32"] * np.abs(unscaled).max(), which


@pytest.mark.parametrize("which", ["plain", "yarn", "linear"])
@pytest.mark.parametrize("name", ARCHS)
def test_probe_passes_each_file(name, which, files):
    report = probe_gguf(files[name][which])
    assert report.verdict == "pass", report.summary()
    assert report.layers_seen == report.layers_expected and report.layers_seen, report.summary()
    assert all(k.numerics_checked == k.rope_ops > 0 and k.worst_ratio <= 1 for k in report.kinds), report.summary()


@pytest.mark.parametrize("name", ARCHS)
def test_probe_fails_on_a_tampered_rope_key(name, files, tmp_path):
    tampered = tmp_path / "tampered.gguf"
    set_keys(files[name]["linear"], [f"{name}.rope.scaling.factor=f32:8"], tampered)
    report = probe_gguf(tampered)
    assert report.verdict == "fail", report.summary()
    assert f"{name}.rope.scaling.factor = 8 where ropetool's record means 4" in report.reason


@pytest.mark.parametrize("name", ARCHS)
def test_end_to_end_check(name, files):
    """Where ropetool's numpy reference runs the architecture's blocks as llama.cpp does, check --end-to-end passes;
    glm4moe's mixture (sigmoid routing with groups and a selection bias, ungated shared experts) is not among them:
    refused in one line, the probe being the rope's proof."""
    from ropetool.check import check_gguf
    from ropetool.families import FAMILIES

    for which in ("yarn", "linear"):
        if not FAMILIES[name].reference:
            result = CliRunner().invoke(cli, ["check", str(files[name][which]), "--end-to-end"])
            assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
            assert "does not run glm4moe" in result.output
            continue
        report = check_gguf(files[name][which])
        assert report.verdict == "pass", report.summary()


REFUSALS = [  # (fixture, config.json changes, words of the one-line error): what llama.cpp's graph computes otherwise
    ("olmo2", {"attention_bias": True}, "llama.cpp's olmo2 loads no attention biases"),
    ("olmo2", {"head_dim": 32}, "hidden_size / num_attention_heads"),
]


@pytest.mark.parametrize("name,changes,words", REFUSALS, ids=[f"{n}-{next(iter(c))}" for n, c, _ in REFUSALS])
def test_a_config_llama_cpp_would_compute_differently_is_refused(name, changes, words, tmp_path):
    assert words in convert_refusal(name, changes, tmp_path)


LOADS_ROPE_FREQS = {"smollm3": False, "olmo2": False, "glm4moe": False, "mistral3": True}  # llama.cpp's load_tensors


@pytest.mark.parametrize("name", ARCHS)
def test_set_rope_writes_exactly_or_refuses(name, files, tmp_path):
    """What llama.cpp cannot compute is refused in one line (or, for YaRN's betas, written as native YaRN with
    --approximate, the error recorded); what it can is written exactly.  llama3 rope needs a rope_freqs tensor, which
    only mistral3's loader takes: there it equals transformers' llama3 rope; YaRN betas 8/2 are keys mistral3 reads,
    and a rope_freqs tensor nowhere else."""
    import gguf

    plain = files[name]["plain"]
    llama3, betas = tmp_path / "llama3.gguf", tmp_path / "betas.gguf"
    result = CliRunner().invoke(cli, ["set-rope", str(plain), "-o", str(llama3), "--rope", "llama3", "--factor", "8"])
    beta_args = ["set-rope", str(plain), "-o", str(betas), "--rope", "yarn", "--factor", "4", "--beta-fast", "8",
                 "--beta-slow", "2"]
    refused = CliRunner().invoke(cli, beta_args)
    if not LOADS_ROPE_FREQS[name]:
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert "rope_freqs" in result.output and not llama3.exists()
        assert refused.exit_code == 2 and "--approximate" in refused.output and not betas.exists()
        approximate = CliRunner().invoke(cli, [*beta_args, "--approximate"])
        assert approximate.exit_code == 0, approximate.output
        keys = {f.name: f.contents() for f in gguf.GGUFReader(betas).fields.values()}
        assert keys["ropetool.rope.exact"] is False and keys["ropetool.rope.approx_max_rel_error"] > 0
        assert probe_gguf(betas).verdict == "pass"  # against what its keys say (native YaRN), as the note says
        return
    assert result.exit_code == 0 and refused.exit_code == 0, result.output + refused.output
    ids = token_ids(N_TOKENS, fixture_config(name)["vocab_size"])
    rope = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 16, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0}
    assert_logits_match(llama_cpp_logits(llama3, ids), hf_logits(name, ids, _rope(name, rope)), TOLERANCE["f32"])
    assert probe_gguf(llama3).verdict == "pass" and probe_gguf(betas).verdict == "pass"
    assert "rope_freqs.weight" not in {t.name for t in gguf.GGUFReader(betas).tensors}
