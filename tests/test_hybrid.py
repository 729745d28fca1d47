"""Hybrid models (issue 25): attention layers mixed with recurrent ones that carry no rope.

qwen35 and qwen35moe (Qwen 3.5: Gated DeltaNet linear attention, an interleaved multi-section rope on a quarter of each
head; the mixture's experts stacked as released); qwen3next (Qwen3-Next: Qwen 3.5's layers, NEOX rope, a mixture with
a shared expert in every layer, the linear attention's projections fused per key head); lfm2 and lfm2moe (LFM2: gated
short convolutions, whose layers llama.cpp marks by a head_count_kv of 0, its rope nodes unnamed, so the probe takes
their layer from their input's name; the mixture after dense layers).

The oracles: transformers' own classes on each fixture (tiny, trained context 64) for the logits, configured alike for
an extension at convert (YaRN x4) and one by set-rope (linear x4) past the trained context; llama.cpp's own graph (every
GGML_OP_ROPE node it builds) for which layers rotate and how, including llama.cpp's multi-section rope ops fed four
distinct positions per token.  Every output type of the plain conversions: tests/test_convert.py
(test_fixture_logits_match_transformers).
"""

from __future__ import annotations

import ctypes
import itertools
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fixture_config, fixture_dir, hf_logits, llama_cpp_logits, token_ids
from test_convert import TOLERANCE, assert_logits_match

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import set_keys
from ropetool.inspect import inspect_gguf
from ropetool.io.gguf_file import GGUFFile
from ropetool.model import lint_gguf
from ropetool.probe import probe_gguf

N_TOKENS = 160
YARN4 = (["--rope", "yarn", "--factor", "4"], {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})
LINEAR4 = (["--rope", "linear", "--factor", "4"], {"rope_type": "linear", "factor": 4.0})
# Per fixture: its llama.cpp architecture and the layers with attention (the rest are recurrent: no rope there).
ARCHS = {
    "qwen35": ("qwen35", [3]),
    "lfm2": ("lfm2", [2, 4]),
    "qwen3next": ("qwen3next", [3]),
    "qwen35moe": ("qwen35moe", [3]),
    "lfm2moe": ("lfm2moe", [2, 4]),
}
KINDS = {"qwen35": "Gated DeltaNet linear attention", "lfm2": "short convolution",
         "qwen3next": "Gated DeltaNet linear attention", "qwen35moe": "Gated DeltaNet linear attention", "lfm2moe": "short convolution"}


