"""Read a Hugging Face checkpoint folder: config.json and safetensors weights, one tensor at a time.

The safetensors header is parsed and checked here (sizes against the file, offsets, dtypes) and
each tensor is a memory-mapped byte range, widened to float32 only when it is asked for, so a
conversion holds about one tensor in memory.  bfloat16 (which numpy lacks) is widened by hand.
Sharded checkpoints are read through model.safetensors.index.json, which must agree with the
shards exactly.  Pickle checkpoints (.bin/.pt) are refused: loading them runs arbitrary code.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.files import open_regular, read_regular

INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened by hand
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lies: file, dtype, shape and byte range within the data section."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute file offset
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(read_regular(path, what))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RopetoolError(f"{path.name} is not valid JSON: {e}") from None
    except RecursionError:
        raise RopetoolError(f"{path.name} is nested too deeply to be a configuration file") from None
    except OSError as e:
        raise RopetoolError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(value, dict):
        raise RopetoolError(f"{path.name} must hold a JSON object")
    return value


def read_safetensors_header(path: Path) -> list[TensorRef]:
    """The tensors of one .safetensors file, checked against the file's size."""
    try:
        with os.fdopen(open_regular(path, "weight file"), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise RopetoolError(f"{path.name}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise RopetoolError(f"{path.name}: safetensors header length {n} exceeds the file ({size} bytes)")
            raw = f.read(n)
    except OSError as e:
        raise RopetoolError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        pairs = json.loads(raw, object_pairs_hook=_Pairs)  # every object, as its (key, value) pairs
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RopetoolError(f"{path.name}: safetensors header is not valid JSON") from None
    except RecursionError:
        raise RopetoolError(f"{path.name}: safetensors header is nested too deeply") from None
    if not isinstance(pairs, _Pairs):
        raise RopetoolError(f"{path.name}: safetensors header must be a JSON object")
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        dup = next(k for k in names if names.count(k) > 1)
        raise RopetoolError(f"{path.name}: safetensors header names tensor {dup!r} twice")
    data_start = 8 + n
    data_size = size - data_start
    refs = []
    for name, info in pairs:
        if name == "__metadata__":
            continue
        if not isinstance(info, _Pairs):
            raise RopetoolError(f"{path.name}: tensor {name!r} has a malformed entry")
        info = dict(info)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise RopetoolError(f"{path.name}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise RopetoolError(f"{path.name}: tensor {name!r} has a malformed shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise RopetoolError(f"{path.name}: tensor {name!r} has offsets {offsets!r} outside the file")
        expected = math.prod(shape) * _DTYPES[dtype].itemsize  # Python ints: no overflow
        if offsets[1] - offsets[0] != expected:
            raise RopetoolError(
                f"{path.name}: tensor {name!r} holds {offsets[1] - offsets[0]} bytes but its shape {shape} "
                f"and dtype {dtype} need {expected}"
            )
        refs.append(TensorRef(name, path, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1]))
    ordered = sorted((r for r in refs if r.nbytes), key=lambda r: r.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.end:
            raise RopetoolError(f"{path.name}: tensors {a.name!r} and {b.name!r} overlap in the file")
    return refs


class _Pairs(list):
    """A JSON object as the list of its (key, value) pairs, duplicates kept."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def checkpoint_dtype(name: str) -> np.dtype:
    """The numpy dtype a safetensors dtype name is stored as (BF16 as uint16, widened by hand)."""
    return _DTYPES[name]


def load_tensor(ref: TensorRef) -> np.ndarray:
    """One tensor as float32 (bf16 and f16 widened); integers keep their type."""
    raw = np.memmap(ref.path, dtype=np.uint8, mode="r", offset=ref.start, shape=(ref.nbytes,)) if ref.nbytes else None
    dt = _DTYPES[ref.dtype]
    if raw is None:
        return np.zeros(ref.shape, dtype=np.float32)
    arr = raw.view(dt).reshape(ref.shape)
    if ref.dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False)  # f32: the memory-mapped bytes themselves
    return np.array(arr)


@dataclass
class Checkpoint:
    """A Hugging Face model folder."""

    path: Path
    config: dict
    tensors: dict[str, TensorRef]

    @property
    def source_dtype(self) -> str:
        """The dtype of the first 2-D weight (as llama.cpp's converter picks 'auto')."""
        for ref in self.tensors.values():
            if len(ref.shape) == 2:
                return ref.dtype
        return "F32"


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PICKLE_WHY = ("ropetool reads safetensors only, because loading a pickle can run arbitrary code "
              "(convert them with safetensors first)")


def _inside(folder: Path, path: Path) -> bool:
    """Whether ``path`` (symlinks resolved) lies in ``folder``, or, for a Hugging Face hub cache
    snapshot (``models--ORG--NAME/snapshots/REV``), in that repository's ``blobs`` folder, where the
    hub's own symlinks point."""
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(folder))
    if real == root or root in real.parents:
        return True
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
        blobs = root.parent.parent / "blobs"
        return blobs in real.parents
    return False


def _check_weight_file(folder: Path, path: Path, what: str) -> None:
    if not _inside(folder, path):
        raise RopetoolError(f"{what} {path.name} is a link to {os.path.realpath(path)}, outside the model folder; "
                            "refusing to read it")
    os.close(open_regular(path, f"{what} {path.name}"))


def _weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_FILE
    if index.exists():
        weight_map = read_json(index, "index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise RopetoolError(f"{INDEX_FILE}: weight_map must be a non-empty object")
        files = []
        for tensor, fname in weight_map.items():
            if (not isinstance(fname, str) or not fname or os.path.isabs(fname) or ".." in Path(fname).parts
                    or "/" in fname or "\\" in fname or "\0" in fname):
                raise RopetoolError(f"{INDEX_FILE}: tensor {tensor!r} names a file outside the model folder: {fname!r}")
            if fname.endswith(PICKLE_SUFFIXES):
                raise RopetoolError(f"{INDEX_FILE} names a PyTorch pickle shard ({fname}); {PICKLE_WHY}")
            if not fname.endswith(".safetensors"):
                raise RopetoolError(f"{INDEX_FILE}: tensor {tensor!r} is in {fname!r}, not a .safetensors file")
            if fname not in files:
                files.append(fname)
        missing = [f for f in files if not (folder / f).exists()]
        if missing:
            raise RopetoolError(f"{INDEX_FILE} names missing shard(s): {', '.join(missing)}")
        for f in files:
            _check_weight_file(folder, folder / f, "shard")
        return [folder / f for f in files]
    files = sorted(folder.glob("*.safetensors"))
    if files:
        for f in files:
            _check_weight_file(folder, f, "weight file")
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise RopetoolError(f"{folder} holds only PyTorch pickle weights ({', '.join(pickles[:3])}); {PICKLE_WHY}")
    raise RopetoolError(f"no weight files (*.safetensors) in {folder}")


# How much bigger than the checkpoint its weights would be written as bf16 (MXFP4: 4-bit values and a scale per 32).
DEQUANTIZED_SIZE = {"mxfp4": "about 4x", "fp8": "2x"}


def _refuse_quantized(config: dict) -> None:
    """A quantized checkpoint (config.json's ``quantization_config``: gpt-oss's MXFP4 experts, DeepSeek V3's FP8) is
    refused in one line: ropetool reads float weights only, and dequantizing them would write a file several times
    the checkpoint's size without being asked."""
    q = config.get("quantization_config")
    if q is None:
        return
    method = q.get("quant_method") if isinstance(q, dict) else None
    method = method if isinstance(method, str) else "unknown"
    size = DEQUANTIZED_SIZE.get(method.lower(), "several times")
    raise RopetoolError(f"config.json: the weights are quantized ({method}, quantization_config): ropetool converts "
                        f"f32/f16/bf16 checkpoints only and does not dequantize them into a file {size} the size of the "
                        "checkpoint; convert the model's BF16 release")


def open_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """Read config.json and the safetensors headers of a model folder, checking that they agree."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RopetoolError(f"not a model folder: {folder}")
    config = read_json(folder / "config.json", "config.json")
    _refuse_quantized(config)
    files = _weight_files(folder)
    tensors: dict[str, TensorRef] = {}
    for path in files:
        for ref in read_safetensors_header(path):
            if ref.name in tensors:
                raise RopetoolError(f"tensor {ref.name!r} appears in both {tensors[ref.name].path.name} and {path.name}")
            tensors[ref.name] = ref
    index = folder / INDEX_FILE
    if index.exists():
        weight_map = read_json(index, "index")["weight_map"]
        for name, fname in weight_map.items():
            ref = tensors.get(name)
            if ref is None or ref.path.name != fname:
                raise RopetoolError(f"{INDEX_FILE}: tensor {name!r} is not in {fname}")
        extra = sorted(set(tensors) - set(weight_map))
        if extra:
            raise RopetoolError(f"{INDEX_FILE} does not list tensor(s) found in the shards: {', '.join(extra[:5])}")
    if not tensors:
        raise RopetoolError(f"the weight files in {folder} hold no tensors")
    return Checkpoint(folder, config, tensors)
