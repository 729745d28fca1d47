"""llama.cpp's own quantizer (``llama_model_quantize``, the code behind ``llama-quantize``), through
llama-cpp-python: the K-quant and legacy file types people ship, made exactly as llama.cpp makes them.

:data:`FILE_TYPES` lists the types it makes without an importance matrix (the others need one, which
ropetool does not compute).  :func:`quantize_gguf` runs it from one GGUF file to another; the callers
(convert, ``ropetool quantize``) give it a temporary output they rename into place.
"""

from __future__ import annotations

import os
from pathlib import Path

from ropetool.errors import RopetoolError

# llama.cpp's file types (LLAMA_FTYPE_MOSTLY_*) that need no importance matrix, by the name model pages use,
# with their approximate bits per weight (for the disk estimate; llama-quantize's table).
FILE_TYPES: dict[str, tuple[str, float]] = {
    "q4_0": ("Q4_0", 4.5),
    "q4_1": ("Q4_1", 5.0),
    "q5_0": ("Q5_0", 5.5),
    "q5_1": ("Q5_1", 6.0),
    "q2_k": ("Q2_K", 2.96),
    "q3_k_s": ("Q3_K_S", 3.5),
    "q3_k_m": ("Q3_K_M", 3.91),
    "q3_k_l": ("Q3_K_L", 4.27),
    "q4_k_s": ("Q4_K_S", 4.58),
    "q4_k_m": ("Q4_K_M", 4.89),
    "q5_k_s": ("Q5_K_S", 5.54),
    "q5_k_m": ("Q5_K_M", 5.7),
    "q6_k": ("Q6_K", 6.56),
    "iq4_nl": ("IQ4_NL", 4.5),
    "iq4_xs": ("IQ4_XS", 4.25),
}


def ftype(name: str) -> int:
    """llama.cpp's LLAMA_FTYPE_MOSTLY_* number for a type name (any case)."""
    import llama_cpp

    key = name.strip().lower()
    if key not in FILE_TYPES:
        raise RopetoolError(f"unknown quantized type {name!r}; llama.cpp's quantizer makes: {', '.join(FILE_TYPES)}")
    return int(getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{FILE_TYPES[key][0]}"))


def estimated_bytes(n_params: int, name: str) -> int:
    return int(n_params * FILE_TYPES[name.strip().lower()][1] / 8)


def quantize_gguf(src: Path, dst: Path, type_name: str, threads: int | None = None) -> None:
    """Quantize the GGUF ``src`` to ``type_name`` into ``dst`` (which llama.cpp creates or truncates).

    Every key is copied (ropetool's record included) and ``general.file_type`` set; 1-D tensors (norms,
    rope tensors) stay F32; tensors whose rows do not fit the type's blocks fall back as llama.cpp decides."""
    import llama_cpp

    from ropetool.llamacpp.runner import quiet_log

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype(type_name)
    params.nthread = threads or max(1, os.cpu_count() or 1)
    with quiet_log() as errors:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        why = "; ".join(e.strip() for e in errors if e.strip()) or f"llama_model_quantize returned {rc}"
        raise RopetoolError(f"llama.cpp could not quantize {src} to {type_name}: {why}")


__all__ = ["FILE_TYPES", "ftype", "estimated_bytes", "quantize_gguf"]
