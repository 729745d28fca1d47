"""Rows of numbers to the bytes of a GGML tensor type: what convert writes for each run of rows.

F32 and F16 are numpy's casts (what gguf-py does); BF16 is gguf-py's quantizer; Q8_0 is gguf-py's
algorithm (ggml's ``quantize_row_q8_0_ref``) written out in place, in per-thread buffers: gguf-py's
own allocates a dozen arrays per 16 rows and was most of a q8_0 conversion's time.  Its output is
byte-identical to ``gguf.quants.quantize`` for every finite input (tests/test_encode.py).
"""

from __future__ import annotations

import threading

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

CHUNK_ELEMENTS = 1 << 18  # values encoded at a time: about 1 MB of float32 (stays in cache)
Q8_BLOCK = gguf.GGML_QUANT_SIZES[Q.Q8_0][0]  # 32 values share one float16 scale
_SIGN = np.uint32(0x80000000)


class Scratch(threading.local):
    """Per-thread work buffers, reused from chunk to chunk (fresh big arrays cost page faults)."""

    def buf(self, name: str, dtype, n: int) -> np.ndarray:
        bufs = self.__dict__.setdefault("bufs", {})
        arr = bufs.get(name)
        if arr is None or arr.dtype != np.dtype(dtype) or arr.size < n:
            arr = bufs[name] = np.empty(max(n, CHUNK_ELEMENTS), dtype=dtype)
        return arr[:n]


SCRATCH = Scratch()  # each converting thread sees its own buffers


def encode_rows(rows: np.ndarray, qtype: Q, scratch: Scratch = SCRATCH) -> np.ndarray:
    """A 2-D run of rows (any float or integer dtype) as ``qtype``'s bytes: a flat uint8 array that may
    be one of ``scratch``'s buffers (valid until its next use)."""
    with np.errstate(all="ignore"):  # values beyond a type's range become inf, as in ggml
        if qtype in (Q.F32, Q.F16):
            out = scratch.buf(qtype.name, np.float32 if qtype == Q.F32 else np.float16, rows.size)
            np.copyto(out, rows.reshape(-1), casting="unsafe")
        elif qtype == Q.Q8_0:
            out = q8_0(np.asarray(rows, dtype=np.float32), scratch)
        else:
            out = gguf.quants.quantize(np.asarray(rows, dtype=np.float32), qtype)
    return np.ascontiguousarray(out).reshape(-1).view(np.uint8)


def q8_0(x: np.ndarray, scratch: Scratch = SCRATCH) -> np.ndarray:
    """Q8_0 blocks of float32 ``x`` (size a multiple of 32): per block of 32 values, the scale
    d = max|x| / 127 stored as float16, then x * (1/d) in float32 rounded half away from zero, as int8."""
    blocks = x.reshape(-1, Q8_BLOCK)
    nb = blocks.shape[0]
    a = scratch.buf("q8_abs", np.float32, x.size).reshape(nb, Q8_BLOCK)
    np.abs(blocks, out=a)
    d = scratch.buf("q8_d", np.float32, nb)
    np.max(a.view(np.uint32), axis=1, out=d.view(np.uint32))  # |x| >= 0 is ordered as its bits (faster)
    np.divide(d, np.float32(127), out=d)
    inv = scratch.buf("q8_inv", np.float32, nb)
    np.divide(np.float32(1), d, out=inv)
    inv[d == 0] = 0
    np.multiply(a, inv[:, None], out=a)  # |x| / d, in [0, 127]
    q = scratch.buf("q8_q", np.float32, x.size).reshape(nb, Q8_BLOCK)
    np.floor(a, out=q)  # gguf-py's np_roundf: floor(a) + floor(2 * (a - floor(a)))
    np.subtract(a, q, out=a)
    np.add(a, a, out=a)
    np.floor(a, out=a)
    np.add(q, a, out=q)
    sign = scratch.buf("q8_sign", np.uint32, x.size).reshape(nb, Q8_BLOCK)
    np.bitwise_and(blocks.view(np.uint32), _SIGN, out=sign)
    np.bitwise_or(q.view(np.uint32), sign, out=q.view(np.uint32))  # x's sign back on
    out = scratch.buf("q8_out", np.uint8, nb * (2 + Q8_BLOCK)).reshape(nb, 2 + Q8_BLOCK)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(nb, 2)  # beyond float16: inf, as in ggml
    np.copyto(out[:, 2:].view(np.int8), q, casting="unsafe")
    return out.reshape(-1)