def _rope(name: str, extra: dict) -> dict:
    """The fixture's rope_parameters with an extension: its base, rotary fraction and sections kept."""
    params = fixture_config(name)["rope_parameters"]
    kept = ("rope_theta", "partial_rotary_factor", "mrope_section", "mrope_interleaved")
    return {**{k: params[k] for k in kept if k in params}, **extra}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Per fixture: the plain conversion, YaRN x4 at convert, YaRN x4 and linear x4 by set-rope on the plain file."""
    made = {}
    for name in ARCHS:
        root = tmp_path_factory.mktemp(name)
        plain, yarn, yarn_set, linear = (root / f"{w}.gguf" for w in ("plain", "yarn", "yarn-set", "linear"))
        for args in (["convert", str(fixture_dir(name)), "-o", str(plain), "--outtype", "f32"],
                     ["convert", str(fixture_dir(name)), "-o", str(yarn), "--outtype", "f32", *YARN4[0]],
                     ["set-rope", str(plain), "-o", str(yarn_set), *YARN4[0]],
                     ["set-rope", str(plain), "-o", str(linear), *LINEAR4[0]]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, result.output
        made[name] = {"plain": plain, "yarn": yarn, "yarn-set": yarn_set, "linear": linear}
    return made


@pytest.mark.parametrize("name", ARCHS)
def test_extensions_past_the_trained_context_match_transformers(name, files):
    ids = token_ids(N_TOKENS, fixture_config(name)["vocab_size"])
    unscaled = hf_logits(name, ids)
    assert_logits_match(llama_cpp_logits(files[name]["plain"], ids), unscaled, TOLERANCE["f32"])
    for which, (_, rope) in (("yarn", YARN4), ("yarn-set", YARN4), ("linear", LINEAR4)):
        ours = llama_cpp_logits(files[name][which], ids)
        assert_logits_match(ours, hf_logits(name, ids, _rope(name, rope)), TOLERANCE["f32"])
        # the unscaled control does not match: the setting reached the attention layers
        assert np.abs(ours - unscaled).max() > 5 * TOLERANCE["f32"] * np.abs(unscaled).max(), which


@pytest.mark.parametrize("which", ["plain", "yarn", "yarn-set", "linear"])
@pytest.mark.parametrize("name", ARCHS)
def test_probe_sees_rope_only_on_the_attention_layers(name, which, files):
    """llama.cpp's graph has rope ops in the attention layers and nowhere else, each equal to the meant setting (its
    parameters, and its output against the meant rotation of its own input within the float32 bound)."""
    arch, attention = ARCHS[name]
    report = probe_gguf(files[name][which])
    assert report.verdict == "pass", report.summary()
    assert report.layers_seen == attention and report.layers_expected == attention, report.summary()
    assert all(k.numerics_checked == k.rope_ops == 2 * len(attention) and k.worst_ratio <= 1
               and k.worst_ratio_own_params <= 1 for k in report.kinds), report.summary()
    recurrent = [il for il in range(max(attention) + 1) if il not in attention]
    assert any(f"{KINDS[name]} in llama.cpp's {arch} graph: no attention, so no rope: no rope op seen there" in n
               for n in report.notes), report.notes
    assert recurrent


@pytest.mark.parametrize("name", ARCHS)
def test_probe_fails_on_a_tampered_rope_key(name, files, tmp_path):
    arch = ARCHS[name][0]
    tampered = tmp_path / "tampered.gguf"
    set_keys(files[name]["linear"], [f"{arch}.rope.scaling.factor=f32:8"], tampered)
    report = probe_gguf(tampered)
    assert report.verdict == "fail", report.summary()
    assert f"{arch}.rope.scaling.factor = 8 where ropetool's record means 4" in report.reason


@pytest.mark.parametrize("name", ARCHS)
def test_yarn_in_config_json_converts_as_the_option(name, files, tmp_path):
    """YaRN written into config.json's rope_parameters (as Qwen's model cards tell users to extend Qwen 3.5): the file
    convert writes equals the one `--rope yarn --factor 4` writes, and llama.cpp's logits equal transformers' with that
    config.json, past the trained context."""
    folder = tmp_path / "m"
    shutil.copytree(fixture_dir(name), folder)
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config", config)
    text["rope_parameters"] = _rope(name, YARN4[1])
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "config-yarn.gguf"
    convert(folder, out, outtype="f32")
    assert _tensors_and_keys(out) == _tensors_and_keys(files[name]["yarn"])


@pytest.mark.parametrize("name", ["qwen35", "lfm2"])
def test_eval_tries_a_setting_as_set_rope_writes_it(name, files):
    """eval's tried setting on the plain file (load-time overrides) scores what the file set-rope writes scores."""
    def perplexities(args):
        result = CliRunner().invoke(cli, ["eval", *args, "--lengths", "64,128", "--json"])
        assert result.exit_code == 0, result.output
        return {(r["setting"], r["length"]): r["perplexity"] for r in json.loads(result.output) if r["kind"] == "window"}

    tried = perplexities([str(files[name]["plain"]), "--try", "yarn:factor=4"])
    written = perplexities([str(files[name]["yarn-set"])])
    for length in (64, 128):
        assert tried[("yarn:factor=4", length)] == pytest.approx(written[("file", length)], rel=1e-9)
        assert tried[("yarn:factor=4", length)] != pytest.approx(tried[("file", length)], rel=1e-6)


@pytest.mark.parametrize("name", ARCHS)
def test_inspect_and_lint_say_which_layers_a_setting_reaches(name, files):
    arch, attention = ARCHS[name]
    for which in ("plain", "yarn"):
        rope = inspect_gguf(files[name][which])["rope"]
        recurrent = rope["llama_cpp"]["recurrent_layers"]
        assert sorted(recurrent + attention) == list(range(len(recurrent) + len(attention)))
        assert rope["llama_cpp"]["recurrent_kind"] == KINDS[name]
        words = "the extension changes the attention layers only" if which == "yarn" else \
            "an extension would change the attention layers only"
        assert f"are {KINDS[name]}, without rope" in rope["description"] and words in rope["description"]
    ids = {f.id: f for f in lint_gguf(files[name]["yarn"])}
    assert "extension-reaches-attention-only" in ids and "attention layer" in ids["extension-reaches-attention-only"].message
    assert "extension-reaches-attention-only" not in {f.id for f in lint_gguf(files[name]["plain"])}
    result = CliRunner().invoke(cli, ["inspect", str(files[name]["linear"])])
    assert result.exit_code == 0 and f"({KINDS[name]}: no attention, no rope" in result.output


