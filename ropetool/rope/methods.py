"""One record per position-encoding method: its parameters, their validation and its math.

RoPE methods compute ``(inv_freq, attention_factor)``: the inverse frequency of each rotated pair
(length ``dim // 2``, float64) and the factor that multiplies cos and sin.  ALiBi methods compute one
slope per head.  ``seq_len`` is the length a dynamic method is evaluated at.  How each method reaches
llama.cpp is ``ropetool.llamacpp.lowering`` (a function per method, keyed by the same names).

Formulas: transformers' ``modeling_rope_utils`` (the registry of one function per rope type this module
follows), the YaRN repository, keezen/ntk_alibi; docs/methods.md gives them with their sources.
Notation: d = rotated dims, j = pair index, L0 = trained context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.rope.checks import at_least, check_betas, context, finite, need_context, positive
from ropetool.words import parameters


@dataclass(frozen=True)
class RopeParams:
    """Everything a position-encoding method needs besides the model's shapes.

    ``original_context`` is the trained context L0 (for ALiBi methods: L_train);
    ``target_context`` is the length a dynamic method is evaluated (or baked) at, when no
    sequence length is given.  ``alpha`` is NTK-aware's alpha, ALiBi interpolation's and
    NTK-ALiBi's ``a``, and dynamic NTK-ALiBi's ``a0``.
    """

    method: str = "none"
    base: float = 10000.0
    factor: float = 1.0
    original_context: int | None = None
    target_context: int | None = None
    alpha: float | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    extrapolation_factor: float = 1.0
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    max_bias: float = 8.0

    def replace(self, **changes) -> "RopeParams":
        return replace(self, **changes)

    @property
    def is_alibi(self) -> bool:
        return METHOD_TABLE[self.method].kind == "alibi"

    def as_dict(self) -> dict:
        """The parameters that differ from their defaults (always with method), for reports."""
        out = {"method": self.method}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "method" and value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def values(self) -> dict:
        """Those parameters without the method: what ``make_params(method, **values)`` takes back."""
        return {k: v for k, v in self.as_dict().items() if k != "method"}

    def words(self, eq: str = " ") -> str:
        """Those parameters in words, ``factor 4, original_context 8192`` (the tables left out; "" when none)."""
        return parameters(self.values(), eq)


FIELD_NAMES = tuple(f.name for f in fields(RopeParams))
FLOAT_FIELDS = tuple(f.name for f in fields(RopeParams) if f.type in ("float", "float | None"))


def coerce(values: dict) -> dict:
    """Given parameter values (None: take the default) as numbers of the right kind, checked finite."""
    given = {k: v for k, v in values.items() if v is not None}
    unknown = set(given) - set(FIELD_NAMES)
    if unknown:
        raise RopetoolError(f"unknown rope parameter(s): {', '.join(sorted(unknown))}")
    for name in ("short_factor", "long_factor"):
        if name in given:
            try:
                given[name] = tuple(float(v) for v in given[name])
            except (TypeError, ValueError):
                raise RopetoolError(f"{name} must be a list of numbers") from None
    for name in ("original_context", "target_context"):
        if name in given:
            given[name] = context(name, given[name])
    for name in FLOAT_FIELDS:
        if name in given:
            given[name] = finite(name, given[name])
    return given


# --- shared math ----------------------------------------------------------------------------------------


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


def _length(p: RopeParams, seq_len: int | None) -> int:
    return seq_len if seq_len is not None else (p.target_context or p.original_context)


# --- RoPE methods ---------------------------------------------------------------------------------------

def rope_none(p: RopeParams, dim: int, seq_len: int | None):
    return default_inv_freq(p.base, dim), 1.0


def rope_linear(p: RopeParams, dim: int, seq_len: int | None):
    return default_inv_freq(p.base, dim) / p.factor, 1.0


def rope_ntk(p: RopeParams, dim: int, seq_len: int | None):
    return default_inv_freq(ntk_base(p.base, p.alpha, dim), dim), 1.0


def rope_dynamic_ntk(p: RopeParams, dim: int, seq_len: int | None):
    base = dynamic_ntk_base(p.base, p.factor, _length(p, seq_len), p.original_context, dim)
    return default_inv_freq(base, dim), 1.0


def rope_ntk_by_parts(p: RopeParams, dim: int, seq_len: int | None):
    return _by_parts(p, dim, p.factor), 1.0


def rope_yarn(p: RopeParams, dim: int, seq_len: int | None):
    return _by_parts(p, dim, p.factor), yarn_attention_factor(p)


def dynamic_yarn_factor(p: RopeParams, seq_len: int | None) -> float:
    """Dynamic YaRN's scale at a length: s = max(L / L0, factor) (yarn repository)."""
    return max(_length(p, seq_len) / p.original_context, p.factor)


