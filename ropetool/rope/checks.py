"""Checks for the values of rope parameters: each raises a RopetoolError that names the parameter."""

from __future__ import annotations

import math

from ropetool.errors import RopetoolError

MAX_CONTEXT = 1 << 32  # a context length llama.cpp can hold (a u32)


def finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RopetoolError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise RopetoolError(f"{name} must be finite, got {value!r}")
    return v


def at_least(name: str, value, low: float) -> None:
    if finite(name, value) < low:
        raise RopetoolError(f"{name} must be >= {low:g}, got {value!r}")


def positive(name: str, value) -> None:
    if finite(name, value) <= 0:
        raise RopetoolError(f"{name} must be > 0, got {value!r}")


def context(name: str, value) -> int:
    """A context length: a positive integer that fits a u32."""
    v = finite(name, value)
    if v != int(v) or v < 1:
        raise RopetoolError(f"{name} must be a positive integer, got {value!r}")
    if v >= MAX_CONTEXT:
        raise RopetoolError(f"{name} {int(v)} is larger than any context llama.cpp can hold (2^32 - 1)")
    return int(v)


def need_context(p, why: str) -> None:
    if p.original_context is None:
        raise RopetoolError(f"original_context (the trained context length) is required for {why}")
    context("original_context", p.original_context)


def check_betas(p) -> None:
    finite("beta_fast", p.beta_fast)
    finite("beta_slow", p.beta_slow)
    if p.beta_fast <= p.beta_slow:
        raise RopetoolError(f"beta_fast ({p.beta_fast:g}) must be greater than beta_slow ({p.beta_slow:g})")
    positive("beta_slow", p.beta_slow)
    finite("extrapolation_factor", p.extrapolation_factor)
    if not 0 <= p.extrapolation_factor <= 1:
        raise RopetoolError(f"extrapolation_factor must be within [0, 1], got {p.extrapolation_factor!r}")


__all__ = ["finite", "at_least", "positive", "context", "need_context", "check_betas", "MAX_CONTEXT"]