# ------------------------------------------------------------------------------------------
# qwen35: the interleaved multi-section rope


def _decode_with_positions(path, pos4: np.ndarray, seed: int = 0) -> list:
    """llama.cpp decodes one sequence of embeddings whose four positions per token (t, h, w, e) are ``pos4`` (as a
    vision model's tokens have them); every rope op is read: [(op, input, output)]."""
    from ropetool.llamacpp.graph import GraphReader
    from ropetool.llamacpp.runner import LlamaCpp

    n = pos4.shape[1]
    ops = []
    reader = GraphReader(n, list(pos4[0]), lambda op: ops.append((op, op.x.copy(), op.y.copy())), None)
    with LlamaCpp(path, n_ctx=256, batch=n, eval_callback=reader.callback) as llm:
        L = llm.L
        n_embd = L.llama_model_n_embd(llm.model)
        batch = L.llama_batch_init(n, n_embd, 1)
        ptype = type(batch.pos)
        own = ctypes.cast(batch.pos, ctypes.c_void_p).value
        given = (ctypes.c_int32 * pos4.size)(*pos4.reshape(-1).tolist())  # 4 rows of n, as llama_batch expects them
        try:
            emb = np.random.default_rng(seed).standard_normal((n, n_embd)).astype(np.float32) * 0.05
            for i in range(n):
                for j in range(n_embd):
                    batch.embd[i * n_embd + j] = float(emb[i, j])
                batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = 1, 0, 1
            batch.pos = ctypes.cast(given, ptype)
            batch.n_tokens = n
            assert L.llama_decode(llm.ctx, batch) == 0
        finally:
            batch.pos = ctypes.cast(ctypes.c_void_p(own), ptype)
            L.llama_batch_free(batch)
    assert reader.error is None and ops
    return ops


