"""``ropetool inspect``: a GGUF's metadata, tensor table and a plain-words RoPE/ALiBi summary.

Three layers:

* :func:`rope_state` resolves the file's rope keys and tensors the way llama.cpp does
  (llama-cpp-semantics.md §1-3: defaults, the scaling-type default of ``linear``, ``scale_linear``
  as a fallback, which architectures read which key, YaRN's correction range and attention
  factor) and computes the frequency of every rotated pair that llama.cpp will use.
* :func:`summarize_rope` names the method as it was meant: from ropetool's provenance keys
  (``ropetool.rope.*``) when present, otherwise inferred from keys and tensors (NTK-aware alpha from
  ``freq_base``; llama3 / YaRN / linear from the shape of ``rope_freqs``; YaRN, linear and
  longrope from the scaling keys).
* :func:`inspect_gguf` puts metadata, tensors, the summary and lint findings together as the
  report whose JSON form is documented in docs/inspect.md (``schema_version``).

Only the header and the tiny rope tensors (``rope_freqs``, ``rope_factors_*``) are read.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import (
    ALIBI_KEY_READERS,
    BAICHUAN_ALIBI_LAYERS,
    HARDCODED_ALIBI_MAX_BIAS,
    RARE_ROPE_KEY_READERS,
    YARN_BETA_DEFAULTS,
    YARN_LOG_MUL_PRESCALED,
    Arch,
    arch_by_name,
)
from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import GGUFFile, T, plain_value

SCHEMA_VERSION = 1
ARRAY_PREVIEW = 8  # array elements shown without --full
STRING_PREVIEW = 100  # characters of a string shown in text mode without --full
SCALING_TYPES = ("none", "linear", "yarn", "longrope")
COMMON_BASES = (10000.0, 500000.0, 1000000.0, 100000.0, 50000.0, 5000000.0, 10000000.0)
MAX_ROT = 1 << 16  # sanity bounds: larger values are corrupt, and would make huge arrays
MAX_HEADS = 1 << 16
REL_TOL = 1e-5  # f32 keys and tensors carry ~6e-8 relative error
CLASSIFY_TOL = 1e-4


# ------------------------------------------------------------------------------------------
# What llama.cpp computes


def _scalar(gf: GGUFFile, key: str, kinds=(int, float)):
    f = gf.fields.get(key)
    if f is None or f.is_array:
        return None
    v = f.scalar
    if isinstance(v, bool) or not isinstance(v, kinds):
        return None
    return v


def _first_int(gf: GGUFFile, key: str) -> int | None:
    """A per-model count stored as a scalar or (some archs) as a per-layer array."""
    f = gf.fields.get(key)
    if f is None:
        return None
    if f.is_array:
        if f.sub_type in (T.STRING, T.ARRAY, T.FLOAT32, T.FLOAT64) or f.count == 0:
            return None
        vals = [int(v) for v in f.value if int(v) > 0]
        return max(vals) if vals else None
    return int(f.scalar) if isinstance(f.scalar, int) and not isinstance(f.scalar, bool) else None


def _get_mscale(s: float, m: float) -> float:
    from ropetool.rope import yarn_mscale

    return yarn_mscale(s, m)


def ggml_corr_dims(n_rot: int, n_ctx_orig: int, beta_fast: float, beta_slow: float, base: float) -> tuple[int, int]:
    """ggml_rope_yarn_corr_dims: pairs below ``low`` extrapolate, above ``high`` interpolate (the rope core's
    truncated correction range, which is ggml's)."""
    from ropetool.rope import RopeParams, yarn_correction_range

    p = RopeParams(method="yarn", base=base, original_context=n_ctx_orig, beta_fast=beta_fast, beta_slow=beta_slow)
    return yarn_correction_range(p, n_rot)


@dataclass
class RopeState:
    """A GGUF's position-encoding settings as llama.cpp resolves them (defaults filled in)."""

    arch: str | None
    facts: Arch | None
    encoding: str  # "rope" or "alibi"
    n_head: int | None
    head_dim: int | None
    n_rot: int | None
    n_rot_source: str  # "key" or "head_dim"
    context_length: int | None  # n_ctx_train
    freq_base: float
    freq_base_source: str  # "key" or "default"
    scaling_type_raw: str | None
    scaling_type: str  # what llama.cpp uses (the key, or "linear" when it is missing)
    factor: float | None  # rope.scaling.factor, else rope.scale_linear
    factor_source: str | None
    freq_scale: float
    orig_ctx_key: int | None
    n_ctx_orig: int | None
    ext_factor: float
    beta_fast: float
    beta_slow: float
    rope_attn_factor: float
    yarn_attn_factor: float
    log_mul: float
    magnitude: float  # effective cos/sin multiplier
    rope_freqs: np.ndarray | None = None
    rope_freqs_used: bool = False
    long_factors: np.ndarray | None = None
    short_factors: np.ndarray | None = None
    longrope_used: bool = False
    alibi_max_bias: float | None = None
    alibi_source: str | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (key or tensor, why llama.cpp cannot use it)

    @property
    def computable(self) -> bool:
        """Whether the rope math can be evaluated (no implausible values)."""
        return not self.problems and bool(self.n_rot)

    @property
    def yarn_active(self) -> bool:
        return self.ext_factor != 0

    def correction_range(self) -> tuple[int, int] | None:
        if not self.yarn_active or not self.n_rot or not self.n_ctx_orig:
            return None
        return ggml_corr_dims(self.n_rot, self.n_ctx_orig, self.beta_fast, self.beta_slow, self.freq_base)

    def freq_factors(self, n_ctx: int | None) -> np.ndarray | None:
        """The per-pair divisor llama.cpp passes to ggml_rope_ext at context ``n_ctx`` (get_rope_factors)."""
        if self.rope_freqs_used:
            return self.rope_freqs
        if self.longrope_used:
            long_ = n_ctx is not None and self.n_ctx_orig is not None and n_ctx > self.n_ctx_orig
            return self.long_factors if long_ else self.short_factors
        return None

    def inv_freq(self, n_ctx: int | None = None) -> np.ndarray:
        """The inverse frequency of every rotated pair as ggml computes it (float64)."""
        d = self.n_rot
        i = np.arange(d // 2, dtype=np.float64)
        inv = self.freq_base ** (-2.0 * i / d)
        ff = self.freq_factors(n_ctx if n_ctx is not None else self.context_length)
        if ff is not None and len(ff) >= d // 2:
            inv = inv / ff[: d // 2]
        if self.yarn_active:
            low, high = self.correction_range()
            ramp = 1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)
            mix = ramp * self.ext_factor
            return inv * (self.freq_scale * (1 - mix) + mix)
        return inv * self.freq_scale

    def alibi_slopes(self) -> np.ndarray | None:
        """llama.cpp's per-head ALiBi slopes (ggml_soft_max_ext)."""
        if self.encoding != "alibi" or not self.n_head or not self.alibi_max_bias or self.n_head > MAX_HEADS:
            return None
        from ropetool.rope import alibi_base_slopes  # ggml's m0^(h+1) / m1^(2(h-n)+1) schedule is ALiBi's

        return alibi_base_slopes(self.n_head, self.alibi_max_bias)


def _read_rope_tensor(gf: GGUFFile, name: str, notes: list[str]) -> np.ndarray | None:
    t = gf.tensor(name)
    if t is None:
        return None
    try:
        return gf.read_tensor(name, max_elements=1 << 16).reshape(-1)
    except RopetoolError as e:
        notes.append(f"{name} not read: {e}")
        return None


def rope_state(gf: GGUFFile) -> RopeState:
    """Resolve the file's rope/ALiBi settings as llama.cpp's loader and context do."""
    arch = gf.architecture
    facts = arch_by_name(arch) if arch else None
    a = arch or "?"

    def key(template):
        return K.k(template, a)

    notes: list[str] = []
    n_head = _first_int(gf, key(K.HEAD_COUNT))
    n_embd = _first_int(gf, key(K.EMBEDDING_LENGTH))
    head_dim = _first_int(gf, key(K.KEY_LENGTH))
    if head_dim is None and n_embd and n_head:
        head_dim = n_embd // n_head
    n_rot = _scalar(gf, key(K.ROPE_DIMENSION_COUNT), int)
    n_rot_source = "key"
    if n_rot is None:
        n_rot, n_rot_source = head_dim, "head_dim"
    ctx = _scalar(gf, key(K.CONTEXT_LENGTH), int)

    base = _scalar(gf, key(K.ROPE_FREQ_BASE))
    base_source = "key"
    if base is None:
        base, base_source = 10000.0, "default"
    raw_type = gf.get(key(K.ROPE_SCALING_TYPE))
    raw_type = raw_type if isinstance(raw_type, str) else None
    stype = raw_type if raw_type is not None else "linear"

    factor, factor_source = _scalar(gf, key(K.ROPE_SCALING_FACTOR)), "scaling.factor"
    if not factor:
        legacy = _scalar(gf, key(K.ROPE_SCALE_LINEAR))
        if legacy:
            factor, factor_source = legacy, "scale_linear"
    if not factor:
        factor, factor_source = None, None
    freq_scale = 1.0 / factor if factor else 1.0
    if stype == "none":
        freq_scale = 1.0

    orig_key = _scalar(gf, key(K.ROPE_SCALING_ORIG_CTX), int)
    n_ctx_orig = orig_key or ctx

    def rare(template, default):
        if arch in RARE_ROPE_KEY_READERS[template]:
            v = _scalar(gf, key(template))
            return default if v is None else float(v)
        return default

    ext = rare(K.ROPE_YARN_EXT_FACTOR, -1.0)
    if ext < 0:
        ext = 1.0 if stype == "yarn" else 0.0
    bf_default, bs_default = YARN_BETA_DEFAULTS.get(arch, (32.0, 1.0))
    beta_fast = rare(K.ROPE_YARN_BETA_FAST, bf_default)
    beta_slow = rare(K.ROPE_YARN_BETA_SLOW, bs_default)
    yarn_attn = rare(K.ROPE_YARN_ATTN_FACTOR, 1.0)
    log_mul = rare(K.ROPE_YARN_LOG_MUL, 0.0)
    if arch in YARN_LOG_MUL_PRESCALED and log_mul:
        log_mul = log_mul / 0.1
    rope_attn = _scalar(gf, key(K.ROPE_SCALING_ATTN_FACTOR))
    rope_attn = 1.0 if rope_attn is None else float(rope_attn)

    # llama_context: the YaRN attention factor (llama-cpp-semantics.md §2).
    attn = yarn_attn
    magnitude = attn * rope_attn
    if ext != 0:
        s = 1.0 / freq_scale
        if log_mul != 0:
            mscale = log_mul if (arch == "deepseek2" and log_mul != 1) else 1.0
            attn = _get_mscale(s, mscale) / _get_mscale(s, log_mul)
        else:
            attn = _get_mscale(s, 1.0)
        attn *= 1.0 / (1.0 + 0.1 * math.log(s)) if s > 0 else 1.0
        attn *= rope_attn
        magnitude = attn * (1.0 + 0.1 * math.log(1.0 / freq_scale))
        if arch in ("deepseek2", "deepseek32", "mistral4"):
            notes.append(f"{arch} folds YaRN scaling into the attention scale (kq_scale); the magnitude shown is ggml's rope only")

    st = RopeState(
        arch=arch, facts=facts, encoding="rope", n_head=n_head, head_dim=head_dim, n_rot=n_rot,
        n_rot_source=n_rot_source, context_length=ctx, freq_base=float(base), freq_base_source=base_source,
        scaling_type_raw=raw_type, scaling_type=stype, factor=float(factor) if factor else None,
        factor_source=factor_source, freq_scale=freq_scale, orig_ctx_key=orig_key, n_ctx_orig=n_ctx_orig,
        ext_factor=ext, beta_fast=beta_fast, beta_slow=beta_slow, rope_attn_factor=rope_attn,
        yarn_attn_factor=yarn_attn, log_mul=log_mul, magnitude=magnitude, notes=notes,
    )

    # ALiBi (§5).
    bias_key = _scalar(gf, key(K.MAX_ALIBI_BIAS))
    n_layer = _scalar(gf, key(K.BLOCK_COUNT), int)
    if arch in HARDCODED_ALIBI_MAX_BIAS:
        st.encoding, st.alibi_max_bias, st.alibi_source = "alibi", HARDCODED_ALIBI_MAX_BIAS[arch], "hard-coded"
    elif arch == "baichuan" and n_layer == BAICHUAN_ALIBI_LAYERS:
        st.encoding, st.alibi_max_bias, st.alibi_source = "alibi", 8.0, "hard-coded"
    elif arch in ALIBI_KEY_READERS:
        st.encoding, st.alibi_max_bias, st.alibi_source = "alibi", float(bias_key or 0.0), "key"
        if not bias_key:
            notes.append(f"{K.k(K.MAX_ALIBI_BIAS, a)} is missing or 0: llama.cpp runs {arch} without ALiBi")
    elif facts is not None and facts.is_alibi:
        st.encoding, st.alibi_max_bias, st.alibi_source = "alibi", facts.alibi_max_bias, "hard-coded"

    # Rope tensors: which ones llama.cpp loads for this architecture.
    st.rope_freqs = _read_rope_tensor(gf, K.ROPE_FREQS_TENSOR, notes)
    st.long_factors = _read_rope_tensor(gf, K.ROPE_FACTORS_LONG_TENSOR, notes)
    st.short_factors = _read_rope_tensor(gf, K.ROPE_FACTORS_SHORT_TENSOR, notes)
    if facts is not None:
        longrope = facts.loads_longrope(stype)
        st.longrope_used = longrope and (st.long_factors is not None or st.short_factors is not None)
        freqs_loaded = facts.loads_rope_freqs and not (facts.longrope_tensors == "if-type-longrope" and stype == "longrope")
        st.rope_freqs_used = freqs_loaded and st.rope_freqs is not None
    else:
        st.rope_freqs_used = st.rope_freqs is not None
        st.longrope_used = not st.rope_freqs_used and (st.long_factors is not None or st.short_factors is not None)
        if st.rope_freqs is not None or st.longrope_used:
            notes.append(f"ropetool has no facts about {a}: assuming llama.cpp loads the rope tensors present")
    for name, arr in ((K.ROPE_FREQS_TENSOR, st.rope_freqs if st.rope_freqs_used else None),
                      (K.ROPE_FACTORS_LONG_TENSOR, st.long_factors if st.longrope_used else None),
                      (K.ROPE_FACTORS_SHORT_TENSOR, st.short_factors if st.longrope_used else None)):
        if arr is not None and n_rot and len(arr) != n_rot // 2:
            notes.append(f"{name} has {len(arr)} entries, not rope.dimension_count/2 = {n_rot // 2}: llama.cpp refuses the file")
            if name == K.ROPE_FREQS_TENSOR:
                st.rope_freqs_used = False
            else:
                st.longrope_used = False
    _check_plausible(st, a)
    return st


def _check_plausible(st: RopeState, a: str) -> None:
    """Values no real model has (and that would break the rope math): recorded as problems."""
    bad = st.problems
    if st.n_rot is not None and not (2 <= st.n_rot <= MAX_ROT and st.n_rot % 2 == 0):
        bad.append((K.k(K.ROPE_DIMENSION_COUNT, a), f"rotary dimension {st.n_rot} is not an even number in 2..{MAX_ROT}"))
        st.n_rot = None
    if st.n_head is not None and not 1 <= st.n_head <= MAX_HEADS:
        bad.append((K.k(K.HEAD_COUNT, a), f"head count {st.n_head} is implausible"))
        st.n_head = None
    if st.encoding == "rope":
        if not (math.isfinite(st.freq_base) and st.freq_base > 1):
            bad.append((K.k(K.ROPE_FREQ_BASE, a), f"freq_base {st.freq_base} must be a finite number > 1"))
        if not (math.isfinite(st.freq_scale) and st.freq_scale > 0):
            bad.append((K.k(K.ROPE_SCALING_FACTOR, a), f"scaling factor {st.factor} gives freq_scale {st.freq_scale}"))
        if not (math.isfinite(st.rope_attn_factor) and math.isfinite(st.magnitude)):
            bad.append((K.k(K.ROPE_SCALING_ATTN_FACTOR, a), f"attention factor {st.rope_attn_factor} is not finite"))
        if st.yarn_active and not (st.n_ctx_orig and st.n_ctx_orig > 0):
            bad.append((K.k(K.ROPE_SCALING_ORIG_CTX, a), "YaRN needs a positive original context"))
        if st.yarn_active and not (st.beta_fast > 0 and st.beta_slow > 0):
            bad.append((K.k(K.ROPE_YARN_BETA_FAST, a), "YaRN betas must be > 0"))
    for name, arr in ((K.ROPE_FREQS_TENSOR, st.rope_freqs), (K.ROPE_FACTORS_LONG_TENSOR, st.long_factors),
                      (K.ROPE_FACTORS_SHORT_TENSOR, st.short_factors)):
        if arr is not None and not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
            bad.append((name, "holds values that are not finite and positive"))


# ------------------------------------------------------------------------------------------
# The method as meant


def _default_inv(base: float, d: int) -> np.ndarray:
    from ropetool.rope import default_inv_freq

    return default_inv_freq(base, d)


def _close(a, b, tol=REL_TOL) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol * np.maximum(np.abs(b), 1e-300)))


