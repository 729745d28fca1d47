"""Run llama.cpp (llama-cpp-python's bindings of its C API) on a GGUF and take its logits batch by batch.

:class:`LlamaCpp` loads a model with an f32 KV cache (so a comparison measures rope, not cache rounding)
and decodes a token sequence at positions 0..n-1 one batch at a time; :meth:`LlamaCpp.logits` yields each
batch's logits ([batch, vocab] float32) as soon as llama.cpp has them, so no caller ever holds positions x
vocabulary for the whole sequence.  Only llama-cpp-python's public functions (``llama_cpp.llama_*``) are
used, not its high-level ``Llama`` class (which keeps n_ctx x vocab logits when asked for all positions).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from typing import Iterator

import numpy as np

from ropetool.errors import RopetoolError

GGML_TYPE_F32 = 0
BATCH = 512  # tokens per llama_decode call (and per logits chunk)


def gpu_available() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


_SILENT = None
_ERRORS: list[str] = []
GGML_LOG_LEVEL_ERROR = 4


@contextlib.contextmanager
def quiet_log(enabled: bool = True):
    """llama.cpp logs (warnings included) through a callback; silence it while loading and running.
    Yields the list of error lines llama.cpp logged meanwhile (to explain a failure in one line)."""
    global _SILENT
    errors: list[str] = []
    if not enabled:
        yield errors
        return
    import llama_cpp
    from llama_cpp import _logger

    if _SILENT is None:
        def collect(level, text, user_data):
            if level == GGML_LOG_LEVEL_ERROR and len(_ERRORS) < 64:
                _ERRORS.append(text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))
        _SILENT = llama_cpp.llama_log_callback(collect)
    _ERRORS.clear()
    llama_cpp.llama_log_set(_SILENT, ctypes.c_void_p(0))
    try:
        yield errors
    finally:
        errors.extend(_ERRORS)
        _ERRORS.clear()
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def padded_context(n_tokens: int) -> int:
    """The context llama.cpp allocates for ``n_tokens``: it pads n_ctx up to a multiple of 256."""
    return max(256, -(-n_tokens // 256) * 256)


class LlamaCpp:
    """A model and a context, freed by :meth:`close` (or as a context manager)."""

    def __init__(self, path, n_ctx: int, device: str = "cpu", verbose: bool = False, batch: int = BATCH,
                 flash_attn: bool = False):
        import llama_cpp as L

        if device not in ("cpu", "gpu"):
            raise RopetoolError(f"unknown device {device!r}; choose cpu or gpu")
        if device == "gpu" and not gpu_available():
            raise RopetoolError("this llama-cpp-python was built without a GPU backend (CUDA or Metal); use --device cpu")
        self.L, self.path, self.device, self.verbose = L, str(path), device, verbose
        self.model = self.ctx = None
        self.batch_size = max(1, min(batch, n_ctx))
        threads = max(1, os.cpu_count() or 1)
        with quiet_log(not verbose):
            L.llama_backend_init()
            mparams = L.llama_model_default_params()
            mparams.n_gpu_layers = -1 if device == "gpu" else 0
            self.model = L.llama_model_load_from_file(self.path.encode(), mparams)
            if not self.model:
                raise RopetoolError(f"llama.cpp could not load {path} (run with --verbose to see why)")
            cparams = L.llama_context_default_params()
            cparams.n_ctx = n_ctx
            cparams.n_batch = self.batch_size
            cparams.n_ubatch = self.batch_size
            cparams.n_seq_max = 1
            cparams.n_threads = threads
            cparams.n_threads_batch = threads
            cparams.type_k = GGML_TYPE_F32
            cparams.type_v = GGML_TYPE_F32
            cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
            cparams.no_perf = True
            self.ctx = L.llama_init_from_model(self.model, cparams)
            if not self.ctx:
                self.close()
                raise RopetoolError(f"llama.cpp could not create a context of {n_ctx} tokens for {path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.n_ctx = int(L.llama_n_ctx(self.ctx))

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 16
        tokens = (self.L.llama_token * n_max)()
        n = self.L.llama_tokenize(self.vocab, data, len(data), tokens, n_max, add_bos, False)
        if n < 0:
            raise RopetoolError("llama.cpp could not tokenize the text")
        return list(tokens[:n])

    def logits(self, ids: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Decode ``ids`` at positions 0..n-1 in one sequence; yield (first position, logits [rows, vocab])."""
        L = self.L
        if len(ids) > self.n_ctx:
            raise RopetoolError(f"{len(ids)} tokens do not fit the context of {self.n_ctx}")
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        batch = L.llama_batch_init(self.batch_size, 0, 1)
        try:
            for start in range(0, len(ids), self.batch_size):
                chunk = ids[start:start + self.batch_size]
                for i, token in enumerate(chunk):
                    batch.token[i] = int(token)
                    batch.pos[i] = start + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = 1
                batch.n_tokens = len(chunk)
                with quiet_log(not self.verbose):
                    rc = L.llama_decode(self.ctx, batch)
                if rc != 0:
                    raise RopetoolError(f"llama.cpp could not evaluate the tokens (llama_decode returned {rc})")
                out = np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(len(chunk) * self.n_vocab,))
                rows = out.reshape(len(chunk), self.n_vocab).copy()
                if not np.isfinite(rows).all():
                    raise RopetoolError("llama.cpp produced non-finite logits")
                yield start, rows
        finally:
            L.llama_batch_free(batch)

    def close(self) -> None:
        with quiet_log(not self.verbose):
            if self.ctx:
                self.L.llama_free(self.ctx)
                self.ctx = None
            if self.model:
                self.L.llama_model_free(self.model)
                self.model = None

    def __enter__(self) -> "LlamaCpp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


