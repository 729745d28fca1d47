"""One small function per position-encoding method: the single source of rope and ALiBi math.

RoPE methods return ``(inv_freq, attention_factor)``: the inverse frequency of each rotated pair
(length ``dim // 2``, float64) and the factor that multiplies cos and sin.  ALiBi methods return
one slope per head.  ``seq_len`` is the length a dynamic method is evaluated at.

Formulas: ../shared/reference/rope-methods.md (transformers' modeling_rope_utils, the YaRN
repository, keezen/ntk_alibi).  Notation: d = rotated dims, j = pair index, L0 = trained context.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .params import RopeParams, validate


def default_inv_freq(base: float, dim: int) -> np.ndarray:
    """Plain RoPE: base ** (-2j/d)."""
    return 1.0 / (float(base) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def ntk_base(base: float, alpha: float, dim: int) -> float:
    """NTK-aware (bloc97) base: base * alpha^(d/(d-2)); the lowest frequency is divided by alpha."""
    return float(base) * float(alpha) ** (dim / (dim - 2))


def dynamic_ntk_base(base: float, factor: float, length: int, original: int, dim: int) -> float:
    """Dynamic NTK (emozilla, transformers 'dynamic'): the NTK base for a sequence of ``length``."""
    length = max(length, original)
    return float(base) * (factor * length / original - (factor - 1)) ** (dim / (dim - 2))


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention factor sqrt(1/t) = 0.1 * mscale * ln(s) + 1 (1 when s <= 1)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_correction_dim(n_rotations: float, dim: int, base: float, original: int) -> float:
    """The (fractional) pair index whose wavelength fits ``n_rotations`` times into ``original``."""
    return dim * math.log(original / (n_rotations * 2 * math.pi)) / (2 * math.log(base))


def yarn_correction_range(p: RopeParams, dim: int) -> tuple[float, float]:
    """Pairs below ``low`` keep their frequency, pairs above ``high`` are interpolated by the factor."""
    low = yarn_correction_dim(p.beta_fast, dim, p.base, p.original_context)
    high = yarn_correction_dim(p.beta_slow, dim, p.base, p.original_context)
    if p.truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def yarn_ramp(p: RopeParams, dim: int) -> np.ndarray:
    """Per pair: 0 = keep the original frequency (extrapolate), 1 = interpolate by the factor."""
    low, high = yarn_correction_range(p, dim)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    keep = (1.0 - ramp) * p.extrapolation_factor
    return 1.0 - keep


def _by_parts(p: RopeParams, dim: int, factor: float) -> np.ndarray:
    inv0 = default_inv_freq(p.base, dim)
    interp = yarn_ramp(p, dim)
    return (inv0 / factor) * interp + inv0 * (1.0 - interp)


def yarn_attention_factor(p: RopeParams, factor: float | None = None) -> float:
    """transformers' rule: explicit attention_factor, else the mscale/mscale_all_dim ratio, else 0.1 ln s + 1."""
    s = p.factor if factor is None else factor
    if p.attention_factor is not None:
        return float(p.attention_factor)
    if p.mscale and p.mscale_all_dim:
        return yarn_mscale(s, p.mscale) / yarn_mscale(s, p.mscale_all_dim)
    return yarn_mscale(s)


# --- RoPE methods -------------------------------------------------------------------------

def rope_none(p: RopeParams, dim: int, seq_len: int | None):
    return default_inv_freq(p.base, dim), 1.0


def rope_linear(p: RopeParams, dim: int, seq_len: int | None):
    return default_inv_freq(p.base, dim) / p.factor, 1.0


def rope_ntk(p: RopeParams, dim: int, seq_len: int | None):
    return default_inv_freq(ntk_base(p.base, p.alpha, dim), dim), 1.0


def rope_dynamic_ntk(p: RopeParams, dim: int, seq_len: int | None):
    length = seq_len if seq_len is not None else (p.target_context or p.original_context)
    base = dynamic_ntk_base(p.base, p.factor, length, p.original_context, dim)
    return default_inv_freq(base, dim), 1.0


def rope_ntk_by_parts(p: RopeParams, dim: int, seq_len: int | None):
    return _by_parts(p, dim, p.factor), 1.0


def rope_yarn(p: RopeParams, dim: int, seq_len: int | None):
    return _by_parts(p, dim, p.factor), yarn_attention_factor(p)


def rope_dynamic_yarn(p: RopeParams, dim: int, seq_len: int | None):
    """YaRN recomputed for the current length: s = max(L / L0, factor) (yarn repo, Dynamic YaRN)."""
    length = seq_len if seq_len is not None else (p.target_context or p.original_context)
    s = max(length / p.original_context, p.factor)
    return _by_parts(p, dim, s), yarn_attention_factor(p, s)