def rope_dynamic_yarn(p: RopeParams, dim: int, seq_len: int | None):
    """YaRN recomputed for the current length (yarn repo, Dynamic YaRN)."""
    s = dynamic_yarn_factor(p, seq_len)
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


# --- ALiBi methods --------------------------------------------------------------------------------------

def alibi_base_slopes(n_heads: int, max_bias: float = 8.0) -> np.ndarray:
    """ALiBi (Press et al.): 2^(-max_bias*h/n) for the power-of-two heads, odd powers of the 2n schedule after."""
    n = 2 ** int(math.floor(math.log2(n_heads)))
    m0 = 2.0 ** (-max_bias / n)
    slopes = m0 ** np.arange(1, n + 1, dtype=np.float64)
    if n < n_heads:
        m1 = 2.0 ** (-max_bias / 2 / n)
        slopes = np.concatenate([slopes, m1 ** np.arange(1, 1 + 2 * (n_heads - n), 2, dtype=np.float64)])
    return slopes


def power_of_two_heads(n_heads: int) -> int:
    """The heads ALiBi's geometric schedule covers: 2^floor(log2 n); the rest take the odd powers after."""
    return 2 ** int(math.floor(math.log2(n_heads)))


def _ntk_alibi_slopes(n_heads: int, max_bias: float, a: float) -> np.ndarray:
    """NTK-ALiBi (keezen; seanzhang-zhichen/baichuan-Dynamic-NTK-ALiBi's build_dynamically_alibi_tensor): head h of
    the n power-of-two heads is divided by b^(h-1), b = a^(1/(H-1)) over all H heads; the heads past the power of two
    keep their slopes (the published code's "todo" for non-power-of-two head counts)."""
    slopes = alibi_base_slopes(n_heads, max_bias)
    n = power_of_two_heads(n_heads)
    if n_heads > 1:
        slopes[:n] = slopes[:n] * a ** (-np.arange(n, dtype=np.float64) / (n_heads - 1))
    return slopes


def alibi(p: RopeParams, n_heads: int, seq_len: int | None):
    return alibi_base_slopes(n_heads, p.max_bias)


def alibi_interp(p: RopeParams, n_heads: int, seq_len: int | None):
    return alibi_base_slopes(n_heads, p.max_bias) / p.alpha


def ntk_alibi(p: RopeParams, n_heads: int, seq_len: int | None):
    return _ntk_alibi_slopes(n_heads, p.max_bias, p.alpha)


def dynamic_ntk_alibi_ratio(p: RopeParams, seq_len: int | None) -> float:
    """a = max(a0 * L / L_train, 1)."""
    return max(p.alpha * _length(p, seq_len) / p.original_context, 1.0)


def dynamic_ntk_alibi(p: RopeParams, n_heads: int, seq_len: int | None):
    return _ntk_alibi_slopes(n_heads, p.max_bias, dynamic_ntk_alibi_ratio(p, seq_len))


# --- validation, per method -----------------------------------------------------------------------------

def _no_check(p: RopeParams, dim: int | None) -> None:
    pass


