"""Run llama.cpp (llama-cpp-python's bindings of its C API) on a GGUF and take its logits batch by batch.

:class:`LlamaCpp` loads a model with an f32 KV cache unless asked otherwise (so a comparison measures rope, not cache rounding)
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
from ropetool.io.gguf_file import T

GGML_TYPE_F32 = 0
# KV cache types a run can ask for (enum ggml_type) and their bytes per element (q8_0: 34 bytes per 32 values)
CACHE_TYPES = {"f32": (0, 4.0), "f16": (1, 2.0), "q8_0": (8, 34 / 32)}
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


def no_extra_buffers(params):
    """llama.cpp's CPU "extra" weight buffers (repacked layouts, AMX tiles) off: on a CPU that reports AMX,
    a build for the native CPU multiplies q8_0 and other quantized weights through the AMX kernels, which
    crashed (SIGSEGV in ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36, a Xeon VM with amx_int8) on
    the first decode.  The plain layouts compute the same products.  Returns ``params``."""
    params.use_extra_bufts = False
    return params


class RunSizes:
    """The sizes that decide what a run of ``n`` tokens holds in memory, from a file's keys."""

    def __init__(self, gf):
        from ropetool.llamacpp import keys as K
        from ropetool.llamacpp.state import first_int

        arch = gf.architecture or "?"

        def get(template, default=1):
            v = first_int(gf, K.k(template, arch))
            return v if v and v > 0 else default

        self.n_layer, self.n_embd = get(K.BLOCK_COUNT), get(K.EMBEDDING_LENGTH)
        self.n_head = get(K.HEAD_COUNT)
        self.n_head_kv = get(K.HEAD_COUNT_KV, self.n_head)
        self.head_k = get(K.KEY_LENGTH, max(1, self.n_embd // self.n_head))
        self.head_v = get(K.VALUE_LENGTH, self.head_k)
        tokens = gf.fields.get(K.TOKENIZER_TOKENS)
        self.n_vocab = tokens.count if tokens is not None and tokens.is_array else 1


def llama_bytes(dims: RunSizes, n_ctx: int, batch: int = BATCH, cache_type: str = "f32") -> int:
    """About what llama.cpp allocates for a context of ``n_ctx`` as :class:`LlamaCpp` runs it: the KV cache
    (n_ctx x layers x (k + v) x the cache type's bytes: 4 for f32), one batch's attention scores and their softmax
    (batch x n_ctx x heads x 4, twice) and one batch's logits (the weights, mapped from the file, are not counted)."""
    kv = int(n_ctx * dims.n_layer * dims.n_head_kv * (dims.head_k + dims.head_v) * CACHE_TYPES[cache_type][1])
    return kv + 2 * min(batch, n_ctx) * n_ctx * dims.n_head * 4 + batch * dims.n_vocab * 4


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux: MemAvailable; elsewhere the physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n / 2**20:.0f} MiB"


def refuse_past_memory(need: int, what: str) -> None:
    """Refuse (one line, before any work) a run that would need more memory than this machine has available."""
    have = available_memory()
    if have is not None and need > have:
        raise RopetoolError(f"{what} would need about {gib(need)} of memory and this machine has {gib(have)} available")


def ticker(progress, label: str, seconds: float = 2.0):
    """A ``(done, total)`` callback passing ``label: done of total`` to ``progress`` at most every ``seconds``
    (None when there is no ``progress``)."""
    if progress is None:
        return None
    import time

    last = [time.monotonic()]

    def tick(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= seconds or done == total:
            last[0] = now
            progress(f"{label}: {done:,} of {total:,}")

    return tick


def padded_context(n_tokens: int) -> int:
    """The context llama.cpp allocates for ``n_tokens``: it pads n_ctx up to a multiple of 256."""
    return max(256, -(-n_tokens // 256) * 256)


# Set once this process has run llama.cpp: ggml's CPU backend then holds an OpenMP thread pool, which a forked
# child cannot use (GNU OpenMP hangs after fork), so isolate.py starts a fresh interpreter instead.
RAN_IN_PROCESS = False


class LlamaCpp:
    """A model and a context, freed by :meth:`close` (or as a context manager)."""

    def __init__(self, path, n_ctx: int, device: str = "cpu", verbose: bool = False, batch: int = BATCH,
                 flash_attn: bool = False, overrides: dict | None = None, n_seq_max: int = 1, eval_callback=None,
                 cache_type: str = "f32"):
        """``cache_type``: the KV cache's type, f32 (the default), f16 or q8_0 (llama.cpp quantizes the V cache
        only with flash attention, which a q8_0 cache turns on).  ``overrides``: metadata values llama.cpp uses
        instead of the file's (``llama_model_params.kv_overrides``: a key absent from the file is added; int,
        float, bool and strings of up to 127 bytes, no arrays); see :func:`kv_overrides`.  ``n_seq_max`` > 1: that
        many sequences share one (unified) KV cache of ``n_ctx`` cells.  ``eval_callback``: a
        ``llama_cpp.ggml_backend_sched_eval_callback`` the scheduler calls for every graph node (``cparams.cb_eval``;
        the caller keeps it alive)."""
        import llama_cpp as L

        global RAN_IN_PROCESS
        RAN_IN_PROCESS = True
        if device not in ("cpu", "gpu"):
            raise RopetoolError(f"unknown device {device!r}; choose cpu or gpu")
        if cache_type not in CACHE_TYPES:
            raise RopetoolError(f"unknown KV cache type {cache_type!r}; choose {', '.join(CACHE_TYPES)}")
        flash_attn = flash_attn or cache_type == "q8_0"
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
            no_extra_buffers(mparams)
            self._overrides = kv_overrides(overrides or {})
            if overrides:
                mparams.kv_overrides = self._overrides
            self.model = L.llama_model_load_from_file(self.path.encode(), mparams)
            if not self.model:
                raise RopetoolError(f"llama.cpp could not load {path} (run with --verbose to see why)")
            cparams = L.llama_context_default_params()
            cparams.n_ctx = n_ctx
            cparams.n_batch = self.batch_size
            cparams.n_ubatch = self.batch_size
            cparams.n_seq_max = n_seq_max
            cparams.kv_unified = n_seq_max > 1
            if eval_callback is not None:
                cparams.cb_eval = eval_callback
                cparams.cb_eval_user_data = None
            cparams.n_threads = threads
            cparams.n_threads_batch = threads
            cparams.type_k = cparams.type_v = CACHE_TYPES[cache_type][0]
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

    @property
    def bos(self) -> int | None:
        """The BOS token when the vocabulary asks for one at the start of a text (``tokenizer.ggml.add_bos_token``)."""
        if not self.L.llama_vocab_get_add_bos(self.vocab):
            return None
        bos = int(self.L.llama_vocab_bos(self.vocab))
        return bos if bos >= 0 else None

    def logits(self, ids: list[int], first: int = 0, copy: bool = True, progress=None) -> Iterator[tuple[int, np.ndarray]]:
        """Decode ``ids`` at positions 0..n-1 in one sequence; yield (first position, logits [rows, vocab]) for
        the positions from ``first`` on (llama.cpp computes no logits before it).  ``copy=False`` yields a view
        of llama.cpp's buffer, valid until the next step.  ``progress(done, total)`` is called after each batch."""
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
                    batch.logits[i] = 1 if start + i >= first else 0
                batch.n_tokens = len(chunk)
                with quiet_log(not self.verbose):
                    rc = L.llama_decode(self.ctx, batch)
                if rc != 0:
                    raise RopetoolError(f"llama.cpp could not evaluate the tokens (llama_decode returned {rc})")
                if progress is not None:
                    progress(start + len(chunk), len(ids))
                skip = max(0, min(len(chunk), first - start))
                n_out = len(chunk) - skip
                if n_out == 0:
                    continue
                out = np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(n_out * self.n_vocab,))
                rows = out.reshape(n_out, self.n_vocab)
                if copy:
                    rows = rows.copy()
                if not np.isfinite(rows).all():
                    raise RopetoolError("llama.cpp produced non-finite logits")
                yield start + skip, rows
        finally:
            L.llama_batch_free(batch)

    def greedy(self, ids: list[int], n_new: int) -> list[int]:
        """Decode ``ids``, then ``n_new`` tokens more, each the most likely next one (greedy decoding)."""
        L = self.L
        if len(ids) + n_new > self.n_ctx:
            raise RopetoolError(f"{len(ids) + n_new} tokens do not fit the context of {self.n_ctx}")
        last = None
        for _, rows in self.logits(ids, first=len(ids) - 1, copy=False):
            last = rows[-1]
        out: list[int] = []
        batch = L.llama_batch_init(1, 0, 1)
        try:
            for step in range(n_new):
                token = int(np.argmax(last))
                out.append(token)
                if L.llama_vocab_is_eog(self.vocab, token) or step == n_new - 1:
                    break
                batch.token[0] = token
                batch.pos[0] = len(ids) + step
                batch.n_seq_id[0] = 1
                batch.seq_id[0][0] = 0
                batch.logits[0] = 1
                batch.n_tokens = 1
                with quiet_log(not self.verbose):
                    rc = L.llama_decode(self.ctx, batch)
                if rc != 0:
                    raise RopetoolError(f"llama.cpp could not evaluate the tokens (llama_decode returned {rc})")
                last = np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(self.n_vocab,))
        finally:
            L.llama_batch_free(batch)
        return out

    def detokenize(self, ids: list[int]) -> str:
        L = self.L
        out = []
        buf = ctypes.create_string_buffer(256)
        for t in ids:
            n = L.llama_token_to_piece(self.vocab, int(t), buf, len(buf), 0, False)
            if n > 0:
                out.append(buf.raw[:n])
        return b"".join(out).decode("utf-8", "replace")

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


KV_OVERRIDE_TYPES = {"int": 0, "float": 1, "bool": 2, "str": 3}  # enum llama_model_kv_override_type


OVERRIDE_STRING_BYTES = 127  # llama_model_kv_override's val_str is char[128]


def override_value(v):
    """The value a load-time override gives a header record (a NewValue), or None when no override can: an
    array, or a string of more than 127 bytes."""
    if v.type == T.ARRAY or (v.type == T.STRING and len(str(v.value).encode("utf-8")) > OVERRIDE_STRING_BYTES):
        return None
    if v.type == T.BOOL:
        return bool(v.value)
    if v.type in (T.FLOAT32, T.FLOAT64):
        return float(v.value)
    return str(v.value) if v.type == T.STRING else int(v.value)


def kv_overrides(values: dict):
    """``{key: value}`` as llama.cpp's override array (terminated by an entry with an empty key).  The tag follows
    the Python type (bool, int, float, str); llama.cpp ignores, with a warning, an override whose tag is not
    the type it reads the key as, so callers give each key the type llama.cpp reads it with."""
    import llama_cpp as L

    arr = (L.llama_model_kv_override * (len(values) + 1))()
    for i, (key, value) in enumerate(values.items()):
        k = key.encode("utf-8")
        if not k or len(k) > OVERRIDE_STRING_BYTES:
            raise RopetoolError(f"llama.cpp cannot override the key {key!r} (1 to {OVERRIDE_STRING_BYTES} bytes)")
        arr[i].key = k
        if isinstance(value, bool):
            arr[i].tag, arr[i].value.val_bool = KV_OVERRIDE_TYPES["bool"], value
        elif isinstance(value, int):
            arr[i].tag, arr[i].value.val_i64 = KV_OVERRIDE_TYPES["int"], value
        elif isinstance(value, float):
            arr[i].tag, arr[i].value.val_f64 = KV_OVERRIDE_TYPES["float"], value
        elif isinstance(value, str) and len(value.encode("utf-8")) <= OVERRIDE_STRING_BYTES:
            arr[i].tag, arr[i].value.val_str = KV_OVERRIDE_TYPES["str"], value.encode("utf-8")
        else:
            raise RopetoolError(f"llama.cpp cannot override {key} with {value!r} (int, float, bool or a short string)")
    arr[len(values)].key = b""
    return arr


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


__all__ = ["LlamaCpp", "CACHE_TYPES", "kv_overrides", "llama_cpp_logits", "preflight", "gpu_available", "padded_context", "quiet_log", "BATCH"]
