"""Baichuan (issue 14): llama.cpp on ropetool's GGUF against Baichuan's own forward pass.

transformers has no Baichuan class; the oracle is ``fixtures/baichuan_oracle.py``, written from the modeling code
Baichuan published with its checkpoints (read in ``Mrgengli/baichuan_python`` modeling_baichuan.py @ c3b700b6,
Baichuan-13B: W_pack, ``_get_interleave``, ``_gen_alibi_mask``; ``jrd77/Baichuan2-13B-Chat`` modeling_baichuan.py
@ 35e3d5af, Baichuan 2's NormHead; Baichuan-7B's rotary is the LLaMA code of its time, and the oracle's 7B layout is
checked below against transformers' Llama on the same weights).

llama.cpp's baichuan graph decides by the layer count (src/models/baichuan.cpp): 32 layers rotate q and k, 40 run
ALiBi with max_bias 8, any other count runs with no position encoding, which convert refuses.  The fixtures have
32 (``baichuan-7b``: max_position_embeddings 64, 4 heads, float16) and 40 (``baichuan-13b``: model_max_length 64,
3 heads, so the slopes take ``_get_interleave``'s non-power-of-two branch as the real 40 heads do; bfloat16) layers.
Every number compared comes from llama.cpp or the oracle; sequences run past the trained context (64).
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import sys

import gguf
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import FIXTURES, _stored_as, fixture_config, fixture_dir, llama_cpp_logits, token_ids
from test_convert import TOLERANCE, assert_logits_match

from ropetool.check import check_gguf
from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.reference import ReferenceModel

sys.path.insert(0, str(FIXTURES.parent))
from baichuan_oracle import BaichuanOracle, get_interleave  # noqa: E402

N = 160  # past the trained context (64)
CHECK_TOKENS = 128  # check's pass on 40 layers: 128 tokens (twice the trained context) keep it to seconds
B7, B13 = "baichuan-7b", "baichuan-13b"


@functools.lru_cache(maxsize=32)
def oracle_logits(name: str, ids: tuple[int, ...], rope_json: str | None = None, slopes: str | None = None,
                  weights_as: str | None = None, normhead: bool | None = None, folder: str | None = None) -> np.ndarray:
    """The oracle's float32 logits; ``rope_json`` a transformers rope setting, ``slopes`` an ALiBi method of
    ALIBI_CASES, ``weights_as`` every matrix rounded as a GGUF of that type stores it."""
    model = BaichuanOracle.from_pretrained(folder or fixture_dir(name), normhead=normhead)
    if rope_json is not None:
        model.rope_parameters = json.loads(rope_json)
    if slopes is not None:
        model.slopes = ALIBI_CASES[slopes][1]
    if weights_as is not None:
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim >= 2:
                    param.copy_(_stored_as(param.data, weights_as))
    return model.logits(ids).double().numpy()


def ids_for(name: str, n: int = N) -> tuple[int, ...]:
    return tuple(token_ids(n, fixture_config(name)["vocab_size"]))


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# --- the oracle itself ------------------------------------------------------------------------------

def test_oracle_7b_layout_is_transformers_llama():
    """Baichuan-7B is LLaMA with q, k and v fused: transformers' Llama on the split weights computes the oracle's
    logits (plain and with YaRN), so the oracle's rotary, norms and MLP are transformers' own."""
    from transformers import LlamaConfig, LlamaForCausalLM

    oracle = BaichuanOracle.from_pretrained(fixture_dir(B7))
    c = oracle.config
    ids = ids_for(B7)
    for rope in ({"rope_type": "default", "rope_theta": 10000.0},
                 {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64}):
        config = LlamaConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                             num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
                             num_key_value_heads=c["num_attention_heads"], rms_norm_eps=c["rms_norm_eps"],
                             max_position_embeddings=64, rope_parameters=dict(rope), tie_word_embeddings=False)
        llama = LlamaForCausalLM(config).eval()
        state = {}
        for k, v in oracle.state_dict().items():
            if k.endswith("W_pack.weight"):
                q, kk, vv = v.chunk(3)
                base = k[: -len("W_pack.weight")]
                state |= {base + "q_proj.weight": q, base + "k_proj.weight": kk, base + "v_proj.weight": vv}
            else:
                state[k] = v
        llama.load_state_dict(state, strict=True)
        oracle.rope_parameters = rope
        with torch.no_grad():
            theirs = llama(torch.tensor([list(ids)])).logits[0].double().numpy()
        assert rel(oracle.logits(ids).double().numpy(), theirs) < 1e-5


def test_oracle_slopes_are_alibis_schedule():
    """_get_interleave is ALiBi's published schedule (2^(-8h/n); the odd powers of the 2n schedule for the rest)."""
    assert get_interleave(4) == [0.25, 0.0625, 0.015625, 0.00390625]
    np.testing.assert_allclose(get_interleave(3), [2 ** -4, 2 ** -8, 2 ** -2], rtol=1e-12)
    forty = get_interleave(40)
    np.testing.assert_allclose(forty[:32], [2 ** (-8 * h / 32) for h in range(1, 33)], rtol=1e-12)
    np.testing.assert_allclose(forty[32:], [2 ** (-4 * h / 32) for h in range(1, 16, 2)], rtol=1e-12)


