"""The parameters of a position-encoding method, and their validation.

One frozen dataclass describes every method; each method reads the fields it needs.
``validate`` checks them per method and raises a RopetoolError that names the bad parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from ..errors import RopetoolError

# Canonical method names, in the order the README lists them.
ROPE_METHODS = (
    "none",
    "linear",
    "ntk",
    "dynamic-ntk",
    "ntk-by-parts",
    "yarn",
    "dynamic-yarn",
    "llama3",
    "longrope",
)
ALIBI_METHODS = ("alibi", "alibi-interp", "ntk-alibi", "dynamic-ntk-alibi")
METHODS = ROPE_METHODS + ALIBI_METHODS

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


_CONTEXT = {"base", "original_context", "target_context"}
_RAMP = {"factor", "beta_fast", "beta_slow", "extrapolation_factor", "truncate"}
# The parameters each method reads (besides its name): anything else given for it is a mistake.
USES = {
    "none": {"base", "target_context"},
    "linear": _CONTEXT | {"factor"},
    "ntk": _CONTEXT | {"alpha"},
    "dynamic-ntk": _CONTEXT | {"factor"},
    "ntk-by-parts": _CONTEXT | _RAMP,
    "yarn": _CONTEXT | _RAMP | {"attention_factor", "mscale", "mscale_all_dim"},
    "dynamic-yarn": _CONTEXT | _RAMP | {"attention_factor", "mscale", "mscale_all_dim"},
    "llama3": _CONTEXT | {"factor", "low_freq_factor", "high_freq_factor"},
    "longrope": _CONTEXT | {"factor", "short_factor", "long_factor", "attention_factor"},
    "alibi": {"max_bias", "original_context", "target_context"},
    "alibi-interp": {"max_bias", "original_context", "target_context", "alpha"},
    "ntk-alibi": {"max_bias", "original_context", "target_context", "alpha"},
    "dynamic-ntk-alibi": {"max_bias", "original_context", "target_context", "alpha"},
}


def unused_parameters(method: str, names) -> list[str]:
    """The parameters among ``names`` that ``method`` does not read."""
    return sorted(set(names) - USES[canonical_method(method)])


def canonical_method(name: str) -> str:
    """Map a method name (ours, an alias, or transformers' rope_type) to its canonical name."""
    key = str(name).strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise RopetoolError(
            f"unknown rope method {name!r}; known: {', '.join(METHODS)} (and {', '.join(sorted(ALIASES))})"
        )
    return key


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
        return self.method in ALIBI_METHODS

    def as_dict(self) -> dict:
        """The parameters that differ from their defaults (always with method), for reports."""
        out = {"method": self.method}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "method" and value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise RopetoolError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise RopetoolError(f"{name} must be finite, got {value!r}")
    return v


def _at_least(name: str, value, low: float) -> None:
    if _finite(name, value) < low:
        raise RopetoolError(f"{name} must be >= {low:g}, got {value!r}")


def _positive(name: str, value) -> None:
    if _finite(name, value) <= 0:
        raise RopetoolError(f"{name} must be > 0, got {value!r}")


def _need_context(p: RopeParams, why: str) -> None:
    if p.original_context is None:
        raise RopetoolError(f"original_context (the trained context length) is required for {why}")
    if int(p.original_context) != p.original_context or p.original_context < 1:
        raise RopetoolError(f"original_context must be a positive integer, got {p.original_context!r}")


def _check_betas(p: RopeParams) -> None:
    _finite("beta_fast", p.beta_fast)
    _finite("beta_slow", p.beta_slow)
    if p.beta_fast <= p.beta_slow:
        raise RopetoolError(f"beta_fast ({p.beta_fast:g}) must be greater than beta_slow ({p.beta_slow:g})")
    _positive("beta_slow", p.beta_slow)
    _finite("extrapolation_factor", p.extrapolation_factor)
    if not 0 <= p.extrapolation_factor <= 1:
        raise RopetoolError(f"extrapolation_factor must be within [0, 1], got {p.extrapolation_factor!r}")


def validate(p: RopeParams, dim: int | None = None) -> RopeParams:
    """Check ``p`` for its method (and the rotary dim, when known); return it unchanged."""
    m = p.method
    if m not in METHODS:
        canonical_method(m)  # raises with the list of known methods
    if not p.is_alibi:
        _positive("base", p.base)
    _at_least("factor", p.factor, 1.0)
    if dim is not None and (dim < 2 or dim % 2):
        raise RopetoolError(f"rotary dimension must be an even number >= 2, got {dim}")
    if p.target_context is not None and (int(p.target_context) != p.target_context or p.target_context < 1):
        raise RopetoolError(f"target_context must be a positive integer, got {p.target_context!r}")
    if p.attention_factor is not None:
        _positive("attention_factor", p.attention_factor)

    if m == "ntk":
        if p.alpha is None:
            raise RopetoolError("alpha is required for ntk (NTK-aware scaling)")
        _at_least("alpha", p.alpha, 1.0)
        if dim is not None and dim <= 2:
            raise RopetoolError("ntk needs a rotary dimension > 2")
    elif m == "dynamic-ntk":
        _need_context(p, "dynamic-ntk")
    elif m in ("ntk-by-parts", "yarn", "dynamic-yarn"):
        _need_context(p, m)
        _check_betas(p)
    elif m == "llama3":
        _need_context(p, "llama3")
        _positive("low_freq_factor", p.low_freq_factor)
        _finite("high_freq_factor", p.high_freq_factor)
        if p.high_freq_factor <= p.low_freq_factor:
            raise RopetoolError(
                f"high_freq_factor ({p.high_freq_factor:g}) must be greater than low_freq_factor ({p.low_freq_factor:g})"
            )
    elif m == "longrope":
        _need_context(p, "longrope")
        for name in ("short_factor", "long_factor"):
            values = getattr(p, name)
            if values is None:
                raise RopetoolError(f"{name} (a list of per-pair factors) is required for longrope")
            for v in values:
                _positive(name, v)
            if dim is not None and len(values) != dim // 2:
                raise RopetoolError(f"{name} must have rotary_dim/2 = {dim // 2} entries, got {len(values)}")
    elif m in ("alibi-interp", "ntk-alibi"):
        if p.alpha is None:
            raise RopetoolError(f"alpha (the interpolation ratio a) is required for {m}")
        _at_least("alpha", p.alpha, 1.0)
    elif m == "dynamic-ntk-alibi":
        if p.alpha is None:
            raise RopetoolError("alpha (a0, the base ratio) is required for dynamic-ntk-alibi")
        _positive("alpha", p.alpha)
        _need_context(p, "dynamic-ntk-alibi")
    if p.is_alibi:
        _positive("max_bias", p.max_bias)
    return p


def make_params(method: str, **values) -> RopeParams:
    """Build validated parameters; ``method`` may be an alias; None values take the defaults."""
    given = {k: v for k, v in values.items() if v is not None}
    unknown = set(given) - {f.name for f in fields(RopeParams)}
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
            v = _finite(name, given[name])
            if v != int(v) or v < 1:
                raise RopetoolError(f"{name} must be a positive integer, got {given[name]!r}")
            given[name] = int(v)
    for f in fields(RopeParams):
        if f.name in given and f.type in ("float", "float | None"):
            given[f.name] = _finite(f.name, given[f.name])
    return validate(RopeParams(method=canonical_method(method), **given))


__all__ = ["RopeParams", "METHODS", "ROPE_METHODS", "ALIBI_METHODS", "USES", "canonical_method", "make_params",
           "unused_parameters", "validate"]