PREFLIGHT_TIMEOUT = 600  # seconds: loading the largest models from a cold disk


def preflight(path, n_ctx: int, device: str = "cpu") -> None:
    """Load ``path`` and decode two tokens with llama.cpp in a child process, as :class:`LlamaCpp` will.

    llama.cpp and ggml abort the whole process (GGML_ASSERT) on some inputs no check of the header has
    foreseen; run in a child, such an abort becomes a one-line RopetoolError naming llama.cpp's assertion
    instead of the caller's death."""
    import signal
    import subprocess
    import sys

    code = ("import sys; from ropetool.llamacpp.runner import LlamaCpp\n"
            "with LlamaCpp(sys.argv[1], n_ctx=int(sys.argv[2]), device=sys.argv[3], verbose=True) as llm:\n"
            "    ids = [min(1, llm.n_vocab - 1), min(2, llm.n_vocab - 1)]\n"
            "    list(llm.logits(ids))\n")
    # On an abort ggml forks a child per aborting thread to attach gdb; two threads aborting at once each inherit
    # the other's pipe and wait forever (and a grandchild holding our pipes would outlive the timeout).
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(path), str(n_ctx), device], capture_output=True,
                              text=True, errors="replace", timeout=PREFLIGHT_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        raise RopetoolError(f"llama.cpp did not load {path} and evaluate two tokens within {PREFLIGHT_TIMEOUT} s") from None
    if proc.returncode == 0:
        return
    lines = [x.strip() for x in proc.stderr.splitlines() if x.strip()]
    said = next((x for x in lines if "GGML_ASSERT" in x or "error" in x.lower() or "Error:" in x), lines[-1] if lines else "")
    said = " ".join(re.sub(r"^\S*/", "", said).split())[:300]  # ".../ggml-cpu/ops.cpp:4132: GGML_ASSERT(...)" -> "ops.cpp:..."
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise RopetoolError(f"llama.cpp aborted ({name}) loading or running {path}: {said or 'no message'}")
    raise RopetoolError(f"llama.cpp could not load or run {path}: {said or f'exit code {proc.returncode}'}")


def llama_cpp_logits(path, ids: list[int], device: str = "cpu", verbose: bool = False) -> np.ndarray:
    """All logits at once ([n, vocab] float64): for small inputs and tests."""
    with LlamaCpp(path, n_ctx=padded_context(len(ids)), device=device, verbose=verbose) as llm:
        return np.concatenate([rows for _, rows in llm.logits(list(ids))]).astype(np.float64)


__all__ = ["LlamaCpp", "llama_cpp_logits", "preflight", "gpu_available", "padded_context", "quiet_log", "BATCH"]
