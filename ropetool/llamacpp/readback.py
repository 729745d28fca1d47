"""Naming the method behind a GGUF's rope settings: from ropetool's record, or from the keys alone.

:func:`infer_method` turns what llama.cpp computes (a :class:`~ropetool.llamacpp.state.RopeState`) into
the method most likely meant, with the inverse fits of :mod:`ropetool.rope.fit` (an NTK-aware alpha in
freq_base; llama3, YaRN or uniform scaling in a rope_freqs tensor; YaRN, linear or longrope from the
scaling keys).  :func:`meant_method` prefers ropetool's record when the file has a readable one.
inspect, lint, set-rope and check name methods only through these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.llamacpp.provenance import Record
from ropetool.llamacpp.state import RopeState
from ropetool.rope import RopeParams, fit, make_params, shown_parameters
from ropetool.rope.methods import yarn_mscale

CLASSIFY_TOL = 1e-4
COMMON_ORIGINAL_CONTEXTS = (8192, 4096, 2048, 16384, 32768, 1024, 65536, 131072, 512, 256, 128, 64)


@dataclass
class Named:
    """A method and its parameters, where the name came from, and what is worth knowing about it."""

    method: str  # a method name, or "custom" / "unknown"
    params: dict
    source: str  # "ropetool" (the record) or "inferred" (the keys and tensors)
    notes: list[str] = field(default_factory=list)
    correction_range: list | None = None  # a YaRN ramp fitted from a rope_freqs tensor
    rope: RopeParams | None = None  # the parameters as RopeParams, when they make a valid method


def infer_method(st: RopeState) -> Named:
    """The method the keys and tensors (as ``st`` resolves them) express, with its parameters."""
    notes: list[str] = []
    d = st.n_rot

    def named(method, params, extra=(), rng=None):
        return Named(method, params, "inferred", notes + list(extra), rng, _as_params(method, params))

    if st.encoding == "alibi":
        return named("alibi", {"max_bias": st.alibi_max_bias})
    if st.encoding == "none":
        return Named("none", {}, "inferred", ["llama.cpp applies no position encoding to this file"])
    if not d:
        return Named("unknown", {}, "inferred", ["no usable rope.dimension_count or head dimension: cannot tell the rotary dims"])
    if not st.computable:
        return Named("unknown", {}, "inferred", [f"{k}: {why}" for k, why in st.problems])
    base = st.freq_base
    ff = st.rope_freqs if st.rope_freqs_used else None
    unrotated = st.unrotated_pairs
    if ff is not None and unrotated:  # gemma4's proportional rope: the method is in the rotated pairs' divisors
        notes.append(f"rope_freqs leaves pairs {d // 2 - unrotated}..{d // 2 - 1} of each head unrotated (proportional "
                     "rope)")
        ff = ff[: d // 2 - unrotated]
        if fit.close(ff, np.ones_like(ff)):
            ff = None  # the other pairs as the keys say
    if ff is not None:
        return _from_rope_freqs(st, ff, base, d, named)
    if st.longrope_used or st.scaling_type == "longrope":
        params = {"base": base, "original_context": st.n_ctx_orig}
        if st.context_length and st.n_ctx_orig:
            params["factor"] = fit.nice(st.context_length / st.n_ctx_orig)
        if st.rope_attn_factor != 1:
            params["attention_factor"] = fit.nice(st.rope_attn_factor)
        if not st.longrope_used:
            notes.append("scaling type longrope but no rope_factors_long/short tensors that llama.cpp loads")
        longrope = named("longrope", params)
        if st.long_factors is not None and st.short_factors is not None:
            longrope.rope = _as_params("longrope", {**params, "short_factor": st.short_factors.tolist(),
                                                   "long_factor": st.long_factors.tolist()})
        return longrope
    if st.scaling_type == "yarn" and st.yarn_active:
        s = 1 / st.freq_scale
        params = {"base": base, "factor": fit.nice(s), "original_context": st.n_ctx_orig}
        if (st.beta_fast, st.beta_slow) != (32.0, 1.0):
            params |= {"beta_fast": st.beta_fast, "beta_slow": st.beta_slow}
        if st.facts.kq_scale_mscale and st.log_mul:  # deepseek2: DeepSeek's YaRN, mscale = mscale_all_dim = log_mul
            params |= {"mscale": fit.nice(st.log_mul), "mscale_all_dim": fit.nice(st.log_mul)}
            if abs(st.magnitude - 1) > CLASSIFY_TOL:
                params["attention_factor"] = fit.nice(st.magnitude)
            return named("yarn", params, [f"the attention scale x {st.attention_scale:.6g} (mscale^2, folded by "
                                          f"llama.cpp's {st.arch} graph)"])
        if st.log_mul and not st.facts.log_mul_prescaled:  # mistral3: transformers' mscale 1 / mscale_all_dim ratio
            params |= {"mscale": 1.0, "mscale_all_dim": st.log_mul}
            if abs(st.magnitude - yarn_mscale(s) / yarn_mscale(s, st.log_mul)) > CLASSIFY_TOL:
                params["attention_factor"] = fit.nice(st.magnitude)
            return named("yarn", params)
        if abs(st.magnitude - 1) <= CLASSIFY_TOL and s > 1:
            return named("ntk-by-parts", params, ["YaRN frequencies with the attention factor cancelled to 1"])
        if abs(st.magnitude - yarn_mscale(s)) > CLASSIFY_TOL:
            params["attention_factor"] = fit.nice(st.magnitude)
        return named("yarn", params)
    if st.freq_scale != 1:
        if st.scaling_type_raw is None:
            notes.append("no rope.scaling.type: llama.cpp defaults it to linear")
        return named("linear", {"base": base, "factor": fit.nice(1 / st.freq_scale)})
    ntk = fit.ntk(base, d)
    if ntk is not None:
        b, alpha = ntk
        return named("ntk", {"base": b, "alpha": alpha}, [f"freq_base {base:g} = {b:g} * {alpha:g}^(d/(d-2)) with d = {d}"])
    return named("none", {"base": base})


def _from_rope_freqs(st: RopeState, ff: np.ndarray, base: float, d: int, named) -> Named:
    """The method a rope_freqs tensor expresses (``named``: infer_method's, with its notes)."""
    if fit.close(ff, np.full_like(ff, ff[0])) and abs(ff[0] - 1) > fit.REL_TOL:
        return named("linear", {"factor": fit.nice(float(ff[0])), "base": base},
                     ["uniform rope_freqs: every pair divided by the same factor"])
    olds = [st.orig_ctx_key]
    if st.context_length:
        olds += [st.context_length // max(1, int(round(float(ff.max())))), st.context_length]
    olds += list(COMMON_ORIGINAL_CONTEXTS)
    seen = []
    for o in olds:
        if o and o not in seen:
            seen.append(o)
    l3 = fit.llama3(ff, base, d, seen, st.orig_ctx_key)
    yarn = fit.yarn_ramp(ff, d, base, st.orig_ctx_key)
    if l3 is not None:
        extra = []
        if l3.pop("_underdetermined"):
            extra.append("rope_freqs has fewer than two pairs in the smoothing band: low/high_freq_factor are one "
                         "consistent choice, not the only one")
        if st.orig_ctx_key is None:
            extra.append("rope_freqs fixes only original/low_freq_factor and original/high_freq_factor; shown with the "
                         "most common choice")
        if yarn is not None:
            extra.append("rope_freqs is also consistent with a YaRN ramp (too few pairs to tell)")
        return named("llama3", {"base": base, **l3}, extra)
    if yarn is not None:
        rng = yarn.pop("correction_range")
        mag = st.magnitude
        method = "yarn"
        params = {"base": base, **yarn}
        if abs(mag - 1) <= CLASSIFY_TOL:
            method = "ntk-by-parts"
        elif abs(mag - yarn_mscale(yarn["factor"])) > CLASSIFY_TOL:
            params["attention_factor"] = fit.nice(mag)
        extra = []
        if "beta_fast" not in params:
            extra.append(f"ramp over pairs {rng[0]:g}..{rng[1]:g}; the betas cannot be told without the original context")
        return named(method, params, extra + ["YaRN frequencies written as the rope_freqs tensor"], rng)
    return named("custom", {"base": base}, ["rope_freqs matches neither a llama3, YaRN nor uniform scaling"])


def _as_params(method: str, params: dict) -> RopeParams | None:
    try:
        return make_params(method, **params)
    except (RopetoolError, TypeError, ValueError):
        return None


def meant_method(record: Record | None, st: RopeState) -> tuple[Named, Named]:
    """(the method as meant, the method the keys alone express): ropetool's record when it has a readable one."""
    inferred = infer_method(st)
    if record is None:
        return inferred, inferred
    notes = list(record.notes)
    try:
        params = record.rope_params()
    except RopetoolError as e:
        notes.append(f"the recorded method {record.method!r} cannot be read ({e}); showing the inferred one")
        return Named(inferred.method, inferred.params, "inferred", notes + inferred.notes, inferred.correction_range,
                     inferred.rope), inferred
    shown = shown_parameters(params)
    for name, value in record.params.items():  # as recorded (e.g. an int original_context), where given
        shown[name] = value
    if inferred.method != params.method:
        notes.append(f"from the keys alone it reads as {inferred.method}")
    return Named(params.method, shown, "ropetool", notes, inferred.correction_range, params), inferred


__all__ = ["Named", "infer_method", "meant_method", "CLASSIFY_TOL"]
