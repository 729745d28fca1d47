"""An independent numpy forward pass of the decoders ropetool converts: the reference ``check`` compares
llama.cpp's logits with.

It reads the weights in GGUF layout (from a GGUF file, or from the conversion plan of a Hugging Face
folder, which is the same data) and runs one causal forward pass over positions 0..n-1, streaming: a
weight is read (and dequantized: every type gguf-py knows, K-quants and IQ types included) when its layer
needs it and dropped after, so memory holds about one layer, not the model.  Several position encodings
(the file's and the alternatives ``check`` weighs it against) run through one pass, each weight read once
for all of them.  Logits are produced a chunk of positions at a time.  Everything
that differs between architectures is data, read from the model's family (``families.py``: norm,
feed-forward), llama.cpp's loader record (``llamacpp/archs.py``: rope pairing, ALiBi) or from which
tensors exist:

==================  ===================================================================================
norm                ``family.norm``: "rms" (x / rms(x) * w) or "layer" ((x - mean) / std * w + b)
feed-forward        ``family.ffn``: "swiglu" (down(silu(gate x) * up x)); "swiglu-fused" (phi3: ``ffn_up``
                    holds [gate; up], gate first, as transformers' Phi3MLP ``chunk(2)`` and ggml_swiglu
                    split it); "gelu" (bloom: down(gelu_tanh(up x)); transformers' bloom_gelu_forward
                    and ggml_gelu both use the tanh approximation)
experts             a mixture (``expert_count`` > 0: mixtral as llama, qwen2moe, qwen3moe): softmax routing to the
                    top ``expert_used_count`` SwiGLU experts, renormalised where ``family.moe_norm_topk``; a
                    shared expert with a sigmoid gate where ``ffn_gate_inp_shexp`` exists (qwen2moe)
biases              added wherever a ``.bias`` tensor exists (qwen2 q/k/v, all of bloom's)
q/k norms           RMSNorm over each head when ``attn_q_norm``/``attn_k_norm`` exist (qwen3), before rope; over
                    the whole projection where ``family.qk_norm`` is "projection" (olmo2)
pre-norms           ``attn_norm`` / ``ffn_norm`` where they exist; olmo2 has neither (only the post-norms)
fused qkv           ``attn_qkv`` rows are [q; k; v] (the converter already regrouped bloom's per-head layout)
rope pairing        ``arch.pairing``: "normal" rotates (x[2i], x[2i+1]) (llama after the converter's
                    Q/K permutation), "neox" rotates (x[i], x[i + n_rot/2]); only the first
                    ``rope.dimension_count`` dims of each head are rotated (phi3's partial rotary)
GQA                 query head h reads kv head h // (n_head / n_head_kv)
ALiBi               the file's state (llama.cpp runs ALiBi): no rope; score[h, i, j] -= slope[h] * (i - j); bloom also
                    normalises the embeddings (``token_embd_norm``)
tied output         no ``output.weight``: the logits use ``token_embd.weight``
gemma               ``family.embed_scale`` (embeddings x sqrt(n_embd)); ``post_attention_norm`` /
                    ``post_ffw_norm`` tensors norm each block's output before the residual; "geglu" feed-forward
                    (gelu_tanh(gate) * up); soft-caps from the keys (tanh(x / cap) * cap on the attention scores
                    and the logits, ``family.softcaps``); the norms' stored 1 + w used as stored
sliding layers      ``self.sliding`` (llama.cpp's reading of the file, ``LoaderArch.sliding``): those layers mask
                    keys ``window`` or more positions back and rotate with their own base (see
                    ``sliding_frequencies``)
temperature         ``LoaderArch.attn_temperature`` (mistral3): queries x 1 + scale ln(floor(p / period) + 1) after rope
no-rope layers      ``LoaderArch.no_rope_layers`` (smollm3: every 4th): q and k are not rotated there
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
import functools
import math
import os
from dataclasses import dataclass

import gguf
import numpy as np

from ropetool.conversion import plan_conversion
from ropetool.errors import RopetoolError
from ropetool.families import Family
from ropetool.io.files import Closing
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.provenance import read_record
from ropetool.llamacpp.state import RopeState, sliding_state, temperature_state
from ropetool.model import ModelFile, trained_context
from ropetool.rope import RopeParams, alibi_slopes, make_params, rope_frequencies, sliding_frequencies

TENSOR = gguf.MODEL_TENSOR
QUERY_BLOCK = 256  # query rows per attention block (bounds the [heads, rows, n] score memory)


def tensor_name(kind: gguf.MODEL_TENSOR, layer: int | None = None, suffix: str = "weight") -> str:
    """The GGUF name of a tensor, from gguf-py's table: ``tensor_name(TENSOR.ATTN_Q, 3) == "blk.3.attn_q.weight"``."""
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
    n_expert: int = 0  # mixture of experts per layer (0: dense)
    n_expert_used: int = 0
    attn_softcap: float | None = None  # tanh soft-capping of the attention scores (gemma2)
    final_softcap: float | None = None  # ... and of the logits
    clamp_kqv: float | None = None  # q, k and v clamped to [-c, c] (mpt)
    parallel: bool = False  # attention and feed-forward from the same input (gptneox, falcon)


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
        raise RopetoolError(f"{K.k(K.ROPE_DIMENSION_COUNT, family.arch)} must be even and within 2..{head_dim}, got {n_rot}")
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
        n_expert=int(get(K.EXPERT_COUNT, 0)),
        n_expert_used=int(get(K.EXPERT_USED_COUNT, 0)),
        attn_softcap=_cap(family, get(K.ATTN_LOGIT_SOFTCAPPING), 50.0, final=False),
        final_softcap=_cap(family, get(K.FINAL_LOGIT_SOFTCAPPING), 30.0, final=True),
        clamp_kqv=_clamp(family, get(K.CLAMP_KQV)),
        parallel=_parallel(family, get(K.USE_PARALLEL_RESIDUAL)),
    )