# --- convert: llama.cpp against the oracle, per output type -----------------------------------------

@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("name", [B7, B13])
def test_logits_match_oracle(name, outtype, tmp_gguf):
    """Both layouts, every output type, within the per-type tolerances (test_convert's), on 100 tokens.  W_pack is
    split and q/k permuted as llama.cpp's converter does; the 40-layer file runs llama.cpp's hard-coded ALiBi."""
    ids = ids_for(name, 100)
    convert(fixture_dir(name), tmp_gguf, outtype=outtype)
    ours = llama_cpp_logits(tmp_gguf, ids, f32_kv=(outtype == "f32"))
    # 32 layers carry each weight's rounding and llama.cpp's reduced-precision matmuls (bf16 activations, q8_0's
    # quantized ones, the f16 cache) to the 7B layout's logits: 0.94% (bf16) and 4.6% (q8_0) of their range, against
    # 1% and 5% allowed; the 13B layout's (narrower weights, mostly f16 where rows of 24 do not fill q8_0's blocks of
    # 32) stay below 0.6%.
    assert_logits_match(ours, oracle_logits(name, ids), TOLERANCE[outtype])


def test_alibi_layout_runs_alibi_with_max_bias_8(tmp_gguf):
    """The 40-layer file: llama.cpp equals the oracle's ALiBi (above); without ALiBi, or with the slopes of another
    max_bias, the oracle is measurably elsewhere, so the agreement is the slopes' own."""
    ids = ids_for(B13)
    convert(fixture_dir(B13), tmp_gguf, outtype="f32")
    ours = llama_cpp_logits(tmp_gguf, ids)
    assert_logits_match(ours, oracle_logits(B13, ids), TOLERANCE["f32"])
    for other in ("none", "max_bias_4"):
        assert rel(ours, oracle_logits(B13, ids, slopes=other)) > 5 * TOLERANCE["f32"]
    keys = {f.name for f in gguf.GGUFReader(tmp_gguf).fields.values()}
    assert "baichuan.rope.dimension_count" not in keys  # llama.cpp's 40-layer graph never rotates


# --- rope methods on the 32-layer layout --------------------------------------------------------------

