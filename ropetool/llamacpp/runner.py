"""Run llama.cpp (through llama-cpp-python) on a GGUF and return the logits of every position."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from ropetool.errors import RopetoolError

GGML_TYPE_F32 = 0


@dataclass
class LlamaRun:
    logits: np.ndarray  # [n_tokens, n_vocab], float64
    device: str  # "cpu" or the GPU backend's name
    n_ctx: int  # the context llama.cpp allocated (padded to 256 by llama.cpp itself)


def gpu_available() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


_SILENT = None


@contextlib.contextmanager
def _quiet_log(enabled: bool):
    """llama.cpp logs (warnings included) through llama-cpp-python's callback; silence it unless asked."""
    global _SILENT
    if not enabled:
        yield
        return
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    if _SILENT is None:
        _SILENT = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
    llama_cpp.llama_log_set(_SILENT, ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def load(path, n_ctx: int, device: str = "cpu", verbose: bool = False):
    """A llama_cpp.Llama for ``path`` with an f32 KV cache (so the check measures rope, not cache rounding)."""
    import llama_cpp

    if device not in ("cpu", "gpu"):
        raise RopetoolError(f"unknown device {device!r}; choose cpu or gpu")
    if device == "gpu" and not gpu_available():
        raise RopetoolError("this llama-cpp-python was built without a GPU backend (CUDA or Metal); use --device cpu")
    try:
        with _quiet_log(not verbose):
            return llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=min(n_ctx, 512),
                logits_all=True,
                n_gpu_layers=-1 if device == "gpu" else 0,
                type_k=GGML_TYPE_F32,
                type_v=GGML_TYPE_F32,
                flash_attn=False,
                verbose=verbose,
                n_threads=max(1, os.cpu_count() or 1),
            )
    except (ValueError, RuntimeError) as e:
        raise RopetoolError(f"llama.cpp could not load {path}: {e}") from None


def tokenize(llm, text: str, add_bos: bool = True) -> list[int]:
    return list(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))


def run(llm, ids: list[int], device: str = "cpu") -> LlamaRun:
    """Evaluate ``ids`` at positions 0..n-1 in one sequence and return all logits."""
    if len(ids) > llm.n_ctx():
        raise RopetoolError(f"{len(ids)} tokens do not fit the context of {llm.n_ctx()}")
    llm.reset()
    llm.eval(list(ids))
    logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
    if not np.isfinite(logits).all():
        raise RopetoolError("llama.cpp produced non-finite logits")
    return LlamaRun(logits, device, llm.n_ctx())


def llama_cpp_logits(path, ids: list[int], device: str = "cpu", verbose: bool = False) -> LlamaRun:
    llm = load(path, n_ctx=max(len(ids), 16), device=device, verbose=verbose)
    try:
        with _quiet_log(not verbose):
            return run(llm, ids, device)
    finally:
        llm.close()