def _check_ntk(p: RopeParams, dim: int | None) -> None:
    if p.alpha is None:
        raise RopetoolError("alpha is required for ntk (NTK-aware scaling)")
    at_least("alpha", p.alpha, 1.0)
    if dim is not None and dim <= 2:
        raise RopetoolError("ntk needs a rotary dimension > 2")


def _check_original(p: RopeParams, dim: int | None) -> None:
    need_context(p, p.method)


def _check_ramp(p: RopeParams, dim: int | None) -> None:
    need_context(p, p.method)
    check_betas(p)


def _check_llama3(p: RopeParams, dim: int | None) -> None:
    need_context(p, "llama3")
    positive("low_freq_factor", p.low_freq_factor)
    finite("high_freq_factor", p.high_freq_factor)
    if p.high_freq_factor <= p.low_freq_factor:
        raise RopetoolError(
            f"high_freq_factor ({p.high_freq_factor:g}) must be greater than low_freq_factor ({p.low_freq_factor:g})"
        )


def _check_longrope(p: RopeParams, dim: int | None) -> None:
    need_context(p, "longrope")
    for name in ("short_factor", "long_factor"):
        values = getattr(p, name)
        if values is None:
            raise RopetoolError(f"{name} (a list of per-pair factors) is required for longrope")
        for v in values:
            positive(name, v)
        if dim is not None and len(values) != dim // 2:
            raise RopetoolError(f"{name} must have rotary_dim/2 = {dim // 2} entries, got {len(values)}")


def _check_alibi_ratio(p: RopeParams, dim: int | None) -> None:
    if p.alpha is None:
        raise RopetoolError(f"alpha (the interpolation ratio a) is required for {p.method}")
    at_least("alpha", p.alpha, 1.0)


def _check_dynamic_alibi(p: RopeParams, dim: int | None) -> None:
    if p.alpha is None:
        raise RopetoolError("alpha (a0, the base ratio) is required for dynamic-ntk-alibi")
    positive("alpha", p.alpha)
    need_context(p, "dynamic-ntk-alibi")


# --- the records ----------------------------------------------------------------------------------------

_CONTEXT = ("base", "original_context", "target_context")
_RAMP = ("factor", "beta_fast", "beta_slow", "extrapolation_factor", "truncate")


@dataclass(frozen=True)
class Method:
    """A position-encoding method: what it reads, how its values are checked, what it computes."""

    name: str
    kind: str  # "rope" or "alibi"
    title: str  # its name in a sentence
    uses: tuple[str, ...]  # every parameter it reads (anything else given for it is a mistake)
    shown: tuple[str, ...]  # the parameters a report shows, with their defaults when not given
    check: Callable[[RopeParams, int | None], None]
    compute: Callable  # (params, dim or n_heads, seq_len) -> (inv_freq, attention_factor) or slopes
    dynamic: bool = False  # depends on the sequence length (llama.cpp gets it baked at one length)
    requires: tuple[str, ...] = ()  # what a user must give: without it the method would change nothing


