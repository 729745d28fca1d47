"""What ggml and llama.cpp compute from a resolved rope setting: the functions behind ``ggml_rope_ext``.

These are llama.cpp's formulas, not a method's: where ggml differs from transformers (the YaRN ramp's
guard when the correction range is empty, the attention factor llama.cpp derives for YaRN, the ALiBi
schedule it derives from one max_bias) this module follows ggml, and ``methods.py`` follows the method's
reference code.  Sources, in the llama.cpp that llama-cpp-python 0.3.36 vendors: ``ggml/src/ggml.c``
(``ggml_rope_yarn_corr_dims``), ``ggml/src/ggml-cpu/ops.cpp`` (``rope_yarn_ramp``, ``rope_yarn``, the
ALiBi slopes of ``ggml_compute_forward_soft_max``) and ``src/llama-context.cpp`` (YaRN's attention
factor).  docs/llama-cpp.md explains each step.

Notation: d = rotated dims (n_rot), i = pair index 0..d/2-1, p = position.
"""

from __future__ import annotations

import math

import numpy as np

from ropetool.rope.methods import alibi_base_slopes, yarn_correction_dim


def corr_dims(n_rot: int, n_ctx_orig: int, beta_fast: float, beta_slow: float, base: float) -> tuple[int, int]:
    """ggml_rope_yarn_corr_dims: the pair range of YaRN's ramp, floored/ceiled and clamped to [0, d-1].

    rope_yarn_ramp compares them with the pair index i (ggml's i0/2); the upper clamp is d - 1 as in ggml."""
    low = math.floor(yarn_correction_dim(beta_fast, n_rot, base, n_ctx_orig))
    high = math.ceil(yarn_correction_dim(beta_slow, n_rot, base, n_ctx_orig))
    return max(0, low), min(n_rot - 1, high)


def inv_freq_error(got: np.ndarray, want: np.ndarray, max_position: int = 2**31 - 1) -> float:
    """The largest relative difference of ``got``'s inverse frequencies from ``want``'s; a pair meant to stay still
    (want 0: a proportional rope's unrotated pairs) counts 0 while its angle at ``max_position`` stays below 1e-6 rad
    (rope_freqs' 1e30 there: about 1e-21), else infinity."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    still = want == 0
    err = np.abs(got[~still] / want[~still] - 1) if (~still).any() else np.zeros(1)
    moved = bool(np.any(np.abs(got[still]) * max_position > 1e-6))
    return math.inf if moved else float(err.max())


def ramp(low: float, high: float, n_pairs: int) -> np.ndarray:
    """rope_yarn_ramp: per pair, 1 = keep the extrapolated (original) angle, 0 = use the interpolated one.

    ggml guards an empty range with ``max(0.001, high - low)``; transformers adds 0.001 to ``high``
    only when the bounds are equal.  They differ when clamping makes ``low > high``."""
    i = np.arange(n_pairs, dtype=np.float64)
    y = (i - low) / max(0.001, high - low)
    return 1.0 - np.clip(y, 0.0, 1.0)


def inv_freq(n_rot: int, base: float, freq_scale: float, ext_factor: float = 0.0,
             corr: tuple[float, float] | None = None, freq_factors: np.ndarray | None = None) -> np.ndarray:
    """The angle per position of every pair, theta_i / p, as rope_yarn computes it (float64).

    theta_extrap = p * base^(-2i/d) / ff[i]; theta_interp = freq_scale * theta_extrap;
    theta = theta_interp * (1 - mix) + theta_extrap * mix, with mix = ramp(i) * ext_factor."""
    i = np.arange(n_rot // 2, dtype=np.float64)
    extrap = float(base) ** (-2.0 * i / n_rot)
    if freq_factors is not None:
        extrap = extrap / np.asarray(freq_factors, dtype=np.float64)[: n_rot // 2]
    if ext_factor == 0.0:
        return extrap * freq_scale
    low, high = corr
    mix = ramp(low, high, n_rot // 2) * ext_factor
    return extrap * (freq_scale * (1.0 - mix) + mix)


def magnitude(attn_factor: float, freq_scale: float, ext_factor: float) -> float:
    """rope_yarn's cos/sin multiplier: attn_factor, times 1 + 0.1 ln(1/freq_scale) when ext_factor != 0."""
    if ext_factor != 0.0:
        return attn_factor * (1.0 + 0.1 * math.log(1.0 / freq_scale))
    return attn_factor


def _mscale(scale: float, m: float) -> float:
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def yarn_context_attn_factor(freq_scale: float, log_mul: float, deepseek2: bool = False) -> float:
    """The attn_factor llama_context hands ggml for YaRN (ext_factor != 0), before rope.scaling.attn_factor.

    It cancels ggml's own 1 + 0.1 ln s and applies transformers' rule instead: get_mscale(s) (or the
    mscale/mscale_all_dim ratio when yarn_log_multiplier is set), so that the net magnitude is the HF one."""
    s = 1.0 / freq_scale
    if log_mul != 0.0:
        m = log_mul if (deepseek2 and log_mul != 1.0) else 1.0
        attn = _mscale(s, m) / _mscale(s, log_mul)
    else:
        attn = _mscale(s, 1.0)
    return attn / (1.0 + 0.1 * math.log(s)) if s > 0 else attn


def mla_attention_scale(attn_factor: float, freq_scale: float, log_mul: float) -> float:
    """deepseek2's factor on the attention scale (src/models/deepseek2.cpp, kq_scale = mscale^2 / sqrt(head_dim)):
    mscale = attn_factor x (1 + 0.1 ln s) (ggml's YaRN term cancelled, whatever the scaling type) x (1 + 0.1
    log_mul ln s), with attn_factor what llama_context hands ggml and s = 1/freq_scale."""
    ln_s = math.log(1.0 / freq_scale)
    return (attn_factor * (1.0 + 0.1 * ln_s) * (1.0 + 0.1 * log_mul * ln_s)) ** 2


def alibi_slopes(n_head: int, max_bias: float) -> np.ndarray:
    """ggml's ALiBi slopes: m0^(h+1) for the first 2^floor(log2 n) heads, m1^(2(h-n)+1) after, with
    m0 = 2^(-max_bias/n) and m1 = 2^(-max_bias/2/n): the ALiBi paper's schedule for this max_bias."""
    return alibi_base_slopes(n_head, max_bias)


__all__ = ["corr_dims", "ramp", "inv_freq", "magnitude", "yarn_context_attn_factor", "mla_attention_scale", "alibi_slopes"]