ROPE_CASES = {
    "linear": (["--rope", "linear", "--factor", "4"], {"rope_type": "linear", "factor": 4.0}),
    # NTK-aware alpha 4: base * alpha^(d/(d-2)), d = 8 (bloc97's formula).
    "ntk": (["--rope", "ntk", "--alpha", "4"], {"rope_type": "default", "rope_theta": 10000.0 * 4 ** (8 / 6)}),
    "yarn": (["--rope", "yarn", "--factor", "4"], {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
}


@pytest.mark.parametrize("case", list(ROPE_CASES))
def test_rope_methods_on_7b_match_oracle(case, tmp_path):
    """convert --rope and set-rope on the plain file: llama.cpp against the oracle with the same rope (transformers'
    ROPE_INIT_FUNCTIONS) on 160 tokens; the unscaled oracle does not match (the negative control)."""
    args, rope = ROPE_CASES[case]
    rope = {"rope_theta": 10000.0, **rope}
    ids = ids_for(B7)
    converted, plain, edited = tmp_path / "c.gguf", tmp_path / "p.gguf", tmp_path / "e.gguf"
    for cmd in (["convert", str(fixture_dir(B7)), "-o", str(converted), "--outtype", "f32", *args],
                ["convert", str(fixture_dir(B7)), "-o", str(plain), "--outtype", "f32"],
                ["set-rope", str(plain), "-o", str(edited), *args]):
        result = CliRunner().invoke(cli, cmd)
        assert result.exit_code == 0, result.output
    theirs = oracle_logits(B7, ids, json.dumps(rope, sort_keys=True))
    for path in (converted, edited):
        ours = llama_cpp_logits(path, ids)
        assert_logits_match(ours, theirs, TOLERANCE["f32"])
        assert rel(ours, oracle_logits(B7, ids)) > 5 * TOLERANCE["f32"]
    assert_logits_match(llama_cpp_logits(plain, ids), oracle_logits(B7, ids), TOLERANCE["f32"])


# --- ALiBi methods on the 40-layer layout ---------------------------------------------------------------

def ntk_alibi_slopes(n_heads: int, a: float) -> list[float]:
    """NTK-ALiBi as seanzhang-zhichen/baichuan-Dynamic-NTK-ALiBi's modeling_baichuan.py (@ 2714494c) builds it on
    Baichuan-13B (build_dynamically_alibi_tensor): b = a^(1/(H-1)); the power-of-two heads' base divided by b and each
    slope multiplied by b; the heads past the power of two keep ALiBi's slopes ("todo" in that code)."""
    scale = a ** (1.0 / (n_heads - 1))
    n = 2 ** math.floor(math.log2(n_heads))
    base = 2 ** (-(2 ** -(math.log2(n) - 3))) / scale
    return [base**p * scale for p in range(1, n + 1)] + get_interleave(2 * n)[0::2][: n_heads - n]


def dynamic_ntk_alibi_slopes(n_heads: int, seq_len: int, a0: float, train_seq_len: int) -> list[float]:
    """Dynamic NTK-ALiBi, the same code: a = a0 * max_pos / train_seq_len, at least 1, max_pos the mask's size (the
    trained context, or the sequence once longer)."""
    return ntk_alibi_slopes(n_heads, max(a0 * max(train_seq_len, seq_len) / train_seq_len, 1.0))


ALIBI_CASES = {
    # method: (convert's options, the oracle's slopes as the method's published code gives them)
    "alibi-interp": ({"alpha": 2.0}, lambda H, L: [m / 2.0 for m in get_interleave(H)]),  # every slope / a
    "ntk-alibi": ({"alpha": 4.0}, lambda H, L: ntk_alibi_slopes(H, 4.0)),
    "dynamic-ntk-alibi": ({"alpha": 1.0, "original_context": 64}, lambda H, L: dynamic_ntk_alibi_slopes(H, L, 1.0, 64)),
    "none": ({}, lambda H, L: [0.0] * H),
    "max_bias_4": ({}, lambda H, L: [s ** 0.5 for s in get_interleave(H)]),  # 2^(-8h/n) -> 2^(-4h/n)
}


@pytest.mark.parametrize("method", ["alibi-interp", "ntk-alibi", "dynamic-ntk-alibi"])
def test_alibi_methods_on_13b(method, tmp_path):
    """The ALiBi methods (slopes replaced in the oracle as their published descriptions say): ropetool's reference,
    which check judges llama.cpp by, equals the oracle past the trained context and the plain slopes do not; llama.cpp
    hard-codes max_bias 8 for the 40-layer baichuan, so convert refuses the method without --approximate, and check
    finds the approximated file running plain ALiBi (llama.cpp's own logits equal the plain oracle's)."""
    options = ALIBI_CASES[method][0]
    ids = ids_for(B13)
    theirs = oracle_logits(B13, ids, slopes=method)
    model = ReferenceModel.from_hf(fixture_dir(B13), method=method, **options)
    assert rel(model.logits(list(ids)), theirs) < 1e-4
    assert rel(oracle_logits(B13, ids), theirs) > 5 * TOLERANCE["f32"]

    flags = [f"--{k.replace('_', '-')}" if k != "original_context" else "--original-context" for k in options]
    args = [a for k, flag in zip(options, flags) for a in (flag, str(options[k]))]
    if method == "dynamic-ntk-alibi":  # baked for 160 tokens (a = 2.5); at the trained 64 it is plain ALiBi, exactly
        args += ["--target-context", str(N)]
    out = tmp_path / "a.gguf"
    cmd = ["convert", str(fixture_dir(B13)), "-o", str(out), "--outtype", "f32", "--rope", method, *args]
    result = CliRunner().invoke(cli, cmd)
    assert result.exit_code != 0 and "hard-codes ALiBi max_bias 8" in result.output and not out.exists()
    result = CliRunner().invoke(cli, [*cmd, "--approximate"])
    assert result.exit_code == 0, result.output
    assert_logits_match(llama_cpp_logits(out, ids), oracle_logits(B13, ids), TOLERANCE["f32"])
    # check judges an approximated file by what its keys say (plain ALiBi, which llama.cpp computes) and says so.
    report = check_gguf(out, n_tokens=CHECK_TOKENS)
    assert report.verdict == "pass" and f"approximates {method}" in report.summary(), report.summary()


# --- check, the layer-count rule, Baichuan 2 --------------------------------------------------------------

@pytest.mark.parametrize("name,options", [(B7, {}), (B7, {"method": "yarn", "factor": 4.0}), (B13, {})])
def test_check_passes(name, options, tmp_gguf):
    convert(fixture_dir(name), tmp_gguf, outtype="f32", **options)
    report = check_gguf(tmp_gguf, n_tokens=CHECK_TOKENS)
    assert report.verdict == "pass", report.summary()
    assert report.alternatives and all(a.outcome == "farther" for a in report.alternatives), report.summary()


def test_check_passes_quantized(tmp_gguf):
    convert(fixture_dir(B13), tmp_gguf, outtype="q8_0")
    assert check_gguf(tmp_gguf, n_tokens=CHECK_TOKENS).verdict == "pass"


def _checkpoint(tmp_path, layers: int):
    """A Baichuan checkpoint of ``layers`` layers written as the fixtures are (the 7B layout's sizes)."""
    from safetensors.torch import save_file

    folder = tmp_path / f"baichuan-{layers}"
    folder.mkdir()
    config = dict(fixture_config(B7), num_hidden_layers=layers)
    torch.manual_seed(0)
    model = BaichuanOracle(config)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copy(fixture_dir(B7) / "tokenizer.model", folder)
    return folder


def test_36_layers_refused(tmp_path):
    """llama.cpp's graph would run a 36-layer Baichuan with no position encoding: convert says so and writes nothing."""
    folder = _checkpoint(tmp_path, 36)
    out = tmp_path / "out.gguf"
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(out)])
    assert result.exit_code != 0
    message = result.output.strip()
    assert "\n" not in message and "36 layers" in message and "no position encoding" in message, message
    assert "rope only at 32" in message and "ALiBi only at 40" in message
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["baichuan-36"]


