"""From a position-encoding method to the GGUF keys and tensors that make llama.cpp compute it.

The map is ../shared/reference/lowering.md.  llama.cpp computes, per pair j,
``theta = pos * base^(-2j/d) / ff[j]`` (ff: the optional ``rope_freqs`` tensor), mixes in
``theta * freq_scale`` by the YaRN ramp when ext_factor != 0, and scales cos/sin by
``attn_factor`` (times ``1 + 0.1 ln(1/freq_scale)`` only when ext_factor != 0);
``rope.scaling.attn_factor`` multiplies attn_factor for every architecture.
Where llama.cpp cannot compute a method exactly, :func:`lower` says so; the caller refuses
unless the user accepted the approximation, whose size is recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
from gguf import GGUFValueType as T

from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import Arch
from ropetool.errors import RopetoolError
from ropetool.rope import RopeParams, alibi_slopes, default_inv_freq, dynamic_ntk_base, ntk_base, rope_frequencies
from ropetool.rope.methods import dynamic_ntk_alibi_ratio

@dataclass
class Lowered:
    """The keys (full names) and tensors that carry a method into a GGUF, and how exact they are."""

    params: RopeParams
    kv: dict[str, tuple[object, T]] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    exact: bool = True
    needs_approval: bool = False  # llama.cpp cannot do what was asked: refuse unless --approximate
    notes: list[str] = field(default_factory=list)
    approx_error: float = 0.0  # largest relative error of a frequency or slope, when not exact
    context_length: int | None = None
    warnings: list[str] = field(default_factory=list)

    def set(self, template: str, arch: str, value, vtype: T) -> None:
        self.kv[K.k(template, arch)] = (value, vtype)


def _llama_cpp_yarn(p: RopeParams, dim: int) -> tuple[np.ndarray, float]:
    """What native ``type = yarn`` makes llama.cpp compute on archs that ignore the beta keys."""
    native = p.replace(method="yarn", beta_fast=32.0, beta_slow=1.0, extrapolation_factor=1.0, truncate=True,
                       attention_factor=None, mscale=None, mscale_all_dim=None)
    return rope_frequencies(native, dim)


def _rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def _extended_context(p: RopeParams, trained: int, scale: float) -> int:
    return int(p.target_context or round(scale * (p.original_context or trained)))


def _baked(out: Lowered, message: str, baked: np.ndarray, short: np.ndarray) -> None:
    """A dynamic method written as its static value at one length: allowed, with a warning."""
    out.exact = False
    out.approx_error = _rel_error(baked, short)
    out.warnings.append(message + "; shorter inputs get the long-context frequencies (set --target-context to choose)")
    out.notes.append(message)


def lower(p: RopeParams, arch: Arch, rotary_dim: int, n_heads: int, trained_context: int) -> Lowered:
    """The GGUF settings for method ``p`` on ``arch``; ``trained_context`` is the model's own context."""
    out = Lowered(p)
    a = arch.name
    if p.is_alibi != arch.is_alibi:
        kind = "an ALiBi" if arch.is_alibi else "a RoPE"
        raise RopetoolError(f"{p.method} cannot be used on {a}, which is {kind} architecture")
    if p.is_alibi:
        _lower_alibi(out, p, arch, n_heads, trained_context)
        return out

    L0 = p.original_context or trained_context
    inv0 = default_inv_freq(p.base, rotary_dim)
    m = p.method

    def plain(base: float) -> None:
        out.set(K.ROPE_FREQ_BASE, a, float(base), T.FLOAT32)
        out.set(K.ROPE_SCALING_TYPE, a, "none", T.STRING)

    def keep_original() -> None:
        out.set(K.ROPE_SCALING_ORIG_CTX, a, int(L0), T.UINT32)

    def via_rope_freqs(inv: np.ndarray, attn: float) -> None:
        plain(p.base)
        out.tensors[K.ROPE_FREQS_TENSOR] = (inv0 / inv).astype(np.float32)
        if attn != 1.0:
            out.set(K.ROPE_SCALING_ATTN_FACTOR, a, float(attn), T.FLOAT32)
        keep_original()

    if m == "none":
        plain(p.base)
        out.context_length = int(p.target_context or trained_context)
    elif m == "linear":
        out.set(K.ROPE_FREQ_BASE, a, float(p.base), T.FLOAT32)
        out.set(K.ROPE_SCALING_TYPE, a, "linear", T.STRING)
        out.set(K.ROPE_SCALING_FACTOR, a, float(p.factor), T.FLOAT32)
        keep_original()
        out.context_length = _extended_context(p, trained_context, p.factor)
    elif m == "ntk":
        plain(ntk_base(p.base, p.alpha, rotary_dim))
        keep_original()
        out.context_length = _extended_context(p, trained_context, p.alpha)
    elif m == "dynamic-ntk":
        target = p.target_context or int(round(p.factor * L0))
        base = dynamic_ntk_base(p.base, p.factor, target, L0, rotary_dim)
        plain(base)
        keep_original()
        out.context_length = target
        _baked(out, f"llama.cpp has no dynamic NTK: the base is baked for {target} tokens ({base:.1f})",
               default_inv_freq(base, rotary_dim), rope_frequencies(p, rotary_dim, seq_len=L0)[0])
    elif m in ("ntk-by-parts", "yarn", "dynamic-yarn"):
        if m == "dynamic-yarn":
            target = p.target_context or int(round(p.factor * L0))
            s = max(target / L0, p.factor)
            baked = p.replace(method="yarn", factor=s)
            _baked(out, f"llama.cpp has no dynamic YaRN: baked as static YaRN with factor {s:g} ({target} tokens)",
                   rope_frequencies(baked, rotary_dim)[0], rope_frequencies(p, rotary_dim, seq_len=L0)[0])
            q = baked
        else:
            q = p
        inv, attn = rope_frequencies(q, rotary_dim)
        native_inv, native_mag = _llama_cpp_yarn(q, rotary_dim)  # native_mag = 0.1 ln s + 1
        native_freqs_ok = _rel_error(native_inv, inv) <= 1e-7
        out.context_length = _extended_context(p, trained_context, q.factor)
        if native_freqs_ok or not arch.loads_rope_freqs:
            out.set(K.ROPE_FREQ_BASE, a, float(q.base), T.FLOAT32)
            out.set(K.ROPE_SCALING_TYPE, a, "yarn", T.STRING)
            out.set(K.ROPE_SCALING_FACTOR, a, float(q.factor), T.FLOAT32)
            keep_original()
            if abs(attn / native_mag - 1.0) > 1e-9:
                out.set(K.ROPE_SCALING_ATTN_FACTOR, a, float(attn / native_mag), T.FLOAT32)
            if not native_freqs_ok:
                err = _rel_error(native_inv, inv)
                out.exact = False
                out.needs_approval = True
                out.approx_error = max(out.approx_error, err)
                out.notes.append(
                    f"llama.cpp's {a} ignores yarn_beta_*/extrapolation settings and has no rope_freqs tensor: "
                    f"native YaRN (beta_fast 32, beta_slow 1) is used; frequencies differ by up to {err:.3g} (relative)"
                )
        else:
            via_rope_freqs(inv, attn)
            out.notes.append(f"{m} frequencies written as the rope_freqs tensor (llama.cpp ignores yarn_beta_* on {a})")
    elif m == "llama3":
        inv, attn = rope_frequencies(p, rotary_dim)
        out.context_length = _extended_context(p, trained_context, p.factor)
        if arch.loads_rope_freqs:
            via_rope_freqs(inv, attn)
        else:
            raise RopetoolError(
                f"llama.cpp's {a} does not load a rope_freqs tensor, so llama3 rope cannot be expressed on it"
            )
    elif m == "longrope":
        if not arch.loads_longrope("longrope"):
            raise RopetoolError(f"llama.cpp's {a} does not load rope_factors_long/short, so longrope cannot be expressed")
        _, attn = rope_frequencies(p, rotary_dim)
        out.set(K.ROPE_FREQ_BASE, a, float(p.base), T.FLOAT32)
        out.set(K.ROPE_SCALING_TYPE, a, "longrope", T.STRING)
        out.set(K.ROPE_SCALING_ATTN_FACTOR, a, float(attn), T.FLOAT32)
        keep_original()
        out.tensors[K.ROPE_FACTORS_LONG_TENSOR] = np.asarray(p.long_factor, dtype=np.float32)
        out.tensors[K.ROPE_FACTORS_SHORT_TENSOR] = np.asarray(p.short_factor, dtype=np.float32)
        out.context_length = _extended_context(p, trained_context, p.factor)
        out.notes.append("llama.cpp picks the long factors when the context it allocates exceeds the original length")
    else:  # pragma: no cover - the registry and this table list the same methods
        raise RopetoolError(f"no lowering for {m}")
    return out


