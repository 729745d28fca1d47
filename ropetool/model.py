"""One opened model: what a GGUF says and what llama.cpp will do with it, derived once.

A :class:`ModelFile` is opened once (from a GGUF, or from a conversion plan's values) and holds the header,
both readings of the rope state (:func:`ropetool.llamacpp.state.read_state`: what llama.cpp computes, what
the keys document), ropetool's record, the meant and the inferred method, the loader facts and the family,
and ONE trained and ONE extended context.  :meth:`ModelFile.edited` is the same model with keys set,
removed or rope tensors hidden in memory (check's alternatives, set-rope's preview).  Every command takes
one; none re-reads keys.

The trained context (:func:`trained_context`), in this order: the original context of the method as meant
(ropetool's record, or what the keys express), else ``rope.scaling.original_context_length``, else
``context_length``.  The extended context is ``context_length``: what llama.cpp calls n_ctx_train, and what
llama-server and ollama cap a context at.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.families import Family, family_for_arch
from ropetool.io.files import Closing
from ropetool.io.gguf_file import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFFile, Header, NewValue
from ropetool.lint import ERROR, Finding, lint_file
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import LoaderArch, loader
from ropetool.llamacpp.lowering import Lowered, lower, lower_for_llama_cpp
from ropetool.llamacpp.provenance import Record, read_record
from ropetool.llamacpp.readback import Named, infer_method, meant_method
from ropetool.llamacpp.runner import BATCH
from ropetool.llamacpp.state import KEYS, LLAMA_CPP, RopeState, read_state
from ropetool.rope import ALIBI_METHODS, RopeParams, kept_parameters, make_params


def trained_context(meant_original: object, orig_key: object, context_length: object) -> int | None:
    """The context a model was trained on: the meant method's original context, else the
    original_context_length key, else context_length (the first positive integer)."""
    for value in (meant_original, orig_key, context_length):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class EditedHeader(Header):
    """A GGUF header with some keys set or removed and some rope tensors hidden: the file as it would be."""

    @dataclass
    class _Value:
        key: str
        value: object
        is_array: bool = False

        @property
        def scalar(self):
            return self.value

    def __init__(self, header, set_: dict | None = None, remove=(), hide=()):
        self._header = header
        self.path = header.path
        self.tensors = [t for t in header.tensors if t.name not in set(hide)]
        self.fields = {k: f for k, f in header.fields.items() if k not in set(remove)}
        for k, v in (set_ or {}).items():
            self.fields[k] = self._Value(k, v)
        self._hide = set(hide)

    def tensor(self, name):
        return None if name in self._hide else self._header.tensor(name)

    def read_tensor(self, name, max_elements=1 << 20):
        return self._header.read_tensor(name, max_elements)


class ModelFile(Closing):
    """An opened model (module docstring).  ``header`` is a GGUFFile, an :class:`EditedHeader` or any object
    with their ``fields``, ``get``, ``tensor``, ``read_tensor``, ``tensors``, ``architecture`` and ``path``."""

    def __init__(self, header, owns: bool = False):
        self.header = header
        self.path = header.path
        self._owns = owns
        self.arch: str | None = header.architecture
        self.facts: LoaderArch = loader(self.arch)
        self.family: Family | None = family_for_arch(self.arch)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ModelFile":
        """Open and parse a GGUF once; close it with :meth:`close` (or use the model as a context manager)."""
        return cls(GGUFFile(path), owns=True)

    def close(self) -> None:
        if self._owns:
            self.header.close()

    def edited(self, set_: dict | None = None, remove=(), hide=()) -> "ModelFile":
        """This model with keys set (``{key: value}``) or removed and rope tensors hidden, in memory."""
        return ModelFile(EditedHeader(self.header, set_, remove, hide))

    # -- what llama.cpp computes, what the keys and the record say ------------------------------

    @cached_property
    def state(self) -> RopeState:
        """The rope state as llama.cpp computes it."""
        return read_state(self.header, LLAMA_CPP)

    @cached_property
    def keys_state(self) -> RopeState:
        """The rope state as the keys document it (keys llama.cpp ignores taken at their word)."""
        return read_state(self.header, KEYS)

    @cached_property
    def record(self) -> Record | None:
        """ropetool's record of the method meant (None: not written by ropetool)."""
        return read_record(self.header.get)

    @cached_property
    def _named(self) -> tuple[Named, Named]:
        return meant_method(self.record, self.state)

    @property
    def meant(self) -> Named:
        """The method as meant: the record's when readable, else the one the keys express."""
        return self._named[0]

    @property
    def inferred(self) -> Named:
        """The method the keys and tensors alone express."""
        return self._named[1]

    # -- the contexts ---------------------------------------------------------------------------

    @property
    def trained_context(self) -> int | None:
        return trained_context(self.meant.params.get("original_context"), self.state.orig_ctx_key,
                               self.state.context_length)

    @property
    def extended_context(self) -> int | None:
        return self.state.context_length

    @cached_property
    def findings(self) -> list[Finding]:
        """lint's findings (what llama.cpp refuses, ignores or defaults), in rule order."""
        return lint_file(self)

    @property
    def meant_sliding_base(self) -> float | None:
        """The base the sliding-window layers are meant to have: ropetool's record of it, else their own key's;
        None: they take the global base (or the model has no sliding-window layers)."""
        sw = self.state.sliding
        if sw is None:
            return None
        recorded = self.header.get(K.RT_SLIDING_BASE)
        if isinstance(recorded, float) and self.meant.source == "ropetool":
            return float(recorded)
        return sw.freq_base if sw.freq_base_source != "global" else None

    @property
    def unrotated_pairs(self) -> int:
        """The pairs at the end of each (global) head meant to stay unrotated (gemma4's proportional rope): ropetool's
        record of them, else the ones the file's rope_freqs freezes; 0 for other models."""
        recorded = self.header.get(K.RT_UNROTATED)
        if isinstance(recorded, int) and not isinstance(recorded, bool) and self.meant.source == "ropetool":
            return recorded
        return self.state.unrotated_pairs

    def record_differences(self, params: RopeParams, n_rot: int | None = None, n_head: int | None = None) -> list[tuple]:
        """The keys and rope tensors that differ from what ropetool's lowering of ``params`` (the record's
        method) writes for this model, as (key or tensor name, the file's value or None, the record's value or
        None); empty when they are the ones ropetool writes (or it cannot lower them)."""
        st = self.state
        try:
            lowered = lower(params, st.facts, n_rot or st.n_rot or 2, n_head or st.n_head or 1, st.n_ctx_orig or 1,
                            st.n_layer, self.unrotated_pairs)
        except RopetoolError:
            return []
        out = []
        for v in lowered.values:
            have = self.header.get(v.key)
            same = (math.isclose(have, v.value, rel_tol=1e-6) if isinstance(v.value, float) and isinstance(have, float)
                    else have == v.value)
            if not same:
                out.append((v.key, have, v.value))
        out.extend((name, None, None) for name in lowered.tensors if self.header.tensor(name) is None)
        base = self.meant_sliding_base
        if st.sliding is not None and base is not None and not math.isclose(st.sliding.freq_base, base, rel_tol=1e-6):
            out.append((self.key(K.ROPE_FREQ_BASE_SWA), st.sliding.freq_base, base))
        return out

    # -- a new rope setting ---------------------------------------------------------------------

    def rope_edit(self, method: str, options: dict, *, approximate: bool = False,
                  context: int | None = None) -> "RopeEdit":
        """set-rope's change of method for this model, in two steps: the method's parameters resolved from the
        model (the original base: the record's, else freq_base; the trained context; LongRoPE's tables), then
        lowered for llama.cpp (refusing what it cannot compute unless ``approximate``).  ``method`` is a
        canonical name and ``options`` checked ones.  ``context``: the extended context the edit writes
        (context_length; default: the lowering's, at least the trained context)."""
        name = self.require_architecture()
        st, path = self.state, self.path
        warnings: list[str] = []
        if not self.facts.known:
            warnings.append(f"ropetool has no facts about {name}: assuming llama.cpp loads no rope_freqs and no "
                            "longrope tensors for it (YaRN variants and llama3 that need rope_freqs are refused)")
        trained = self.trained_context
        if trained is None:
            raise RopetoolError(f"{path} has no {self.key(K.CONTEXT_LENGTH)}: cannot tell the trained context")
        if not st.n_head:
            raise RopetoolError(f"{path} has no usable {self.key(K.HEAD_COUNT)}")
        recorded = self.record.method if self.record is not None else None
        values = {k: v for k, v in options.items() if v is not None}
        base_recorded = recorded is not None and recorded not in ALIBI_METHODS
        self._refuse_broken_rope_keys(base_needed="base" not in values and not base_recorded)
        if method not in ALIBI_METHODS:
            if not st.n_rot:
                raise RopetoolError(f"{path} has no usable {self.key(K.ROPE_DIMENSION_COUNT)} or head dimension")
            if "base" not in values and base_recorded:
                base = self.record.params.get("base", RopeParams().base)
                if isinstance(base, bool) or not isinstance(base, (int, float)):
                    raise RopetoolError(f"{path}: {K.RT_PARAMS} records base {base!r}, not a number; pass --freq-base")
                values["base"] = float(base)
            elif "base" not in values:
                values["base"] = st.freq_base
                ntk = infer_method(st)
                if ntk.method == "ntk":
                    warnings.append(f"freq_base {st.freq_base:g} looks NTK-scaled (alpha {ntk.params['alpha']:g} over base "
                                    f"{ntk.params['base']:g}); set-rope starts from freq_base as the base: pass "
                                    f"--freq-base {ntk.params['base']:g} to start from the original")
        values.setdefault("original_context", trained)
        for name, value in kept_parameters(method, self.meant.rope).items():  # DeepSeek's YaRN temperature
            values.setdefault(name, value)
        if method == "longrope":
            for opt, table, tname in (("short_factor", st.short_factors, K.ROPE_FACTORS_SHORT_TENSOR),
                                      ("long_factor", st.long_factors, K.ROPE_FACTORS_LONG_TENSOR)):
                if opt not in values:
                    if table is None:
                        raise RopetoolError(f"longrope needs per-pair factors and {path} has no {tname} to take them from")
                    values[opt] = [float(x) for x in table]
        params = make_params(method, **values)
        lowered = lower_for_llama_cpp(params, self.facts, st.n_rot or 0, st.n_head, trained, approximate, n_layer=st.n_layer,
                                      unrotated=self.unrotated_pairs)
        context = int(context) if context is not None else max(lowered.context_length or trained, trained)
        if context > 2**32 - 1:
            raise RopetoolError(f"context length {context} does not fit a u32")
        extra = []
        sw = st.sliding
        if sw is not None and sw.freq_base_source != "global":  # unchanged: recorded as it is
            extra.append(NewValue(K.RT_SLIDING_BASE, K.TYPES[K.RT_SLIDING_BASE], sw.freq_base))
            warnings.append(f"the {sw.count} sliding-window layers keep their rope (base {sw.freq_base:g}"
                            + (", and llama.cpp scales them as the global layers)" if self.facts.sliding.scale_follows_global
                               else ", unscaled: llama.cpp extends the global layers only)"))
        return RopeEdit(params, lowered, context, extra, warnings + list(lowered.warnings), list(lowered.notes))

    # Lint errors that make a file's current rope settings unreadable; set-rope refuses to start from them.
    BROKEN_ROPE_FINDINGS = ("wrong-key-type", "implausible-value", "unknown-scaling-type")

    def _refuse_broken_rope_keys(self, base_needed: bool) -> None:
        """set-rope starts from the file's base, trained context and head/rotary dimensions, and replaces the
        other rope keys.  A rope key of the wrong type, or holding a NaN, infinite or impossible value, means the
        file's settings cannot be read (llama.cpp refuses the file or computes NaN), so set-rope refuses, naming
        the key, rather than guess.  A broken freq_base is tolerated when ropetool's record or --freq-base gives
        the base; broken rope tensors are simply replaced."""
        for f in self.findings:
            if f.severity != ERROR or f.id not in self.BROKEN_ROPE_FINDINGS or f.key not in self.header.fields:
                continue
            if f.key == self.key(K.ROPE_FREQ_BASE) and not base_needed:
                continue
            raise RopetoolError(f"{self.path}: {f.message}; set-rope cannot tell what the file's rope settings are "
                                f"(fix or remove {f.key} first with `ropetool set` / `ropetool unset`)")

    # -- memory ---------------------------------------------------------------------------------

    @property
    def weights_bytes(self) -> int:
        """The bytes of every tensor, as llama.cpp maps them from the file."""
        return sum(t.nbytes for t in self.header.tensors)

    def kv_cache(self, n_ctx: int, cache_type: str = "f16", *, n_seq: int = 1, swa_full: bool = False,
                 n_batch: int = 2048, n_ubatch: int = 512, flash_attn: bool = True) -> "KVCache":
        """The KV cache llama.cpp allocates for a context of ``n_ctx`` tokens with K and V of ``cache_type``
        (``llama_kv_cache``, ``llama_kv_cache_iswa`` and ``llama_context`` in src/ of llama.cpp), from the file's
        shapes:

        * cells: n_ctx padded to 256 (llama_context); the global layers hold that many;
        * sliding-window layers (``RopeState.sliding``): ``min(cells, window x n_seq + n_ubatch)`` padded to 256,
          unless ``swa_full`` (llama.cpp's C API defaults it to true; llama-server and llama-cli to false);
          n_ubatch is ``min(n_ctx, n_batch, n_ubatch)`` as llama_context clamps it;
        * per layer, K is key_length x head_count_kv wide and V value_length x head_count_kv (head_count_kv a
          scalar or a per-layer array, 0 for a layer with no cache; key/value_length_swa on sliding layers;
          without flash attention V is as wide as the widest layer's, as llama.cpp transposes it); with multi-head
          latent attention (key_length_mla and value_length_mla both set) only K is cached (the compressed
          latent and the rope part: key_length wide, one head);
        * bytes: ggml's row size of the type (f32: 4 bytes a value; f16: 2; q8_0: 34 bytes per 32; q4_0: 18 per 32); a
          quantized type whose block does not divide every layer's key and value head size is refused, as
          llama_init_from_model refuses it (a RopetoolError).

        ``n_seq`` sequences share one unified cache (llama-server's default slots: 4).  A hybrid model's recurrent
        layers (``RopeState.recurrent_layers``) hold no KV cache (llama_memory_hybrid's filter); their own state
        (llama_memory_recurrent) is not counted, nor are sliding windows on architectures ropetool does not model
        (``LoaderArch.sliding``)."""
        if cache_type not in _GGML_TYPES:
            raise RopetoolError(f"unknown KV cache type {cache_type!r}; choose {', '.join(_GGML_TYPES)}")
        if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or n_ctx < 1:
            raise RopetoolError(f"the context must be a positive number of tokens, got {n_ctx!r}")
        n_layer = self.count(K.BLOCK_COUNT)
        if not n_layer or n_layer > K.MAX_LAYERS:
            raise RopetoolError(f"{self.path} has no usable {self.key(K.BLOCK_COUNT)}: cannot size its KV cache")
        heads = self._per_layer(K.HEAD_COUNT, n_layer, None)
        heads_kv = self._per_layer(K.HEAD_COUNT_KV, n_layer, heads)
        head_k, head_v = self.head_sizes
        head_k_swa = self.count(K.KEY_LENGTH_SWA) or head_k
        head_v_swa = self.count(K.VALUE_LENGTH_SWA) or head_v
        mla = bool(self.count(K.KEY_LENGTH_MLA)) and bool(self.count(K.VALUE_LENGTH_MLA))
        sliding = self.state.sliding
        slides = list(sliding.layers) if sliding is not None and len(sliding.layers) == n_layer else [False] * n_layer
        cells = _pad(n_ctx, 256)
        ubatch = min(n_ctx, n_batch, n_ubatch)
        sliding_cells = None
        if sliding is not None and any(slides):
            sliding_cells = cells if swa_full else _pad(min(cells, sliding.window * n_seq + ubatch), 256)
        block = GGML_QUANT_SIZES[_GGML_TYPES[cache_type]][0]
        for il in range(n_layer):  # llama_init_from_model refuses a quantized cache whose blocks split a head
            for what, size in (("k", head_k_swa if slides[il] else head_k), ("v", head_v_swa if slides[il] else head_v)):
                if block > 1 and size % block:
                    raise RopetoolError(f"llama.cpp makes no {cache_type} KV cache for this model: its block of {block} "
                                        f"values does not divide a head's {size} ({what}, layer {il})")
        widths_v = [(head_v_swa if slides[il] else head_v) * heads_kv[il] for il in range(n_layer)]
        k_bytes = v_bytes = layers = sliding_bytes = 0
        recurrent = set(self.state.recurrent_layers)  # a hybrid's layers without attention hold no KV cache
        for il in range(n_layer):
            if heads_kv[il] == 0 or il in recurrent:
                continue
            rows = sliding_cells if slides[il] else cells
            k = _row_bytes(cache_type, (head_k_swa if slides[il] else head_k) * heads_kv[il]) * rows
            v = 0 if mla else _row_bytes(cache_type, widths_v[il] if flash_attn else max(widths_v)) * rows
            k_bytes, v_bytes, layers = k_bytes + k, v_bytes + v, layers + 1
            sliding_bytes += (k + v) if slides[il] else 0
        return KVCache(n_ctx, cache_type, cells, sliding_cells, layers, sum(1 for il in range(n_layer)
                       if slides[il] and heads_kv[il]), k_bytes, v_bytes, mla, sliding_bytes)

    def run_bytes(self, n_ctx: int, cache_type: str = "f32", batch: int = BATCH) -> int:
        """About what llama.cpp allocates for a context of ``n_ctx`` as :class:`~ropetool.llamacpp.runner.LlamaCpp`
        runs it: the KV cache (:meth:`kv_cache`, the sliding windows full as the C API has them; none where the
        header cannot size it, which llama.cpp then refuses in its own words), one batch's attention scores and
        their softmax (batch x n_ctx x heads x 4, twice) and one batch's logits (the weights, mapped from the
        file, are not counted)."""
        try:
            kv = self.kv_cache(n_ctx, cache_type, swa_full=True, n_batch=batch, n_ubatch=batch).bytes
        except RopetoolError:
            kv = 0
        tokens = self.header.fields.get(K.TOKENIZER_TOKENS)
        n_vocab = tokens.count if tokens is not None and tokens.is_array else 1
        return kv + 2 * min(batch, n_ctx) * n_ctx * (self.state.n_head or 1) * 4 + batch * n_vocab * 4

    def memory(self, n_ctx: int, **kv) -> "Memory":
        """The weights and the KV cache at ``n_ctx`` for each of :data:`KV_CACHE_TYPES` (``kv``: as kv_cache's)."""
        caches, unavailable = {}, {}
        for t in KV_CACHE_TYPES:
            try:
                caches[t] = self.kv_cache(n_ctx, t, **kv)
            except RopetoolError as e:
                unavailable[t] = str(e)
        return Memory(n_ctx, self.weights_bytes, caches, unavailable)

    def count(self, template: str) -> int | None:
        """A positive count key (the first layer's, for a per-layer array)."""
        v = self.header.get(self.key(template))
        if hasattr(v, "__len__") and not isinstance(v, str):
            v = v[0] if len(v) else None
        return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 else None

    @property
    def head_sizes(self) -> tuple[int, int]:
        """A key head's and a value head's size as llama.cpp's loader takes them: key_length and value_length,
        each else embedding_length / head_count (0 when the keys cannot say)."""
        n_embd, n_head = self.count(K.EMBEDDING_LENGTH) or 0, self.count(K.HEAD_COUNT)
        default = n_embd // n_head if n_head else 0
        return self.count(K.KEY_LENGTH) or default, self.count(K.VALUE_LENGTH) or default

    def _per_layer(self, template: str, n_layer: int, default: list[int] | None) -> list[int]:
        """A count per layer from a scalar or a per-layer array key (llama.cpp's get_key_or_arr)."""
        key = self.key(template)
        v = self.header.get(key)
        if v is None:
            if default is None:
                raise RopetoolError(f"{self.path} has no {key}: cannot size its KV cache")
            return list(default)
        values = list(v) if hasattr(v, "__len__") and not isinstance(v, str) else [v] * n_layer
        if len(values) != n_layer or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 0
                                             for x in values):
            raise RopetoolError(f"{self.path}: {key} is not a count or {n_layer} counts: cannot size its KV cache")
        return [int(x) for x in values]

    # -- helpers --------------------------------------------------------------------------------

    def key(self, template: str) -> str:
        """A key of this model's architecture (``{arch}.rope.freq_base``)."""
        return K.k(template, self.arch or "?")

    def require_architecture(self) -> str:
        if self.arch is None:
            raise RopetoolError(f"{self.path} has no {K.ARCHITECTURE}")
        return self.arch