def _round_number(x: float, tol: float = 2e-5) -> float | None:
    """x snapped to a multiple of 1/4 when it is one (within ``tol`` relative), else None."""
    r = round(x * 4) / 4
    return r if r > 0 and abs(x - r) <= tol * abs(x) else None


def _nice(x: float) -> float:
    """Drop f32 noise: the shortest decimal that round-trips through float32."""
    return float(str(np.float32(x))) if math.isfinite(x) else x


def llama3_rope_freqs(base: float, d: int, factor: float, low: float, high: float, old: float) -> np.ndarray:
    """The rope_freqs divisor per pair that llama3 rope needs (what llama.cpp's converter writes), from the rope core."""
    from ropetool.rope import RopeParams, rope_frequencies

    p = RopeParams(method="llama3", base=base, factor=factor, low_freq_factor=low, high_freq_factor=high,
                   original_context=int(old))
    return _default_inv(base, d) / rope_frequencies(p, d)[0]


def _fit_llama3(ff: np.ndarray, base: float, d: int, olds: list[int], orig_key: int | None) -> dict | None:
    """factor/low/high/original for which llama.cpp's llama3 formula gives ``ff``, or None.

    rope_freqs fixes only original/low and original/high, so candidates for the original context
    are tried in turn (the file's original_context_length first); the first that reproduces ``ff``
    with low_freq_factor 1 (the published value) wins, else one with round factors, else any.
    """
    factor = float(ff.max())
    if factor <= 1 + REL_TOL:
        return None
    inv0 = _default_inv(base, d)
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
            if _close(llama3_rope_freqs(base, d, factor, low, high, old), ff):
                low_r, high_r = _round_number(low, 1e-4), _round_number(high, 1e-4)
                score = (0 if old == orig_key else 1, 0 if low_r == 1.0 else 1, 0 if (low_r and high_r) else 1, rank)
                found.append((score, {"factor": _nice(factor), "low_freq_factor": low_r or low,
                                      "high_freq_factor": high_r or high, "original_context": int(old)}))
                break
    if not found:
        return None
    found.sort(key=lambda f: f[0])
    return found[0][1] | {"_underdetermined": int(medium.sum()) < 2}


