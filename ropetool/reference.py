"""An independent numpy forward pass of the decoders ropetool converts: the reference ``check`` compares
llama.cpp's logits with.

It reads the weights in GGUF layout (from a GGUF file, or from the conversion plan of a Hugging Face
folder, which is the same data) and runs one causal forward pass over positions 0..n-1.  Everything
that differs between architectures is data, read from ``archs.Arch`` or from which tensors exist:

==================  ===================================================================================
norm                ``arch.norm``: "rms" (x / rms(x) * w) or "layer" ((x - mean) / std * w + b)
feed-forward        ``arch.ffn``: "swiglu" (down(silu(gate x) * up x)); "swiglu-fused" (phi3: ``ffn_up``
                    holds [gate; up], gate first, as transformers' Phi3MLP ``chunk(2)`` and ggml_swiglu
                    split it); "gelu" (bloom: down(gelu_tanh(up x)); transformers' bloom_gelu_forward
                    and ggml_gelu both use the tanh approximation)
biases              added wherever a ``.bias`` tensor exists (qwen2 q/k/v, all of bloom's)
q/k norms           RMSNorm over each head when ``attn_q_norm``/``attn_k_norm`` exist (qwen3), before rope
fused qkv           ``attn_qkv`` rows are [q; k; v] (the converter already regrouped bloom's per-head layout)
rope pairing        ``arch.rope_pairing``: "normal" rotates (x[2i], x[2i+1]) (llama after the converter's
                    Q/K permutation), "neox" rotates (x[i], x[i + n_rot/2]); only the first
                    ``rope.dimension_count`` dims of each head are rotated (phi3's partial rotary)
GQA                 query head h reads kv head h // (n_head / n_head_kv)
ALiBi               ``arch.is_alibi``: no rope; score[h, i, j] -= slope[h] * (i - j); bloom also
                    normalises the embeddings (``token_embd_norm``)
tied output         no ``output.weight``: the logits use ``token_embd.weight``
==================  ===================================================================================

The rope settings: when the file carries ropetool's provenance keys (``ropetool.rope.method`` and
``ropetool.rope.params``), the method is evaluated with the rope core directly at the sequence
length, which is how methods llama.cpp lacks (dynamic NTK, dynamic YaRN, ALiBi interpolation,
NTK-ALiBi, dynamic NTK-ALiBi) are judged.  Otherwise the llama.cpp keys are read with the meaning
llama-cpp-semantics.md documents for them (see :func:`rope_from_keys`), turned into a
:class:`RopeParams` and evaluated by the same rope core; this module holds no rope formula of its own.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass

import gguf
import numpy as np

from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import Arch, arch_by_name
from ropetool.errors import RopetoolError
from ropetool.rope import RopeParams, alibi_slopes, make_params, rope_frequencies

T = gguf.MODEL_TENSOR
QUERY_BLOCK = 1024  # query rows per attention block (bounds the [heads, rows, n] score memory)


def tensor_name(kind: gguf.MODEL_TENSOR, layer: int | None = None, suffix: str = "weight") -> str:
    """The GGUF name of a tensor, from gguf-py's table: ``tensor_name(T.ATTN_Q, 3) == "blk.3.attn_q.weight"``."""
    return f"{gguf.TENSOR_NAMES[kind].format(bid=layer)}.{suffix}"