@pytest.mark.parametrize("sections", [None, [3, 2, 3, 0]])
def test_multi_section_numerics_are_llama_cpps(files, tmp_path, sections):
    """ropetool's model of ggml's interleaved multi-section rope (rope/rotate.py's section_positions: pair i's sector
    i % sum(sections), h where sector % 3 == 1 and sector < 3 s1, w where % 3 == 2 and < 3 s2, t where % 3 == 0 and
    < 3 s0, else e) against llama.cpp's own rope ops fed four different positions per token: within the float32
    bound, and the contiguous sections or one position per token are far from it; with sections [3, 2, 3, 0], pair 7
    takes the e row."""
    from ropetool.rope import ggml
    from ropetool.rope.rotate import apply_rope, rope_tolerance, section_positions, section_rows

    path = files["qwen35"]["yarn"]
    if sections is not None:
        path = tmp_path / "sections.gguf"
        set_keys(files["qwen35"]["yarn"], [f"qwen35.rope.dimension_sections=arr[i32]:{','.join(map(str, sections))}"],
                 path, force=True)
    rng = np.random.default_rng(1)
    pos4 = np.sort(rng.choice(300, (4, 8), replace=False), axis=1).astype(np.int32)  # 4 distinct rows, each increasing
    ops = _decode_with_positions(path, pos4)
    assert len(ops) == 2
    for op, x, y in ops:
        assert op.pairing == "imrope" and list(op.sections) == (sections or [3, 3, 2, 0])
        assert np.array_equal(op.positions.reshape(4, -1), pos4)
        corr = ggml.corr_dims(op.n_dims, op.n_ctx_orig, op.beta_fast, op.beta_slow, op.freq_base)
        inv = ggml.inv_freq(op.n_dims, op.freq_base, op.freq_scale, op.ext_factor, corr, None)
        mag = ggml.magnitude(op.attn_factor, op.freq_scale, op.ext_factor)

        def ratio(pos, op=op, x=x, y=y, inv=inv, mag=mag):
            exact = apply_rope(x, pos, inv, mag, "neox", op.n_dims, op.n_offs)
            tol = rope_tolerance(x, exact, pos, inv, mag, "neox", op.n_dims, op.n_offs, op.dtype)
            return float((np.abs(y - exact) / np.maximum(tol, np.finfo(np.float32).tiny)).max())

        p = op.positions.reshape(4, -1)
        assert ratio(section_positions(p, op.n_dims // 2, op.sections, True)) <= 1
        assert ratio(section_positions(p, op.n_dims // 2, op.sections, False)) > 1e3
        assert ratio(p[0].astype(np.float64)) > 1e3
        rows = section_rows(op.n_dims // 2, op.sections, True)
        assert list(rows) == ([0, 1, 2, 0, 1, 2, 0, 1] if sections is None else [0, 1, 2, 0, 1, 2, 0, 3])


@pytest.mark.parametrize("order", [p for p in itertools.permutations([3, 3, 2]) if list(p) != [3, 3, 2]])
def test_probe_catches_permuted_sections(files, tmp_path, order):
    """rope.dimension_sections permuted ([3, 2, 3], [2, 3, 3]: every order but the model's puts a pair in ggml's 4th
    section, which llama.cpp holds at 0 for text): the probe fails, naming the pair and the key; lint warns."""
    path = tmp_path / "permuted.gguf"
    set_keys(files["qwen35"]["yarn"], [f"qwen35.rope.dimension_sections=arr[i32]:{','.join(map(str, order))},0"], path,
             force=True)
    report = probe_gguf(path)
    assert report.verdict == "fail", report.summary()
    assert "by the e position (0 for text" in report.reason and "qwen35.rope.dimension_sections" in report.reason
    assert any("float32 rounding bound away from the meant rotation" in f for f in report.findings)
    assert "sections-leave-pairs-still" in {f.id for f in lint_gguf(path)}


def _tensors_and_keys(path) -> tuple[dict, dict]:
    import gguf

    reader = gguf.GGUFReader(path)
    keys = {f.name: f.contents() for f in reader.fields.values() if f.name != "general.name"}
    return {t.name: np.array(t.data).tobytes() for t in reader.tensors}, keys


def test_the_flat_layout_converts_as_the_released_one(files, tmp_path):
    """Qwen3_5ForCausalLM's own layout (config.json the text model's, tensors model.layers.*) and the released one
    (Qwen3_5ForConditionalGeneration: text_config, model.language_model.*, a vision tower and MTP layers, which are left
    out) give the same file."""
    from safetensors.numpy import load_file, save_file

    src = fixture_dir("qwen35")
    config = json.loads((src / "config.json").read_text())
    tensors = load_file(src / "model.safetensors")
    flat = tmp_path / "flat"
    shutil.copytree(src, flat)
    (flat / "config.json").write_text(json.dumps({**config["text_config"], "architectures": ["Qwen3_5ForCausalLM"]}))
    save_file({k.replace("model.language_model.", "model."): v for k, v in tensors.items() if "visual" not in k},
              flat / "model.safetensors")
    mtp = tmp_path / "mtp"
    shutil.copytree(src, mtp)
    save_file({**tensors, "mtp.fc.weight": np.zeros((64, 128), np.float32),
               "mtp.layers.0.input_layernorm.weight": np.zeros(64, np.float32)}, mtp / "model.safetensors")
    config_mtp = {**config, "text_config": {**config["text_config"], "mtp_num_hidden_layers": 1}}
    (mtp / "config.json").write_text(json.dumps(config_mtp))
    want = _tensors_and_keys(files["qwen35"]["plain"])
    for folder in (flat, mtp):
        out = tmp_path / f"{folder.name}.gguf"
        convert(folder, out, outtype="f32")
        assert _tensors_and_keys(out) == want, folder.name


QWEN35_REFUSALS = [  # (text_config changes, words of the one-line error): what llama.cpp's graph computes otherwise
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                          "mrope_section": [3, 3, 2], "mrope_interleaved": False}}, "always interleaves"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                          "mrope_section": [4, 2, 2], "mrope_interleaved": True}}, "leaves pairs 7..7"),
    ({"attn_output_gate": False}, "always gates the attention output"),
    ({"linear_value_head_dim": 32}, "sizes both by ssm.state_size"),
    ({"layer_types": ["linear_attention", "mamba", "linear_attention", "full_attention"]}, "'mamba'"),
    ({"layer_types": ["linear_attention"] * 4}, "no full_attention layer"),
    ({"attention_bias": True}, "no attention biases"),
]


