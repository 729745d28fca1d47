"""Convert a Hugging Face checkpoint folder to GGUF, with the chosen rope method embedded.

The pipeline: read config.json and the safetensors headers (checkpoint.py); pick the architecture
(archs.py); resolve the rope method from config.json or the caller (rope/); lower it to GGUF keys
and tensors (lowering.py); plan every output tensor (name, type, shape) and check the shapes
against config.json; then write the header and convert the tensors a run of rows at a time (a
few runs in memory, whatever the model's size) into a temporary file that is renamed over the
target only when complete.  A conversion killed outright (SIGKILL)
leaves that ``.NAME.XXXXXXXX.tmp`` file behind but never a partial target; the next conversion to
the same target removes it (gguf_file.create_temp).
"""

from __future__ import annotations

import functools
import math
import os
import struct
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from ropetool.version import __version__
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import Arch, arch_for_config
from ropetool.io.checkpoint import Checkpoint, TensorRef, checkpoint_dtype, load_tensor, open_checkpoint
from ropetool.io.encode import CHUNK_ELEMENTS, SCRATCH, encode_rows
from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import atomic_file, copy_range, encode_value, pwrite_all
from ropetool.llamacpp.lowering import Lowered, lower_for_llama_cpp, provenance
from ropetool.rope import RopeParams, make_params, rope_from_hf_config

OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FILE_TYPES = {
    Q.F32: gguf.LlamaFileType.ALL_F32,
    Q.F16: gguf.LlamaFileType.MOSTLY_F16,
    Q.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}
WORKERS = max(1, min(4, os.cpu_count() or 1))  # threads converting chunks (numpy releases the GIL)
ALIGNMENT = 32  # general.alignment's default; the writer adds no alignment key
COPY_BYTES = 64 << 20  # tensors kept in their source type are copied in runs of this size
# HF tensors that carry nothing llama.cpp needs.
SKIP_SUFFIXES = (".rotary_emb.inv_freq", ".attn.masked_bias", ".attn.bias")


@dataclass(frozen=True)
class Hparams:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    head_dim: int
    eps: float
    vocab_size: int
    trained_context: int
    tied: bool

    @classmethod
    def from_config(cls, config: dict, arch: Arch) -> "Hparams":
        def need(*names, default=None):
            for n in names:
                if config.get(n) is not None:
                    return n, config[n]
            if default is not None:
                return names[0], default
            raise RopetoolError(f"config.json lacks {names[0]}")

        def count(*names, default=None) -> int:
            name, v = need(*names, default=default)
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RopetoolError(f"config.json: {name} must be a positive integer, got {v!r}")
            return v

        n_embd = count("hidden_size", "n_embed", "n_embd")
        n_head = count("num_attention_heads", "n_head")
        head_dim = count("head_dim") if config.get("head_dim") else n_embd // n_head
        if head_dim < 1:
            raise RopetoolError(f"config.json: hidden_size {n_embd} is smaller than num_attention_heads {n_head}")
        eps_name, eps = need(arch.hf_eps_key, "rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
            raise RopetoolError(f"config.json: {eps_name} must be a finite number >= 0, got {eps!r}")
        tied = config.get("tie_word_embeddings", arch.is_alibi)
        if not isinstance(tied, bool):
            raise RopetoolError(f"config.json: tie_word_embeddings must be true or false, got {tied!r}")
        return cls(
            n_embd=n_embd,
            n_layer=count("num_hidden_layers", "n_layer"),
            n_head=n_head,
            n_head_kv=count("num_key_value_heads", "n_head", "num_attention_heads"),
            n_ff=count("intermediate_size", default=4 * n_embd),
            head_dim=head_dim,
            eps=float(eps),
            vocab_size=count("vocab_size"),
            trained_context=count("max_position_embeddings", "seq_length", "n_positions", default=2048),
            tied=tied,
        )


def check_rope_config(config: dict) -> None:
    """The config.json numbers the rope readers (rope/hf.py) convert without checking."""
    prf = config.get("partial_rotary_factor")
    if isinstance(config.get("rope_parameters"), dict):
        prf = config["rope_parameters"].get("partial_rotary_factor", prf)
    if prf is not None and (isinstance(prf, bool) or not isinstance(prf, (int, float))
                            or not (math.isfinite(prf) and 0 < prf <= 1)):
        raise RopetoolError(f"config.json: partial_rotary_factor must be a number in (0, 1], got {prf!r}")


@dataclass
class PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order, after transforms
    qtype: Q
    source: list[TensorRef]  # HF tensor(s) it is made from (empty for generated ones)
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    data: np.ndarray | None = None  # generated tensors (rope_freqs, ...)

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape) // block * size

    @property
    def streamed(self) -> bool:
        """Read from the checkpoint a run of rows at a time (no transform, not generated)."""
        return self.data is None and self.transform is None

    def whole(self) -> np.ndarray:
        """The tensor's values before conversion (float32 unless generated otherwise), all at once."""
        if self.data is not None:
            return self.data
        arr = load_tensor(self.source[0])
        return self.transform(arr) if self.transform is not None else arr


