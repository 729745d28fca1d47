"""llama.cpp's own compute graph, read while it runs: every rope node and every attention softmax.

:func:`run_graph` decodes ONE small batch of several fresh sequences (a few consecutive tokens each, at
start positions the caller spreads from 0 to past the extended context) and asks ggml's scheduler
(``llama_context_params.cb_eval``) for

* every ``GGML_OP_ROPE`` node: its op_params as ``ggml_rope_impl`` packs them (n_dims [1], mode [2],
  n_ctx_orig [4], freq_base, freq_scale, ext_factor, attn_factor, beta_fast, beta_slow [5..10], the
  multi-rope sections [11..14], the rotated dims' offset [15]), the positions it read (src[1]), the
  per-pair divisors (src[2], when not NULL), its input (src[0]) and its output;
* every ``GGML_OP_SOFT_MAX`` / ``GGML_OP_FLASH_ATTN_EXT`` node's params (scale, max_bias, and the
  logit soft-cap of the latter).

A rope node may be computed in place (ggml-alloc reuses its input's memory: ``ggml_op_can_inplace``), so
its input is captured when the node that produces it has been computed: every node shaped like a rope
input ([ne0, heads, n_tokens]) is copied as soon as it is ready, and the rope node's src[0] is looked up
among those copies by address.  Tensors are read with ``ggml_backend_tensor_get`` (any backend: CPU or
GPU memory), honouring the strides ``nb`` of views, in F32, F16 or BF16.

The ctypes mirror of ``struct ggml_tensor`` follows ggml/include/ggml.h of the llama.cpp that
llama-cpp-python 0.3.36 vendors; :class:`GraphReader` refuses to run when that layout, the op numbers or
the first rope node's shape and positions do not read back as the batch that was sent.

Each rope node is handed to the caller's ``on_rope`` as soon as it is read, and its arrays are dropped
after: the run holds only a few small tensors at a time.
"""

from __future__ import annotations

import ctypes
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import GGML_MAX_DIMS, GGML_MAX_NAME

GGML_MAX_SRC = 10
GGML_MAX_OP_PARAMS = 64
GGML_OBJECT_SIZE = 32  # sizeof(struct ggml_object): ggml_tensor_overhead() = GGML_OBJECT_SIZE + GGML_TENSOR_SIZE

# enum ggml_op (ggml.h); checked against ggml_op_name at run time
OPS = {"ROPE": 48, "SOFT_MAX": 46, "FLASH_ATTN_EXT": 74}
# enum ggml_type (ggml.h): the element types a rope input or output can have
TYPES = {0: ("f32", np.float32), 1: ("f16", np.float16), 30: ("bf16", None), 26: ("i32", np.int32)}
ROPE_MODES = {0: "normal", 2: "neox", 8: "mrope", 40: "imrope", 24: "vision"}  # GGML_ROPE_TYPE_*
MAX_CAPTURED = 16  # candidate rope inputs kept at a time (the latest)


class GGMLTensor(ctypes.Structure):
    pass


GGMLTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
    ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GGMLTensor) * GGML_MAX_SRC),
    ("view_src", ctypes.POINTER(GGMLTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * GGML_MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


@dataclass
class RopeOp:
    """One GGML_OP_ROPE node as llama.cpp built and computed it."""

    name: str
    layer: int | None  # from the node's name ("Qcur-3" -> 3), else from its input's (lfm2 leaves its rope nodes unnamed)
    role: str  # the name without the layer ("Qcur", "Kcur", ...)
    shape: tuple[int, ...]  # ne0 (head dim), ne1 (heads), ne2 (tokens), ne3
    dtype: str
    n_dims: int
    mode: int
    n_ctx_orig: int
    freq_base: float
    freq_scale: float
    ext_factor: float
    attn_factor: float
    beta_fast: float
    beta_slow: float
    sections: tuple[int, int, int, int]
    n_offs: int
    positions: np.ndarray | None = None  # int32, one per token (four per token for multi-section rope)
    freq_factors: np.ndarray | None = None
    x: np.ndarray | None = None  # input [tokens, heads, ne0] float32 (None: not readable)
    y: np.ndarray | None = None  # output, same shape

    @property
    def pairing(self) -> str:
        return ROPE_MODES.get(self.mode, f"mode {self.mode}")


@dataclass
class AttentionOp:
    name: str
    layer: int | None
    op: str  # "SOFT_MAX" or "FLASH_ATTN_EXT"
    scale: float
    max_bias: float
    softcap: float | None
    n_head: int  # the heads the ALiBi slopes are derived over (ggml: src0->ne[2])


@dataclass
class GraphRun:
    ropes: list[RopeOp] = field(default_factory=list)  # arrays dropped after on_rope
    attention: list[AttentionOp] = field(default_factory=list)
    positions: list[list[int]] = field(default_factory=list)  # per sequence
    n_tokens: int = 0
    n_ctx: int = 0
    n_ctx_seq: int = 0
    device: str = "cpu"
    wall_seconds: float = 0.0


_LAYER = re.compile(r"^(.*?)-(\d+)$")


def _name(t: GGMLTensor) -> str:
    return bytes(t.name).split(b"\0", 1)[0].decode("utf-8", "replace")


def _split_name(name: str) -> tuple[str, int | None]:
    m = _LAYER.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def _f32(i: int) -> float:
    return float(np.array([i], dtype=np.int32).view(np.float32)[0])


class _Ggml:
    """The few ggml functions the reader calls, from the ggml library llama_cpp has loaded."""

    def __init__(self):
        import llama_cpp
        from llama_cpp import _ctypes_extensions as ext

        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        try:
            lib = ext.load_shared_library("ggml-base", lib_dir)
        except (RuntimeError, FileNotFoundError, OSError) as e:
            raise RopetoolError(f"cannot reach ggml's functions in {lib_dir}: {e}") from None
        p = ctypes.POINTER(GGMLTensor)
        self.tensor_get = lib.ggml_backend_tensor_get
        self.tensor_get.argtypes = [p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self.tensor_get.restype = None
        self.nbytes = lib.ggml_nbytes
        self.nbytes.argtypes = [p]
        self.nbytes.restype = ctypes.c_size_t
        self.op_name = lib.ggml_op_name
        self.op_name.argtypes = [ctypes.c_int]
        self.op_name.restype = ctypes.c_char_p
        overhead = lib.ggml_tensor_overhead
        overhead.argtypes = []
        overhead.restype = ctypes.c_size_t
        size = overhead() - GGML_OBJECT_SIZE
        if size != ctypes.sizeof(GGMLTensor):
            raise RopetoolError(f"this ggml's struct ggml_tensor is {size} bytes, not the {ctypes.sizeof(GGMLTensor)} "
                                "ropetool mirrors (llama-cpp-python 0.3.36's ggml.h): refusing to read its graph")
        for name, value in OPS.items():
            got = (self.op_name(value) or b"").decode()
            if got != name:
                raise RopetoolError(f"this ggml numbers its ops differently (op {value} is {got!r}, not {name}): "
                                    "refusing to read its graph")

    def read(self, tp) -> np.ndarray:
        """A tensor's elements as float32 (int32 for I32), shape [ne3, ne2, ne1, ne0], strides honoured."""
        t = tp.contents
        if t.type not in TYPES:
            raise RopetoolError(f"graph tensor {_name(t)!r} has ggml type {t.type}, which ropetool does not read")
        n = int(self.nbytes(tp))
        buf = (ctypes.c_uint8 * n)()
        if n:
            self.tensor_get(tp, buf, 0, n)
        kind, dt = TYPES[t.type]
        shape = tuple(int(t.ne[i]) for i in reversed(range(GGML_MAX_DIMS)))
        strides = tuple(int(t.nb[i]) for i in reversed(range(GGML_MAX_DIMS)))
        raw = np.frombuffer(buf, dtype=np.uint8)
        if kind == "bf16":
            a = np.ndarray(shape, dtype=np.uint16, buffer=raw, strides=strides)
            return (a.astype(np.uint32) << 16).view(np.float32)
        a = np.ndarray(shape, dtype=dt, buffer=raw, strides=strides)
        return a.astype(np.int32 if kind == "i32" else np.float32)


class GraphReader:
    """The eval callback: reads rope and attention nodes as the scheduler computes them."""

    def __init__(self, n_tokens: int, positions: list[int], on_rope: Callable[[RopeOp], None] | None,
                 input_shapes: set[tuple[int, int]] | None = None):
        import llama_cpp

        self.g = _Ggml()
        self.n_tokens = n_tokens
        self.sent = np.asarray(positions, dtype=np.int64)
        self.on_rope = on_rope
        self.input_shapes = input_shapes
        self.run = GraphRun()
        self.error: BaseException | None = None
        self._captured: dict[int, np.ndarray] = {}  # node address -> its elements
        self._pending: dict[int, RopeOp] = {}
        self._checked = False
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._cb)

    # the scheduler asks (ask=True) whether a node is wanted, then hands it over computed (ask=False)
    def _cb(self, addr, ask, user_data):
        if self.error is not None:
            return False
        try:
            tp = ctypes.cast(addr, ctypes.POINTER(GGMLTensor))
            t = tp.contents
            if ask:
                if t.op == OPS["ROPE"]:
                    self._pending[addr] = self._rope_params(t)
                    return True
                if t.op in (OPS["SOFT_MAX"], OPS["FLASH_ATTN_EXT"]):
                    self._attention(t)
                    return False
                return self._candidate(t)
            if t.op == OPS["ROPE"]:
                self._rope_done(addr, tp)
            else:
                self._captured[addr] = self.g.read(tp)
                while len(self._captured) > MAX_CAPTURED:
                    self._captured.pop(next(iter(self._captured)))
            return True
        except BaseException as e:  # never let an exception cross into C
            self.error = e
            return False

    def _candidate(self, t: GGMLTensor) -> bool:
        """A node shaped like a rope input: [ne0, heads, n_tokens, 1], floating point, with (ne0, heads) among
        ``input_shapes`` when given (the file's head dim and head counts)."""
        if not (t.type in (0, 1, 30) and int(t.ne[2]) == self.n_tokens and int(t.ne[3]) == 1
                and 0 < int(t.ne[0]) * int(t.ne[1]) <= 1 << 20):
            return False
        return self.input_shapes is None or (int(t.ne[0]), int(t.ne[1])) in self.input_shapes

    def _rope_params(self, t: GGMLTensor) -> RopeOp:
        p = list(t.op_params)
        name = _name(t)
        role, layer = _split_name(name)
        if layer is None and t.src[0]:  # an unnamed rope node (lfm2's): the layer of the node it rotates
            role, layer = _split_name(_name(t.src[0].contents))
        return RopeOp(name=name, layer=layer, role=role, shape=tuple(int(t.ne[i]) for i in range(GGML_MAX_DIMS)),
                      dtype=TYPES.get(t.type, (str(t.type),))[0], n_dims=p[1], mode=p[2], n_ctx_orig=p[4],
                      freq_base=_f32(p[5]), freq_scale=_f32(p[6]), ext_factor=_f32(p[7]), attn_factor=_f32(p[8]),
                      beta_fast=_f32(p[9]), beta_slow=_f32(p[10]), sections=tuple(p[11:15]), n_offs=p[15])

    def _attention(self, t: GGMLTensor) -> None:
        p = list(t.op_params)
        name = _name(t)
        is_fa = t.op == OPS["FLASH_ATTN_EXT"]
        n_head = int(t.src[0].contents.ne[2]) if t.src[0] else 0  # fa: q [d, n_tokens, n_head]; soft_max: kq [n_kv, n_tokens, n_head]
        self.run.attention.append(AttentionOp(name, _split_name(name)[1], "FLASH_ATTN_EXT" if is_fa else "SOFT_MAX",
                                              _f32(p[0]), _f32(p[1]), _f32(p[2]) if is_fa else None, n_head))

    def _rope_done(self, addr: int, tp) -> None:
        op = self._pending.pop(addr)
        t = tp.contents
        src0, src1, src2 = t.src[0], t.src[1], t.src[2]
        op.positions = self.g.read(src1).reshape(-1)
        if src2:
            op.freq_factors = self.g.read(src2).reshape(-1).astype(np.float64)
        y = self.g.read(tp)
        x = self._captured.get(ctypes.addressof(src0.contents))  # else src0 itself, unless the op overwrote it
        if x is None and not self._overlaps(src0.contents, t):
            x = self.g.read(src0)
        if not self._checked:
            self._self_check(op, y)
        op.y = y[0]
        op.x = None if x is None else x[0]
        if op.x is not None and op.x.shape != op.y.shape:
            op.x = None
        try:
            if self.on_rope is not None:
                self.on_rope(op)
        finally:
            op.x = op.y = None
            self.run.ropes.append(op)

    def _overlaps(self, a: GGMLTensor, b: GGMLTensor) -> bool:
        na = int(self.g.nbytes(ctypes.pointer(a)))
        nb = int(self.g.nbytes(ctypes.pointer(b)))
        return bool(a.data and b.data and a.data < b.data + nb and b.data < a.data + na)

    def _self_check(self, op: RopeOp, y: np.ndarray) -> None:
        """The first rope node must read back as the batch sent: its token count and its positions."""
        self._checked = True
        n = self.n_tokens
        pos = op.positions[:n] if op.positions is not None else None
        if op.shape[2] != n or y.shape[1] != n or pos is None or len(pos) < n or not np.array_equal(pos, self.sent):
            raise RopetoolError(
                f"llama.cpp's first rope node ({op.name!r}, shape {list(op.shape)}) does not read back as the batch "
                f"sent ({n} tokens at the positions given): this llama.cpp's ggml_tensor layout differs from the one "
                "ropetool mirrors; refusing to read garbage")
        if not 2 <= op.n_dims <= op.shape[0] or not op.name.isprintable():
            raise RopetoolError(f"llama.cpp's first rope node reads back implausible values (n_dims {op.n_dims}, "
                                f"head dim {op.shape[0]}, name {op.name!r}): refusing to read garbage")


def spread_starts(n_seq: int, first: int, last: int, must: tuple[int, ...] = ()) -> list[int]:
    """``n_seq`` start positions from ``first`` to ``last``: ``must`` (e.g. just before the original context)
    included, the rest spread geometrically, so that short and far distances are both probed."""
    starts = {first, last} | {m for m in must if first <= m <= last}
    k = max(0, n_seq - len(starts))
    if k and last > max(first, 1):
        lo = max(first, 1)
        for v in np.geomspace(lo, last, k + 2)[1:-1]:
            starts.add(int(v))
    return sorted(starts)[:max(n_seq, len(starts))]


def run_graph(path, starts: list[int], per_seq: int, device: str = "cpu", n_ctx: int = 256,
              on_rope: Callable[[RopeOp], None] | None = None, verbose: bool = False, overrides: dict | None = None,
              input_shapes: set[tuple[int, int]] | None = None) -> GraphRun:
    """Decode one batch: sequence s holds ``per_seq`` consecutive tokens from ``starts[s]``; read its graph.

    ``n_ctx``: the cells of the (unified) KV cache; llama.cpp also picks LongRoPE's table by it.
    ``input_shapes``: the (head dim, heads) a rope input can have, to copy fewer candidate inputs (None: any [ne0, ne1, n_tokens] node)."""
    from ropetool.llamacpp.runner import LlamaCpp, quiet_log

    if per_seq < 1 or not starts:
        raise RopetoolError("the probe needs at least one sequence of at least one token")
    if any(s < 0 for s in starts):
        raise RopetoolError("positions must be >= 0")
    n_tokens = per_seq * len(starts)
    n_ctx = max(n_ctx, -(-(n_tokens + 1) // 256) * 256)
    positions = [s + i for s in starts for i in range(per_seq)]
    reader = GraphReader(n_tokens, positions, on_rope, input_shapes)
    started = time.perf_counter()
    with LlamaCpp(path, n_ctx=n_ctx, device=device, verbose=verbose, batch=max(n_tokens, 1), n_seq_max=len(starts),
                  eval_callback=reader.callback, overrides=overrides) as llm:
        L = llm.L
        vocab = llm.n_vocab
        rng = np.random.default_rng(0)
        batch = L.llama_batch_init(n_tokens, 0, 1)
        try:
            for i, pos in enumerate(positions):
                batch.token[i] = int(rng.integers(min(4, vocab - 1), vocab))
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = i // per_seq
                batch.logits[i] = 1 if (i + 1) % per_seq == 0 else 0
            batch.n_tokens = n_tokens
            with quiet_log(not verbose) as errors:
                rc = L.llama_decode(llm.ctx, batch)
        finally:
            L.llama_batch_free(batch)
        if reader.error is not None:
            if isinstance(reader.error, RopetoolError):
                raise reader.error
            raise RopetoolError(f"reading llama.cpp's graph failed: {type(reader.error).__name__}: {reader.error}")
        if rc != 0:
            said = " ".join(" ".join(errors).split())[:200]
            raise RopetoolError(f"llama.cpp could not decode the probe's batch (llama_decode returned {rc}){': ' + said if said else ''}")
        run = reader.run
        run.n_ctx_seq = int(L.llama_n_ctx_seq(llm.ctx))
        run.n_ctx = llm.n_ctx
        run.device = llm.device
    run.positions = [[s, s + per_seq - 1] for s in starts]
    run.n_tokens = n_tokens
    run.wall_seconds = time.perf_counter() - started
    return run


__all__ = ["run_graph", "GraphRun", "RopeOp", "AttentionOp", "GGMLTensor", "spread_starts", "ROPE_MODES"]