@pytest.mark.parametrize("changes,words", QWEN35_REFUSALS, ids=[w for _, w in QWEN35_REFUSALS])
def test_a_qwen35_config_llama_cpp_would_compute_differently_is_refused(changes, words, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(fixture_dir("qwen35"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(tmp_path / "o.gguf")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and words in result.output, result.output
    assert not (tmp_path / "o.gguf").exists()


def test_the_layer_pattern_is_written_and_read_back(files, tmp_path):
    """attention.recurrent_layers is what llama.cpp reads (over full_attention_interval): a file marking layer 1 as
    attention too makes llama.cpp's graph rope there (and refuse the file for lack of its attention tensors: lint says
    so first)."""
    with GGUFFile(files["qwen35"]["plain"]) as gf:
        assert list(gf.get("qwen35.attention.recurrent_layers")) == [True, True, True, False]
        assert gf.get("qwen35.full_attention_interval") == 4
        assert list(gf.get("qwen35.rope.dimension_sections")) == [3, 3, 2, 0]
    path = tmp_path / "pattern.gguf"
    set_keys(files["qwen35"]["plain"], ["qwen35.attention.recurrent_layers=arr[bool]:true,false,true,false"], path,
             force=True)
    findings = {f.id: f for f in lint_gguf(path)}
    assert "missing-tensor" in findings and "blk.1.attn_q.weight" in findings["missing-tensor"].message


@pytest.mark.parametrize("name", ARCHS)
def test_required_tensors_are_what_llama_cpp_requires(name, files, tmp_path):
    """Remove each tensor outside the blocks, of the first recurrent block and of the first attention block in turn
    (lfm2moe: block 0 dense, the others mixtures):
    llama.cpp fails (refuses the file, or dies on a tensor its loader takes as optional but its graph uses) exactly
    when the family lists it as required for that kind of layer, and lint says missing-tensor exactly then."""
    from llama_loads import llama_cpp_runs

    from ropetool.families import FAMILIES
    from ropetool.io.gguf_file import TensorOut, write_gguf

    arch, attention = ARCHS[name]
    src = files[name]["plain"]
    with GGUFFile(src) as gf:
        n_layer, experts = gf.get(f"{arch}.block_count"), bool(gf.get(f"{arch}.expert_count"))
        dense_lead = gf.get(f"{arch}.leading_dense_block_count") or 0
        recurrent = [il for il in range(n_layer) if il not in attention]
        probe_blocks = (f"blk.{recurrent[0]}.", f"blk.{attention[0]}.")
        names = [t.name for t in gf.tensors if not t.name.startswith("blk.") or t.name.startswith(probe_blocks)]
        paths = {}
        for victim in names:
            paths[victim] = tmp_path / f"{len(paths)}.gguf"
            write_gguf(paths[victim], list(gf.fields.values()),
                       [TensorOut.copy_of(t) for t in gf.tensors if t.name != victim], source=gf)
    required = set(FAMILIES[arch].required_tensors(n_layer, experts=experts, dense_lead=dense_lead, recurrent=recurrent))
    runs = llama_cpp_runs(list(paths.values()))
    llama_needs = {victim for victim, path in paths.items() if runs[str(path)] != "ok"}
    assert llama_needs == required & set(names), runs
    for victim, path in paths.items():
        assert ("missing-tensor" in {f.id for f in lint_gguf(path)}) == (victim in required), victim


# ------------------------------------------------------------------------------------------
# lfm2


def test_lfm2_older_config_names_convert_alike(files, tmp_path):
    """LFM2's first releases name the fields otherwise (block_ff_dim, tie_embedding, full_attn_idxs, a top-level
    rope_theta), which transformers' Lfm2Config maps: the same file; the short-convolution layers are written with
    head_count_kv 0, the convolution [n_embd, L] (llama.cpp's loader's shape) and the feed-forward as wide as Lfm2MLP
    makes it (2/3 of 200, rounded up to 16: 144)."""
    config = fixture_config("lfm2")
    older = {k: v for k, v in config.items() if k not in ("intermediate_size", "tie_word_embeddings", "layer_types",
                                                          "rope_parameters")}
    older.update(block_ff_dim=config["intermediate_size"], tie_embedding=True, rope_theta=10000.0,
                 full_attn_idxs=[il for il, t in enumerate(config["layer_types"]) if t == "full_attention"])
    folder = tmp_path / "older"
    shutil.copytree(fixture_dir("lfm2"), folder)
    (folder / "config.json").write_text(json.dumps(older))
    out = tmp_path / "older.gguf"
    convert(folder, out, outtype="f32")
    assert _tensors_and_keys(out) == _tensors_and_keys(files["lfm2"]["plain"])
    with GGUFFile(out) as gf:
        assert list(gf.get("lfm2.attention.head_count_kv")) == [0, 0, 2, 0, 2, 0]
        assert gf.get("lfm2.feed_forward_length") == 144 and gf.get("lfm2.shortconv.l_cache") == 3
        assert list(gf.tensor("blk.0.shortconv.conv.weight").shape) == [3, 64]


LFM2_REFUSALS = [
    ({"conv_bias": True}, "no convolution biases"),
    ({"layer_types": ["conv", "linear_attention", "full_attention", "conv", "full_attention", "conv"]},
     "'linear_attention'"),
    ({"layer_types": ["conv"] * 6}, "no full_attention layer"),
]


@pytest.mark.parametrize("changes,words", LFM2_REFUSALS, ids=[w for _, w in LFM2_REFUSALS])
def test_an_lfm2_config_llama_cpp_would_compute_differently_is_refused(changes, words, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(fixture_dir("lfm2"), folder)
    (folder / "config.json").write_text(json.dumps({**fixture_config("lfm2"), **changes}))
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(tmp_path / "o.gguf")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and words in result.output, result.output
    assert not (tmp_path / "o.gguf").exists()


# ------------------------------------------------------------------------------------------
# qwen35moe


def test_stacked_experts_convert_as_per_expert_ones(files, tmp_path):
    """The released Qwen 3.5 / 3.6 mixtures store each layer's experts stacked (mlp.experts.gate_up_proj [E, 2 ff,
    n_embd], gate rows first, and mlp.experts.down_proj [E, n_embd, ff]); transformers saves them one matrix each.
    Both give the same file, the stacks split per expert by byte range (streamed, not loaded whole)."""
    from safetensors.numpy import load_file, save_file

    src = fixture_dir("qwen35moe")
    tensors = load_file(src / "model.safetensors")
    n_layer, n_expert = fixture_config("qwen35moe")["num_hidden_layers"], fixture_config("qwen35moe")["num_experts"]
    stacked = {k: v for k, v in tensors.items() if ".mlp.experts." not in k}
    for il in range(n_layer):
        p = f"model.language_model.layers.{il}.mlp.experts."
        stacked[p + "gate_up_proj"] = np.stack([np.concatenate([tensors[f"{p}{e}.gate_proj.weight"],
                                                                tensors[f"{p}{e}.up_proj.weight"]]) for e in range(n_expert)])
        stacked[p + "down_proj"] = np.stack([tensors[f"{p}{e}.down_proj.weight"] for e in range(n_expert)])
    folder = tmp_path / "released"
    shutil.copytree(src, folder)
    save_file(stacked, folder / "model.safetensors")
    for outtype in ("f32", "q8_0"):
        out, want = tmp_path / f"released-{outtype}.gguf", tmp_path / f"saved-{outtype}.gguf"
        convert(folder, out, outtype=outtype)
        convert(src, want, outtype=outtype)
        assert _tensors_and_keys(out) == _tensors_and_keys(want), outtype
    with GGUFFile(out) as gf:
        assert list(gf.tensor("blk.0.ffn_gate_exps.weight").shape) == [64, 32, 4]


def test_lfm2moe_routed_scaling_is_refused_as_llama_cpp_ignores_it(files, tmp_path):
    """llama.cpp's lfm2moe reads no expert_weights_scale: a file carrying one computes the unscaled mixture (its logits
    equal transformers' with routed_scaling_factor 1, not 2), so convert refuses a config.json whose
    routed_scaling_factor is not 1, and norm_topk_prob false or no selection bias alike."""
    ids = token_ids(N_TOKENS, fixture_config("lfm2moe")["vocab_size"])
    scaled = tmp_path / "scaled.gguf"
    set_keys(files["lfm2moe"]["plain"], ["lfm2moe.expert_weights_scale=f32:2"], scaled, force=True)
    assert np.array_equal(llama_cpp_logits(scaled, ids), llama_cpp_logits(files["lfm2moe"]["plain"], ids))
    for changes, words in (({"routed_scaling_factor": 2.0}, "never scales"), ({"norm_topk_prob": False}, "renormalises"),
                           ({"use_expert_bias": False}, "selection bias")):
        folder = tmp_path / next(iter(changes))
        shutil.copytree(fixture_dir("lfm2moe"), folder)
        (folder / "config.json").write_text(json.dumps({**fixture_config("lfm2moe"), **changes}))
        result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(tmp_path / "o.gguf")])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and words in result.output, result.output
