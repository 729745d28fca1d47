"""Convert a Hugging Face checkpoint folder to GGUF, with the chosen rope method embedded.

The pipeline: read config.json and the safetensors headers (checkpoint.py); pick the architecture
(archs.py); resolve the rope method from config.json or the caller (rope/); lower it to GGUF keys
and tensors (lowering.py); plan every output tensor (name, type, shape) and check the shapes
against config.json; then write the header and stream the tensors one at a time into a temporary
file that is renamed over the target only when complete.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from . import __version__
from . import keys as K
from .archs import Arch, arch_for_config
from .checkpoint import Checkpoint, TensorRef, load_tensor, open_checkpoint
from .errors import RopetoolError
from .lowering import Lowered, lower, provenance
from .rope import RopeParams, make_params, rope_from_hf_config

OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FILE_TYPES = {
    Q.F32: gguf.LlamaFileType.ALL_F32,
    Q.F16: gguf.LlamaFileType.MOSTLY_F16,
    Q.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}
CHUNK_ELEMENTS = 1 << 22  # rows converted at a time: 16 MB of float32
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
                    return config[n]
            if default is not None:
                return default
            raise RopetoolError(f"config.json lacks {names[0]}")

        n_embd = int(need("hidden_size", "n_embed", "n_embd"))
        n_head = int(need("num_attention_heads", "n_head"))
        head_dim = int(config.get("head_dim") or n_embd // n_head)
        return cls(
            n_embd=n_embd,
            n_layer=int(need("num_hidden_layers", "n_layer")),
            n_head=n_head,
            n_head_kv=int(need("num_key_value_heads", "n_head", "num_attention_heads")),
            n_ff=int(need("intermediate_size", default=4 * n_embd)),
            head_dim=head_dim,
            eps=float(need(arch.hf_eps_key, "rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps")),
            vocab_size=int(need("vocab_size")),
            trained_context=int(need("max_position_embeddings", "seq_length", "n_positions", default=2048)),
            tied=bool(config.get("tie_word_embeddings", arch.is_alibi)),
        )


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
        return int(np.prod(self.shape, dtype=np.int64)) // block * size

    def produce(self) -> np.ndarray:
        """The tensor's bytes as written: converted in chunks of rows, so that no more than the source
        tensor (memory-mapped) and the output are held, whatever the type."""
        if self.data is not None:
            arr = self.data
        else:
            arr = load_tensor(self.source[0])
            if self.transform is not None:
                arr = self.transform(arr)
        if self.qtype == Q.F32:
            return np.ascontiguousarray(arr, dtype=np.float32)
        rows = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr.reshape(1, -1)
        if self.qtype == Q.F16:
            out = np.empty(rows.shape, dtype=np.float16)
        else:
            out = np.empty(gguf.quant_shape_to_byte_shape(rows.shape, self.qtype), dtype=np.uint8)
        step = max(1, CHUNK_ELEMENTS // rows.shape[1])
        for i in range(0, rows.shape[0], step):
            chunk = np.asarray(rows[i:i + step], dtype=np.float32)
            out[i:i + step] = chunk.astype(np.float16) if self.qtype == Q.F16 else gguf.quants.quantize(chunk, self.qtype)
        byte_shape = (*arr.shape[:-1], out.shape[-1]) if arr.ndim > 1 else (out.shape[-1],)
        return out.reshape(byte_shape)


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

    rope, rotary_dim = rope_for(ckpt.config, method, hp, **rope_options)
    lowered = lower(rope, arch, rotary_dim, hp.n_head, hp.trained_context)
    if lowered.needs_approval and not approximate:
        raise RopetoolError(
            f"llama.cpp cannot compute {rope.method} exactly on {arch.name}: {'; '.join(lowered.notes)} "
            "(pass --approximate to write it anyway, recording the approximation)"
        )
    tensors, skipped = plan_tensors(ckpt, arch, hp, qtype)
    for name, data in lowered.tensors.items():
        tensors.append(PlannedTensor(name, tuple(data.shape), Q.F32, [], data=data))

    vocab = None
    if with_vocab:
        from .vocab import load_vocab

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
    """Write ``plan`` to ``out`` through a temporary file in the same folder and an atomic rename."""
    out = Path(out)
    if out.exists() and not force:
        raise RopetoolError(f"{out} exists; pass --force to overwrite it")
    if out.exists() and out.resolve().parent == plan.source.resolve() and out.suffix != ".gguf":
        raise RopetoolError(f"refusing to overwrite {out.name}, a file of the source model")
    if not out.parent.is_dir():
        raise RopetoolError(f"output folder does not exist: {out.parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, plan.arch.name)
        for key, (value, vtype) in plan.kv.items():
            if key == K.ARCHITECTURE:
                continue
            sub = None
            if vtype == gguf.GGUFValueType.ARRAY:
                value, sub = value
            writer.add_key_value(key, value, vtype, sub_type=sub)
        if plan.vocab is not None:
            from .vocab import write_vocab

            write_vocab(writer, plan.vocab)
        for t in plan.tensors:
            if t.qtype in (Q.F32, Q.F16):
                dtype = np.float32 if t.qtype == Q.F32 else np.float16
                writer.add_tensor_info(t.name, t.shape, np.dtype(dtype), t.nbytes)
            else:
                byte_shape = gguf.quant_shape_to_byte_shape(t.shape, t.qtype)
                writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        items = progress(iter(plan.tensors)) if progress else plan.tensors
        for t in items:
            data = t.produce()
            if data.nbytes != t.nbytes:  # pragma: no cover - a planning bug, not bad input
                raise RopetoolError(f"internal error: {t.name} produced {data.nbytes} bytes, planned {t.nbytes}")
            writer.write_tensor_data(data)
            del data
        writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return out


def convert(model_dir, out, outtype="auto", method=None, approximate=False, force=False, pre_tokenizer=None,
            progress=None, **rope_options) -> Plan:
    """Convert ``model_dir`` to the GGUF file ``out``; returns the plan that was written."""
    out = Path(out)
    if out.exists() and not force:
        raise RopetoolError(f"{out} exists; pass --force to overwrite it")
    plan = plan_conversion(model_dir, outtype, method, approximate, pre_tokenizer, **rope_options)
    write_gguf(plan, out, force=force, progress=progress)
    return plan
