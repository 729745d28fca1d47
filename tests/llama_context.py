"""llama.cpp's own account of a context: load a GGUF, create a context of n_ctx tokens with a KV cache type, and
read what llama.cpp logs about it (its KV cache lines, n_ctx_train, the training-context warning), optionally
with llama.cpp's runtime rope parameters and load-time key overrides, and the logits of a few tokens.

Each call runs in a child process (llama.cpp's log callback is process-wide, and a context it refuses or a crash
must not take the test process down).  The KV cache lines are llama_kv_cache's (src/llama-kv-cache.cpp):

    llama_kv_cache: size =  720.00 MiB ( 32768 cells,  30 layers,  1/1 seqs), K (f16):  360.00 MiB, V (f16): ...

one per cache (a model with sliding-window layers has two: the global layers' and the sliding ones').
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import ctypes, json, sys
import numpy as np
import llama_cpp as L
from ropetool.llamacpp.runner import kv_overrides
args = json.loads(sys.argv[1])
lines = []
@L.llama_log_callback
def cb(level, text, user):
    lines.append(text.decode("utf-8", "replace"))
L.llama_log_set(cb, ctypes.c_void_p(0))
L.llama_backend_init()
mp = L.llama_model_default_params()
mp.n_gpu_layers = 0
mp.use_extra_bufts = False  # runner.no_extra_buffers: the AMX kernels crash on quantized decode here
if args["overrides"]:
    arr = kv_overrides(args["overrides"])
    mp.kv_overrides = arr
m = L.llama_model_load_from_file(args["path"].encode(), mp)
out = {"loaded": bool(m)}
if m:
    cp = L.llama_context_default_params()
    cp.n_ctx = args["n_ctx"]
    cp.type_k = cp.type_v = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8}[args["cache_type"]]
    cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if args["flash_attn"] else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cp.swa_full = args["swa_full"]
    cp.n_threads = cp.n_threads_batch = 2
    for name, value in args["cparams"].items():
        setattr(cp, name, value)
    ctx = L.llama_init_from_model(m, cp)
    out["context"] = bool(ctx)
    if ctx and args["tokens"]:
        ids = args["tokens"]
        batch = L.llama_batch_init(len(ids), 0, 1)
        for i, t in enumerate(ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, i, 1, 1
            batch.seq_id[i][0] = 0
        batch.n_tokens = len(ids)
        assert L.llama_decode(ctx, batch) == 0
        n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(m))
        out["logits"] = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(len(ids) * n_vocab,)).tolist()
out["log"] = "".join(lines)
print(json.dumps(out))
"""

CACHE_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) seqs\), "
                        r"K \((\w+)\): +([\d.]+) MiB, V \((\w+)\): +([\d.]+) MiB")


def llama_context(path, n_ctx: int, cache_type: str = "f16", *, flash_attn: bool = True, swa_full: bool = False,
                  cparams: dict | None = None, overrides: dict | None = None, tokens: list[int] | None = None) -> dict:
    """What llama.cpp says of ``path`` with a context of ``n_ctx``: ``loaded``, ``context`` (created), ``caches``
    (one dict per KV cache line: mib, cells, layers, k_mib, v_mib), ``n_ctx_train``, ``overflow_warning`` (its
    "possible training context overflow"), ``log`` and, given ``tokens``, ``logits`` [tokens x vocab]."""
    args = {"path": str(path), "n_ctx": n_ctx, "cache_type": cache_type, "flash_attn": flash_attn, "swa_full": swa_full,
            "cparams": cparams or {}, "overrides": overrides or {}, "tokens": tokens or []}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GGML_NO_BACKTRACE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["caches"] = [{"mib": float(g[0]), "cells": int(g[1]), "layers": int(g[2]), "k_type": g[5], "k_mib": float(g[6]),
                      "v_type": g[7], "v_mib": float(g[8])} for g in CACHE_LINE.findall(out["log"])]
    train = re.findall(r"print_info: n_ctx_train += (\d+)", out["log"])
    out["n_ctx_train"] = int(train[0]) if train else None
    out["overflow_warning"] = "possible training context overflow" in out["log"]
    return out
