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

A multi-section rope (ggml_rope_multi: MROPE, mode 8; IMROPE, mode 40) rotates the pairs as NEOX does, each pair
by one of four positions per token, t, h, w or e (its src[1] holds them as four rows of the token count), picked
by :func:`section_positions` as ggml_mrope_cache_init does; ``positions`` is then [tokens, pairs].  The angle is
built the same way (theta_i = p_section * theta_scale^i, one float32 product per pair), so the bound is the same.
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


def section_rows(n_pairs: int, sections, interleaved: bool) -> np.ndarray:
    """The section (0 t, 1 h, 2 w, 3 e) each rotated pair of a multi-section rope takes its position from, as
    ggml_mrope_cache_init picks it from the op's ``sections`` (s0, s1, s2, s3): pair i's sector is
    i % (s0 + s1 + s2 + s3); IMROPE (``interleaved``): sector % 3 == 1 and sector < 3 s1 -> h, sector % 3 == 2 and
    sector < 3 s2 -> w, sector % 3 == 0 and sector < 3 s0 -> t, else e; MROPE: contiguous sections t | h | w | e."""
    s = [int(v) for v in sections]
    total = sum(s)
    if total <= 0:
        raise ValueError(f"multi-section rope with sections {s}")
    sector = np.arange(n_pairs) % total
    if interleaved:
        row = np.full(n_pairs, 3)
        row[(sector % 3 == 0) & (sector < 3 * s[0])] = 0
        row[(sector % 3 == 2) & (sector < 3 * s[2])] = 2
        row[(sector % 3 == 1) & (sector < 3 * s[1])] = 1
    else:
        row = np.select([sector < s[0], sector < s[0] + s[1], sector < s[0] + s[1] + s[2]], [0, 1, 2], 3)
    return row


def section_positions(positions4: np.ndarray, n_pairs: int, sections, interleaved: bool) -> np.ndarray:
    """The position each rotated pair of a multi-section rope takes, [tokens, n_pairs], from ``positions4`` ([4,
    tokens]: the t, h, w and e rows of the op's src[1]) by :func:`section_rows`."""
    return np.asarray(positions4)[section_rows(n_pairs, sections, interleaved), :].T


def _angles(positions: np.ndarray, inv_freq: np.ndarray, half: int) -> np.ndarray:
    """[tokens, pairs]: each pair's position (one per token, or one per token and pair) times its inverse frequency."""
    p = np.asarray(positions, dtype=np.float64)
    inv = np.asarray(inv_freq, dtype=np.float64)[None, :half]
    return (p[:, None] if p.ndim == 1 else p[:, :half]) * inv


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray, magnitude: float, pairing: str,
               n_dims: int, offset: int = 0) -> np.ndarray:
    """``x``: [tokens, heads, dims]; ``positions``: [tokens], or [tokens, pairs] (a multi-section rope:
    :func:`section_positions`); ``inv_freq``: [n_dims/2]. Float64 result."""
    x = np.asarray(x, dtype=np.float64)
    a, b = _pair_index(n_dims, pairing, offset)
    theta = _angles(positions, inv_freq, n_dims // 2)
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
    theta = np.abs(_angles(positions, inv_freq, half))
    angle = theta * (2.0 * np.arange(half) + 8.0) * U32 + 8.0 * U32  # [tokens, pairs]
    pair = abs(magnitude) * (x[..., a] + x[..., b]) * angle[:, None, :]
    tol = np.zeros_like(x)
    tol[..., a] = pair
    tol[..., b] = pair
    return tol + np.abs(exact) * OUT_UNIT.get(out_type, 2.0 ** -8)


__all__ = ["apply_rope", "rope_tolerance", "section_rows", "section_positions", "U32", "OUT_UNIT"]