def _rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    """A tensor as a 2-D array of rows (its last dimension), which every output type converts row-wise."""
    if len(shape) == 0:
        return 1, 1
    return math.prod(shape[:-1]), shape[-1]


@dataclass
class Plan:
    """Everything a conversion will write, computed before any byte is written."""

    source: Path
    arch: Arch
    hparams: Hparams
    rope: RopeParams
    rotary_dim: int
    lowered: Lowered
    outtype: Q
    kv: dict[str, tuple[object, gguf.GGUFValueType]] = field(default_factory=dict)
    tensors: list[PlannedTensor] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    vocab: object | None = None

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def describe(self) -> dict:
        """The plan as plain data (for --dry-run and --json)."""
        return {
            "source": str(self.source),
            "architecture": self.arch.name,
            "outtype": self.outtype.name,
            "rope": self.rope.as_dict(),
            "exact": self.lowered.exact,
            "notes": self.lowered.notes,
            "warnings": self.lowered.warnings,
            "context_length": self.lowered.context_length,
            "keys": {k: _plain(v) for k, (v, _) in self.kv.items()},
            "tensors": [
                {"name": t.name, "type": t.qtype.name, "shape": list(t.shape), "bytes": t.nbytes} for t in self.tensors
            ],
            "skipped": self.skipped,
            "total_bytes": self.total_bytes,
        }


def _plain(value):
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} items]"
    return value


def rope_for(config: dict, method: str | None, hp: Hparams, **options) -> tuple[RopeParams, int]:
    """The rope method to embed: config.json's, or the caller's ``method`` with ``options``."""
    hf = rope_from_hf_config(config)
    if method is None:
        params = hf.params
        changes = {k: v for k, v in options.items() if v is not None}
        if changes:  # e.g. --target-context for a config's dynamic rope
            current = {k: v for k, v in params.as_dict().items() if k != "method"}
            params = make_params(params.method, **{**current, **changes})
        return params, hf.rotary_dim
    values = dict(options)
    if values.get("base") is None and not hf.params.is_alibi:
        values["base"] = hf.params.base
    if values.get("original_context") is None:
        values["original_context"] = hf.params.original_context or hp.trained_context
    return make_params(method, **values), hf.rotary_dim


def _expected_shapes(arch: Arch, hp: Hparams) -> dict[str, tuple[int, ...]]:
    """HF-orientation shape of each GGUF tensor kind, from config.json."""
    q = hp.n_head * hp.head_dim
    kv = hp.n_head_kv * hp.head_dim
    e, f = hp.n_embd, hp.n_ff
    return {
        "token_embd": (hp.vocab_size, e),
        "output": (hp.vocab_size, e),
        "output_norm": (e,),
        "token_embd_norm": (e,),
        "attn_norm": (e,),
        "ffn_norm": (e,),
        "attn_q": (q, e),
        "attn_k": (kv, e),
        "attn_v": (kv, e),
        "attn_qkv": (q + 2 * kv, e),
        "attn_output": (e, q),
        "attn_q_norm": (hp.head_dim,),
        "attn_k_norm": (hp.head_dim,),
        "ffn_gate": (f, e),
        "ffn_up": (2 * f, e) if arch.ffn == "swiglu-fused" else (f, e),
        "ffn_down": (e, f),
    }