def _lower_alibi(out: Lowered, p: RopeParams, arch: Arch, n_heads: int, trained_context: int) -> None:
    a = arch.name
    wanted = alibi_slopes(p, n_heads)
    out.context_length = int(p.target_context or trained_context)
    if arch.alibi_max_bias is not None:
        plain = alibi_slopes(p.replace(method="alibi", max_bias=arch.alibi_max_bias), n_heads)
        err = _rel_error(plain, wanted)
        if err > 1e-12:
            out.exact = False
            out.needs_approval = True
            out.approx_error = err
            out.notes.append(
                f"llama.cpp hard-codes ALiBi max_bias {arch.alibi_max_bias:g} for {a}: no setting can change its slopes; "
                f"they differ from {p.method}'s by up to {err:.3g} (relative)"
            )
        return
    if not arch.reads_alibi_key:  # pragma: no cover - no such arch in the table yet
        raise RopetoolError(f"llama.cpp's {a} has no ALiBi setting")
    # llama.cpp: slope_h = m0^(h+1), m0 = 2^(-max_bias/n).  Fit max_bias to the wanted slopes (least squares in log2).
    n = 2 ** int(math.floor(math.log2(n_heads)))
    h = np.arange(1, n + 1)
    max_bias = float(-n * np.sum(h * np.log2(wanted[:n])) / np.sum(h * h))
    if p.method == "dynamic-ntk-alibi":
        out.notes.append(f"dynamic NTK-ALiBi baked for {out.context_length} tokens (a = {dynamic_ntk_alibi_ratio(p, out.context_length):g})")
    got = alibi_slopes(p.replace(method="alibi", max_bias=max_bias), n_heads)
    err = _rel_error(got, wanted)
    out.set(K.MAX_ALIBI_BIAS, a, max_bias, T.FLOAT32)
    if err > 1e-9:
        out.exact = False
        out.needs_approval = True
        out.approx_error = err
        out.notes.append(f"llama.cpp derives every slope from max_bias; the best fit ({max_bias:.4g}) is off by up to {err:.3g}")


