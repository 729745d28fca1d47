"""The row encoder convert writes with gives gguf-py's quantizer's bytes exactly (gguf.quants.quantize,
bit-exact with ggml's reference quantizers, is the oracle), whatever the values and the chunking."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ropetool.io.encode import Scratch, encode_rows

TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0]


def gguf_py_bytes(x: np.ndarray, qtype: Q) -> np.ndarray:
    with np.errstate(all="ignore"):  # extreme values overflow, as in ggml
        return np.ascontiguousarray(gguf.quants.quantize(x, qtype)).reshape(-1).view(np.uint8)


def assert_same_bytes(x: np.ndarray, qtype: Q, scratch: Scratch | None = None) -> None:
    want = gguf_py_bytes(x, qtype)
    got = encode_rows(x, qtype, scratch or Scratch())
    assert got.shape == want.shape
    diff = np.nonzero(got != want)[0]
    assert diff.size == 0, f"{qtype.name}: {diff.size} bytes differ, first at {diff[:5]}"


def q8_ties() -> np.ndarray:
    """Blocks whose values divided by their scale are exactly k + 1/2 (the rounding rule shows)."""
    rows = []
    for scale in (2.0 ** -7, 2.0 ** -20, 1.0, 2.0 ** 10):
        k = np.arange(32, dtype=np.float32) * 4 % 127
        block = (k + np.float32(0.5)) * np.float32(scale)
        block[0] = np.float32(127 * scale)  # max |x| = 127 * scale: d = scale exactly, 1/d exact
        rows.append(block)
        rows.append(-block)
    return np.stack(rows)


def special_rows() -> np.ndarray:
    rng = np.random.default_rng(7)
    rows = [
        np.zeros(64, np.float32),                                   # scale 0
        np.full(64, -0.0, np.float32),                              # negative zeros
        np.full(64, 1e-42, np.float32),                             # subnormals: 1/d overflows
        np.r_[np.float32(3e38), np.zeros(63, np.float32)],          # scale beyond float16: inf
        np.r_[np.float32(1e7), rng.standard_normal(63).astype(np.float32)],
        (rng.standard_normal(64) * 1e-30).astype(np.float32),
        np.r_[np.float32(65504.0 * 127), rng.standard_normal(63).astype(np.float32)],  # largest f16 scale
    ]
    return np.stack(rows)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("scale", [1e-3, 0.05, 1.0, 3e4])
def test_random_rows(qtype, scale):
    rng = np.random.default_rng(int(scale * 1000) % 97)
    x = (rng.standard_normal((96, 576)) * scale).astype(np.float32)
    assert_same_bytes(x, qtype)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
def test_ties_and_extremes(qtype):
    assert_same_bytes(q8_ties(), qtype)
    assert_same_bytes(special_rows(), qtype)


def test_q8_0_rounds_halves_away_from_zero():
    """The published rule (ggml's roundf), read off the bytes: 0.5 -> 1, 1.5 -> 2, -2.5 -> -3."""
    block = np.zeros(32, np.float32)
    block[:4] = [127, 0.5, 1.5, -2.5]
    out = encode_rows(block[None, :], Q.Q8_0, Scratch())
    assert out[:2].view(np.float16)[0] == 1.0
    assert list(out[2:6].view(np.int8)) == [127, 1, 2, -3]


def test_scratch_reuse_across_sizes():
    """Buffers reused from a larger chunk, then a smaller one, then a larger one again."""
    scratch = Scratch()
    rng = np.random.default_rng(3)
    for rows in (300, 7, 1, 1200, 64):
        x = (rng.standard_normal((rows, 256)) * 0.1).astype(np.float32)
        for qtype in TYPES:
            assert_same_bytes(x, qtype, scratch)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.sampled_from([32, 64, 96])),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_any_finite_values(x):
    for qtype in TYPES:
        assert_same_bytes(x, qtype)