def _permute(n_head: int) -> Callable[[np.ndarray], np.ndarray]:
    """llama.cpp's LlamaModel.permute: HF rotate_half rows -> interleaved (NORMAL) pairs."""

    def f(w: np.ndarray) -> np.ndarray:
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    return f


def _bloom_qkv(n_head: int) -> Callable[[np.ndarray], np.ndarray]:
    """BLOOM stores q, k, v interleaved per head; llama.cpp wants [q; k; v]."""

    def f(w: np.ndarray) -> np.ndarray:
        head_dim = w.shape[0] // n_head // 3
        return w.reshape(n_head, 3, head_dim, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)

    return f


def _tensor_type(name: str, shape: tuple[int, ...], outtype: Q) -> Q:
    if len(shape) == 1 or name.startswith("rope_") or outtype == Q.F32:
        return Q.F32
    if outtype == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] != 0:
        return Q.F16  # as llama.cpp's converter falls back
    return outtype


def plan_tensors(ckpt: Checkpoint, arch: Arch, hp: Hparams, outtype: Q) -> tuple[list[PlannedTensor], list[str]]:
    name_map = gguf.get_tensor_name_map(arch.model_arch, hp.n_layer)
    expected = _expected_shapes(arch, hp)
    planned: list[PlannedTensor] = []
    skipped: list[str] = []
    for hf_name, ref in ckpt.tensors.items():
        if hf_name.endswith(SKIP_SUFFIXES):
            skipped.append(hf_name)
            continue
        lookup = hf_name[len(arch.strip_prefix):] if hf_name.startswith(arch.strip_prefix) else hf_name
        name = name_map.get_name(lookup, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise RopetoolError(f"tensor {hf_name!r} is not part of a {arch.name} model as ropetool knows it")
        kind = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
        is_bias = name.endswith(".bias")
        want = expected.get(kind)
        if want is not None:
            want = want[:1] if is_bias else want
            if tuple(ref.shape) != want:
                raise RopetoolError(
                    f"tensor {hf_name!r} has shape {list(ref.shape)} but config.json implies {list(want)}"
                )
        transform = None
        if arch.permute_qk and kind in ("attn_q", "attn_k"):
            transform = _permute(hp.n_head if kind == "attn_q" else hp.n_head_kv)
        if arch.fused_qkv == "bloom" and kind == "attn_qkv":
            transform = _bloom_qkv(hp.n_head)
        shape = tuple(ref.shape)
        planned.append(PlannedTensor(name, shape, _tensor_type(name, shape, outtype), [ref], transform))
    names = {t.name for t in planned}
    if "output.weight" not in names and "token_embd.weight" in names and arch.is_alibi:
        # llama.cpp's bloom converter writes the tied output matrix explicitly.
        embd = next(t for t in planned if t.name == "token_embd.weight")
        planned.append(PlannedTensor("output.weight", embd.shape, embd.qtype, embd.source))
    if "token_embd.weight" not in names:
        raise RopetoolError("the checkpoint has no token embedding tensor")
    if "output.weight" not in names and not hp.tied:
        raise RopetoolError("config.json says the output matrix is not tied to the embeddings "
                            "(tie_word_embeddings false), but the checkpoint has no lm_head.weight")
    missing = [f"blk.{i}" for i in range(hp.n_layer) if not any(n.startswith(f"blk.{i}.") for n in names)]
    if missing:
        raise RopetoolError(f"the checkpoint lacks the weights of block(s) {', '.join(missing)}")
    return planned, skipped


def _hparam_kv(arch: Arch, hp: Hparams, rotary_dim: int, context_length: int) -> dict:
    T = gguf.GGUFValueType
    a = arch.name
    kv = {
        K.k(K.CONTEXT_LENGTH, a): (int(context_length), T.UINT32),
        K.k(K.EMBEDDING_LENGTH, a): (hp.n_embd, T.UINT32),
        K.k(K.BLOCK_COUNT, a): (hp.n_layer, T.UINT32),
        K.k(K.FEED_FORWARD_LENGTH, a): (hp.n_ff, T.UINT32),
        K.k(K.HEAD_COUNT, a): (hp.n_head, T.UINT32),
        K.k(K.HEAD_COUNT_KV, a): (hp.n_head_kv, T.UINT32),
        K.k(K.VOCAB_SIZE, a): (hp.vocab_size, T.UINT32),
    }
    kv[K.k(K.LAYERNORM_RMS_EPS if arch.norm == "rms" else K.LAYERNORM_EPS, a)] = (hp.eps, T.FLOAT32)
    if hp.head_dim != hp.n_embd // hp.n_head:
        kv[K.k(K.KEY_LENGTH, a)] = (hp.head_dim, T.UINT32)
        kv[K.k(K.VALUE_LENGTH, a)] = (hp.head_dim, T.UINT32)
    if not arch.is_alibi:
        kv[K.k(K.ROPE_DIMENSION_COUNT, a)] = (rotary_dim, T.UINT32)
    return kv


def _model_name(name: str, vocab) -> str:
    """general.name; llama.cpp (llama-vocab.cpp) sets token attributes for any model whose name contains
    "phi3"/"phi-3" and aborts if "</s>", "<unk>", "<s>" or "<|endoftext|>" is missing from its vocabulary."""
    phi3_tokens = ("</s>", "<unk>", "<s>", "<|endoftext|>")
    lowered = name.lower()
    if vocab is not None and ("phi3" in lowered or "phi-3" in lowered):
        if not set(phi3_tokens) <= set(vocab.tokens):
            return lowered.replace("phi-3", "phi_3").replace("phi3", "phi_3")
    return name


def plan_conversion(
    model_dir: str | os.PathLike,
    outtype: str = "auto",
    method: str | None = None,
    approximate: bool = False,
    pre_tokenizer: str | None = None,
    with_vocab: bool = True,
    **rope_options,
) -> Plan:
    """Read a model folder and decide everything the GGUF will hold; raises RopetoolError on bad input.

    ``with_vocab=False`` skips the tokenizer (for callers that only want the tensors, like the reference).
    """
    ckpt = open_checkpoint(model_dir)
    arch = arch_for_config(ckpt.config)
    hp = Hparams.from_config(ckpt.config, arch)
    if outtype == "auto":
        qtype = Q.BF16 if ckpt.source_dtype == "BF16" else Q.F16
    elif outtype in OUTTYPES:
        qtype = OUTTYPES[outtype]
    else:
        raise RopetoolError(f"unknown output type {outtype!r}; choose from auto, {', '.join(OUTTYPES)}")

    check_rope_config(ckpt.config)
    rope, rotary_dim = rope_for(ckpt.config, method, hp, **rope_options)
    lowered = lower_for_llama_cpp(rope, arch, rotary_dim, hp.n_head, hp.trained_context, approximate)
    tensors, skipped = plan_tensors(ckpt, arch, hp, qtype)
    for name, data in lowered.tensors.items():
        tensors.append(PlannedTensor(name, tuple(data.shape), Q.F32, [], data=data))

    vocab = None
    if with_vocab:
        from ropetool.io.vocab import load_vocab

        vocab = load_vocab(ckpt.path, vocab_size=hp.vocab_size, pre_tokenizer=pre_tokenizer)
    plan = Plan(ckpt.path, arch, hp, rope, rotary_dim, lowered, qtype, tensors=tensors, skipped=skipped, vocab=vocab)
    T = gguf.GGUFValueType
    context = lowered.context_length or hp.trained_context
    context = max(context, hp.trained_context)
    plan.kv[K.NAME] = (_model_name(ckpt.path.name, vocab), T.STRING)
    plan.kv[K.FILE_TYPE] = (int(FILE_TYPES[qtype]), T.UINT32)
    plan.kv.update(_hparam_kv(arch, hp, rotary_dim, context))
    plan.kv.update(lowered.kv)
    plan.kv.update(provenance(lowered, __version__))
    return plan


def write_gguf(plan: Plan, out: str | os.PathLike, force: bool = False,
               progress: Callable[[Iterator[PlannedTensor]], Iterator[PlannedTensor]] | None = None) -> Path:
    """Write ``plan`` to ``out`` through a temporary file in the same folder and an atomic rename.

    The layout is gguf-py's GGUFWriter's (header, key/values, tensor infos, then each tensor padded
    to 32 bytes), byte for byte.  Every tensor's place in the file is known from the plan, so the
    tensors are converted a run of rows at a time by WORKERS threads, each writing its run at its
    offset (tensors kept in their source type are copied by the kernel); a few runs are in flight.
    """
    out = Path(out)
    if out.exists() and not force:
        raise RopetoolError(f"{out} exists; pass --force to overwrite it")
    if out.exists() and out.resolve().parent == plan.source.resolve() and out.suffix != ".gguf":
        raise RopetoolError(f"refusing to overwrite {out.name}, a file of the source model")
    if not out.parent.is_dir():
        raise RopetoolError(f"output folder does not exist: {out.parent}")
    header, offsets = _header_bytes(plan)
    data_start = len(header) + (-len(header)) % ALIGNMENT
    end = data_start + (offsets[-1] + _padded(plan.tensors[-1].nbytes) if plan.tensors else 0)
    sources: dict[Path, int] = {}
    try:
        with atomic_file(out) as fd:
            pwrite_all(fd, header, 0)
            items = progress(iter(plan.tensors)) if progress else plan.tensors
            offset_of = {id(t): data_start + off for t, off in zip(plan.tensors, offsets)}
            with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ropetool-convert") as pool:
                pending: deque = deque()
                try:
                    for t in items:
                        for task in _tasks(t, offset_of[id(t)], fd, sources):
                            pending.append(pool.submit(task))
                            while len(pending) > 2 * WORKERS:
                                pending.popleft().result()
                    while pending:
                        pending.popleft().result()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
            os.ftruncate(fd, end)  # the padding after the last tensor
    finally:
        for sfd in sources.values():
            os.close(sfd)
    return out


def _padded(n: int) -> int:
    return n + (-n) % ALIGNMENT


def _tasks(t: PlannedTensor, offset: int, fd: int, sources: dict[Path, int]) -> Iterator[Callable[[], None]]:
    """Callables that together write tensor ``t``'s bytes at ``offset`` of ``fd``, a run of rows each."""
    rows, cols = _rows_cols(t.shape)
    if rows == 0 or cols == 0:
        return
    row_bytes = t.nbytes // rows
    step = max(1, CHUNK_ELEMENTS // cols)
    if not t.streamed:
        flat = np.asarray(t.whole()).reshape(rows, cols)  # generated or transformed: computed whole
        for i in range(0, rows, step):
            yield functools.partial(_encode_and_write, flat[i:i + step], t.qtype, fd, offset + i * row_bytes)
        return
    ref = t.source[0]
    if ref.path not in sources:
        sources[ref.path] = os.open(ref.path, os.O_RDONLY)
    src = sources[ref.path]
    if (ref.dtype, t.qtype) in (("F32", Q.F32), ("F16", Q.F16)):  # the bytes themselves
        for i in range(0, t.nbytes, COPY_BYTES):
            n = min(COPY_BYTES, t.nbytes - i)
            yield functools.partial(copy_range, src, ref.start + i, n, fd, offset + i)
        return
    itemsize = checkpoint_dtype(ref.dtype).itemsize
    for i in range(0, rows, step):
        n = min(step, rows - i)
        yield functools.partial(_convert_and_write, src, ref, ref.start + i * cols * itemsize, n, cols, t.qtype,
                                fd, offset + i * row_bytes)


def _convert_and_write(src: int, ref: TensorRef, start: int, n: int, cols: int, qtype: Q, fd: int, offset: int) -> None:
    scratch = SCRATCH
    dtype = checkpoint_dtype(ref.dtype)
    raw = scratch.buf("src_" + dtype.str, dtype, n * cols)
    _pread_into(src, raw, start, ref.path)
    if ref.dtype == "BF16":  # widened by hand: bf16 is the top half of a float32
        wide = scratch.buf("bf16", np.uint32, raw.size)
        np.copyto(wide, raw)
        np.left_shift(wide, np.uint32(16), out=wide)
        raw = wide.view(np.float32)
    _encode_and_write(raw.reshape(n, cols), qtype, fd, offset)


def _encode_and_write(rows: np.ndarray, qtype: Q, fd: int, offset: int) -> None:
    pwrite_all(fd, encode_rows(rows, qtype), offset)


def _pread_into(fd: int, arr: np.ndarray, offset: int, path: Path) -> None:
    view = memoryview(arr.reshape(-1).view(np.uint8))
    while view:
        if hasattr(os, "preadv"):  # straight into the buffer
            got = os.preadv(fd, [view], offset)
        else:  # older macOS Pythons: os.pread and a copy
            data = os.pread(fd, len(view), offset)
            got = len(data)
            view[:got] = data
        if got == 0:
            raise RopetoolError(f"{path} shrank while it was being converted")
        view, offset = view[got:], offset + got


def _header_bytes(plan: Plan) -> tuple[bytes, list[int]]:
    """GGUF v3 header, key/values (general.architecture first) and tensor infos, as gguf-py writes them;
    and each tensor's offset in the data section."""
    collector = gguf.GGUFWriter(None, plan.arch.name)  # only collects the key/values (vocab included)
    for key, (value, vtype) in plan.kv.items():
        if key == K.ARCHITECTURE:
            continue
        sub = None
        if vtype == gguf.GGUFValueType.ARRAY:
            value, sub = value
        collector.add_key_value(key, value, vtype, sub_type=sub)
    if plan.vocab is not None:
        from ropetool.io.vocab import write_vocab

        write_vocab(collector, plan.vocab)
    kv = collector.kv_data[0]
    parts = [struct.pack("<4sIQQ", b"GGUF", 3, len(plan.tensors), len(kv))]
    offsets = []
    for key, val in kv.items():
        parts.append(_pack_string(key.encode("utf-8")))
        parts.append(_pack_value(val.value, val.type, val.sub_type))
    offset = 0
    for t in plan.tensors:
        parts.append(_pack_string(t.name.encode("utf-8")))
        parts.append(struct.pack(f"<I{len(t.shape)}QIQ", len(t.shape), *reversed(t.shape), int(t.qtype), offset))
        offsets.append(offset)
        offset += _padded(t.nbytes)
    return b"".join(parts), offsets


def _pack_string(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


_INFERRED = {str: gguf.GGUFValueType.STRING, bytes: gguf.GGUFValueType.STRING, bool: gguf.GGUFValueType.BOOL,
             int: gguf.GGUFValueType.INT32, float: gguf.GGUFValueType.FLOAT32}


def _pack_value(value, vtype, sub_type) -> bytes:
    """One value as gguf-py's GGUFWriter packs it (an array's element type inferred from its first element,
    as gguf-py does), encoded by gguf_file (whose string arrays are joined, not packed one by one)."""
    if vtype == gguf.GGUFValueType.ARRAY:
        value = list(value)
        if sub_type is None:
            sub_type = _INFERRED[type(value[0])] if value else gguf.GGUFValueType.UINT8
        if sub_type == gguf.GGUFValueType.STRING:
            value = [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    elif isinstance(value, bytes):
        value = value.decode("utf-8")
    return encode_value(vtype, value, sub_type)


def convert(model_dir, out, outtype="auto", method=None, approximate=False, force=False, pre_tokenizer=None,
            progress=None, **rope_options) -> Plan:
    """Convert ``model_dir`` to the GGUF file ``out``; returns the plan that was written."""
    out = Path(out)
    if out.exists() and not force:
        raise RopetoolError(f"{out} exists; pass --force to overwrite it")
    plan = plan_conversion(model_dir, outtype, method, approximate, pre_tokenizer, **rope_options)
    write_gguf(plan, out, force=force, progress=progress)
    return plan
