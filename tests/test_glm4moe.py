"""GLM-4.5 (llama.cpp's glm4moe): rope on the first half of each head (NEOX pairs), a dense layer then mixtures with a
shared expert, sigmoid routing with a selection bias and groups.

The oracles: transformers' Glm4MoeForCausalLM on the fixture, and llama.cpp itself (its rope ops, the files its loader
refuses).  tests/test_convert.py compares every output type; tests/test_recent_archs.py the extensions at convert and
by set-rope, the probe on each file and on a tampered key."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
from conftest import convert_refusal, fixture_config, fixture_dir, hf_logits, llama_cpp_logits, token_ids
from llama_loads import refused, runs_without_each
from test_convert import TOLERANCE, assert_logits_match

from ropetool.convert import convert
from ropetool.families import FAMILIES
from ropetool.inspect import inspect_gguf
from ropetool.model import lint_gguf
from ropetool.probe import probe_gguf

NAME = "glm4moe"


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path = tmp_path_factory.mktemp("glm4moe") / "plain.gguf"
    convert(fixture_dir(NAME), path, outtype="f32")
    return path


def test_rope_on_half_of_each_head(plain):
    """partial_rotary_factor 0.5 of 16-dim heads: llama.cpp's rope ops rotate 8 dims, NEOX-paired, in every layer;
    inspect says the other half stays unrotated."""
    report = probe_gguf(plain)
    assert report.verdict == "pass" and report.layers_seen == [0, 1, 2], report.summary()
    op = report.kinds[0].op_params
    assert op["n_dims"] == 8 and op["pairing"] == "neox"
    rope = inspect_gguf(plain)["rope"]
    assert rope["rotary_dim"] == 8
    assert "rope on the first 8 of each head's 16 dims (the other 8 unrotated" in rope["description"]


def test_the_mixture_is_written_as_llama_cpp_reads_it(plain):
    """One dense layer (leading_dense_block_count), the routing's keys, the selection bias as exp_probs_b."""
    reader = gguf.GGUFReader(plain)
    keys = {f.name: f.contents() for f in reader.fields.values()}
    config = fixture_config(NAME)
    assert keys[f"{NAME}.leading_dense_block_count"] == 1 and keys[f"{NAME}.expert_shared_count"] == 1
    assert keys[f"{NAME}.expert_gating_func"] == int(gguf.ExpertGatingFuncType.SIGMOID)
    assert keys[f"{NAME}.expert_weights_scale"] == pytest.approx(config["routed_scaling_factor"])
    assert (keys[f"{NAME}.expert_group_count"], keys[f"{NAME}.expert_group_used_count"]) == (4, 2)
    tensors = {t.name for t in reader.tensors}
    assert "blk.0.ffn_gate.weight" in tensors and "blk.0.ffn_gate_exps.weight" not in tensors
    assert {"blk.1.exp_probs_b.bias", "blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_shexp.weight"} <= tensors


def test_the_routing_keys_are_what_makes_it_match(plain, tmp_path):
    """Without the group keys llama.cpp routes over all 8 experts: it then matches transformers with one group, and
    not the fixture (the selection bias picks other experts)."""
    from ropetool.edit import unset_keys

    ids = token_ids(100, fixture_config(NAME)["vocab_size"])
    ungrouped = tmp_path / "ungrouped.gguf"
    unset_keys(plain, [f"{NAME}.expert_group_count", f"{NAME}.expert_group_used_count"], ungrouped)
    ours, model = llama_cpp_logits(ungrouped, ids), hf_logits(NAME, ids)
    assert np.abs(ours - model).max() > 5 * TOLERANCE["f32"] * np.abs(model).max()
    folder = tmp_path / "one-group"
    shutil.copytree(fixture_dir(NAME), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_group": 1, "topk_group": 1}))
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        one_group = hf(torch.tensor([ids])).logits[0].double().numpy()
    assert_logits_match(ours, one_group, TOLERANCE["f32"])


def test_required_tensors_are_what_llama_cpp_requires(plain, tmp_path):
    """Each tensor outside the blocks, of the dense block 0 and of the mixture block 1 removed in turn: llama.cpp refuses
    the file exactly when the family lists the tensor as required (the selection bias exp_probs_b included, the
    output matrix and the q/k/v biases and norms not)."""
    family = FAMILIES[NAME]
    results = runs_without_each(plain, (0, 1), tmp_path)
    cut = refused(results)
    required = set(family.required_tensors(3, experts=True, dense_lead=1))
    assert cut == required & set(results), results
    assert "blk.1.exp_probs_b.bias" in cut
    assert {"output.weight", "blk.0.attn_q.bias", "blk.1.attn_q_norm.weight"} <= set(results) - cut
    for name, (path, _) in results.items():
        assert ("missing-tensor" in {f.id for f in lint_gguf(path)}) == (name in required), name


@pytest.mark.parametrize("changes,words", [({"hidden_act": "gelu"}, "llama.cpp's glm4moe uses SiLU"),
                                           ({"n_shared_experts": 0}, "requires the shared expert")])
def test_a_config_llama_cpp_would_compute_differently_is_refused(changes, words, tmp_path):
    assert words in convert_refusal(NAME, changes, tmp_path)


def test_the_mtp_layers_of_a_released_checkpoint_are_left_out(tmp_path):
    """GLM-4.5's checkpoints carry num_nextn_predict_layers multi-token-prediction layers after the last one (layer
    num_hidden_layers: its own block, eh_proj, enorm, hnorm, shared_head), which transformers does not load: convert
    leaves them out as llama.cpp's converter does by default, and llama.cpp still equals transformers."""
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "mtp"
    shutil.copytree(fixture_dir(NAME), folder)
    config = json.loads((folder / "config.json").read_text())
    n, e = config["num_hidden_layers"], config["hidden_size"]
    state = load_file(folder / "model.safetensors")
    last = f"model.layers.{n - 1}."
    state |= {f"model.layers.{n}." + k[len(last):]: v for k, v in state.items() if k.startswith(last)}
    rng = np.random.default_rng(0)
    state |= {f"model.layers.{n}.eh_proj.weight": rng.standard_normal((e, 2 * e)).astype(np.float32),
              f"model.layers.{n}.enorm.weight": np.ones(e, np.float32), f"model.layers.{n}.hnorm.weight": np.ones(e, np.float32),
              f"model.layers.{n}.shared_head.norm.weight": np.ones(e, np.float32)}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({**config, "num_nextn_predict_layers": 1}))
    out = tmp_path / "mtp.gguf"
    convert(folder, out, outtype="f32")
    names = {t.name for t in gguf.GGUFReader(out).tensors}
    assert not any(t.startswith(f"blk.{n}.") for t in names) and f"blk.{n - 1}.ffn_gate_exps.weight" in names
    ids = token_ids(100, config["vocab_size"])
    assert_logits_match(llama_cpp_logits(out, ids), hf_logits(NAME, ids), TOLERANCE["f32"])
