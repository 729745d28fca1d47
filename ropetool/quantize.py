"""``ropetool quantize``: an existing GGUF to a K-quant (or legacy) type, by llama.cpp's own quantizer.

Every key is kept (the rope keys and ropetool's record included) and 1-D tensors (norms, rope tensors)
stay F32, as ``llama-quantize`` does; the output is written to a temporary file renamed into place.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import GGUFFile, atomic_path, check_output
from ropetool.llamacpp.quantize import FILE_TYPES, estimated_bytes, quantize_gguf


def default_name(path: Path, type_name: str) -> str:
    return f"{path.stem}-{type_name.upper()}.gguf"


def quantize(path, out, type_name: str, force: bool = False, notify: Callable[[str], None] | None = None) -> Path:
    """Quantize the GGUF ``path`` to ``type_name`` (q4_k_m, q5_k_m, q6_k, q4_0, ...) into ``out``."""
    path, out = Path(path), Path(out)
    key = type_name.strip().lower()
    if key not in FILE_TYPES:
        raise RopetoolError(f"unknown type {type_name!r}; llama.cpp's quantizer makes: {', '.join(FILE_TYPES)}")
    if out.is_dir():
        out = out / default_name(path, key)
    check_output(out, source=path, force=force, in_place=False)
    with GGUFFile(path) as gf:  # a readable GGUF, and its size for the disk estimate
        n_params = sum(math.prod(t.shape) for t in gf.tensors)
    need = estimated_bytes(n_params, key)
    free = shutil.disk_usage(out.parent).free
    if need > free:
        raise RopetoolError(f"{key.upper()} of {path} needs about {need / 1e9:.2f} GB beside {out}; {free / 1e9:.2f} GB is free")
    if notify:
        notify(f"quantizing {path.name} to {key.upper()} with llama.cpp (about {need / 1e9:.2f} GB)")
    with atomic_path(out, replace=force) as (_, tmp):
        quantize_gguf(path, Path(tmp), key)
    return out


__all__ = ["quantize", "default_name"]