@dataclass
class RopeEdit:
    """A rope method resolved for a model and lowered for llama.cpp: what set-rope writes (with
    :func:`ropetool.llamacpp.lowering.edit_records`) and eval applies."""

    params: RopeParams
    lowered: Lowered
    context: int  # the extended context: context_length of the edited file
    extra: list[NewValue]  # records besides the lowering's (the sliding-window layers' base)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# The KV cache types a model's memory shows: llama.cpp's default (f16) and the two quantized ones people pick for
# long contexts (--cache-type-k/-v; a quantized V cache needs flash attention).  kv_cache sizes f32 too (ropetool's runs).
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")
_GGML_TYPES = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16, "q8_0": GGMLQuantizationType.Q8_0, "q4_0": GGMLQuantizationType.Q4_0}


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _row_bytes(cache_type: str, width: int) -> int:
    """ggml_row_size: the bytes of ``width`` values of a type (whole blocks; llama.cpp aborts otherwise)."""
    block, size = GGML_QUANT_SIZES[_GGML_TYPES[cache_type]]
    if width % block:
        raise RopetoolError(f"a {cache_type} KV cache needs rows of a multiple of {block} values; this model's are "
                            f"{width} wide (llama.cpp cannot make it)")
    return width // block * size


@dataclass(frozen=True)
class KVCache:
    """The KV cache llama.cpp allocates for a context (:meth:`ModelFile.kv_cache`)."""

    n_ctx: int  # the context asked for
    cache_type: str
    cells: int  # of the global layers: n_ctx padded to 256
    sliding_cells: int | None  # of the sliding-window layers (None: none)
    layers: int  # layers that hold a cache
    sliding_layers: int
    k_bytes: int
    v_bytes: int
    mla: bool = False  # multi-head latent attention: the compressed keys alone
    sliding_bytes: int = 0  # of them, the sliding-window layers' cache (llama_kv_cache_iswa's second cache)

    @property
    def bytes(self) -> int:
        return self.k_bytes + self.v_bytes