METHOD_TABLE: dict[str, Method] = {m.name: m for m in (
    Method("none", "rope", "plain RoPE (no context extension)", ("base", "target_context"), ("base",),
           _no_check, rope_none),
    Method("linear", "rope", "linear position interpolation (PI)", _CONTEXT + ("factor",), ("base", "factor"),
           _no_check, rope_linear, requires=("factor",)),
    Method("ntk", "rope", "NTK-aware scaling", _CONTEXT + ("alpha",), ("base", "alpha"), _check_ntk, rope_ntk,
           requires=("alpha",)),
    Method("dynamic-ntk", "rope", "dynamic NTK (baked at one length)", _CONTEXT + ("factor",),
           ("base", "factor", "original_context", "target_context"), _check_original, rope_dynamic_ntk, dynamic=True,
           requires=("factor",)),
    Method("ntk-by-parts", "rope", "NTK-by-parts", _CONTEXT + _RAMP,
           ("base", "factor", "original_context", "beta_fast", "beta_slow"), _check_ramp, rope_ntk_by_parts,
           requires=("factor",)),
    Method("yarn", "rope", "YaRN", _CONTEXT + _RAMP + ("attention_factor", "mscale", "mscale_all_dim"),
           ("base", "factor", "original_context", "beta_fast", "beta_slow", "attention_factor", "mscale",
            "mscale_all_dim"), _check_ramp, rope_yarn, requires=("factor",)),
    Method("dynamic-yarn", "rope", "dynamic YaRN (baked at one length)",
           _CONTEXT + _RAMP + ("attention_factor", "mscale", "mscale_all_dim"),
           ("base", "factor", "original_context", "target_context", "beta_fast", "beta_slow", "attention_factor"),
           _check_ramp, rope_dynamic_yarn, dynamic=True, requires=("factor",)),
    Method("llama3", "rope", "Llama 3 rope scaling", _CONTEXT + ("factor", "low_freq_factor", "high_freq_factor"),
           ("base", "factor", "original_context", "low_freq_factor", "high_freq_factor"), _check_llama3, rope_llama3,
           requires=("factor",)),
    Method("longrope", "rope", "LongRoPE", _CONTEXT + ("factor", "short_factor", "long_factor", "attention_factor"),
           ("base", "factor", "original_context", "attention_factor", "short_factor", "long_factor"),
           _check_longrope, rope_longrope),
    Method("alibi", "alibi", "ALiBi", ("max_bias", "original_context", "target_context"), ("max_bias",),
           _no_check, alibi),
    Method("alibi-interp", "alibi", "ALiBi interpolation", ("max_bias", "original_context", "target_context", "alpha"),
           ("max_bias", "alpha"), _check_alibi_ratio, alibi_interp, requires=("alpha",)),
    Method("ntk-alibi", "alibi", "NTK-ALiBi", ("max_bias", "original_context", "target_context", "alpha"),
           ("max_bias", "alpha"), _check_alibi_ratio, ntk_alibi, requires=("alpha",)),
    Method("dynamic-ntk-alibi", "alibi", "dynamic NTK-ALiBi", ("max_bias", "original_context", "target_context", "alpha"),
           ("max_bias", "alpha", "original_context", "target_context"), _check_dynamic_alibi, dynamic_ntk_alibi,
           dynamic=True, requires=("alpha",)),
)}

METHODS = tuple(METHOD_TABLE)  # canonical names, in the order the README lists them
ALIBI_METHODS = tuple(n for n, m in METHOD_TABLE.items() if m.kind == "alibi")
USES = {name: set(m.uses) for name, m in METHOD_TABLE.items()}

# Names other tools use for the same methods (transformers' rope_type values among them).
ALIASES = {
    "default": "none",
    "rope": "none",
    "pi": "linear",
    "linear-interpolation": "linear",
    "ntk-aware": "ntk",
    "dynamic": "dynamic-ntk",
    "ntk-dynamic": "dynamic-ntk",
    "ntk-parts": "ntk-by-parts",
    "su": "longrope",
    "alibi-pi": "alibi-interp",
}


def canonical_method(name: str) -> str:
    """Map a method name (ours, an alias, or transformers' rope_type) to its canonical name."""
    key = str(name).strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in METHOD_TABLE:
        raise RopetoolError(
            f"unknown rope method {name!r}; known: {', '.join(METHODS)} (and {', '.join(sorted(ALIASES))})"
        )
    return key


def unused_parameters(method: str, names) -> list[str]:
    """The parameters among ``names`` that ``method`` does not read."""
    return sorted(set(names) - USES[canonical_method(method)])


def missing_required(method: str, names) -> list[str]:
    """The parameters ``method`` needs a user to give (e.g. yarn's factor) that are not among ``names``."""
    return [n for n in METHOD_TABLE[canonical_method(method)].requires if n not in set(names)]


@dataclass(frozen=True)
class Option:
    """A rope option a user sets (convert, set-rope, eval's settings): the RopeParams field, its command-line
    flag, its type, what it means (``{source}``: where its default comes from) and other spellings."""

    name: str
    flag: str
    kind: type  # int or float
    help: str
    aliases: tuple[str, ...] = ()


OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("factor", "--factor", float, "Scale factor s (linear, yarn, llama3, dynamic-ntk...)."),
    Option("alpha", "--alpha", float, "NTK-aware alpha; ALiBi interpolation/NTK-ALiBi a; dynamic a0."),
    Option("original_context", "--original-context", int, "Trained context length L0 (default: {source}'s).", ("orig_ctx",)),
    Option("target_context", "--target-context", int, "Length a dynamic method is baked at; the extended context."),
    Option("beta_fast", "--beta-fast", float, "YaRN/NTK-by-parts beta_fast (default 32)."),
    Option("beta_slow", "--beta-slow", float, "YaRN/NTK-by-parts beta_slow (default 1)."),
    Option("attention_factor", "--attn-factor", float, "YaRN/LongRoPE attention factor.", ("attn_factor",)),
    Option("base", "--freq-base", float, "RoPE base frequency theta (default: {source}'s).", ("freq_base",)),
    Option("mscale", "--mscale", float, "YaRN mscale, DeepSeek's (default: {source}'s own YaRN's)."),
    Option("mscale_all_dim", "--mscale-all-dim", float, "YaRN mscale_all_dim: DeepSeek's attention scale x "
                                                        "(0.1 m ln s + 1)^2 (default: {source}'s own YaRN's)."),
)}

# YaRN's attention temperature as DeepSeek's configs give it: a model's own, kept when a new YaRN factor is set.
KEPT_FROM_OWN = {"yarn": ("mscale", "mscale_all_dim"), "dynamic-yarn": ("mscale", "mscale_all_dim")}


def kept_parameters(method: str, own: RopeParams | None) -> dict:
    """The parameters a new ``method`` takes from the model's own rope ``own`` when not given (KEPT_FROM_OWN: DeepSeek's
    mscale and mscale_all_dim, which say how the model's attention temperature follows the YaRN factor)."""
    if own is None or own.method not in KEPT_FROM_OWN:
        return {}
    return {k: getattr(own, k) for k in KEPT_FROM_OWN.get(canonical_method(method), ()) if getattr(own, k) is not None}


def attention_scale(p: RopeParams) -> float:
    """The factor on the attention scores' scale (the 1/sqrt(head_dim) softmax scale) a method asks for, as
    transformers' DeepSeek V2/V3 apply it (``yarn_apply_mscale``): get_mscale(factor, mscale_all_dim)^2 for a scaled
    rope with mscale_all_dim, else 1 (the other models leave the scale alone)."""
    if p.method == "none" or not p.mscale_all_dim:
        return 1.0
    return yarn_mscale(p.factor, p.mscale_all_dim) ** 2


def flag(name: str) -> str:
    """How a user spells a parameter on the command line."""
    return OPTIONS[name].flag if name in OPTIONS else "--" + name.replace("_", "-")


def refuse_unused(method: str, names, where: str = "") -> None:
    """An option the method does not read is a mistake: a RopetoolError naming it (``where`` leads the line)."""
    unused = unused_parameters(method, names)
    if unused:
        raise RopetoolError(f"{where}{', '.join(map(flag, unused))} does not apply to --rope {canonical_method(method)}")


def baked_at(method: str, options: dict, length: int | None) -> dict:
    """The options of ``method`` as llama.cpp gets it: a dynamic method baked at ``length`` unless the options
    give its target context."""
    if METHOD_TABLE[method].dynamic and options.get("target_context") is None and length is not None:
        return {**options, "target_context": length}
    return dict(options)


def shown_parameters(p: RopeParams) -> dict:
    """A method's parameters for a report: those it shows (with defaults) and any other that was given."""
    method = METHOD_TABLE[p.method]
    given = p.as_dict()
    out = {}
    for name in method.shown:
        v = getattr(p, name)
        if v is not None:
            out[name] = list(v) if isinstance(v, tuple) else v
    for name, v in given.items():
        if name != "method":
            out.setdefault(name, v)
    return out


