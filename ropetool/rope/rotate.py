"""Rotary position embedding applied to vectors, as ggml's rope op does, and the float32 rounding bound of it.

:func:`apply_rope` rotates each pair of dims of ``x`` by ``position * inv_freq[i]`` and scales it by the
magnitude (float64): NORMAL pairing rotates dims (2i, 2i+1), NEOX dims (i, i + n_dims/2) (ggml-cpu/ops.cpp
``rotate_pairs``); the rotated block starts at ``offset`` and every dim outside it is copied unchanged.

:func:`rope_tolerance` bounds, per element, how far ggml's float32 rope can be from that exact rotation of
the same input under the same setting (docs/check.md derives it):

* the angle: ggml builds theta_i = p * theta_scale^i by i float32 multiplications from theta_scale =
  powf(base, -2/d) (itself rounded), then divides by the freq factor, multiplies by freq_scale and mixes
  YaRN's ramp: a relative error of at most (2i + 8) u, u = 2^-24, so |d theta_i| <= |theta_i| (2i + 8) u,
  an error that grows with the position;
* the rest: cosf/sinf of the rounded angle (1 ulp), the magnitude (computed in float32 in ggml and in
  llama_context: 4 u), the two products and the sum (3 u): 8 u of m (|x0| + |x1|);
* the output's own rounding: half an ulp of the element in its type (f32 2^-24, f16 2^-11, bf16 2^-8
  relative).

So |y - exact| <= m (|x0| + |x1|) (|theta_i| (2i + 8) u + 8 u) + |exact| u_out.
"""

from __future__ import annotations

import numpy as np

U32 = 2.0 ** -24
OUT_UNIT = {"f32": 2.0 ** -24, "f16": 2.0 ** -11, "bf16": 2.0 ** -8}


def _pair_index(n_dims: int, pairing: str, offset: int) -> tuple[np.ndarray, np.ndarray]:
    half = n_dims // 2
    i = np.arange(half)
    if pairing == "normal":
        return offset + 2 * i, offset + 2 * i + 1
    if pairing == "neox":
        return offset + i, offset + half + i
    raise ValueError(f"unknown pairing {pairing!r}")


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray, magnitude: float, pairing: str,
               n_dims: int, offset: int = 0) -> np.ndarray:
    """``x``: [tokens, heads, dims]; ``positions``: [tokens]; ``inv_freq``: [n_dims/2]. Float64 result."""
    x = np.asarray(x, dtype=np.float64)
    a, b = _pair_index(n_dims, pairing, offset)
    theta = np.asarray(positions, dtype=np.float64)[:, None] * np.asarray(inv_freq, dtype=np.float64)[None, : n_dims // 2]
    c, s = (np.cos(theta) * magnitude)[:, None, :], (np.sin(theta) * magnitude)[:, None, :]
    out = x.copy()
    x0, x1 = x[..., a], x[..., b]
    out[..., a] = x0 * c - x1 * s
    out[..., b] = x0 * s + x1 * c
    return out


def rope_tolerance(x: np.ndarray, exact: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray, magnitude: float,
                   pairing: str, n_dims: int, offset: int = 0, out_type: str = "f32") -> np.ndarray:
    """The per-element bound of the module doc, same shape as ``x`` (0 plus the output rounding outside the
    rotated block, which ggml copies)."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    a, b = _pair_index(n_dims, pairing, offset)
    half = n_dims // 2
    theta = np.abs(np.asarray(positions, dtype=np.float64)[:, None] * np.asarray(inv_freq, dtype=np.float64)[None, :half])
    angle = theta * (2.0 * np.arange(half) + 8.0) * U32 + 8.0 * U32  # [tokens, pairs]
    pair = abs(magnitude) * (x[..., a] + x[..., b]) * angle[:, None, :]
    tol = np.zeros_like(x)
    tol[..., a] = pair
    tol[..., b] = pair
    return tol + np.abs(exact) * OUT_UNIT.get(out_type, 2.0 ** -8)


__all__ = ["apply_rope", "rope_tolerance", "U32", "OUT_UNIT"]
