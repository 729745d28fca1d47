"""An independent numpy forward pass of the decoders ropetool converts: the reference ``check`` compares
llama.cpp's logits with.

It reads the weights in GGUF layout (from a GGUF file, or from the conversion plan of a Hugging Face
folder, which is the same data) and runs one causal forward pass over positions 0..n-1.  Everything
that differs between architectures is data, read from the model's family (``families.py``: norm,
feed-forward), llama.cpp's loader record (``llamacpp/archs.py``: rope pairing, ALiBi) or from which
tensors exist:

==================  ===================================================================================
norm                ``family.norm``: "rms" (x / rms(x) * w) or "layer" ((x - mean) / std * w + b)
feed-forward        ``family.ffn``: "swiglu" (down(silu(gate x) * up x)); "swiglu-fused" (phi3: ``ffn_up``
                    holds [gate; up], gate first, as transformers' Phi3MLP ``chunk(2)`` and ggml_swiglu
                    split it); "gelu" (bloom: down(gelu_tanh(up x)); transformers' bloom_gelu_forward
                    and ggml_gelu both use the tanh approximation)
biases              added wherever a ``.bias`` tensor exists (qwen2 q/k/v, all of bloom's)
q/k norms           RMSNorm over each head when ``attn_q_norm``/``attn_k_norm`` exist (qwen3), before rope
fused qkv           ``attn_qkv`` rows are [q; k; v] (the converter already regrouped bloom's per-head layout)
rope pairing        ``arch.pairing``: "normal" rotates (x[2i], x[2i+1]) (llama after the converter's
                    Q/K permutation), "neox" rotates (x[i], x[i + n_rot/2]); only the first
                    ``rope.dimension_count`` dims of each head are rotated (phi3's partial rotary)
GQA                 query head h reads kv head h // (n_head / n_head_kv)
ALiBi               the file's state (llama.cpp runs ALiBi): no rope; score[h, i, j] -= slope[h] * (i - j); bloom also
                    normalises the embeddings (``token_embd_norm``)
tied output         no ``output.weight``: the logits use ``token_embd.weight``
==================  ===================================================================================

The rope settings: when the file carries ropetool's record (``ropetool.rope.method`` and
``ropetool.rope.params``), the method is evaluated with the rope core directly at the sequence
length, which is how methods llama.cpp lacks (dynamic NTK, dynamic YaRN, ALiBi interpolation,
NTK-ALiBi, dynamic NTK-ALiBi) are judged.  Otherwise the keys are read with their documented meaning
(:func:`ropetool.llamacpp.state.read_state` with ``reading="keys"``) and the frequencies are what ggml
would compute from them; this module holds no rope formula of its own.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import gguf
import numpy as np

from ropetool.errors import RopetoolError
from ropetool.families import Family, family_for_arch
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.provenance import read_record
from ropetool.llamacpp.state import KEYS, RopeState, read_state
from ropetool.rope import RopeParams, alibi_slopes, rope_frequencies

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


def shapes_from_keys(family: Family, kv: dict, alibi: bool) -> Shapes:
    def get(template, default=None, required=False):
        value = kv.get(K.k(template, family.arch), default)
        if value is None and required:
            raise RopetoolError(f"the GGUF lacks {K.k(template, family.arch)}")
        return value

    n_embd = int(get(K.EMBEDDING_LENGTH, required=True))
    n_head = int(get(K.HEAD_COUNT, required=True))
    head_dim = int(get(K.KEY_LENGTH, n_embd // n_head))
    eps_key = K.LAYERNORM_RMS_EPS if family.norm == "rms" else K.LAYERNORM_EPS
    n_rot = 0 if alibi else int(get(K.ROPE_DIMENSION_COUNT, head_dim))
    if not alibi and (n_rot < 2 or n_rot % 2 or n_rot > head_dim):
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
    """The rope (or ALiBi) method in force and where it came from.

    ``source`` "provenance": ``params`` is ropetool's record, evaluated by the rope core at the sequence
    length.  ``source`` "keys": ``state`` is the keys' documented reading, whose frequencies are what ggml
    computes from them; ``params`` names the method the scaling keys alone give, and ``rope_freqs`` /
    ``factors`` (short, long) are the rope tensors that divide its frequencies."""

    params: RopeParams
    source: str  # "provenance" (ropetool.rope.*) or "keys" (llama.cpp's keys and tensors)
    state: RopeState | None = None
    rope_freqs: np.ndarray | None = None
    factors: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_state(cls, st: RopeState) -> "FileRope":
        if st.encoding == "alibi":
            from ropetool.rope import make_params

            return cls(make_params("alibi", max_bias=float(st.alibi_max_bias)), "keys", st)
        if st.encoding == "none":
            raise RopetoolError(f"llama.cpp applies no position encoding to this {st.arch} file; the reference "
                                "does not model that")
        if not st.computable:
            key, why = st.problems[0] if st.problems else (K.k(K.ROPE_DIMENSION_COUNT, st.arch), "missing")
            raise RopetoolError(f"GGUF rope settings: {key}: {why}")
        params = st.scaling_params()
        factors = None
        if st.longrope_used and st.short_factors is not None and st.long_factors is not None:
            factors = (st.short_factors, st.long_factors)
        return cls(params, "keys", st, st.rope_freqs if st.rope_freqs_used else None,
                   factors if params.method != "longrope" else None)


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

    def __init__(self, family: Family, kv: dict, tensors: dict[str, np.ndarray], file_rope: FileRope, source: str = ""):
        self.family = family
        self.arch = family.loader
        self.source = source
        self.file_rope = file_rope
        self.alibi = file_rope.params.is_alibi
        self.shapes = shapes_from_keys(family, kv, self.alibi)
        self.tensors = tensors
        self.stored_types = {name: "F32" for name in tensors}  # how each tensor was stored (from_gguf fills it)
        self._orig_ctx_key = kv.get(K.k(K.ROPE_SCALING_ORIG_CTX, family.arch))
        self._check_tensors()

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
        if other.family.arch != self.family.arch or any(getattr(mine, f) != getattr(theirs, f) for f in fields):
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
            family = family_for_arch(arch_name)
            if family is None:
                raise RopetoolError(f"the reference does not know architecture {arch_name!r}")
            file_rope = _file_rope(read_record(f.get) if use_provenance else None, read_state(f, reading=KEYS), family)
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
        model = cls(family, kv, tensors, file_rope, source=str(path))
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
        kv = {v.key: v.value for v in plan.values}
        tensors = {t.name: np.ascontiguousarray(t.whole(), dtype=np.float32) for t in plan.tensors}
        return cls(plan.family, kv, tensors, _file_rope(read_record(kv.get), None, plan.family), source=str(model_dir))

    def _check_tensors(self) -> None:
        s = self.shapes
        need = [tensor_name(T.TOKEN_EMBD), tensor_name(T.OUTPUT_NORM)]
        for il in range(s.n_layer):
            need += [tensor_name(T.ATTN_NORM, il), tensor_name(T.ATTN_OUT, il), tensor_name(T.FFN_NORM, il),
                     tensor_name(T.FFN_UP, il), tensor_name(T.FFN_DOWN, il)]
            if self._get(T.ATTN_QKV, il) is None:
                need += [tensor_name(T.ATTN_Q, il), tensor_name(T.ATTN_K, il), tensor_name(T.ATTN_V, il)]
            if self.family.ffn == "swiglu":
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
        if f.source == "keys":
            return f.state.frequencies(n_tokens)
        return rope_frequencies(f.params, self.shapes.n_rot, seq_len=n_tokens)

    def slopes(self, n_tokens: int, rope: RopeParams | None = None) -> np.ndarray | None:
        """One ALiBi slope per head for a sequence of n_tokens (None: no ALiBi)."""
        p = self.rope if rope is None else rope
        if not (self.alibi and p.is_alibi):
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
        if rope is not None and rope.is_alibi and not self.alibi:
            raise RopetoolError(f"{rope.method} is an ALiBi method; {self.arch.name} uses rope")
        if rope is not None and self.alibi and not (rope.is_alibi or rope.method == "none"):
            raise RopetoolError(f"{self.arch.name} uses ALiBi; give an ALiBi method (or none) instead of {rope.method}")

        def w(kind, layer=None, suffix="weight"):
            t = self._get(kind, layer, suffix)
            return None if t is None else t.astype(dtype, copy=False)

        norm = NORMS[self.family.norm]
        cos = sin = None
        if not self.alibi:
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
            q = rotate(q, cos, sin, s.n_rot, self.arch.pairing)
            k = rotate(k, cos, sin, s.n_rot, self.arch.pairing)
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
        ffn = self.family.ffn
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


def _file_rope(record, state: RopeState | None, family: Family) -> FileRope:
    """ropetool's record when the file has one (and it fits the architecture), else the keys' reading."""
    if record is not None:
        params = record.rope_params()
        if params.is_alibi != family.alibi:
            raise RopetoolError(f"{K.RT_METHOD} {params.method} does not fit {family.arch}")
        return FileRope(params, "provenance")
    if state is None:
        raise RopetoolError("the model has no ropetool record of its rope method")
    return FileRope.from_state(state)


__all__ = ["ReferenceModel", "Shapes", "FileRope", "shapes_from_keys", "tensor_name"]
