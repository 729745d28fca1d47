"""The real SmolLM2 tokenizer: llama.cpp, on the file convert writes, tokenizes and decodes a long text exactly as
the Hugging Face tokenizer.json does (digits after spaces, runs of spaces, code, other scripts, emoji).

llama.cpp's own converter names this tokenizer's pre-tokenizer ``smollm``; ropetool reads the splitting rules
from tokenizer.json instead (docs/convert.md).  The oracle is the ``tokenizers`` library on the same file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))

import real_model  # noqa: E402

from ropetool.convert import convert  # noqa: E402
from ropetool.io.gguf_file import GGUFFile  # noqa: E402
from ropetool.llamacpp.runner import LlamaCpp  # noqa: E402

LINES = [
    "In 1984 there were  42 apples and 7 pears; by 2025, 1 000 000 of them.",
    "Call +1 (555) 012-3456 or  99 times, at 3.14159 or 6.02e23 per mole.",
    "def f(x):\n    return x**2 + 3 * x - 17  # 12 spaces:            done",
    "Tabs\tand\t\t 12\ttabs; newlines\n\n 7 after a blank line.",
    "Über 13 Straßen, 中文 42 字, русский 5 текст, العربية 8, हिन्दी 9, 🙂 10 🚀 11.",
    "  leading spaces 123, trailing spaces 456   ",
    "IDs: abc123 def 456ghi  789 0x1F 007 ... !!! ??? --- 2024-12-02T14:09:53Z",
]


def long_text(tokens_wanted: int = 16_000) -> str:
    text, i = [], 0
    while sum(len(t) for t in text) < tokens_wanted * 3:
        text.append(LINES[i % len(LINES)].replace("42", str(42 + i)).replace("7 ", f"{i % 97} "))
        i += 1
    return "\n".join(text)


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    work = tmp_path_factory.mktemp("smollm")
    hf = real_model.rebuild_hf_folder(real_model.find_smollm2_gguf(), work / "hf", "bf16")
    out = work / "smollm.gguf"
    convert(hf, out, outtype="bf16")
    return hf, out


def test_llama_cpp_tokenizes_and_decodes_as_the_hf_tokenizer(smollm):
    import tokenizers

    hf, out = smollm
    with GGUFFile(out) as gf:
        assert gf.get("tokenizer.ggml.pre") == "smollm"  # the splitting of starcoder, without cleaning spaces
    text = long_text()
    tok = tokenizers.Tokenizer.from_file(str(hf / "tokenizer.json"))
    theirs = tok.encode(text, add_special_tokens=False).ids
    assert len(theirs) > 15_000
    with LlamaCpp(out, n_ctx=256) as llm:
        ours = llm.tokenize(text, add_bos=False)
        assert ours == theirs
        decoded = detokenize(llm, ours)
    assert decoded == tok.decode(theirs, skip_special_tokens=False)  # llama.cpp cleans no spaces, as HF does not


def detokenize(llm, ids: list[int]) -> str:
    """llama_detokenize: the pieces joined, with the pre-tokenizer's space cleaning applied."""
    import ctypes

    import llama_cpp

    tokens = (llama_cpp.llama_token * len(ids))(*ids)
    size = 8 * len(ids) + 64
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(llm.vocab, tokens, len(ids), buf, size, False, True)
    assert n >= 0
    return buf.raw[:n].decode("utf-8")