# --- shapes -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shapes:
    """The hyperparameters the forward pass needs, read from the GGUF keys."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int  # of q and k (attention.key_length)
    head_dim_v: int  # attention.value_length
    n_rot: int  # rope.dimension_count: the rotated dims at the front of each head (0 for ALiBi)
    eps: float
    context_length: int | None


def shapes_from_keys(arch: Arch, kv: dict) -> Shapes:
    def get(template, default=None, required=False):
        value = kv.get(K.k(template, arch.name), default)
        if value is None and required:
            raise RopetoolError(f"the GGUF lacks {K.k(template, arch.name)}")
        return value

    n_embd = int(get(K.EMBEDDING_LENGTH, required=True))
    n_head = int(get(K.HEAD_COUNT, required=True))
    head_dim = int(get(K.KEY_LENGTH, n_embd // n_head))
    eps_key = K.LAYERNORM_RMS_EPS if arch.norm == "rms" else K.LAYERNORM_EPS
    n_rot = 0 if arch.is_alibi else int(get(K.ROPE_DIMENSION_COUNT, head_dim))
    if not arch.is_alibi and (n_rot < 2 or n_rot % 2 or n_rot > head_dim):
        raise RopetoolError(f"rope.dimension_count must be even and within 2..{head_dim}, got {n_rot}")
    context = get(K.CONTEXT_LENGTH)
    return Shapes(
        n_embd=n_embd,
        n_layer=int(get(K.BLOCK_COUNT, required=True)),
        n_head=n_head,
        n_head_kv=int(get(K.HEAD_COUNT_KV, n_head)),
        head_dim=head_dim,
        head_dim_v=int(get(K.VALUE_LENGTH, head_dim)),
        n_rot=n_rot,
        eps=float(get(eps_key, required=True)),
        context_length=int(context) if context is not None else None,
    )


# --- the position encoding a file asks for ---------------------------------------------------------

@dataclass(frozen=True)
class FileRope:
    """The rope (or ALiBi) method in force, plus what the llama.cpp keys add on top of a method.

    ``rope_freqs`` divides every pair's frequency (the ``rope_freqs`` tensor); ``factors`` are the
    (short, long) per-pair divisors of ``rope_factors_short/long`` when the scaling type is not
    longrope (a longrope method holds its own tables); ``attn_factor`` is ``rope.scaling.attn_factor``,
    which multiplies the method's cos/sin magnitude.  ``source`` says where it came from.
    """

    params: RopeParams
    source: str  # "provenance" (ropetool.rope.*) or "keys" (llama.cpp's keys and tensors)
    rope_freqs: np.ndarray | None = None
    factors: tuple[np.ndarray, np.ndarray] | None = None
    attn_factor: float = 1.0


def rope_from_provenance(kv: dict) -> RopeParams | None:
    """The method ropetool recorded in ``ropetool.rope.method``/``ropetool.rope.params``, if any."""
    method, params = kv.get(K.RT_METHOD), kv.get(K.RT_PARAMS)
    if method is None or params is None:
        return None
    try:
        values = json.loads(params)
    except json.JSONDecodeError as e:
        raise RopetoolError(f"{K.RT_PARAMS} is not valid JSON: {e}") from None
    values.pop("method", None)
    return make_params(method, **values)


def rope_from_keys(arch: Arch, kv: dict, tensors: dict[str, np.ndarray]) -> FileRope:
    """The position encoding llama.cpp's keys and tensors describe, with their documented meaning.

    - ``rope.scaling.type``: none | linear | yarn | longrope; a missing type means linear (llama.cpp's
      default), and a missing or zero ``scaling.factor`` (legacy ``rope.scale_linear``) means 1.
    - yarn: ``original_context_length`` (default ``context_length``), ``yarn_beta_fast/slow``,
      ``yarn_ext_factor`` (the extrapolation factor), ``yarn_attn_factor`` (transformers' attention_factor:
      the whole cos/sin magnitude instead of 0.1 ln s + 1) and ``yarn_log_multiplier`` (mscale_all_dim)
      are used when present.  llama.cpp itself reads most of them only for grok/mistral3/deepseek, and
      drops the 1 + 0.1 ln s magnitude when ext_factor is 0; ``check`` is what shows such gaps.
    - ``rope.scaling.attn_factor`` multiplies the magnitude for every type.
    - ``rope_freqs`` divides each pair's frequency.  ``rope_factors_long/short`` do too (long when the
      sequence is longer than original_context_length); llama.cpp instead picks them by the context it
      allocates (n_ctx > original), not by the length of the input.
    - ALiBi: ``attention.max_alibi_bias`` when present and > 0, else the arch's hard-coded value
      (bloom: 8).
    """
    a = arch.name

    def get(template, default=None):
        return kv.get(K.k(template, a), default)

    if arch.is_alibi:
        max_bias = get(K.MAX_ALIBI_BIAS)
        if not max_bias or max_bias <= 0:
            max_bias = arch.alibi_max_bias
        if not max_bias:
            raise RopetoolError(f"{a} uses ALiBi but the GGUF has no {K.k(K.MAX_ALIBI_BIAS, a)}")
        return FileRope(make_params("alibi", max_bias=float(max_bias)), "keys")
    if (get(K.MAX_ALIBI_BIAS) or 0) > 0:
        raise RopetoolError(f"the reference does not model ALiBi together with rope ({a} has max_alibi_bias set)")

    kind = str(get(K.ROPE_SCALING_TYPE, "linear")).lower()
    base = float(get(K.ROPE_FREQ_BASE, 10000.0))
    factor = get(K.ROPE_SCALING_FACTOR)
    if factor is None:
        factor = get(K.ROPE_SCALE_LINEAR)
    factor = float(factor) if factor else 1.0
    original = get(K.ROPE_SCALING_ORIG_CTX) or get(K.CONTEXT_LENGTH)
    short = tensors.get(K.ROPE_FACTORS_SHORT_TENSOR)
    long = tensors.get(K.ROPE_FACTORS_LONG_TENSOR)

    try:
        if kind == "none":
            params = make_params("none", base=base)
        elif kind == "linear":
            params = make_params("linear", base=base, factor=factor)
        elif kind == "yarn":
            log_mul = get(K.ROPE_YARN_LOG_MUL)
            params = make_params(
                "yarn", base=base, factor=factor, original_context=original,
                beta_fast=get(K.ROPE_YARN_BETA_FAST), beta_slow=get(K.ROPE_YARN_BETA_SLOW),
                extrapolation_factor=get(K.ROPE_YARN_EXT_FACTOR), attention_factor=get(K.ROPE_YARN_ATTN_FACTOR),
                mscale=1.0 if log_mul else None, mscale_all_dim=log_mul or None,
            )
        elif kind == "longrope":
            if short is None or long is None:
                raise RopetoolError(f"scaling type longrope needs {K.ROPE_FACTORS_SHORT_TENSOR} and "
                                    f"{K.ROPE_FACTORS_LONG_TENSOR}")
            params = make_params("longrope", base=base, original_context=original,
                                 short_factor=short.tolist(), long_factor=long.tolist())
            short = long = None  # the method holds the tables
        else:
            raise RopetoolError(f"unknown {K.k(K.ROPE_SCALING_TYPE, a)} {kind!r} (none, linear, yarn, longrope)")
    except RopetoolError as e:
        raise RopetoolError(f"GGUF rope settings: {e}") from None

    factors = None
    if short is not None and long is not None:
        if original is None:
            raise RopetoolError("rope_factors_long/short need rope.scaling.original_context_length")
        factors = (np.asarray(short, np.float64), np.asarray(long, np.float64))
        params = params.replace(original_context=int(original))  # the length that picks the table
    freqs = tensors.get(K.ROPE_FREQS_TENSOR)
    if kind == "longrope":
        freqs = None  # archs that take the longrope branch load rope_factors_long/short instead of rope_freqs
    return FileRope(
        params, "keys",
        rope_freqs=None if freqs is None else np.asarray(freqs, np.float64),
        factors=factors,
        attn_factor=float(get(K.ROPE_SCALING_ATTN_FACTOR, 1.0)),
    )


# --- the building blocks ------------------------------------------------------------------------

def rms_norm(x, w, b, eps):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w
    return y if b is None else y + b


def layer_norm(x, w, b, eps):
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w
    return y if b is None else y + b


NORMS = {"rms": rms_norm, "layer": layer_norm}


def silu(x):
    return x * (0.5 + 0.5 * np.tanh(0.5 * x))  # x * sigmoid(x), without exp overflow


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def linear(x, w, b=None):
    """x @ w.T (+ b): w is stored [out, in], as in GGUF and Hugging Face."""
    y = x @ w.T
    return y if b is None else y + b


def rotate(x, cos, sin, n_rot, pairing):
    """Rotate the first ``n_rot`` dims of every head: x is [heads, n, head_dim], cos/sin [n, n_rot/2]."""
    rot, rest = x[..., :n_rot], x[..., n_rot:]
    if pairing == "normal":  # pairs (2i, 2i+1)
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(rot.shape)
    else:  # "neox": pairs (i, i + n_rot/2)
        a, b = rot[..., : n_rot // 2], rot[..., n_rot // 2:]
        out = np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    return np.concatenate([out, rest], axis=-1) if rest.shape[-1] else out


def attention_bias(start: int, stop: int, slopes: np.ndarray | None, dtype) -> np.ndarray:
    """Added to the scores of query rows start..stop-1 against keys 0..stop-1: the causal mask (-inf where
    j > i) and, under ALiBi, -slope[h] * (i - j).  Shape [n_head, rows, stop] with slopes, else [1, rows, stop]."""
    distance = np.arange(start, stop)[:, None] - np.arange(stop)[None, :]  # i - j
    bias = np.where(distance >= 0, 0.0, -np.inf)[None]
    if slopes is not None:
        bias = bias - slopes[:, None, None] * np.maximum(distance, 0)[None]
    return bias.astype(dtype)


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


# --- the model ----------------------------------------------------------------------------------

class ReferenceModel:
    """Weights in GGUF layout (float32) plus the shapes and position encoding to run them with."""

    def __init__(self, arch: Arch, kv: dict, tensors: dict[str, np.ndarray], use_provenance: bool = True,
                 source: str = ""):
        self.arch = arch
        self.source = source
        self.shapes = shapes_from_keys(arch, kv)
        self.tensors = tensors
        self.stored_types = {name: "F32" for name in tensors}  # how each tensor was stored (from_gguf fills it)
        self._orig_ctx_key = kv.get(K.k(K.ROPE_SCALING_ORIG_CTX, arch.name))
        self._check_tensors()
        recorded = rope_from_provenance(kv) if use_provenance else None
        if recorded is not None:
            if recorded.is_alibi != arch.is_alibi:
                raise RopetoolError(f"{K.RT_METHOD} {recorded.method} does not fit {arch.name}")
            self.file_rope = FileRope(recorded, "provenance")
        else:
            self.file_rope = rope_from_keys(arch, kv, tensors)

    @property
    def rope(self) -> RopeParams:
        """The rope (or ALiBi) method in force."""
        return self.file_rope.params

    @property
    def original_context(self) -> int | None:
        """The trained context the method extends: the method's own, else original_context_length, else
        context_length."""
        return self.rope.original_context or self._orig_ctx_key or self.shapes.context_length

    @property
    def n_vocab(self) -> int:
        return int(self._get(T.TOKEN_EMBD).shape[0])

    def tensor_types(self) -> list[tuple[str, str, int]]:
        """(name, stored type such as "F32" or "Q8_0", number of elements) for every tensor."""
        return [(name, self.stored_types.get(name, "F32"), int(t.size)) for name, t in self.tensors.items()]

    def with_weights_from(self, other: "ReferenceModel") -> "ReferenceModel":
        """This model's keys and position encoding with ``other``'s weights (e.g. a quantized GGUF's
        settings with the f32 weights of its Hugging Face source)."""
        mine, theirs = self.shapes, other.shapes
        fields = ("n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "head_dim_v")
        if other.arch.name != self.arch.name or any(getattr(mine, f) != getattr(theirs, f) for f in fields):
            raise RopetoolError(f"the weights of {other.source or 'the other model'} do not fit {self.source or 'this model'}")
        for name, t in self.tensors.items():
            if name in other.tensors and other.tensors[name].shape != t.shape:
                raise RopetoolError(f"tensor {name} has shape {list(other.tensors[name].shape)} in "
                                    f"{other.source or 'the other model'}, {list(t.shape)} here")
        new = copy.copy(self)
        new.tensors = other.tensors
        new.stored_types = dict(other.stored_types)
        new._check_tensors()
        return new

    # -- loading --

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, use_provenance: bool = True) -> "ReferenceModel":
        """Read a GGUF file; every tensor is dequantized to float32 (f32, f16, bf16, q8_0, ...).

        The header is parsed (and checked against the file) by gguf_file; the vocabulary is skipped."""
        from ropetool.io.gguf_file import open_gguf

        with open_gguf(path) as f:
            if f.endian != "little":
                raise RopetoolError(f"{path}: the reference reads little-endian GGUF files only")
            kv = {key: field.value for key, field in f.fields.items()
                  if not (field.is_array and key.startswith("tokenizer."))}
            arch_name = kv.get(K.ARCHITECTURE)
            arch = arch_by_name(arch_name)
            if arch is None:
                raise RopetoolError(f"the reference does not know architecture {arch_name!r}")
            tensors, stored = {}, {}
            for t in f.tensors:
                shape = tuple(reversed(t.shape))
                raw = np.frombuffer(f.raw(t.data_offset, t.data_offset + t.nbytes), dtype=np.uint8)
                raw = raw.reshape(gguf.quant_shape_to_byte_shape(shape, t.type)) if shape else raw
                if t.type == gguf.GGMLQuantizationType.F32:
                    data = raw.view(np.float32).reshape(shape)
                elif t.type == gguf.GGMLQuantizationType.F16:
                    data = raw.view(np.float16).reshape(shape)
                else:
                    data = gguf.quants.dequantize(raw, t.type)
                tensors[t.name] = np.ascontiguousarray(data, dtype=np.float32)
                stored[t.name] = t.type.name
        model = cls(arch, kv, tensors, use_provenance, source=str(path))
        model.stored_types = stored
        return model

    @classmethod
    def from_hf(cls, model_dir: str | os.PathLike, method: str | None = None, **rope_options) -> "ReferenceModel":
        """Plan the f32 conversion of a Hugging Face folder and take its tensors and keys (no file written).

        ``method`` and ``rope_options`` are convert's (``factor``, ``alpha``, ``original_context``, ...);
        approximations llama.cpp would need are accepted, because the reference evaluates the method
        itself from the provenance keys.
        """
        from ropetool.convert import plan_conversion

        plan = plan_conversion(model_dir, "f32", method, approximate=True, with_vocab=False, **rope_options)
        kv = {key: value for key, (value, _) in plan.kv.items()}
        tensors = {t.name: np.ascontiguousarray(t.whole(), dtype=np.float32) for t in plan.tensors}
        return cls(plan.arch, kv, tensors, source=str(model_dir))

    def _check_tensors(self) -> None:
        s = self.shapes
        need = [tensor_name(T.TOKEN_EMBD), tensor_name(T.OUTPUT_NORM)]
        for il in range(s.n_layer):
            need += [tensor_name(T.ATTN_NORM, il), tensor_name(T.ATTN_OUT, il), tensor_name(T.FFN_NORM, il),
                     tensor_name(T.FFN_UP, il), tensor_name(T.FFN_DOWN, il)]
            if self._get(T.ATTN_QKV, il) is None:
                need += [tensor_name(T.ATTN_Q, il), tensor_name(T.ATTN_K, il), tensor_name(T.ATTN_V, il)]
            if self.arch.ffn == "swiglu":
                need.append(tensor_name(T.FFN_GATE, il))
        missing = [n for n in need if n not in self.tensors]
        if missing:
            raise RopetoolError(f"the model lacks tensor(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")

    def _get(self, kind, layer=None, suffix="weight"):
        return self.tensors.get(tensor_name(kind, layer, suffix))

    # -- position encoding --

    def frequencies(self, n_tokens: int, rope: RopeParams | None = None) -> tuple[np.ndarray, float]:
        """Inverse frequency of each rotated pair and the cos/sin magnitude, for a sequence of n_tokens."""
        if rope is not None:
            return rope_frequencies(rope, self.shapes.n_rot, seq_len=n_tokens)
        f = self.file_rope
        inv, attn = rope_frequencies(f.params, self.shapes.n_rot, seq_len=n_tokens)
        if f.rope_freqs is not None:
            inv = inv / f.rope_freqs
        elif f.factors is not None:
            short, long = f.factors
            inv = inv / (long if n_tokens > f.params.original_context else short)
        return inv, attn * f.attn_factor

    def slopes(self, n_tokens: int, rope: RopeParams | None = None) -> np.ndarray | None:
        """One ALiBi slope per head for a sequence of n_tokens (None: no ALiBi)."""
        p = self.rope if rope is None else rope
        if not (self.arch.is_alibi and p.is_alibi):
            return None
        return alibi_slopes(p, self.shapes.n_head, seq_len=n_tokens)

    # -- the forward pass --

    def logits(self, token_ids, rope: RopeParams | None = None, dtype=np.float32) -> np.ndarray:
        """Logits [n_tokens, vocab] for ``token_ids`` at positions 0..n-1.

        ``rope`` replaces the file's method (e.g. ``make_params("none", base=...)``, the "rope removed"
        control; on an ALiBi model, ``make_params("none")`` removes the position bias).
        """
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        n, s = len(ids), self.shapes
        embd = self._get(T.TOKEN_EMBD)
        if n == 0:
            raise RopetoolError("no tokens to evaluate")
        if ids.min() < 0 or ids.max() >= embd.shape[0]:
            raise RopetoolError(f"token ids must be within 0..{embd.shape[0] - 1}")
        if rope is not None and rope.is_alibi and not self.arch.is_alibi:
            raise RopetoolError(f"{rope.method} is an ALiBi method; {self.arch.name} uses rope")
        if rope is not None and self.arch.is_alibi and not (rope.is_alibi or rope.method == "none"):
            raise RopetoolError(f"{self.arch.name} uses ALiBi; give an ALiBi method (or none) instead of {rope.method}")

        def w(kind, layer=None, suffix="weight"):
            t = self._get(kind, layer, suffix)
            return None if t is None else t.astype(dtype, copy=False)

        norm = NORMS[self.arch.norm]
        cos = sin = None
        if not self.arch.is_alibi:
            inv, magnitude = self.frequencies(n, rope)
            angles = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
            cos, sin = (np.cos(angles) * magnitude).astype(dtype), (np.sin(angles) * magnitude).astype(dtype)
        slopes = self.slopes(n, rope)

        x = w(T.TOKEN_EMBD)[ids]
        if self._get(T.TOKEN_EMBD_NORM) is not None:  # bloom
            x = norm(x, w(T.TOKEN_EMBD_NORM), w(T.TOKEN_EMBD_NORM, None, "bias"), s.eps)
        for il in range(s.n_layer):
            h = norm(x, w(T.ATTN_NORM, il), w(T.ATTN_NORM, il, "bias"), s.eps)
            x = x + self._attention(h, il, w, cos, sin, slopes)
            h = norm(x, w(T.FFN_NORM, il), w(T.FFN_NORM, il, "bias"), s.eps)
            x = x + self._feed_forward(h, il, w)
        x = norm(x, w(T.OUTPUT_NORM), w(T.OUTPUT_NORM, None, "bias"), s.eps)
        out = w(T.OUTPUT) if self._get(T.OUTPUT) is not None else w(T.TOKEN_EMBD)  # tied embeddings
        return linear(x, out)

    def _attention(self, x, il, w, cos, sin, slopes):
        s = self.shapes
        n = x.shape[0]
        H, Hkv, d, dv = s.n_head, s.n_head_kv, s.head_dim, s.head_dim_v
        if self._get(T.ATTN_QKV, il) is not None:  # fused [q; k; v] rows
            qkv = linear(x, w(T.ATTN_QKV, il), w(T.ATTN_QKV, il, "bias"))
            q, k, v = np.split(qkv, [H * d, H * d + Hkv * d], axis=-1)
        else:
            q = linear(x, w(T.ATTN_Q, il), w(T.ATTN_Q, il, "bias"))
            k = linear(x, w(T.ATTN_K, il), w(T.ATTN_K, il, "bias"))
            v = linear(x, w(T.ATTN_V, il), w(T.ATTN_V, il, "bias"))
        q = q.reshape(n, H, d).transpose(1, 0, 2)  # [heads, n, head_dim]
        k = k.reshape(n, Hkv, d).transpose(1, 0, 2)
        v = v.reshape(n, Hkv, dv).transpose(1, 0, 2)
        if self._get(T.ATTN_Q_NORM, il) is not None:  # qwen3: RMSNorm per head, before rope
            q = rms_norm(q, w(T.ATTN_Q_NORM, il), None, s.eps)
            k = rms_norm(k, w(T.ATTN_K_NORM, il), None, s.eps)
        if cos is not None:
            q = rotate(q, cos, sin, s.n_rot, self.arch.rope_pairing)
            k = rotate(k, cos, sin, s.n_rot, self.arch.rope_pairing)
        # GQA: group the query heads by the kv head they share, [Hkv, group, n, d], and broadcast k and v.
        g = H // Hkv
        q = q.reshape(Hkv, g, n, d)
        k, v = k[:, None], v[:, None]  # [Hkv, 1, n, d]
        out = np.empty((Hkv, g, n, dv), dtype=x.dtype)
        # One block of query rows for n <= QUERY_BLOCK (scores [heads, n, n]); longer inputs go block by
        # block so memory stays O(heads * QUERY_BLOCK * n).  Row i only sees keys 0..i.
        for start in range(0, n, QUERY_BLOCK):
            stop = min(start + QUERY_BLOCK, n)
            scores = q[:, :, start:stop] @ k[:, :, :stop].swapaxes(-1, -2) / math.sqrt(d)  # [Hkv, g, rows, stop]
            bias = attention_bias(start, stop, slopes, x.dtype)  # [heads or 1, rows, stop]
            if slopes is not None:
                bias = bias.reshape(Hkv, g, stop - start, stop)
            out[:, :, start:stop] = softmax(scores + bias) @ v[:, :, :stop]
        out = out.reshape(H, n, dv).transpose(1, 0, 2).reshape(n, H * dv)
        return linear(out, w(T.ATTN_OUT, il), w(T.ATTN_OUT, il, "bias"))

    def _feed_forward(self, x, il, w):
        up = linear(x, w(T.FFN_UP, il), w(T.FFN_UP, il, "bias"))
        ffn = self.arch.ffn
        if ffn == "swiglu":
            h = silu(linear(x, w(T.FFN_GATE, il), w(T.FFN_GATE, il, "bias"))) * up
        elif ffn == "swiglu-fused":  # phi3: ffn_up = [gate; up]
            gate, up = np.split(up, 2, axis=-1)
            h = silu(gate) * up
        elif ffn == "gelu":
            h = gelu_tanh(up)
        else:  # pragma: no cover - archs.py lists only these
            raise RopetoolError(f"the reference has no feed-forward {ffn!r}")
        return linear(h, w(T.FFN_DOWN, il), w(T.FFN_DOWN, il, "bias"))


__all__ = ["ReferenceModel", "Shapes", "FileRope", "rope_from_keys", "rope_from_provenance", "shapes_from_keys",
           "tensor_name"]