def _fit_yarn_ramp(ff: np.ndarray, d: int, base: float, n_ctx_orig: int | None) -> dict | None:
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
        pred_w = np.clip((j - low) / max(0.001, high - low), 0, 1)
        return _close(1 / (pred_w / s + (1 - pred_w)), ff)

    out = {"factor": _nice(s)}
    if n_ctx_orig:
        low, high = ggml_corr_dims(d, n_ctx_orig, 32.0, 1.0, base)
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
                    return out | {"correction_range": [_nice(float(lo)), _nice(float(hi))]}
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


def _infer_ntk(freq_base: float, d: int) -> tuple[float, float] | None:
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
        r = _round_number(alpha, 1e-6)
        if r is not None and r > 1:
            matches.append((r, b))
    if not matches:
        return None
    alpha, b = min(matches)
    return b, alpha


def _provenance(gf: GGUFFile) -> tuple[str | None, dict, list[str]]:
    method = gf.get(K.RT_METHOD)
    if not isinstance(method, str):
        return None, {}, []
    notes = []
    raw = gf.get(K.RT_PARAMS)
    params = {}
    if isinstance(raw, str):
        try:
            params = json.loads(raw)
            if not isinstance(params, dict):
                raise ValueError
        except ValueError:
            notes.append(f"{K.RT_PARAMS} is not a JSON object; ignored")
            params = {}
    params.pop("method", None)
    return method, params, notes