def size_words(n: int) -> str:
    """Bytes as a person reads them: MiB below a GiB, else GiB (binary units, as llama.cpp logs them)."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class Memory:
    """What running a model at a context holds in memory: its weights (mapped from the file) and its KV cache
    for each cache type (:meth:`ModelFile.memory`); llama.cpp's compute buffers are not counted."""

    context: int
    weights_bytes: int
    caches: dict  # cache type -> KVCache
    unavailable: dict  # cache type -> why llama.cpp cannot make it

    def as_dict(self) -> dict:
        return {"context": self.context, "weights_bytes": self.weights_bytes,
                "kv_cache": {t: {"bytes": c.bytes, "k_bytes": c.k_bytes, "v_bytes": c.v_bytes, "cells": c.cells,
                                 "sliding_cells": c.sliding_cells, "layers": c.layers, "sliding_layers": c.sliding_layers,
                                 "fits_in_bytes": self.weights_bytes + c.bytes}
                             for t, c in self.caches.items()},
                "unavailable": dict(self.unavailable)}

    def words(self) -> str:
        """One line: ``weights 92.1 MiB; KV cache at 32768 tokens: f16 720.0 MiB (fits in 812.1 MiB), ...``."""
        return memory_words(self.as_dict())


def memory_words(mem: dict) -> str:
    """:meth:`Memory.as_dict` (or inspect's memory section) in one line."""
    if "error" in mem:
        return f"not sized: {mem['error']}"
    parts = [f"{t} {size_words(c['bytes'])} (fits in {size_words(c['fits_in_bytes'])})" for t, c in mem["kv_cache"].items()]
    parts += [f"{t} not available" for t in mem["unavailable"]]
    first = next(iter(mem["kv_cache"].values()), None)
    where = ""
    if first is not None and first["sliding_cells"] is not None:
        where = (f"; {first['sliding_layers']} sliding-window layers hold {first['sliding_cells']} cells, the other "
                 f"{first['layers'] - first['sliding_layers']} {first['cells']}")
    return (f"weights {size_words(mem['weights_bytes'])}; KV cache at {mem['context']} tokens: {', '.join(parts)}{where} "
            "(llama.cpp's compute buffers not counted)")


__all__ = ["RopeEdit", "ModelFile", "KVCache", "Memory", "memory_words", "size_words", "KV_CACHE_TYPES", "lint_gguf", "EditedHeader", "trained_context"]


def lint_gguf(path: str | os.PathLike) -> list[Finding]:
    """lint's findings for a GGUF file; a RopetoolError when the file cannot be parsed at all."""
    with ModelFile.open(path) as model:
        return model.findings