def test_baichuan2_normhead(tmp_path):
    """Baichuan 2 (config.json's z_loss_weight) normalises lm_head's rows when it runs; convert writes them normalised,
    so llama.cpp computes the published model (llama.cpp's own converter copies them as stored: the oracle without
    NormHead, a different model)."""
    folder = tmp_path / "baichuan2"
    shutil.copytree(fixture_dir(B7), folder)
    config = dict(fixture_config(B7), z_loss_weight=0)
    (folder / "config.json").write_text(json.dumps(config))
    ids = ids_for(B7, 100)
    for outtype in ("f32", "f16"):
        out = tmp_path / f"b2-{outtype}.gguf"
        convert(folder, out, outtype=outtype)
        ours = llama_cpp_logits(out, ids, f32_kv=(outtype == "f32"))
        theirs = oracle_logits(B7, ids, normhead=True, folder=str(folder))
        assert_logits_match(ours, theirs, TOLERANCE[outtype])
        assert rel(ours, oracle_logits(B7, ids, normhead=False, folder=str(folder))) > 10 * TOLERANCE[outtype]
    assert check_gguf(tmp_path / "b2-f32.gguf", n_tokens=CHECK_TOKENS).verdict == "pass"


def test_tokenizer_is_sentencepiece(tmp_gguf):
    """Baichuan's tokenizer.model (SentencePiece; its tokenizer_config says no BOS): llama.cpp tokenizes as
    sentencepiece does, without a BOS, as llama.cpp's converter writes the vocabulary."""
    import llama_cpp
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(fixture_dir(B7) / "tokenizer.model"))
    convert(fixture_dir(B7), tmp_gguf, outtype="f16")
    llm = llama_cpp.Llama(model_path=str(tmp_gguf), n_ctx=64, vocab_only=True, verbose=False)
    try:
        for text in ("Hello world! It's 2024: déjà vu.", "def f(x):\n\treturn x  +  1", "Привет, 你好 🚀"):
            assert llm.tokenize(text.encode(), add_bos=True) == sp.encode(text), text
    finally:
        llm.close()
