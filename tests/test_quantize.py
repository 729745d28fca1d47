"""K-quant and legacy output types: made by llama.cpp's own quantizer (llama_model_quantize, the code behind
llama-quantize) from ropetool's ``--outtype auto`` conversion, so they are exactly what llama.cpp's two-step
workflow gives, without the second tool.

The oracle for the bytes is llama.cpp itself, called directly on the auto file; the oracle for the logits
is transformers on the source checkpoint.  A fixture with rows of 256 values lets every K-quant apply; the
bundled llama fixture (rows of 64) shows the fallback llama.cpp chooses for rows that do not fit.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, fixture_dir, llama_cpp_logits, token_ids

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.io.gguf_file import GGUFFile
from ropetool.llamacpp.quantize import FILE_TYPES, quantize_gguf

TYPES = list(FILE_TYPES)
# llama.cpp's max |logit difference| on the quantized file from transformers' f32 logits, x max|logit|, on the
# 256-wide fixture below (random weights of std 0.05, whose logits spread little, so the worst position is
# large): about 1.3x what was measured on llama-cpp-python 0.3.36 (q2_k 0.86, q3_k 0.55-0.63, q4 and iq4
# 0.29-0.38, q5 0.16-0.19, q6_k 0.09), falling with the bits per weight.
TOLERANCE = {"q2_k": 1.1, "q3_k_s": 0.85, "q3_k_m": 0.8, "q3_k_l": 0.75, "iq4_nl": 0.45, "iq4_xs": 0.45, "q4_0": 0.5,
             "q4_1": 0.45, "q4_k_s": 0.45, "q4_k_m": 0.4, "q5_0": 0.25, "q5_1": 0.25, "q5_k_s": 0.22, "q5_k_m": 0.22,
             "q6_k": 0.13}


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A llama checkpoint whose rows hold 256 values (hidden 256, intermediate 512): K-quant blocks fit."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("wide") / "wide"
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=384, max_position_embeddings=64, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, bos_token_id=379, eos_token_id=380)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05) if p.dim() > 1 else p.uniform_(0.9, 1.1)
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURES / "llama" / name, out / name)
    return out


def tensor_bytes(path) -> dict[str, tuple[str, bytes]]:
    with GGUFFile(path) as gf:
        return {t.name: (t.type.name, bytes(gf.read_bytes(t.data_offset, t.nbytes))) for t in gf.tensors}


@pytest.mark.parametrize("type_name", TYPES)
def test_tensors_equal_llama_quantize_from_the_auto_file(type_name, wide, tmp_path):
    ours = tmp_path / "ours.gguf"
    convert(wide, ours, outtype=type_name.upper())  # spelled as model pages spell it
    auto = tmp_path / "auto.gguf"
    convert(wide, auto, outtype="auto")
    theirs = tmp_path / "theirs.gguf"
    quantize_gguf(auto, theirs, type_name)
    a, b = tensor_bytes(ours), tensor_bytes(theirs)
    assert a == b
    kinds = {kind for kind, _ in a.values()}
    assert kinds - {"F32", "F16"}, kinds  # something was quantized
    assert not list(tmp_path.glob(".*.tmp")), "the intermediate is removed"


@pytest.mark.parametrize("type_name", TYPES)
def test_llama_cpp_logits_within_the_types_tolerance(type_name, wide, tmp_path):
    out = tmp_path / "q.gguf"
    convert(wide, out, outtype=type_name, method="yarn", factor=2.0)
    ids = token_ids(100, 384)
    import torch  # transformers with the same yarn x2 the file carries
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(wide)
    config.rope_parameters = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0,
                              "original_max_position_embeddings": 64}
    model = AutoModelForCausalLM.from_pretrained(wide, config=config, dtype=torch.float32)
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].double().numpy()
    ours = llama_cpp_logits(out, ids)
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert rel <= TOLERANCE[type_name], f"{type_name}: {rel:.3g}"


def test_rows_that_do_not_fit_fall_back_as_llama_cpp_decides(tmp_path):
    """The bundled llama fixture's rows hold 64 values: no K-quant block (256) fits, llama.cpp picks others."""
    ours = tmp_path / "ours.gguf"
    convert(fixture_dir("llama"), ours, outtype="q4_k_m")
    auto = tmp_path / "auto.gguf"
    convert(fixture_dir("llama"), auto, outtype="auto")
    theirs = tmp_path / "theirs.gguf"
    quantize_gguf(auto, theirs, "q4_k_m")
    a = tensor_bytes(ours)
    assert a == tensor_bytes(theirs)
    assert not {kind for kind, _ in a.values()} & {"Q4_K", "Q5_K", "Q6_K"}


def test_quantize_command_keeps_rope_keys_and_record(tmp_path):
    src = tmp_path / "yarn.gguf"
    convert(fixture_dir("llama"), src, outtype="f16", method="yarn", factor=4.0, original_context=64)
    out = tmp_path / "yarn-q4.gguf"
    result = CliRunner().invoke(cli, ["quantize", str(src), "-o", str(out), "--type", "Q4_K_M", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["type"] == "Q4_K_M"
    with GGUFFile(src) as a, GGUFFile(out) as b:
        before = {k: f.value for k, f in a.fields.items() if ".rope." in k or k.startswith("ropetool.")}
        after = {k: f.value for k, f in b.fields.items() if ".rope." in k or k.startswith("ropetool.")}
        assert before and after == before
        assert b.get("general.file_type") == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    # llama.cpp computes the same rope setting from it: check passes.
    from ropetool.check import check_gguf

    assert check_gguf(out).verdict == "pass"


def test_quantize_refuses_what_llama_cpp_refuses_in_one_line(tmp_path):
    src = tmp_path / "q8.gguf"
    convert(fixture_dir("llama"), src, outtype="q8_0")
    result = CliRunner().invoke(cli, ["quantize", str(src), "-o", str(tmp_path / "o.gguf"), "--type", "q4_k_m"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "requantizing" in lines[0]
    assert not (tmp_path / "o.gguf").exists() and not list(tmp_path.glob(".*.tmp"))