def _clamp(family: Family, value) -> float | None:
    """The q/k/v clamp llama.cpp applies: the key's value where the architecture's loader reads it (mpt's
    clip_qkv), 0 or absent meaning none."""
    return float(value) if family.loader.reads_key(K.CLAMP_KQV) and value else None


def _parallel(family: Family, key) -> bool:
    """Whether llama.cpp's graph runs the family's attention and feed-forward in parallel (gptneox: the key,
    which its loader requires)."""
    if family.parallel_residual == "key":
        if key is None:
            raise RopetoolError(f"the GGUF lacks {K.k(K.USE_PARALLEL_RESIDUAL, family.arch)}")
        return bool(key)
    return family.parallel_residual == "always"


def _cap(family: Family, value, default: float, final: bool) -> float | None:
    """A soft-cap as llama.cpp applies it: "always" families cap with the key or the default; "final" families
    cap the logits when the key is present and non-zero (and never the attention scores)."""
    if family.softcaps == "always":
        return float(value) if value else default
    if family.softcaps == "final" and final and value:
        return float(value)
    return None


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


def softmax_(x: np.ndarray) -> np.ndarray:
    """exp(x - max) in place along the last axis; returns the row sums (the caller divides)."""
    x -= np.max(x, axis=-1, keepdims=True)
    np.exp(x, out=x)
    return np.sum(x, axis=-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x, axis=-1, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


# --- what runs: a position encoding fixed for one pass ------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One position encoding for a pass over n tokens: rope (an inverse frequency per rotated pair and the
    cos/sin magnitude) or ALiBi (a slope per head).  ``inv_freq`` and ``slopes`` both None: no position
    encoding at all (ALiBi removed)."""

    label: str
    inv_freq: np.ndarray | None = None
    magnitude: float = 1.0
    slopes: np.ndarray | None = None
    sliding: tuple[np.ndarray, float] | None = None  # the sliding-window layers' (inv_freq, magnitude), if any

    def same_as(self, other: "Setting", tol: float = 1e-9) -> bool:
        def close(a, b):
            if a is None or b is None:
                return a is None and b is None
            return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol * np.abs(b)))

        same_sliding = (self.sliding is None) == (other.sliding is None) and (
            self.sliding is None or (close(self.sliding[0], other.sliding[0])
                                     and abs(self.sliding[1] - other.sliding[1]) <= tol * abs(other.sliding[1])))
        return (close(self.inv_freq, other.inv_freq) and close(self.slopes, other.slopes) and same_sliding
                and abs(self.magnitude - other.magnitude) <= tol * abs(other.magnitude))


# --- weights: read when needed -----------------------------------------------------------------------------

class GGUFWeights:
    """A GGUF file's tensors, each read with pread and dequantized to float32 only when asked for."""

    def __init__(self, gf, owns: bool = True):
        self.gf, self.owns = gf, owns
        self.infos = {t.name: t for t in gf.tensors}

    def names(self) -> list[str]:
        return list(self.infos)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(reversed(self.infos[name].shape))

    def stored_type(self, name: str) -> str:
        return self.infos[name].type.name

    def _decode(self, raw, qtype, shape: tuple[int, ...]) -> np.ndarray:
        Q = gguf.GGMLQuantizationType
        e = self.gf._e if hasattr(self.gf, "_e") else "<"
        if qtype == Q.F32:
            return np.frombuffer(raw, dtype=np.dtype(e + "f4")).reshape(shape)
        if qtype == Q.F16:
            return np.frombuffer(raw, dtype=np.dtype(e + "f2")).astype(np.float32).reshape(shape)
        if qtype == Q.BF16:
            wide = np.frombuffer(raw, dtype=np.dtype(e + "u2")).astype(np.uint32) << 16
            return wide.view(np.float32).reshape(shape)
        data = np.frombuffer(raw, dtype=np.uint8).reshape(gguf.quant_shape_to_byte_shape(shape, qtype))
        return gguf.quants.dequantize(data, qtype).astype(np.float32, copy=False)

    def get(self, name: str) -> np.ndarray | None:
        t = self.infos.get(name)
        if t is None:
            return None
        try:
            return self._decode(self.gf.read_bytes(t.data_offset, t.nbytes), t.type, self.shape(name))
        except (NotImplementedError, ValueError) as e:
            raise RopetoolError(f"{name}: cannot read {t.type.name} data ({e})") from None

    def rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` of a 2-D tensor (the token embedding), dequantizing only those rows."""
        t = self.infos[name]
        rows, cols = self.shape(name)
        raw = np.frombuffer(self.gf.read_bytes(t.data_offset, t.nbytes), dtype=np.uint8).reshape(rows, -1)
        unique, inverse = np.unique(ids, return_inverse=True)
        picked = self._decode(np.ascontiguousarray(raw[unique]).tobytes(), t.type, (len(unique), cols))
        return picked[inverse]


class ArrayWeights:
    """Tensors held as arrays, or produced on demand by callables (a conversion plan's tensors)."""

    def __init__(self, tensors: dict, stored: dict[str, str] | None = None):
        self.tensors = tensors
        self.stored = stored or {}

    def names(self) -> list[str]:
        return list(self.tensors)

    def _value(self, name):
        v = self.tensors[name]
        return v() if callable(v) else v

    def shape(self, name: str) -> tuple[int, ...]:
        v = self.tensors[name]
        return tuple(v.shape) if hasattr(v, "shape") else tuple(self._value(name).shape)

    def stored_type(self, name: str) -> str:
        return self.stored.get(name, "F32")

    def get(self, name: str) -> np.ndarray | None:
        if name not in self.tensors:
            return None
        return np.ascontiguousarray(self._value(name), dtype=np.float32)

    def rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        return self.get(name)[ids]


# --- the model ----------------------------------------------------------------------------------

class ReferenceModel(Closing):
    """A decoder's shapes, position encoding and (lazily read) weights, and the forward pass over them."""

    def __init__(self, family: Family, kv: dict, weights, file_rope: FileRope, source: str = ""):
        if not family.reference:
            raise RopetoolError(f"ropetool's reference forward pass does not run {family.arch}: its attention or "
                                "feed-forward is not among the reference's blocks")
        self.family = family
        self.facts = family.loader
        self.source = source
        self.file_rope = file_rope
        self.alibi = file_rope.params.is_alibi
        self.shapes = shapes_from_keys(family, kv, self.alibi)
        self.weights = weights
        self._orig_ctx_key = kv.get(K.k(K.ROPE_SCALING_ORIG_CTX, family.arch))
        # mistral3: the queries' attention temperature, whose period is the original context (llama.cpp's reading)
        self.temperature = None if self.alibi else temperature_state(
            self.facts, kv.get(K.k(K.ATTENTION_TEMPERATURE_SCALE, family.arch)), self._orig_ctx_key,
            self.shapes.context_length)
        # Sliding-window layers (gemma2, gemma3): which, their window, and their base (the record's when ropetool
        # wrote one, else the keys'); their rope otherwise follows the architecture's rule (see sliding_frequencies).
        base = kv.get(K.k(K.ROPE_FREQ_BASE, family.arch), 10000.0)
        self.sliding = None if self.alibi else sliding_state(
            self.facts, self.shapes.n_layer, float(base), 1.0, lambda t: kv.get(K.k(t, family.arch)))
        recorded = kv.get(K.RT_SLIDING_BASE)
        own_base = self.sliding is not None and self.sliding.freq_base_source != "global"
        self.sliding_base = (float(recorded) if isinstance(recorded, float) and file_rope.source == "provenance"
                             else self.sliding.freq_base if own_base else None)  # None: the global rope's base
        self._check_tensors()

    @property
    def rope(self) -> RopeParams:
        """The rope (or ALiBi) method in force."""
        return self.file_rope.params

    @property
    def original_context(self) -> int | None:
        """The trained context the method extends: the method's own, else original_context_length, else
        context_length."""
        return trained_context(self.rope.original_context, self._orig_ctx_key, self.shapes.context_length)

    @property
    def n_vocab(self) -> int:
        return int(self.weights.shape(tensor_name(TENSOR.TOKEN_EMBD))[0])

    def tensor_types(self) -> list[tuple[str, str, int]]:
        """(name, stored type such as "F32" or "Q8_0", number of elements) for every tensor."""
        return [(n, self.weights.stored_type(n), int(math.prod(self.weights.shape(n)))) for n in self.weights.names()]

    def with_weights_from(self, other: "ReferenceModel") -> "ReferenceModel":
        """This model's keys and position encoding with ``other``'s weights (e.g. a quantized GGUF's
        settings with the f32 weights of its Hugging Face source)."""
        mine, theirs = self.shapes, other.shapes
        fields = ("n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "head_dim_v")
        if other.family.arch != self.family.arch or any(getattr(mine, f) != getattr(theirs, f) for f in fields):
            raise RopetoolError(f"the weights of {other.source or 'the other model'} do not fit {self.source or 'this model'}")
        for name in self.weights.names():
            if name in other.weights.names() and other.weights.shape(name) != self.weights.shape(name):
                raise RopetoolError(f"tensor {name} has shape {list(other.weights.shape(name))} in "
                                    f"{other.source or 'the other model'}, {list(self.weights.shape(name))} here")
        new = copy.copy(self)
        new.weights = other.weights
        new._check_tensors()
        return new

    # -- loading --

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, use_provenance: bool = True) -> "ReferenceModel":
        """Open a GGUF file; its tensors are read (and dequantized) when the forward pass needs them.
        The file stays open while the model is used (``close()``, or use it as a context manager)."""
        mf = ModelFile.open(path)
        try:
            return cls.from_model(mf, use_provenance, owns=True)
        except BaseException:
            mf.close()
            raise

    @classmethod
    def from_model(cls, mf: ModelFile, use_provenance: bool = True, owns: bool = False) -> "ReferenceModel":
        """The reference of an opened GGUF (``owns``: :meth:`close` closes it; the vocabulary is skipped)."""
        f = mf.header
        if f.endian != "little":
            raise RopetoolError(f"{mf.path}: the reference reads little-endian GGUF files only")
        kv = {key: field.value for key, field in f.fields.items() if not (field.is_array and key.startswith("tokenizer."))}
        if mf.family is None:
            raise RopetoolError(f"the reference does not know architecture {mf.arch!r}")
        file_rope = _file_rope(mf.record if use_provenance else None, mf.keys_state, mf.family, mf.state.n_layer)
        return cls(mf.family, kv, GGUFWeights(f, owns), file_rope, source=str(mf.path))

    @classmethod
    def from_hf(cls, model_dir: str | os.PathLike, method: str | None = None, **rope_options) -> "ReferenceModel":
        """Plan the f32 conversion of a Hugging Face folder and take its tensors and keys (no file written);
        each tensor is read from the safetensors files when the forward pass needs it.

        ``method`` and ``rope_options`` are convert's (``factor``, ``alpha``, ``original_context``, ...);
        approximations llama.cpp would need are accepted, because the reference evaluates the method
        itself from the provenance keys.
        """
        plan = plan_conversion(model_dir, "f32", method, approximate=True, with_vocab=False, **rope_options)
        kv = {v.key: v.value for v in plan.values}
        tensors = {t.name: _Planned(t) for t in plan.tensors}
        return cls(plan.family, kv, ArrayWeights(tensors),
                   _file_rope(read_record(kv.get), None, plan.family, plan.hparams.n_layer), source=str(model_dir))

    def close(self) -> None:
        if getattr(self.weights, "owns", False):
            self.weights.gf.close()

    def _check_tensors(self) -> None:
        s = self.shapes
        names = set(self.weights.names())
        need = [tensor_name(TENSOR.TOKEN_EMBD), tensor_name(TENSOR.OUTPUT_NORM)]
        block = self.family.block_tensors
        pre = [TENSOR.ATTN_NORM] if "attn_norm.weight" in block else []  # olmo2: post-norms only
        # a parallel block may take its feed-forward input from attn_norm (falcon)
        pre += [TENSOR.FFN_NORM] if "ffn_norm.weight" in block and not s.parallel else []
        post = [TENSOR.ATTN_POST_NORM, TENSOR.FFN_POST_NORM] if not pre else []
        for il in range(s.n_layer):
            need += [tensor_name(kind, il) for kind in (*pre, *post, TENSOR.ATTN_OUT)]
            if tensor_name(TENSOR.ATTN_QKV, il) not in names:
                need += [tensor_name(TENSOR.ATTN_Q, il), tensor_name(TENSOR.ATTN_K, il), tensor_name(TENSOR.ATTN_V, il)]
            if s.n_expert:
                need += [tensor_name(kind, il) for kind in (TENSOR.FFN_GATE_INP, TENSOR.FFN_GATE_EXP, TENSOR.FFN_UP_EXP, TENSOR.FFN_DOWN_EXP)]
                if not 0 < s.n_expert_used <= s.n_expert:
                    raise RopetoolError(f"expert_used_count {s.n_expert_used} is not within 1..{s.n_expert}")
                continue
            need += [tensor_name(TENSOR.FFN_UP, il), tensor_name(TENSOR.FFN_DOWN, il)]
            if self.family.ffn == "swiglu":
                need.append(tensor_name(TENSOR.FFN_GATE, il))
        missing = [n for n in need if n not in names]
        if missing:
            raise RopetoolError(f"the model lacks tensor(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")

    def _has(self, kind, layer=None, suffix="weight") -> bool:
        return tensor_name(kind, layer, suffix) in self.weights.names()

    def _w(self, kind, layer=None, suffix="weight", dtype=np.float32):
        t = self.weights.get(tensor_name(kind, layer, suffix))
        return None if t is None else t.astype(dtype, copy=False)

    # -- position encoding --

    def frequencies(self, n_tokens: int, rope: RopeParams | None = None) -> tuple[np.ndarray, float]:
        """Inverse frequency of each rotated pair and the cos/sin magnitude, for a sequence of n_tokens."""
        if rope is not None:
            return rope_frequencies(rope, self.shapes.n_rot, seq_len=n_tokens)
        f = self.file_rope
        if f.source == "keys":
            return f.state.frequencies(n_tokens)
        return rope_frequencies(f.params, self.shapes.n_rot, seq_len=n_tokens)

    def sliding_frequencies(self, n_tokens: int, rope: RopeParams | None = None,
                            base: float | None = None) -> tuple[np.ndarray, float] | None:
        """The sliding-window layers' (inverse frequencies, magnitude) under ``rope`` (default: the file's): on
        gemma2 the same method with their own base (llama.cpp gives them the global scale), on gemma3 plain
        rope at their base (llama.cpp never scales them; transformers scales only the global layers)."""
        if self.sliding is None:
            return None
        if rope is None and base is None and self.file_rope.source == "keys":
            return self.file_rope.state.of_sliding_layers().frequencies(n_tokens)
        # gemma2 without rope.freq_base_swa (sliding_base None): the sliding layers' rope is the global one
        return sliding_frequencies(rope if rope is not None else self.rope, self.sliding_base if base is None else base,
                                   self.facts.sliding.scale_follows_global, self.shapes.n_rot, n_tokens)

    def slopes(self, n_tokens: int, rope: RopeParams | None = None) -> np.ndarray | None:
        """One ALiBi slope per head for a sequence of n_tokens (None: no ALiBi)."""
        p = self.rope if rope is None else rope
        if not (self.alibi and p.is_alibi):
            return None
        return alibi_slopes(p, self.shapes.n_head, seq_len=n_tokens)

    def setting(self, n_tokens: int, rope: RopeParams | None = None, label: str | None = None) -> Setting:
        """The position encoding a pass over ``n_tokens`` runs: the file's, or ``rope``.

        ``rope`` replaces the file's method (e.g. ``make_params("none", base=...)``; on an ALiBi model,
        ``make_params("none")`` removes the position bias)."""
        if rope is not None and rope.is_alibi and not self.alibi:
            raise RopetoolError(f"{rope.method} is an ALiBi method; {self.facts.name} uses rope")
        if rope is not None and self.alibi and not (rope.is_alibi or rope.method == "none"):
            raise RopetoolError(f"{self.facts.name} uses ALiBi; give an ALiBi method (or none) instead of {rope.method}")
        label = label or (rope.method if rope is not None else self.rope.method)
        if self.alibi:
            return Setting(label, slopes=self.slopes(n_tokens, rope))
        inv, magnitude = self.frequencies(n_tokens, rope)
        sliding = self.sliding_frequencies(n_tokens, rope)
        if sliding is not None:
            sliding = (np.asarray(sliding[0], np.float64), float(sliding[1]))
        return Setting(label, inv_freq=np.asarray(inv, np.float64), magnitude=float(magnitude), sliding=sliding)

    # -- the forward pass --

    def _ids(self, token_ids) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            raise RopetoolError("no tokens to evaluate")
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            raise RopetoolError(f"token ids must be within 0..{self.n_vocab - 1}")
        return ids

    def hidden(self, token_ids, settings: list[Setting], dtype=np.float32,
               lengths: list[int] | None = None, progress=None) -> list[np.ndarray]:
        """The final (normed) hidden states [n, n_embd] under each setting, streaming the weights layer by
        layer: every weight is read once for all settings and dropped after its layer.  ``lengths`` runs a
        setting over the first tokens only (positions 0..length-1, which are the same in a longer pass)."""
        ids = self._ids(token_ids)
        s = self.shapes
        lengths = lengths or [len(ids)] * len(settings)
        norm = NORMS[self.family.norm]
        def cos_sin(inv_freq, magnitude, n):
            if inv_freq is None:
                return None
            angles = np.arange(n, dtype=np.float64)[:, None] * inv_freq[None, :]
            return (np.cos(angles) * magnitude).astype(dtype), (np.sin(angles) * magnitude).astype(dtype)

        trig = [cos_sin(st.inv_freq, st.magnitude, n) for st, n in zip(settings, lengths)]
        trig_sliding = [cos_sin(*(st.sliding or (st.inv_freq, st.magnitude)), n) for st, n in zip(settings, lengths)]
        x0 = self.weights.rows(tensor_name(TENSOR.TOKEN_EMBD), ids[: max(lengths)]).astype(dtype, copy=False)
        if self.family.embed_scale:  # gemma: sqrt(n_embd), in float32 as llama.cpp computes it
            x0 = x0 * np.asarray(math.sqrt(s.n_embd), dtype=dtype)
        if self._has(TENSOR.TOKEN_EMBD_NORM):  # bloom
            x0 = norm(x0, self._w(TENSOR.TOKEN_EMBD_NORM, None, dtype=dtype), self._w(TENSOR.TOKEN_EMBD_NORM, None, "bias", dtype), s.eps)
        xs = [x0[:n].copy() for n in lengths]
        del x0
        unroped = set(self.facts.no_rope_layers(s.n_layer))
        no_trig = [None] * len(settings)
        for il in range(s.n_layer):
            slides = self.sliding is not None and self.sliding.layers[il]
            window = self.sliding.window if slides else None
            layer_trig = no_trig if il in unroped else trig_sliding if slides else trig
            if s.parallel:  # x + attn(norm(x)) + ffn(norm'(x)): the feed-forward reads the block's input
                inputs = [x.copy() for x in xs]
                self._attention_block(il, xs, settings, layer_trig, norm, dtype, window)
                self._ffn_block(il, xs, norm, dtype, inputs)
                del inputs
            else:
                self._attention_block(il, xs, settings, layer_trig, norm, dtype, window)
                self._ffn_block(il, xs, norm, dtype)
            if progress is not None:  # progress(layers done, layers)
                progress(il + 1, s.n_layer)
        w, b = self._w(TENSOR.OUTPUT_NORM, dtype=dtype), self._w(TENSOR.OUTPUT_NORM, None, "bias", dtype)
        return [norm(x, w, b, s.eps) for x in xs]

    def output_weight(self, dtype=np.float32) -> np.ndarray:
        """The output matrix [vocab, n_embd] (the token embedding when the output is tied)."""
        kind = TENSOR.OUTPUT if self._has(TENSOR.OUTPUT) else TENSOR.TOKEN_EMBD
        return self._w(kind, dtype=dtype)

    def project(self, h: np.ndarray, out_w: np.ndarray) -> np.ndarray:
        """Final hidden states [rows, n_embd] to logits with the output matrix (soft-capped where the model is)."""
        logits = h @ out_w.T
        cap = self.shapes.final_softcap
        if cap:
            logits = np.tanh(logits / np.asarray(cap, logits.dtype)) * np.asarray(cap, logits.dtype)
        return logits

    def logits(self, token_ids, rope: RopeParams | None = None, dtype=np.float32) -> np.ndarray:
        """Logits [n_tokens, vocab] for ``token_ids`` at positions 0..n-1 (all at once: for small inputs;
        ``check`` takes them a chunk of positions at a time from :meth:`hidden`)."""
        ids = self._ids(token_ids)
        (h,) = self.hidden(ids, [self.setting(len(ids), rope)], dtype)
        return self.project(h, self.output_weight(dtype))

    def _attention_block(self, il, xs, settings, trig, norm, dtype, window=None):
        s = self.shapes
        w = functools.partial(self._w, layer=il, dtype=dtype)
        # Falcon-40B normalises the attention's input with a norm of its own (attn_norm_2); attn_norm then
        # feeds the feed-forward.
        norm_kind = TENSOR.ATTN_NORM_2 if self._has(TENSOR.ATTN_NORM_2, il) else TENSOR.ATTN_NORM
        nw, nb = w(norm_kind), w(norm_kind, suffix="bias")
        H, Hkv, d = s.n_head, s.n_head_kv, s.head_dim
        if self._has(TENSOR.ATTN_QKV, il):
            qkv_w, qkv_b = w(TENSOR.ATTN_QKV), w(TENSOR.ATTN_QKV, suffix="bias")
        else:  # one product for q, k and v: [q; k; v] rows, as a fused tensor holds them
            qkv_w, qkv_b = self._stacked(il, (TENSOR.ATTN_Q, TENSOR.ATTN_K, TENSOR.ATTN_V), dtype)
        qn = w(TENSOR.ATTN_Q_NORM) if self._has(TENSOR.ATTN_Q_NORM, il) else None
        kn = w(TENSOR.ATTN_K_NORM) if self._has(TENSOR.ATTN_K_NORM, il) else None
        outs = []
        for x, setting, cs in zip(xs, settings, trig):
            qkv = linear(x if nw is None else norm(x, nw, nb, s.eps), qkv_w, qkv_b)  # olmo2: no norm before
            if s.clamp_kqv:  # mpt's clip_qkv, after the bias (llama.cpp's build_qkv)
                np.clip(qkv, -s.clamp_kqv, s.clamp_kqv, out=qkv)
            q, k, v = np.split(qkv, [H * d, H * d + Hkv * d], axis=-1)
            if qn is not None and self.family.qk_norm == "projection":  # olmo2: over the whole projection
                q, k = rms_norm(q, qn, None, s.eps), rms_norm(k, kn, None, s.eps)
            heads = self.family.qk_norm == "head"
            outs.append(self._attend(q, k, v, setting, cs, qn if heads else None, kn if heads else None, window))
        del qkv_w, qkv_b
        ow, ob = w(TENSOR.ATTN_OUT), w(TENSOR.ATTN_OUT, suffix="bias")
        post = w(TENSOR.ATTN_POST_NORM) if self._has(TENSOR.ATTN_POST_NORM, il) else None  # gemma: normed again before the residual
        for x, out in zip(xs, outs):
            o = linear(out, ow, ob)
            x += o if post is None else norm(o, post, None, s.eps)

    @property
    def _query_dim(self) -> int:
        """The queries are scaled by 1/sqrt(this): the head dimension, or n_embd / n_head where llama.cpp's graph
        says so for the layer count (gemma's 27B rule, ``family.query_scale_layers``)."""
        s = self.shapes
        layers = self.family.query_scale_layers or ()
        return s.n_embd // s.n_head if s.n_layer in layers else s.head_dim

    def _stacked(self, il, kinds, dtype):
        """Several weights of a layer stacked by rows (and their biases), read one at a time into place."""
        names = [tensor_name(kind, il) for kind in kinds]
        rows = [self.weights.shape(n)[0] for n in names]
        weight = np.empty((sum(rows), self.weights.shape(names[0])[1]), dtype=dtype)
        bias = None
        at = 0
        for kind, name, r in zip(kinds, names, rows):
            weight[at:at + r] = self.weights.get(name)
            b = self._w(kind, il, "bias", dtype)
            if b is not None:
                if bias is None:
                    bias = np.zeros(sum(rows), dtype=dtype)
                bias[at:at + r] = b
            at += r
        return weight, bias

    def _attend(self, q, k, v, setting, cs, q_norm, k_norm, window=None):
        s = self.shapes
        n = q.shape[0]
        H, Hkv, d, dv = s.n_head, s.n_head_kv, s.head_dim, s.head_dim_v
        q = q.reshape(n, H, d).transpose(1, 0, 2)  # [heads, n, head_dim]
        k = k.reshape(n, Hkv, d).transpose(1, 0, 2)
        v = np.ascontiguousarray(v.reshape(n, Hkv, dv).transpose(1, 0, 2))
        if q_norm is not None:  # qwen3: RMSNorm per head, before rope
            q = rms_norm(q, q_norm, None, s.eps)
            k = rms_norm(k, k_norm, None, s.eps)
        if cs is not None:
            q = rotate(q, cs[0], cs[1], s.n_rot, self.facts.pairing)
            k = rotate(k, cs[0], cs[1], s.n_rot, self.facts.pairing)
        if self.temperature is not None:  # after rope, as llama.cpp's mistral3 graph scales Qcur
            q = q * self.temperature.factors(np.arange(n))[None, :, None].astype(q.dtype)
        g = H // Hkv  # GQA: query head h reads kv head h // g
        q = np.ascontiguousarray(q.reshape(Hkv, g, n, d)) * np.asarray(1.0 / math.sqrt(self._query_dim), dtype=q.dtype)
        kt = np.ascontiguousarray(k.transpose(0, 2, 1))  # [Hkv, d, n]
        slopes = None if setting.slopes is None else setting.slopes.reshape(Hkv, g)[:, :, None, None].astype(q.dtype)
        out = np.empty((Hkv, g, n, dv), dtype=q.dtype)
        block = max(1, QUERY_BLOCK)
        # Query rows a block at a time (memory O(heads * block * n)); row i sees keys 0..i only, so each block
        # multiplies against the keys up to its last row, and masks the square of keys it shares with itself.
        for start in range(0, n, block):
            stop = min(start + block, n)
            rows = stop - start
            scores = (q[:, :, start:stop].reshape(Hkv, g * rows, d) @ kt[:, :, :stop]).reshape(Hkv, g, rows, stop)
            if s.attn_softcap:  # gemma2: tanh(scores / cap) * cap, after the scale and before the mask
                cap = np.asarray(s.attn_softcap, q.dtype)
                scores = np.tanh(scores / cap) * cap
            if slopes is not None:  # ALiBi: -slope * (i - j)
                distance = (np.arange(start, stop)[:, None] - np.arange(stop)[None, :]).astype(q.dtype)
                scores -= slopes * np.maximum(distance, 0)
            scores[..., start:stop] += _causal_mask(rows, q.dtype)
            if window is not None:  # a sliding-window layer: query i sees keys j with i - j < window
                too_far = (np.arange(start, stop)[:, None] - np.arange(stop)[None, :]) >= window
                scores[..., too_far] = -np.inf
            total = softmax_(scores)
            probs = scores.reshape(Hkv, g * rows, stop)
            out[:, :, start:stop] = (probs @ v[:, :stop]).reshape(Hkv, g, rows, dv) / total
        return out.reshape(H, n, dv).transpose(1, 0, 2).reshape(n, H * dv)

    def _ffn_block(self, il, xs, norm, dtype, inputs=None):
        """The feed-forward, added to each x; ``inputs``: a parallel block's inputs, which the feed-forward reads
        instead of x (normed by ffn_norm, or by attn_norm where the layer has no ffn_norm: falcon)."""
        s = self.shapes
        w = functools.partial(self._w, layer=il, dtype=dtype)
        norm_kind = TENSOR.FFN_NORM if self._has(TENSOR.FFN_NORM, il) else TENSOR.ATTN_NORM
        nw, nb = w(norm_kind), w(norm_kind, suffix="bias")
        if s.n_expert:
            return self._moe_block(il, xs, norm, nw, nb, dtype)
        ffn = self.family.ffn
        if ffn in ("swiglu", "geglu"):  # one product for gate and up: [gate; up] rows, as phi3's fused tensor holds them
            up, upb = self._stacked(il, (TENSOR.FFN_GATE, TENSOR.FFN_UP), dtype)
        else:
            up, upb = w(TENSOR.FFN_UP), w(TENSOR.FFN_UP, suffix="bias")
        down, downb = w(TENSOR.FFN_DOWN), w(TENSOR.FFN_DOWN, suffix="bias")
        post = w(TENSOR.FFN_POST_NORM) if self._has(TENSOR.FFN_POST_NORM, il) else None  # gemma
        for i, x in enumerate(xs):  # position-wise: a chunk of positions at a time bounds the intermediate activations
            src = x if inputs is None else inputs[i]
            for start in range(0, x.shape[0], POSITION_CHUNK):
                h = src[start:start + POSITION_CHUNK]
                h = h if nw is None else norm(h, nw, nb, s.eps)  # olmo2: no norm before
                u = linear(h, up, upb)
                if ffn in ("swiglu", "swiglu-fused"):  # [gate; up], gate first
                    g, u = np.split(u, 2, axis=-1)
                    act = silu(g) * u
                elif ffn == "geglu":  # gemma: gelu(gate) * up, tanh-approximated as both sides compute it
                    g, u = np.split(u, 2, axis=-1)
                    act = gelu_tanh(g) * u
                elif ffn == "gelu":
                    act = gelu_tanh(u)
                else:  # pragma: no cover - families.py lists only these
                    raise RopetoolError(f"the reference has no feed-forward {ffn!r}")
                f = linear(act, down, downb)
                x[start:start + POSITION_CHUNK] += f if post is None else norm(f, post, None, s.eps)


    def _moe_block(self, il, xs, norm, nw, nb, dtype):
        """A mixture of experts, routed as transformers (and llama.cpp's build_moe_ffn) route: softmax over
        the router's logits, the top ``expert_used_count`` experts, their weights renormalised to sum to 1
        where the family's llama.cpp graph does (``family.moe_norm_topk``); each expert a SwiGLU.  A shared
        expert (qwen2moe) is added to every token, scaled by sigmoid(its gate)."""
        s = self.shapes
        w = functools.partial(self._w, layer=il, dtype=dtype)
        router = w(TENSOR.FFN_GATE_INP)  # [n_expert, n_embd]
        gates, ups, downs = w(TENSOR.FFN_GATE_EXP), w(TENSOR.FFN_UP_EXP), w(TENSOR.FFN_DOWN_EXP)  # [E, ff, n_embd] x2, [E, n_embd, ff]
        shared = None
        if self._has(TENSOR.FFN_GATE_INP_SHEXP, il):
            shared = (w(TENSOR.FFN_GATE_INP_SHEXP), w(TENSOR.FFN_GATE_SHEXP), w(TENSOR.FFN_UP_SHEXP), w(TENSOR.FFN_DOWN_SHEXP))
        k = s.n_expert_used
        for x in xs:
            for start in range(0, x.shape[0], POSITION_CHUNK):
                h = norm(x[start:start + POSITION_CHUNK], nw, nb, s.eps)
                logits = (h @ router.T).astype(np.float64)
                probs = np.exp(logits - logits.max(axis=1, keepdims=True))
                probs /= probs.sum(axis=1, keepdims=True)
                top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # [m, k] expert ids, best first
                weight = np.take_along_axis(probs, top, axis=1)
                if self.family.moe_norm_topk:
                    weight /= weight.sum(axis=1, keepdims=True)
                out = np.zeros_like(h)
                for e in np.unique(top):
                    rows, slot = np.nonzero(top == e)  # the tokens routed to expert e (each at most once)
                    he = h[rows]
                    act = silu(he @ gates[e].T) * (he @ ups[e].T)
                    out[rows] += (act @ downs[e].T) * weight[rows, slot][:, None].astype(dtype)
                if shared is not None:
                    g_inp, g, u, d = shared
                    gate = 1.0 / (1.0 + np.exp(-(h @ g_inp)))
                    out += ((silu(h @ g.T) * (h @ u.T)) @ d.T) * gate[:, None]
                x[start:start + POSITION_CHUNK] += out


POSITION_CHUNK = 512  # positions per chunk of a position-wise product


@functools.lru_cache(maxsize=8)
def _causal_mask(rows: int, dtype) -> np.ndarray:
    """0 on and below the diagonal, -inf above: added to a block's scores against its own keys."""
    return np.triu(np.full((rows, rows), -np.inf, dtype=dtype), k=1)


class _Planned:
    """A planned tensor of a conversion, read (as float32) when the forward pass asks for it."""

    def __init__(self, t):
        self.t = t
        self.shape = tuple(t.shape)

    def __call__(self):
        return self.t.whole()


def _file_rope(record, state: RopeState | None, family: Family, n_layer: int | None = None) -> FileRope:
    """ropetool's record when the file has one (and it fits the architecture at ``n_layer`` blocks), else the
    keys' reading."""
    if record is not None:
        params = record.rope_params()
        if params.is_alibi != family.alibi_at(n_layer):
            raise RopetoolError(f"{K.RT_METHOD} {params.method} does not fit {family.arch}")
        return FileRope(params, "provenance")
    if state is None:
        raise RopetoolError("the model has no ropetool record of its rope method")
    return FileRope.from_state(state)


__all__ = ["ReferenceModel", "Shapes", "FileRope", "Setting", "GGUFWeights", "ArrayWeights", "shapes_from_keys",
           "tensor_name", "log_softmax"]