# The parameters each method reads (shown with their defaults when the record omits them).
METHOD_FIELDS = {
    "none": ("base",),
    "linear": ("base", "factor"),
    "ntk": ("base", "alpha"),
    "dynamic-ntk": ("base", "factor", "original_context", "target_context"),
    "ntk-by-parts": ("base", "factor", "original_context", "beta_fast", "beta_slow"),
    "yarn": ("base", "factor", "original_context", "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim"),
    "dynamic-yarn": ("base", "factor", "original_context", "target_context", "beta_fast", "beta_slow", "attention_factor"),
    "llama3": ("base", "factor", "original_context", "low_freq_factor", "high_freq_factor"),
    "longrope": ("base", "factor", "original_context", "attention_factor", "short_factor", "long_factor"),
    "alibi": ("max_bias",),
    "alibi-interp": ("max_bias", "alpha"),
    "ntk-alibi": ("max_bias", "alpha"),
    "dynamic-ntk-alibi": ("max_bias", "alpha", "original_context", "target_context"),
}


def _with_defaults(method: str, recorded: dict) -> dict:
    """Recorded parameters plus the defaults of the fields ``method`` reads (RopeParams' defaults)."""
    from ropetool.rope import RopeParams

    defaults = RopeParams()
    out = {}
    for name in METHOD_FIELDS.get(method, ()):
        v = recorded.get(name, getattr(defaults, name, None))
        if v is not None:
            out[name] = list(v) if isinstance(v, tuple) else v
    for name, v in recorded.items():
        out.setdefault(name, v)
    return out


