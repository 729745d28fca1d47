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

from ropetool.errors import RopetoolError
from ropetool.families import Family, family_for_arch
from ropetool.io.gguf_file import GGUFFile, NewValue
from ropetool.lint import ERROR, Finding, lint_file
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import LoaderArch, loader
from ropetool.llamacpp.lowering import Lowered, lower, lower_for_llama_cpp
from ropetool.llamacpp.provenance import Record, read_record
from ropetool.llamacpp.readback import Named, infer_method, meant_method
from ropetool.llamacpp.state import KEYS, LLAMA_CPP, RopeState, read_state
from ropetool.rope import ALIBI_METHODS, RopeParams, kept_parameters, make_params


def trained_context(meant_original: object, orig_key: object, context_length: object) -> int | None:
    """The context a model was trained on: the meant method's original context, else the
    original_context_length key, else context_length (the first positive integer)."""
    for value in (meant_original, orig_key, context_length):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class EditedHeader:
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

    @property
    def architecture(self) -> str | None:
        v = self.get(K.ARCHITECTURE)
        return v if isinstance(v, str) else None

    def get(self, key, default=None):
        f = self.fields.get(key)
        return default if f is None else f.value

    def tensor(self, name):
        return None if name in self._hide else self._header.tensor(name)

    def read_tensor(self, name, max_elements=1 << 20):
        return self._header.read_tensor(name, max_elements)


class ModelFile:
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

    def __enter__(self) -> "ModelFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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

    def rope_edit(self, method: str, options: dict, *, approximate: bool = False) -> "RopeEdit":
        """set-rope's change of method for this model, in two steps: the method's parameters resolved from the
        model (the original base: the record's, else freq_base; the trained context; LongRoPE's tables), then
        lowered for llama.cpp (refusing what it cannot compute unless ``approximate``).  ``method`` is a
        canonical name and ``options`` checked ones."""
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
        context = max(lowered.context_length or trained, trained)
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


__all__ = ["RopeEdit", "ModelFile", "lint_gguf", "EditedHeader", "trained_context"]


def lint_gguf(path: str | os.PathLike) -> list[Finding]:
    """lint's findings for a GGUF file; a RopetoolError when the file cannot be parsed at all."""
    with ModelFile.open(path) as model:
        return model.findings

