"""Inverse fits: the method and parameters that produce a given llama.cpp setting.

inspect names a method from a GGUF's keys and tensors alone with these (a freq_base that is a common base
raised by NTK-aware alpha; a rope_freqs tensor that llama3's formula or a YaRN ramp reproduces).  Each fit
is checked by recomputing the forward formula (``methods.py``/``ggml.py``) and comparing.
"""

from __future__ import annotations

import math

import numpy as np

from ropetool.rope.ggml import corr_dims, ramp
from ropetool.rope.methods import RopeParams, default_inv_freq, rope_frequencies

COMMON_BASES = (10000.0, 500000.0, 1000000.0, 100000.0, 50000.0, 5000000.0, 10000000.0)
REL_TOL = 1e-5  # f32 keys and tensors carry ~6e-8 relative error


def close(a, b, tol=REL_TOL) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol * np.maximum(np.abs(b), 1e-300)))


def round_number(x: float, tol: float = 2e-5) -> float | None:
    """x snapped to a multiple of 1/4 when it is one (within ``tol`` relative), else None."""
    r = round(x * 4) / 4
    return r if r > 0 and abs(x - r) <= tol * abs(x) else None


def nice(x: float) -> float:
    """Drop f32 noise: the shortest decimal that round-trips through float32."""
    return float(str(np.float32(x))) if math.isfinite(x) else x


def llama3_rope_freqs(base: float, d: int, factor: float, low: float, high: float, old: float) -> np.ndarray:
    """The rope_freqs divisor per pair that llama3 rope needs (what llama.cpp's converter writes), from the rope core."""
    p = RopeParams(method="llama3", base=base, factor=factor, low_freq_factor=low, high_freq_factor=high,
                   original_context=int(old))
    return default_inv_freq(base, d) / rope_frequencies(p, d)[0]


def llama3(ff: np.ndarray, base: float, d: int, olds: list[int], orig_key: int | None) -> dict | None:
    """factor/low/high/original for which llama.cpp's llama3 formula gives ``ff``, or None.

    rope_freqs fixes only original/low and original/high, so candidates for the original context
    are tried in turn (the file's original_context_length first); the first that reproduces ``ff``
    with low_freq_factor 1 (the published value) wins, else one with round factors, else any.
    """
    factor = float(ff.max())
    if factor <= 1 + REL_TOL:
        return None
    inv0 = default_inv_freq(base, d)[: len(ff)]  # (the first pairs, when the rest of the head is unrotated)
    x_over_old = inv0 / (2 * math.pi)  # old / wavelen = old * x_over_old
    medium = (np.abs(ff - 1) > REL_TOL) & (np.abs(ff - factor) > REL_TOL * factor)
    smooth = (1 / ff[medium] - 1 / factor) / (1 - 1 / factor)
    grid = [(1.0, 4.0), (1.0, 2.0), (1.0, 8.0), (1.0, 16.0), (1.0, 32.0), (2.0, 4.0), (0.5, 4.0)]
    found = []
    for rank, old in enumerate(olds):
        pairs = list(grid)
        if medium.sum() >= 2:
            # old/wavelen = low + smooth*(high - low): a line in smooth.
            x = old * x_over_old[medium]
            slope, low = np.polyfit(smooth, x, 1)
            pairs = [(float(low), float(low + slope))] + pairs
        for low, high in pairs:
            if not (0 < low < high):
                continue
            if close(llama3_rope_freqs(base, d, factor, low, high, old)[: len(ff)], ff):
                low_r, high_r = round_number(low, 1e-4), round_number(high, 1e-4)
                score = (0 if old == orig_key else 1, 0 if low_r == 1.0 else 1, 0 if (low_r and high_r) else 1, rank)
                found.append((score, {"factor": nice(factor), "low_freq_factor": low_r or low,
                                      "high_freq_factor": high_r or high, "original_context": int(old)}))
                break
    if not found:
        return None
    found.sort(key=lambda f: f[0])
    return found[0][1] | {"_underdetermined": int(medium.sum()) < 2}


def yarn_ramp(ff: np.ndarray, d: int, base: float, n_ctx_orig: int | None) -> dict | None:
    """factor and correction range [low, high] of a YaRN/NTK-by-parts rope_freqs tensor, or None.

    rope_freqs = inv0 / inv_yarn, inv_yarn = inv0/s * w + inv0 * (1 - w), w = clip((j - low)/(high - low), 0, 1).
    """
    s = float(ff.max())
    if s <= 1 + REL_TOL:
        return None
    n = len(ff)
    j = np.arange(n, dtype=np.float64)
    w = (1 - 1 / ff) / (1 - 1 / s)  # 0 = kept, 1 = interpolated by s
    if np.any(np.diff(w) < -1e-6) or w.min() < -1e-6:
        return None

    def fits(low, high):
        pred_w = 1.0 - ramp(low, high, n)  # ggml's ramp: 1 keeps the original frequency
        return close(1 / (pred_w / s + (1 - pred_w)), ff)

    out = {"factor": nice(s)}
    if n_ctx_orig:
        low, high = corr_dims(d, n_ctx_orig, 32.0, 1.0, base)
        if fits(low, high):
            return out | {"beta_fast": 32.0, "beta_slow": 1.0, "original_context": int(n_ctx_orig),
                          "correction_range": [low, high]}
    partial = (w > 1e-6) & (w < 1 - 1e-6)
    if partial.sum() >= 2:
        slope, icpt = np.polyfit(j[partial], w[partial], 1)
        if slope > 0:
            low, high = -icpt / slope, -icpt / slope + 1 / slope
            for lo, hi in ((round(low), round(high)), (low, high)):
                if fits(lo, hi):
                    return out | {"correction_range": [nice(float(lo)), nice(float(hi))]}
    # Integer corrections (ggml floors/ceils them): low sits at or after the last kept pair, high at or
    # before the first fully interpolated one.
    zeros, ones = np.nonzero(w <= 1e-6)[0], np.nonzero(w >= 1 - 1e-6)[0]
    z = int(zeros[-1]) if len(zeros) else 0
    o = int(ones[0]) if len(ones) else d - 1
    for low in range(z, min(o, n) + 1):
        for high in range(max(low, z), o + 1):
            if fits(low, high):
                return out | {"correction_range": [low, high]}
    return None


def ntk(freq_base: float, d: int) -> tuple[float, float] | None:
    """(base, alpha) with freq_base = base * alpha^(d/(d-2)) for a common base and a round alpha.

    freq_base is an f32 (relative error < 6e-8), so alpha must be a multiple of 1/4 within 1e-6;
    among several matches the smallest alpha (the largest common base) wins.
    """
    if d is None or d <= 2:
        return None
    if any(abs(freq_base - b) <= REL_TOL * b for b in COMMON_BASES):
        return None
    matches = []
    for b in COMMON_BASES:
        if freq_base <= b:
            continue
        alpha = (freq_base / b) ** ((d - 2) / d)
        r = round_number(alpha, 1e-6)
        if r is not None and r > 1:
            matches.append((r, b))
    if not matches:
        return None
    alpha, b = min(matches)
    return b, alpha


__all__ = ["close", "round_number", "nice", "llama3_rope_freqs", "llama3", "yarn_ramp", "ntk", "COMMON_BASES", "REL_TOL"]