def infer_method(gf: GGUFFile, st: RopeState) -> tuple[str, dict, list[str]]:
    """(method, parameters, notes) read from the keys and tensors alone (no provenance)."""
    notes: list[str] = []
    d = st.n_rot
    if st.encoding == "alibi":
        return "alibi", {"max_bias": st.alibi_max_bias}, notes
    if not d:
        return "unknown", {}, ["no usable rope.dimension_count or head dimension: cannot tell the rotary dims"]
    if not st.computable:
        return "unknown", {}, [f"{k}: {why}" for k, why in st.problems]
    base = st.freq_base
    ff = st.rope_freqs if st.rope_freqs_used else None
    if ff is not None:
        if _close(ff, np.full_like(ff, ff[0])) and abs(ff[0] - 1) > REL_TOL:
            return "linear", {"factor": _nice(float(ff[0])), "base": base}, ["uniform rope_freqs: every pair divided by the same factor"]
        olds = [st.orig_ctx_key]
        if st.context_length:
            olds += [st.context_length // max(1, int(round(float(ff.max())))), st.context_length]
        olds += [8192, 4096, 2048, 16384, 32768, 1024, 65536, 131072, 512, 256, 128, 64]
        seen = []
        for o in olds:
            if o and o not in seen:
                seen.append(o)
        l3 = _fit_llama3(ff, base, d, seen, st.orig_ctx_key)
        yarn = _fit_yarn_ramp(ff, d, base, st.orig_ctx_key)
        if l3 is not None:
            under = l3.pop("_underdetermined")
            if under:
                notes.append("rope_freqs has fewer than two pairs in the smoothing band: low/high_freq_factor are one consistent choice, not the only one")
            if st.orig_ctx_key is None:
                notes.append("rope_freqs fixes only original/low_freq_factor and original/high_freq_factor; shown with the most common choice")
            if yarn is not None:
                notes.append("rope_freqs is also consistent with a YaRN ramp (too few pairs to tell)")
            return "llama3", {"base": base, **l3}, notes
        if yarn is not None:
            rng = yarn.pop("correction_range")
            mag = st.magnitude
            method = "yarn"
            params = {"base": base, **yarn}
            if abs(mag - 1) <= CLASSIFY_TOL:
                method = "ntk-by-parts"
            elif abs(mag - _get_mscale(yarn["factor"], 1.0)) > CLASSIFY_TOL:
                params["attention_factor"] = _nice(mag)
            if "beta_fast" not in params:
                notes.append(f"ramp over pairs {rng[0]:g}..{rng[1]:g}; the betas cannot be told without the original context")
            return method, params | {"_correction_range": rng}, notes + ["YaRN frequencies written as the rope_freqs tensor"]
        return "custom", {"base": base}, ["rope_freqs matches neither a llama3, YaRN nor uniform scaling"]
    if st.longrope_used or st.scaling_type == "longrope":
        params = {"base": base, "original_context": st.n_ctx_orig}
        if st.context_length and st.n_ctx_orig:
            params["factor"] = _nice(st.context_length / st.n_ctx_orig)
        if st.rope_attn_factor != 1:
            params["attention_factor"] = _nice(st.rope_attn_factor)
        if not st.longrope_used:
            notes.append("scaling type longrope but no rope_factors_long/short tensors that llama.cpp loads")
        return "longrope", params, notes
    if st.scaling_type == "yarn":
        params = {"base": base, "factor": _nice(1 / st.freq_scale), "original_context": st.n_ctx_orig}
        if (st.beta_fast, st.beta_slow) != (32.0, 1.0):
            params |= {"beta_fast": st.beta_fast, "beta_slow": st.beta_slow}
        s = 1 / st.freq_scale
        if abs(st.magnitude - 1) <= CLASSIFY_TOL and s > 1:
            return "ntk-by-parts", params, ["YaRN frequencies with the attention factor cancelled to 1"]
        if abs(st.magnitude - _get_mscale(s, 1.0)) > CLASSIFY_TOL:
            params["attention_factor"] = _nice(st.magnitude)
        return "yarn", params, notes
    if st.scaling_type == "linear" and st.factor and st.factor != 1:
        if st.scaling_type_raw is None:
            notes.append("no rope.scaling.type: llama.cpp defaults it to linear")
        return "linear", {"base": base, "factor": _nice(st.factor)}, notes
    ntk = _infer_ntk(base, d)
    if ntk is not None:
        b, alpha = ntk
        return "ntk", {"base": b, "alpha": alpha}, [f"freq_base {base:g} = {b:g} * {alpha:g}^(d/(d-2)) with d = {d}"]
    return "none", {"base": base}, notes


# ------------------------------------------------------------------------------------------
# Summary


def _ranges(idx: list[int]) -> str:
    if not idx:
        return "none"
    out, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(out)


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


METHOD_NAMES = {
    "none": "plain RoPE (no context extension)",
    "linear": "linear position interpolation (PI)",
    "ntk": "NTK-aware scaling",
    "dynamic-ntk": "dynamic NTK (baked at one length)",
    "ntk-by-parts": "NTK-by-parts",
    "yarn": "YaRN",
    "dynamic-yarn": "dynamic YaRN (baked at one length)",
    "llama3": "Llama 3 rope scaling",
    "longrope": "LongRoPE",
    "alibi": "ALiBi",
    "alibi-interp": "ALiBi interpolation",
    "ntk-alibi": "NTK-ALiBi",
    "dynamic-ntk-alibi": "dynamic NTK-ALiBi",
    "custom": "custom per-pair frequencies",
    "unknown": "unknown",
}


def summarize_rope(gf: GGUFFile, st: RopeState | None = None) -> dict:
    """The rope/ALiBi summary of the report (see docs/inspect.md for every field)."""
    st = st or rope_state(gf)
    rec_method, rec_params, rec_notes = _provenance(gf)
    inf_method, inf_params, inf_notes = infer_method(gf, st)
    correction_fit = inf_params.pop("_correction_range", None)
    if rec_method is not None:
        from ropetool.rope import make_params

        try:
            make_params(rec_method, **rec_params)
        except (RopetoolError, TypeError, ValueError) as e:
            rec_notes = rec_notes + [f"the recorded method {rec_method!r} cannot be read ({e}); showing the inferred one"]
            rec_method = None
    if rec_method is not None:
        method, params, source, notes = rec_method, _with_defaults(rec_method, rec_params), "ropetool", rec_notes
        if inf_method != rec_method:
            notes = notes + [f"from the keys alone it reads as {inf_method}"]
    else:
        method, params, source, notes = inf_method, inf_params, "inferred", rec_notes + inf_notes
    notes = notes + st.notes
    extended = st.context_length
    out: dict = {
        "architecture": st.arch,
        "arch_known": st.facts is not None,
        "position_encoding": st.encoding,
        "method": method,
        "method_source": source,
        "params": {k: plain_value(v) for k, v in params.items()},
        "inferred_method": inf_method,
        "exact": gf.get(K.RT_EXACT) if isinstance(gf.get(K.RT_EXACT), bool) else None,
        "factor": None,
        "alpha": None,
        "base": None,
        "trained_context": None,
        "extended_context": extended,
        "rotary_dim": st.n_rot,
        "pairs": None,
        "correction_range": None,
        "attention_factor": None,
        "rope_tensors": [],
        "alibi": None,
        "llama_cpp": None,
        "notes": notes,
        "description": "",
    }
    for name in K.ROPE_TENSORS:
        t = gf.tensor(name)
        if t is not None:
            used = (st.rope_freqs_used if name == K.ROPE_FREQS_TENSOR else st.longrope_used)
            out["rope_tensors"].append({"name": name, "type": t.type.name, "length": t.n_elements, "used": bool(used)})

    if st.encoding == "alibi":
        slopes = st.alibi_slopes()
        out["alibi"] = {
            "max_bias": st.alibi_max_bias,
            "source": st.alibi_source,
            "n_head": st.n_head,
            "slopes": None if slopes is None else [float(f"{s:.6g}") for s in slopes],
        }
        out["trained_context"] = params.get("original_context") or st.context_length
        out["description"] = (
            f"{METHOD_NAMES.get(method, method)}: max_bias {_fmt(st.alibi_max_bias)} "
            f"({'hard-coded by llama.cpp for ' + str(st.arch) if st.alibi_source == 'hard-coded' else 'from ' + K.k(K.MAX_ALIBI_BIAS, st.arch)})"
            + (f", {st.n_head} heads, slopes {slopes[0]:.4g} .. {slopes[-1]:.4g}" if slopes is not None else "")
        )
        return out

    d = st.n_rot
    base0 = float(params.get("base") or st.freq_base)
    factor = params.get("factor")
    alpha = params.get("alpha")
    trained = params.get("original_context") or st.orig_ctx_key or st.context_length
    out.update(base=base0, factor=factor, alpha=alpha, trained_context=trained, attention_factor=_nice(st.magnitude))
    llama = {
        "scaling_type": st.scaling_type,
        "scaling_type_source": "key" if st.scaling_type_raw is not None else "default",
        "freq_base": _nice(st.freq_base),
        "freq_scale": _nice(st.freq_scale),
        "n_rot": d,
        "n_ctx_orig": st.n_ctx_orig,
        "ext_factor": st.ext_factor,
        "beta_fast": st.beta_fast,
        "beta_slow": st.beta_slow,
        "rope_attn_factor": _nice(st.rope_attn_factor),
        "magnitude": _nice(st.magnitude),
        "pair_divisor": None,
        "pair_divisor_short": None,
    }
    out["llama_cpp"] = llama
    if not st.computable or st.scaling_type not in SCALING_TYPES:
        out["description"] = f"{METHOD_NAMES.get(method, method)} (llama.cpp cannot run these settings; see lint)"
        return out
    inv0 = _default_inv(base0, d)
    inv = st.inv_freq(extended)
    div = inv0 / inv
    llama["pair_divisor"] = [float(f"{x:.7g}") for x in div]
    if st.longrope_used:
        short = inv0 / st.inv_freq(st.n_ctx_orig)
        llama["pair_divisor_short"] = [float(f"{x:.7g}") for x in short]
    scale = alpha if method == "ntk" and alpha else (float(div[-1]) if method in ("dynamic-ntk", "none", "custom") else factor)
    scale = scale or float(div[-1])
    kept = [j for j, x in enumerate(div) if abs(x - 1) <= CLASSIFY_TOL]
    interp = [j for j, x in enumerate(div) if j not in kept and abs(x / scale - 1) <= CLASSIFY_TOL]
    blended = [j for j in range(len(div)) if j not in kept and j not in interp]
    out["pairs"] = {"kept": kept, "interpolated": interp, "blended": blended, "scale": _nice(float(scale))}
    rng = st.correction_range()
    if rng is not None:
        out["correction_range"] = list(rng)
    elif correction_fit is not None:
        out["correction_range"] = correction_fit

    words = METHOD_NAMES.get(method, method)
    bits = []
    if method == "ntk" and alpha:
        bits.append(f"alpha {_fmt(alpha)}: base {_fmt(base0)} raised to {_fmt(st.freq_base)}")
    elif method == "dynamic-ntk":
        bits.append(f"base {_fmt(base0)} baked as {_fmt(st.freq_base)} for {extended} tokens")
    elif factor:
        bits.append(f"factor {_fmt(factor)}")
        if method != "linear":
            bits.append(f"base {_fmt(base0)}")
    else:
        bits.append(f"base {_fmt(base0)}")
    if method == "llama3":
        bits.append(f"low_freq_factor {_fmt(params.get('low_freq_factor'))}, high_freq_factor {_fmt(params.get('high_freq_factor'))}")
    if trained and extended:
        bits.append(f"trained on {trained} tokens, extended to {extended}")
    pairs = f"{d // 2} rotary pairs: {_ranges(kept)} kept"
    if interp:
        pairs += f", {_ranges(interp)} divided by {_fmt(float(scale))}"
    if blended:
        pairs += f", {_ranges(blended)} in between"
    bits.append(pairs)
    if out["correction_range"] is not None:
        bits.append(f"YaRN ramp over pairs {out['correction_range'][0]}..{out['correction_range'][1]}")
    if abs(st.magnitude - 1) > 1e-7:
        bits.append(f"cos/sin scaled by {_fmt(st.magnitude)}")
    if out["rope_tensors"]:
        bits.append("tensors " + ", ".join(t["name"] + ("" if t["used"] else " (not loaded: llama.cpp refuses the file)") for t in out["rope_tensors"]))
    out["description"] = f"{words}: " + "; ".join(bits)
    return out


# ------------------------------------------------------------------------------------------
# Report


def _f32_plain(v):
    return _nice(v) if isinstance(v, float) else v


def field_json(f, full: bool) -> dict:
    entry = {"type": f.type_name}
    if f.is_array:
        n = None if full else ARRAY_PREVIEW
        values = f.head(n)
        if f.sub_type == T.FLOAT32:
            values = [_f32_plain(v) for v in values]
        entry.update(count=f.count, value=plain_value(values), truncated=(not full and f.count > ARRAY_PREVIEW))
    else:
        v = f.scalar
        entry["value"] = plain_value(_f32_plain(v) if f.type == T.FLOAT32 else v)
    return entry


def inspect_gguf(path: str | os.PathLike, full: bool = False) -> dict:
    """The whole report (metadata, tensors, rope summary, lint) as plain data; see docs/inspect.md."""
    from ropetool.lint import lint_file

    with GGUFFile(path) as gf:
        st = rope_state(gf)
        report = {
            "schema_version": SCHEMA_VERSION,
            "file": {
                "path": str(gf.path),
                "size": gf.size,
                "version": gf.version,
                "endianness": gf.endian,
                "alignment": gf.alignment,
                "kv_count": gf.kv_count,
                "tensor_count": gf.tensor_count,
                "data_offset": gf.data_offset,
            },
            "metadata": {k: field_json(f, full) for k, f in gf.fields.items()},
            "tensors": [
                {"name": t.name, "type": t.type.name, "shape": list(t.shape), "elements": t.n_elements,
                 "bytes": t.nbytes, "offset": t.offset}
                for t in gf.tensors
            ],
            "rope": summarize_rope(gf, st),
            "lint": [f.as_dict() for f in lint_file(gf, st)],
        }
    return report


def _text_value(entry: dict, full: bool) -> str:
    def one(v):
        if isinstance(v, str):
            s = json.dumps(v, ensure_ascii=False)
            if not full and len(s) > STRING_PREVIEW:
                s = s[:STRING_PREVIEW] + f"...\" ({len(v):,} chars)"
            return s
        return _fmt(v)

    if "count" in entry:
        items = ", ".join(one(v) for v in entry["value"])
        more = f", ... ({entry['count']:,} items; --full shows all)" if entry["truncated"] else ""
        return f"[{items}{more}]"
    return one(entry["value"])


def render_text(report: dict, full: bool = False) -> str:
    lines = []
    f = report["file"]
    lines.append(f"{f['path']}: GGUF v{f['version']}, {f['endianness']}-endian, {f['size']:,} bytes, "
                 f"{f['kv_count']} keys, {f['tensor_count']} tensors, alignment {f['alignment']}, data at {f['data_offset']:,}")
    lines.append("")
    lines.append("metadata:")
    width = max((len(k) for k in report["metadata"]), default=0)
    for k, e in report["metadata"].items():
        lines.append(f"  {k:<{width}}  {e['type']:<9} {_text_value(e, full)}")
    lines.append("")
    lines.append(f"tensors ({len(report['tensors'])}):")
    tw = max((len(t["name"]) for t in report["tensors"]), default=4)
    for t in report["tensors"]:
        shape = "x".join(str(s) for s in t["shape"]) or "scalar"
        lines.append(f"  {t['name']:<{tw}}  {t['type']:<7} {shape:<16} {t['bytes']:>14,} B")
    lines.append(f"  total {sum(t['bytes'] for t in report['tensors']):,} B")
    lines.append("")
    r = report["rope"]
    src = {"ropetool": "recorded by ropetool", "inferred": "inferred from keys and tensors"}[r["method_source"]]
    lines.append(f"position encoding ({r['position_encoding']}, architecture {r['architecture']}):")
    lines.append(f"  method:     {r['method']} ({src})")
    lines.append(f"  summary:    {r['description']}")
    if r["position_encoding"] == "rope":
        ctx = f"trained {r['trained_context']}, extended {r['extended_context']}"
        lines.append(f"  context:    {ctx}")
        scale = [f"{name} {_fmt(r[name])}" for name in ("factor", "alpha", "base") if r[name] is not None]
        lines.append(f"  scale:      {', '.join(scale)}")
        if r["pairs"]:
            p = r["pairs"]
            lines.append(f"  pairs:      kept {_ranges(p['kept'])}; interpolated (/{_fmt(p['scale'])}) {_ranges(p['interpolated'])}; "
                         f"blended {_ranges(p['blended'])}")
        if r["correction_range"] is not None:
            lines.append(f"  YaRN ramp:  pairs {r['correction_range'][0]}..{r['correction_range'][1]}")
        lines.append(f"  attention:  cos/sin magnitude {_fmt(r['attention_factor'])}")
        lc = r["llama_cpp"]
        lines.append(f"  llama.cpp:  type {lc['scaling_type']} ({lc['scaling_type_source']}), freq_base {_fmt(lc['freq_base'])}, "
                     f"freq_scale {_fmt(lc['freq_scale'])}, n_rot {lc['n_rot']}, n_ctx_orig {lc['n_ctx_orig']}, "
                     f"ext_factor {_fmt(lc['ext_factor'])}")
    if r["params"]:
        lines.append("  params:     " + ", ".join(f"{k}={_fmt(v) if not isinstance(v, list) else f'[{len(v)} values]'}"
                                                for k, v in r["params"].items()))
    for t in r["rope_tensors"]:
        lines.append(f"  tensor:     {t['name']} {t['type']} [{t['length']}]{'' if t['used'] else ' (not loaded by llama.cpp: it refuses the file)'}")
    for n in r["notes"]:
        lines.append(f"  note:       {n}")
    lines.append("")
    if report["lint"]:
        lines.append(f"lint ({len(report['lint'])}):")
        for x in report["lint"]:
            lines.append(f"  {x['severity']:<7} {x['id']}: {x['message']}")
    else:
        lines.append("lint: no findings")
    return "\n".join(lines)


__all__ = [
    "SCHEMA_VERSION",
    "RopeState",
    "rope_state",
    "infer_method",
    "summarize_rope",
    "inspect_gguf",
    "render_text",
    "llama3_rope_freqs",
    "ggml_corr_dims",
]
