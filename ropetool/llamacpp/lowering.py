"""From a position-encoding method to the GGUF keys and tensors that make llama.cpp compute it.

One small function per method (:data:`LOWERINGS`, keyed by the names of ``ropetool.rope.METHOD_TABLE``).
llama.cpp computes, per pair j, ``theta = pos * base^(-2j/d) / ff[j]`` (ff: the optional ``rope_freqs``
tensor), mixes in ``theta * freq_scale`` by the YaRN ramp when ext_factor != 0, and scales cos/sin by
``attn_factor`` (times ``1 + 0.1 ln(1/freq_scale)`` only when ext_factor != 0);
``rope.scaling.attn_factor`` multiplies attn_factor for every architecture (docs/llama-cpp.md).
Where llama.cpp cannot compute a method exactly, the lowering says so; the caller refuses unless the
user accepted the approximation, whose size is recorded.  docs/methods.md has the table of what each
method becomes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import NewValue, T, TensorOut, insert_at, prefix_anchor
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import LoaderArch
from ropetool.llamacpp.provenance import record
from ropetool.rope import (
    RopeParams,
    alibi_base_slopes,
    alibi_slopes,
    default_inv_freq,
    dynamic_ntk_base,
    flag,
    ggml,
    missing_required,
    ntk_base,
    rope_frequencies,
)
from ropetool.rope.methods import METHOD_TABLE, attention_scale, dynamic_ntk_alibi_ratio, dynamic_yarn_factor
from ropetool.version import __version__


@dataclass
class Lowered:
    """The keys and tensors that carry a method into a GGUF, and how exact they are."""

    params: RopeParams
    arch: str
    values: list[NewValue] = field(default_factory=list)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    exact: bool = True
    needs_approval: bool = False  # llama.cpp cannot do what was asked: refuse unless --approximate
    notes: list[str] = field(default_factory=list)
    approx_error: float = 0.0  # largest relative error of a frequency or slope, when not exact
    context_length: int | None = None
    warnings: list[str] = field(default_factory=list)
    unrotated: int = 0  # pairs at the end of each head that rope_freqs leaves unrotated (gemma4's proportional rope)

    def set(self, template: str, value) -> None:
        """Set ``{arch}.template`` with the type llama.cpp reads it as (keys.TYPES)."""
        key = K.k(template, self.arch)
        self.values = [v for v in self.values if v.key != key] + [NewValue(key, K.TYPES[template], value)]

    def approximate(self, error: float, note: str, needs_approval: bool = True) -> None:
        self.exact = False
        self.needs_approval = self.needs_approval or needs_approval
        self.approx_error = max(self.approx_error, error)
        self.notes.append(note)


@dataclass(frozen=True)
class Target:
    """What a lowering needs to know about the model besides the method."""

    facts: LoaderArch
    rotary_dim: int
    n_heads: int
    trained_context: int
    n_layer: int | None = None  # baichuan's graph chooses rope or ALiBi by its layer count
    unrotated: int = 0  # the last pairs of each head that never turn (gemma4's proportional rope: rope_freqs 1e30)


def _rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def _extended_context(p: RopeParams, trained: int, scale: float) -> int:
    return int(p.target_context or round(scale * (p.original_context or trained)))


def _original(p: RopeParams, t: Target) -> int:
    return p.original_context or t.trained_context


def _plain(out: Lowered, base: float) -> None:
    out.set(K.ROPE_FREQ_BASE, float(base))
    out.set(K.ROPE_SCALING_TYPE, "none")


def _keep_original(out: Lowered, p: RopeParams, t: Target) -> None:
    out.set(K.ROPE_SCALING_ORIG_CTX, int(_original(p, t)))


def _via_rope_freqs(out: Lowered, p: RopeParams, t: Target, inv: np.ndarray, attn: float) -> None:
    """Any per-pair frequencies on an architecture that loads rope_freqs: the divisor inv0 / inv."""
    _plain(out, p.base)
    out.tensors[K.ROPE_FREQS_TENSOR] = (default_inv_freq(p.base, t.rotary_dim) / inv).astype(np.float32)
    if attn != 1.0:
        out.set(K.ROPE_SCALING_ATTN_FACTOR, float(attn))
    _keep_original(out, p, t)


def _baked(out: Lowered, message: str, baked: np.ndarray, short: np.ndarray) -> None:
    """A dynamic method written as its static value at one length: allowed, with a warning."""
    out.approximate(_rel_error(baked, short), message, needs_approval=False)
    out.warnings.append(message + "; shorter inputs get the long-context frequencies (set --target-context to choose)")


# --- one function per method ---------------------------------------------------------------------------

def lower_none(out: Lowered, p: RopeParams, t: Target) -> None:
    _plain(out, p.base)
    if t.facts.attn_temperature is not None:  # mistral3: the temperature's period is the original context
        _keep_original(out, p, t)
    out.context_length = int(p.target_context or t.trained_context)


def lower_linear(out: Lowered, p: RopeParams, t: Target) -> None:
    out.set(K.ROPE_FREQ_BASE, float(p.base))
    out.set(K.ROPE_SCALING_TYPE, "linear")
    out.set(K.ROPE_SCALING_FACTOR, float(p.factor))
    _keep_original(out, p, t)
    out.context_length = _extended_context(p, t.trained_context, p.factor)


def lower_ntk(out: Lowered, p: RopeParams, t: Target) -> None:
    _plain(out, ntk_base(p.base, p.alpha, t.rotary_dim))
    _keep_original(out, p, t)
    out.context_length = _extended_context(p, t.trained_context, p.alpha)


def lower_dynamic_ntk(out: Lowered, p: RopeParams, t: Target) -> None:
    L0 = _original(p, t)
    target = p.target_context or int(round(p.factor * L0))
    base = dynamic_ntk_base(p.base, p.factor, target, L0, t.rotary_dim)
    _plain(out, base)
    _keep_original(out, p, t)
    out.context_length = target
    _baked(out, f"llama.cpp has no dynamic NTK: the base is baked for {target} tokens ({base:.1f})",
           default_inv_freq(base, t.rotary_dim), rope_frequencies(p, t.rotary_dim, seq_len=L0)[0])


def _native_yarn(q: RopeParams, t: Target) -> tuple[np.ndarray, float, list[tuple[str, float]]]:
    """What native ``type = yarn`` makes llama.cpp compute for ``q``: its frequencies, its cos/sin magnitude and
    the rarer keys that get it there.  The betas are q's where the loader reads their keys (grok, mistral3),
    else 32/1; where it reads yarn_log_multiplier unscaled (mistral3), q's mscale_all_dim is written there, so that
    llama.cpp's magnitude is transformers' mscale ratio (1 on Ministral 3, whatever the factor) and a runtime
    --rope-scale keeps that rule; rope.scaling.attn_factor then corrects what is left."""
    f = t.facts
    values: list[tuple[str, float]] = []
    beta_fast, beta_slow = f.beta_fast_default, f.beta_slow_default
    for template, wanted, default in ((K.ROPE_YARN_BETA_FAST, q.beta_fast, f.beta_fast_default),
                                      (K.ROPE_YARN_BETA_SLOW, q.beta_slow, f.beta_slow_default)):
        if f.reads_key(template) and wanted != default:
            values.append((template, float(wanted)))
    if f.reads_key(K.ROPE_YARN_BETA_FAST) and f.reads_key(K.ROPE_YARN_BETA_SLOW):
        beta_fast, beta_slow = q.beta_fast, q.beta_slow
    log_mul = 0.0
    if f.reads_key(K.ROPE_YARN_LOG_MUL) and not f.log_mul_prescaled and q.mscale_all_dim:
        log_mul = float(q.mscale_all_dim)
        values.append((K.ROPE_YARN_LOG_MUL, log_mul))
    native = q.replace(method="yarn", beta_fast=beta_fast, beta_slow=beta_slow, extrapolation_factor=1.0, truncate=True,
                       attention_factor=None, mscale=None, mscale_all_dim=None)
    inv, _ = rope_frequencies(native, t.rotary_dim)
    freq_scale = 1.0 / q.factor
    attn = ggml.yarn_context_attn_factor(freq_scale, log_mul, deepseek2=f.mscale_is_log_mul)
    return inv, ggml.magnitude(attn, freq_scale, 1.0), values


def _lower_ramp(out: Lowered, p: RopeParams, q: RopeParams, t: Target) -> None:
    """NTK-by-parts and YaRN (q: the static setting): native yarn where its ramp is the one asked for, with
    rope.scaling.attn_factor fixing the magnitude; else the frequencies as rope_freqs where it loads."""
    a = t.facts.name
    inv, attn = rope_frequencies(q, t.rotary_dim)
    native_inv, native_mag, native_keys = _native_yarn(q, t)  # native_mag: 0.1 ln s + 1 without yarn_log_multiplier
    native_ok = _rel_error(native_inv, inv) <= 1e-7
    out.context_length = _extended_context(p, t.trained_context, q.factor)
    if native_ok or not t.facts.loads_rope_freqs(None):
        out.set(K.ROPE_FREQ_BASE, float(q.base))
        out.set(K.ROPE_SCALING_TYPE, "yarn")
        out.set(K.ROPE_SCALING_FACTOR, float(q.factor))
        _keep_original(out, p, t)
        for template, value in native_keys if native_ok else ():
            out.set(template, value)
        if t.facts.kq_scale_mscale:
            _mscale_into_attention(out, q, t, attn)
        elif abs(attn / native_mag - 1.0) > 1e-9:
            out.set(K.ROPE_SCALING_ATTN_FACTOR, float(attn / native_mag))
        if not native_ok:
            err = _rel_error(native_inv, inv)
            out.approximate(err, f"llama.cpp's {a} computes YaRN with beta_fast 32, beta_slow 1 and the correction range "
                                 f"rounded to whole pairs whatever the file says, and loads no rope_freqs tensor: "
                                 f"{_ramp_differences(q)} cannot be written; frequencies differ by up to {err:.3g} "
                                 "(relative)")
    else:
        _via_rope_freqs(out, p, t, inv, attn)
        out.notes.append(f"{p.method} frequencies written as the rope_freqs tensor (llama.cpp ignores yarn_beta_* on {a})")


def _mscale_into_attention(out: Lowered, q: RopeParams, t: Target, attn: float) -> None:
    """YaRN's magnitude and attention scale on an architecture whose graph folds mscale^2 into the attention scale
    (deepseek2, ``LoaderArch.kq_scale_mscale``).  llama.cpp rotates with magnitude X (rope.scaling.attn_factor) and
    scales attention by (X (1 + 0.1 L ln s))^2 when L (yarn_log_multiplier, unscaled) is set; with no L, magnitude
    X (1 + 0.1 ln s) and scale (X (1 + 0.1 ln s))^2 (src/llama-context.cpp, src/models/deepseek2.cpp).  transformers'
    DeepSeek V3: magnitude A (YaRN's attention factor), scale M^2 (rope.attention_scale).  Both hold with X = A and
    L = (M / A - 1) / (0.1 ln s) (DeepSeek's mscale = mscale_all_dim = m: A = 1, L = m, the key 0.1 m, as llama.cpp's
    converter writes it), or, where M = A, with no L and X = A / (1 + 0.1 ln s).  A negative L (M < A: YaRN without
    mscale_all_dim) is out of the key's range: the no-L setting is written and :func:`_check_attention_scale` says so."""
    ln = 0.1 * math.log(q.factor) if q.factor > 1 else 0.0
    m = math.sqrt(attention_scale(q))
    log_mul = (m / attn - 1.0) / ln if ln and abs(m / attn - 1.0) > 1e-12 else 0.0
    if log_mul > 0:
        out.set(K.ROPE_YARN_LOG_MUL, float(0.1 * log_mul if t.facts.log_mul_prescaled else log_mul))
        x = attn
    else:
        x = attn / (1.0 + ln)
    if abs(x - 1.0) > 1e-9:
        out.set(K.ROPE_SCALING_ATTN_FACTOR, float(x))


def _check_attention_scale(out: Lowered, p: RopeParams, t: Target) -> None:
    """On deepseek2 (``kq_scale_mscale``): the attention scale llama.cpp computes from the lowering's keys against the
    one the method asks for (rope.attention_scale); any factor (linear too) moves llama.cpp's, so a method that does
    not ask for it cannot be written exactly."""
    values = {v.key: v.value for v in out.values}

    def get(template, default):
        return values.get(K.k(template, t.facts.name), default)

    factor = float(get(K.ROPE_SCALING_FACTOR, 0.0) or 1.0)
    kind = get(K.ROPE_SCALING_TYPE, "linear")
    freq_scale = 1.0 if kind == "none" else 1.0 / factor
    log_mul = float(get(K.ROPE_YARN_LOG_MUL, 0.0)) / (0.1 if t.facts.log_mul_prescaled else 1.0)
    x = float(get(K.ROPE_SCALING_ATTN_FACTOR, 1.0))
    attn = (ggml.yarn_context_attn_factor(freq_scale, log_mul, deepseek2=t.facts.mscale_is_log_mul)
            if kind == "yarn" and freq_scale != 1 else 1.0) * x
    got = ggml.mla_attention_scale(attn, freq_scale, log_mul)
    want = attention_scale(p) if p.method != "dynamic-yarn" else attention_scale(p.replace(
        factor=dynamic_yarn_factor(p, p.target_context or int(round(p.factor * _original(p, t))))))
    err = abs(got / want - 1.0)
    if err > 1e-6:
        out.approximate(err, f"llama.cpp's {t.facts.name} graph multiplies the attention scale by {got:.6g} under this "
                             f"setting (it folds an mscale^2 into the scale for any factor), where {p.method} asks for "
                             f"{want:.6g} (transformers' DeepSeek V3: get_mscale(factor, mscale_all_dim)^2 for YaRN with "
                             "mscale_all_dim, else 1)"
                             + ("; give --mscale-all-dim (DeepSeek V3's is 1)" if p.method in ("yarn", "dynamic-yarn")
                                and not p.mscale_all_dim else ""))


def _ramp_differences(q: RopeParams) -> str:
    """What of a YaRN ramp native YaRN does not compute, in words (config.json's names)."""
    said = [f"{name} {getattr(q, name):g}" for name, native in (("beta_fast", 32.0), ("beta_slow", 1.0),
                                                                 ("extrapolation_factor", 1.0)) if getattr(q, name) != native]
    if not q.truncate:  # gpt-oss's config.json: transformers leaves the correction range fractional; no GGUF key says so
        said.append("truncate false (the correction range left fractional, as transformers computes it)")
    return ", ".join(said) or "the ramp asked for"


def lower_by_parts(out: Lowered, p: RopeParams, t: Target) -> None:
    _lower_ramp(out, p, p, t)


def lower_dynamic_yarn(out: Lowered, p: RopeParams, t: Target) -> None:
    L0 = _original(p, t)
    target = p.target_context or int(round(p.factor * L0))
    s = dynamic_yarn_factor(p, target)
    baked = p.replace(method="yarn", factor=s)
    _baked(out, f"llama.cpp has no dynamic YaRN: baked as static YaRN with factor {s:g} ({target} tokens)",
           rope_frequencies(baked, t.rotary_dim)[0], rope_frequencies(p, t.rotary_dim, seq_len=L0)[0])
    _lower_ramp(out, p, baked, t)


def lower_llama3(out: Lowered, p: RopeParams, t: Target) -> None:
    inv, attn = rope_frequencies(p, t.rotary_dim)
    out.context_length = _extended_context(p, t.trained_context, p.factor)
    if not t.facts.loads_rope_freqs(None):
        raise RopetoolError(f"llama.cpp's {t.facts.name} does not load a rope_freqs tensor, so llama3 rope cannot be "
                            "expressed on it")
    _via_rope_freqs(out, p, t, inv, attn)


def lower_longrope(out: Lowered, p: RopeParams, t: Target) -> None:
    if not t.facts.loads_longrope("longrope"):
        raise RopetoolError(f"llama.cpp's {t.facts.name} does not load rope_factors_long/short, so longrope cannot "
                            "be expressed")
    _, attn = rope_frequencies(p, t.rotary_dim)
    out.set(K.ROPE_FREQ_BASE, float(p.base))
    out.set(K.ROPE_SCALING_TYPE, "longrope")
    out.set(K.ROPE_SCALING_ATTN_FACTOR, float(attn))
    _keep_original(out, p, t)
    out.tensors[K.ROPE_FACTORS_LONG_TENSOR] = np.asarray(p.long_factor, dtype=np.float32)
    out.tensors[K.ROPE_FACTORS_SHORT_TENSOR] = np.asarray(p.short_factor, dtype=np.float32)
    out.context_length = _extended_context(p, t.trained_context, p.factor)
    out.notes.append("llama.cpp picks the long factors when the context it allocates exceeds the original length")


def lower_alibi(out: Lowered, p: RopeParams, t: Target) -> None:
    """Every ALiBi method: llama.cpp derives every slope from one max_bias, hard-coded or read from the key."""
    a = t.facts.name
    wanted = alibi_slopes(p, t.n_heads)
    out.context_length = int(p.target_context or t.trained_context)
    if p.method == "dynamic-ntk-alibi":
        ratio = dynamic_ntk_alibi_ratio(p, out.context_length)
        out.notes.append(f"dynamic NTK-ALiBi baked for {out.context_length} tokens (a = {ratio:g})")
    bias, source = t.facts.alibi_bias(t.n_layer, None)
    if source != "key":  # hard-coded (bloom, refact, baichuan-13B): no setting changes it
        plain = alibi_slopes(p.replace(method="alibi", max_bias=bias), t.n_heads)
        err = _rel_error(plain, wanted)
        if err > 1e-12:
            out.approximate(err, f"llama.cpp hard-codes ALiBi max_bias {bias:g} for {a}: no setting can change its "
                                 f"slopes; they differ from {p.method}'s by up to {err:.3g} (relative)")
        return
    max_bias, worst = _fit_max_bias(wanted, t.n_heads)
    K.check_range(K.MAX_ALIBI_BIAS, max_bias, f"{p.method}'s max_bias")
    got = alibi_slopes(p.replace(method="alibi", max_bias=max_bias), t.n_heads)
    err = _rel_error(got, wanted)
    out.set(K.MAX_ALIBI_BIAS, max_bias)
    if err > 1e-9:
        out.approximate(err, f"llama.cpp derives every slope from max_bias: {max_bias:.6g} keeps the worst head's slope "
                             f"nearest {p.method}'s, a factor of {2.0 ** worst:.4g} off (largest relative error {err:.3g})")


def _fit_max_bias(wanted: np.ndarray, n_heads: int) -> tuple[float, float]:
    """The max_bias whose ggml slopes are off from ``wanted`` by the smallest factor on the worst head, and that
    factor's log2.  ggml's log2(slope_h) is -max_bias * c_h (c_h = h/n for the n = 2^floor(log2 H) first heads,
    then odd multiples of 1/2n), so the worst head's |log2 error| is convex in max_bias: a ternary search finds
    its minimum.  (A max_bias that gives NTK-ALiBi's ratio between heads exactly leaves one constant factor on
    every head, the first included, and on the fixtures lands farther from NTK-ALiBi than plain ALiBi does; the
    worst-head fit lands nearer: tests/test_convert.py.)"""
    c = -np.log2(alibi_base_slopes(n_heads, 1.0))
    y = np.log2(wanted)

    def worst(b: float) -> float:
        return float(np.max(np.abs(-b * c - y)))

    lo, hi = 1e-6, K.RANGES[K.MAX_ALIBI_BIAS].hi  # 0 would mean no ALiBi at all to llama.cpp
    for _ in range(200):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if worst(m1) <= worst(m2):
            hi = m2
        else:
            lo = m1
    b = (lo + hi) / 2
    exact = float(np.round(b, 6))  # a method ggml computes exactly (ALiBi itself) gets its own max_bias back
    if worst(exact) <= worst(b) + 1e-12:
        b = exact
    return b, worst(b)


LOWERINGS: dict[str, Callable[[Lowered, RopeParams, Target], None]] = {
    "none": lower_none,
    "linear": lower_linear,
    "ntk": lower_ntk,
    "dynamic-ntk": lower_dynamic_ntk,
    "ntk-by-parts": lower_by_parts,
    "yarn": lower_by_parts,
    "dynamic-yarn": lower_dynamic_yarn,
    "llama3": lower_llama3,
    "longrope": lower_longrope,
    "alibi": lower_alibi,
    "alibi-interp": lower_alibi,
    "ntk-alibi": lower_alibi,
    "dynamic-ntk-alibi": lower_alibi,
}
assert set(LOWERINGS) == set(METHOD_TABLE), "every method has a lowering"


def lower(p: RopeParams, facts: LoaderArch, rotary_dim: int, n_heads: int, trained_context: int,
          n_layer: int | None = None, unrotated: int = 0) -> Lowered:
    """The GGUF settings for method ``p`` on ``arch``; ``trained_context`` is the model's own context; ``unrotated``:
    the last pairs of each head that stay unrotated whatever the method (gemma4's proportional rope)."""
    out = Lowered(p, facts.name)
    runs_alibi = facts.alibi_bias(n_layer, None) is not None
    if p.is_alibi != runs_alibi:
        kind = "an ALiBi" if runs_alibi else "a RoPE"
        raise RopetoolError(f"{p.method} cannot be used on {facts.name}, which is {kind} architecture")
    target = Target(facts, rotary_dim, n_heads, trained_context, n_layer, unrotated)
    LOWERINGS[p.method](out, p, target)
    if facts.kq_scale_mscale and not p.is_alibi:
        _check_attention_scale(out, p, target)
    if unrotated:
        _keep_unrotated(out, target)
    _check_sliding_magnitude(out, facts)
    return out


def _check_sliding_magnitude(out: Lowered, facts: LoaderArch) -> None:
    """rope.scaling.attn_factor multiplies every layer's rope (llama_context's yarn_attn_factor), the sliding-window
    layers' too: where their rope is meant to stay unscaled (gemma3, gemma4: scale_follows_global false), a magnitude
    other than 1 written there cannot be confined to the global layers."""
    if facts.sliding is None or facts.sliding.scale_follows_global:
        return
    x = next((v.value for v in out.values if v.key == K.k(K.ROPE_SCALING_ATTN_FACTOR, facts.name)), 1.0)
    if abs(x - 1.0) > 1e-9:
        out.approximate(abs(x - 1.0), f"llama.cpp multiplies every layer's rope by {K.short(K.ROPE_SCALING_ATTN_FACTOR)} "
                                      f"({x:.6g}), the sliding-window layers' too, which {out.params.method} leaves "
                                      f"unscaled: their cos/sin would be {x:.6g} times larger")


def _keep_unrotated(out: Lowered, t: Target) -> None:
    """gemma4's proportional rope: the method's per-pair divisors (rope_freqs, else 1) with the last ``t.unrotated``
    pairs divided by 1e30, as llama.cpp's converter writes them (Gemma4Model.generate_extra_tensors): those pairs never
    turn, whatever the method; ggml applies the rest of the method (freq_scale, YaRN's ramp and magnitude) over the
    whole head's pairs, as it would without the tensor."""
    half = t.rotary_dim // 2
    if not 0 < t.unrotated < half or not t.facts.loads_rope_freqs(None):
        raise RopetoolError(f"{t.unrotated} unrotated pairs of {half}: llama.cpp's {t.facts.name} can hold the rest of "
                            "each head still only through a rope_freqs tensor it loads")
    ff = out.tensors.get(K.ROPE_FREQS_TENSOR)
    ff = np.ones(half, np.float32) if ff is None else np.array(ff, dtype=np.float32)
    ff[half - t.unrotated:] = K.UNROTATED_FACTOR
    out.tensors[K.ROPE_FREQS_TENSOR] = ff
    out.unrotated = t.unrotated


class CannotCompute(RopetoolError):
    """llama.cpp cannot compute a method exactly on an architecture (``--approximate`` writes it anyway)."""


# The key each rope option ends up in (or bounds): an option is range-checked as that key is.
OPTION_KEYS = {"factor": K.ROPE_SCALING_FACTOR, "alpha": K.ROPE_SCALING_ALPHA, "original_context": K.CONTEXT_LENGTH,
               "target_context": K.CONTEXT_LENGTH, "beta_fast": K.ROPE_YARN_BETA_FAST, "beta_slow": K.ROPE_YARN_BETA_SLOW,
               "attention_factor": K.ROPE_SCALING_ATTN_FACTOR, "base": K.ROPE_FREQ_BASE,
               "mscale_all_dim": K.ROPE_YARN_LOG_MUL}


def check_options(method: str, options: dict) -> None:
    """Each rope option must be a value its key can hold, and a method asked for by name must be given the
    parameter that makes it change something (yarn's factor)."""
    for name, template in OPTION_KEYS.items():
        value = options.get(name)
        if value is not None and not isinstance(value, (list, tuple)):
            K.check_range(template, value, flag(name))
    missing = missing_required(method, [k for k, v in options.items() if v is not None])
    if missing:
        raise RopetoolError(f"--rope {method} needs {' and '.join(map(flag, missing))}: without it the method would "
                            "change nothing")


def lower_for_llama_cpp(p: RopeParams, facts: LoaderArch, rotary_dim: int, n_heads: int, trained_context: int,
                        approximate: bool = False, n_layer: int | None = None, unrotated: int = 0) -> Lowered:
    """:func:`lower`, refusing what llama.cpp cannot compute exactly unless ``approximate`` accepts it."""
    try:
        lowered = lower(p, facts, rotary_dim, n_heads, trained_context, n_layer, unrotated)
        if lowered.context_length is not None and not math.isfinite(lowered.context_length):
            raise OverflowError
    except OverflowError:
        raise RopetoolError(f"{p.method}: the extended context length overflows (factor {p.factor})") from None
    if lowered.needs_approval and not approximate:
        raise CannotCompute(
            f"llama.cpp cannot compute {p.method} exactly on {facts.name}: {'; '.join(lowered.notes)} "
            "(pass --approximate to write it anyway, recording the approximation)"
        )
    return lowered


def provenance(lowered: Lowered, version: str) -> list[NewValue]:
    """ropetool.* keys recording what the user asked for and how exactly it reached the file."""
    unrotated = [NewValue(K.RT_UNROTATED, K.TYPES[K.RT_UNROTATED], lowered.unrotated)] if lowered.unrotated else []
    return record(lowered.params, lowered.exact, lowered.approx_error, lowered.notes, version) + unrotated


def edit_records(header, lowered: Lowered, context: int, extra: list[NewValue]) -> tuple[list, list[TensorOut]]:
    """set-rope's edit of an open GGUF ``header``: its rope keys and rope tensors replaced by the lowering's,
    ropetool's record (with ``extra`` values) where the old rope keys were, and context_length set to
    ``context``.  Returns the new header's records and tensors (the other tensors copied)."""
    name = header.architecture
    drop = {K.k(t, name) for t in K.ROPE_KEYS} | set(K.RT_KEYS)
    records: list = []
    anchor = None
    for f in header.fields.values():
        if f.key in drop:
            anchor = len(records) if anchor is None else anchor
            continue
        records.append(f)
    if anchor is None:
        anchor = max((i + 1 for i, r in enumerate(records) if r.key.startswith(name + ".")), default=len(records))
    records = insert_at(records, anchor, list(lowered.values) + provenance(lowered, __version__) + extra)
    ctx_key = K.k(K.CONTEXT_LENGTH, name)
    ctx_value = NewValue(ctx_key, T.UINT32, int(context))
    idx = next((i for i, r in enumerate(records) if r.key == ctx_key), None)
    if idx is None:
        records = insert_at(records, prefix_anchor(records, ctx_key), [ctx_value])
    elif records[idx].type != T.UINT32 or records[idx].scalar != context:
        records[idx] = ctx_value
    e = "<" if header.endian == "little" else ">"
    tensors = [TensorOut.copy_of(t) for t in header.tensors if t.name not in K.ROPE_TENSORS]
    tensors += [TensorOut.from_array(n, arr, e) for n, arr in lowered.tensors.items()]
    return records, tensors


__all__ = ["Lowered", "CannotCompute", "check_options", "edit_records", "Target", "LOWERINGS", "lower", "lower_for_llama_cpp", "provenance"]
