"""ropetool's record in a GGUF of the method the user asked for (``ropetool.rope.*``; llama.cpp ignores it).

The keys llama.cpp reads say what it computes; the record says what was meant: "NTK-aware alpha 8", not
only "freq_base 82685", and a dynamic method that llama.cpp gets baked at one length.  :func:`record`
writes it (convert, set-rope); :func:`read_record` reads it back (inspect, lint, check, the reference).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import NewValue
from ropetool.llamacpp import keys as K
from ropetool.rope import RopeParams, make_params


@dataclass
class Record:
    method: str  # as stored in ropetool.rope.method
    params: dict  # ropetool.rope.params without "method"
    exact: bool | None
    approx_error: float  # ropetool.rope.approx_max_rel_error (0 when absent)
    note: str | None = None
    notes: list[str] = field(default_factory=list)  # what could not be read
    params_error: str | None = None  # why ropetool.rope.params is not a JSON object, when it is not

    def rope_params(self) -> RopeParams:
        """The recorded method as validated parameters; a RopetoolError when the record cannot be used."""
        if self.params_error:
            raise RopetoolError(self.params_error)
        try:
            return make_params(self.method, **self.params)
        except TypeError as e:
            raise RopetoolError(f"{K.RT_PARAMS}: {e}") from None


def read_record(get: Callable[[str], object]) -> Record | None:
    """The record, from ``get`` (a GGUFFile's or a dict's ``get``); None when the file has no method recorded."""
    method = get(K.RT_METHOD)
    if not isinstance(method, str):
        return None
    notes, params, error = [], {}, None
    raw = get(K.RT_PARAMS)
    if isinstance(raw, str):
        try:
            params = json.loads(raw)
        except ValueError as e:
            error = f"{K.RT_PARAMS} is not valid JSON: {e}"
            params = {}
        if not isinstance(params, dict):
            error = error or f"{K.RT_PARAMS} is not a JSON object"
            params = {}
        if error:
            notes.append(f"{error}; ignored")
    params.pop("method", None)
    exact = get(K.RT_EXACT)
    approx = get(K.RT_APPROX_ERROR)
    approx = float(approx) if isinstance(approx, float) and math.isfinite(approx) else 0.0
    note = get(K.RT_NOTE)
    return Record(method, params, exact if isinstance(exact, bool) else None, approx,
                  note if isinstance(note, str) else None, notes, error)


def record(params: RopeParams, exact: bool, approx_error: float, notes: list[str], version: str) -> list[NewValue]:
    """The ropetool.* keys recording the method and how exactly it reached the file."""
    values = [
        (K.RT_VERSION, version),
        (K.RT_METHOD, params.method),
        (K.RT_PARAMS, json.dumps(params.as_dict(), sort_keys=True)),
        (K.RT_EXACT, bool(exact)),
    ]
    if notes:
        values.append((K.RT_NOTE, "; ".join(notes)))
    if not exact:
        values.append((K.RT_APPROX_ERROR, float(approx_error)))
    return [NewValue(key, K.TYPES[key], value) for key, value in values]


__all__ = ["Record", "read_record", "record"]