def lower_for_llama_cpp(p: RopeParams, arch: Arch, rotary_dim: int, n_heads: int, trained_context: int,
                        approximate: bool = False) -> Lowered:
    """:func:`lower`, refusing what llama.cpp cannot compute exactly unless ``approximate`` accepts it."""
    try:
        lowered = lower(p, arch, rotary_dim, n_heads, trained_context)
    except OverflowError:
        raise RopetoolError(f"{p.method}: the extended context length overflows (factor {p.factor})") from None
    if lowered.needs_approval and not approximate:
        raise RopetoolError(
            f"llama.cpp cannot compute {p.method} exactly on {arch.name}: {'; '.join(lowered.notes)} "
            "(pass --approximate to write it anyway, recording the approximation)"
        )
    return lowered


def provenance(lowered: Lowered, version: str) -> dict[str, tuple[object, T]]:
    """ropetool.* keys recording what the user asked for and how exactly it reached the file."""
    kv = {
        K.RT_VERSION: (version, T.STRING),
        K.RT_METHOD: (lowered.params.method, T.STRING),
        K.RT_PARAMS: (json.dumps(lowered.params.as_dict(), sort_keys=True), T.STRING),
        K.RT_EXACT: (bool(lowered.exact), T.BOOL),
    }
    if lowered.notes:
        kv[K.RT_NOTE] = ("; ".join(lowered.notes), T.STRING)
    if not lowered.exact:
        kv[K.RT_APPROX_ERROR] = (float(lowered.approx_error), T.FLOAT32)
    return kv


__all__ = ["Lowered", "lower", "lower_for_llama_cpp", "provenance"]