def rope_llama3(p: RopeParams, dim: int, seq_len: int | None):
    inv0 = default_inv_freq(p.base, dim)
    wavelen = 2 * math.pi / inv0
    low_wavelen = p.original_context / p.low_freq_factor
    high_wavelen = p.original_context / p.high_freq_factor
    smooth = (p.original_context / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor)
    smoothed = (1 - smooth) * inv0 / p.factor + smooth * inv0
    inv = np.where(wavelen > low_wavelen, inv0 / p.factor, inv0)
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, inv), 1.0


def longrope_attention_factor(p: RopeParams) -> float:
    if p.attention_factor is not None:
        return float(p.attention_factor)
    if p.factor <= 1:
        return 1.0
    return math.sqrt(1 + math.log(p.factor) / math.log(p.original_context))


def longrope_uses_long(p: RopeParams, seq_len: int | None) -> bool:
    """transformers' rule: the long table once the sequence is longer than the trained context."""
    length = seq_len if seq_len is not None else p.target_context
    return length is not None and length > p.original_context


def rope_longrope(p: RopeParams, dim: int, seq_len: int | None):
    table = p.long_factor if longrope_uses_long(p, seq_len) else p.short_factor
    return default_inv_freq(p.base, dim) / np.asarray(table, dtype=np.float64), longrope_attention_factor(p)


# --- ALiBi methods ------------------------------------------------------------------------

def alibi_base_slopes(n_heads: int, max_bias: float = 8.0) -> np.ndarray:
    """ALiBi (Press et al.): 2^(-max_bias*h/n) for the power-of-two heads, odd powers of the 2n schedule after."""
    n = 2 ** int(math.floor(math.log2(n_heads)))
    m0 = 2.0 ** (-max_bias / n)
    slopes = m0 ** np.arange(1, n + 1, dtype=np.float64)
    if n < n_heads:
        m1 = 2.0 ** (-max_bias / 2 / n)
        slopes = np.concatenate([slopes, m1 ** np.arange(1, 1 + 2 * (n_heads - n), 2, dtype=np.float64)])
    return slopes


def _ntk_alibi_slopes(n_heads: int, max_bias: float, a: float) -> np.ndarray:
    """NTK-ALiBi (keezen): head h of the n power-of-two heads is divided by a^((h-1)/(n-1))."""
    slopes = alibi_base_slopes(n_heads, max_bias)
    n = 2 ** int(math.floor(math.log2(n_heads)))
    if n > 1:
        slopes[:n] = slopes[:n] * a ** (-np.arange(n, dtype=np.float64) / (n - 1))
    return slopes


def alibi(p: RopeParams, n_heads: int, seq_len: int | None):
    return alibi_base_slopes(n_heads, p.max_bias)


def alibi_interp(p: RopeParams, n_heads: int, seq_len: int | None):
    return alibi_base_slopes(n_heads, p.max_bias) / p.alpha


def ntk_alibi(p: RopeParams, n_heads: int, seq_len: int | None):
    return _ntk_alibi_slopes(n_heads, p.max_bias, p.alpha)


def dynamic_ntk_alibi_ratio(p: RopeParams, seq_len: int | None) -> float:
    """a = max(a0 * L / L_train, 1)."""
    length = seq_len if seq_len is not None else (p.target_context or p.original_context)
    return max(p.alpha * length / p.original_context, 1.0)


def dynamic_ntk_alibi(p: RopeParams, n_heads: int, seq_len: int | None):
    return _ntk_alibi_slopes(n_heads, p.max_bias, dynamic_ntk_alibi_ratio(p, seq_len))


# --- registry -----------------------------------------------------------------------------

ROPE_FUNCTIONS: dict[str, Callable] = {
    "none": rope_none,
    "linear": rope_linear,
    "ntk": rope_ntk,
    "dynamic-ntk": rope_dynamic_ntk,
    "ntk-by-parts": rope_ntk_by_parts,
    "yarn": rope_yarn,
    "dynamic-yarn": rope_dynamic_yarn,
    "llama3": rope_llama3,
    "longrope": rope_longrope,
}
ALIBI_FUNCTIONS: dict[str, Callable] = {
    "alibi": alibi,
    "alibi-interp": alibi_interp,
    "ntk-alibi": ntk_alibi,
    "dynamic-ntk-alibi": dynamic_ntk_alibi,
}


def rope_frequencies(p: RopeParams, dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    """Inverse frequency per rotated pair and the cos/sin attention factor for method ``p``."""
    if p.is_alibi:
        raise ValueError(f"{p.method} is an ALiBi method; use alibi_slopes")
    validate(p, dim)
    inv, attn = ROPE_FUNCTIONS[p.method](p, dim, seq_len)
    return np.asarray(inv, dtype=np.float64), float(attn)


def alibi_slopes(p: RopeParams, n_heads: int, seq_len: int | None = None) -> np.ndarray:
    """One ALiBi slope per head for method ``p``."""
    if not p.is_alibi:
        raise ValueError(f"{p.method} is a RoPE method; use rope_frequencies")
    validate(p)
    if n_heads < 1:
        raise ValueError("n_heads must be >= 1")
    return np.asarray(ALIBI_FUNCTIONS[p.method](p, n_heads, seq_len), dtype=np.float64)