def validate(p: RopeParams, dim: int | None = None) -> RopeParams:
    """Check ``p`` for its method (and the rotary dim, when known); return it unchanged."""
    method = METHOD_TABLE.get(p.method) or METHOD_TABLE[canonical_method(p.method)]
    if method.kind == "rope":
        positive("base", p.base)
    at_least("factor", p.factor, 1.0)
    if dim is not None and (dim < 2 or dim % 2):
        raise RopetoolError(f"rotary dimension must be an even number >= 2, got {dim}")
    if p.target_context is not None:
        context("target_context", p.target_context)
    if p.attention_factor is not None:
        positive("attention_factor", p.attention_factor)
    method.check(p, dim)
    if method.kind == "alibi":
        positive("max_bias", p.max_bias)
    return p


def make_params(method: str, **values) -> RopeParams:
    """Build validated parameters; ``method`` may be an alias; None values take the defaults."""
    return validate(RopeParams(method=canonical_method(method), **coerce(values)))


def rope_frequencies(p: RopeParams, dim: int, seq_len: int | None = None, unrotated: int = 0) -> tuple[np.ndarray, float]:
    """Inverse frequency per rotated pair and the cos/sin attention factor for method ``p``; ``unrotated``: the last
    pairs of the head stay still (inverse frequency 0), as transformers' proportional rope leaves them (Gemma 4's
    global layers: _compute_proportional_rope_parameters, the method's frequencies over the whole head)."""
    method = METHOD_TABLE[p.method]
    if method.kind != "rope":
        raise ValueError(f"{p.method} is an ALiBi method; use alibi_slopes")
    validate(p, dim)
    inv, attn = method.compute(p, dim, seq_len)
    inv = np.array(inv, dtype=np.float64)
    if unrotated:
        inv[max(0, len(inv) - unrotated):] = 0.0
    return inv, float(attn)


def sliding_frequencies(p: RopeParams, base: float | None, scaled: bool, dim: int,
                        seq_len: int | None = None) -> tuple[np.ndarray, float]:
    """The sliding-window layers' rope_frequencies under the global method ``p``: the global layers' where they
    have no base of their own (``base`` None); else ``p`` at their base where they are ``scaled`` as the global
    layers (gemma2 in llama.cpp), plain rope at it where they are not (gemma3)."""
    if base is not None:
        p = make_params(p.method, **{**p.values(), "base": base}) if scaled else make_params("none", base=base)
    return rope_frequencies(p, dim, seq_len=seq_len)


def alibi_slopes(p: RopeParams, n_heads: int, seq_len: int | None = None) -> np.ndarray:
    """One ALiBi slope per head for method ``p``."""
    method = METHOD_TABLE[p.method]
    if method.kind != "alibi":
        raise ValueError(f"{p.method} is a RoPE method; use rope_frequencies")
    validate(p)
    if n_heads < 1:
        raise ValueError("n_heads must be >= 1")
    return np.asarray(method.compute(p, n_heads, seq_len), dtype=np.float64)


__all__ = [
    "Method", "METHOD_TABLE", "METHODS", "ALIBI_METHODS", "USES", "ALIASES",
    "RopeParams", "canonical_method", "unused_parameters", "missing_required", "shown_parameters", "validate", "make_params",
    "rope_frequencies", "sliding_frequencies", "alibi_slopes", "default_inv_freq", "ntk_base", "dynamic_ntk_base", "yarn_mscale",
    "yarn_correction_dim", "yarn_correction_range", "yarn_ramp", "yarn_attention_factor", "dynamic_yarn_factor",
    "longrope_attention_factor", "longrope_uses_long", "alibi_base_slopes", "power_of_two_heads",
    "dynamic_ntk_alibi_ratio", "Option", "OPTIONS", "flag", "refuse_unused", "baked_at", "kept_parameters",
    "attention_scale",
]
