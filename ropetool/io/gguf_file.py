"""A fast, defensive GGUF header reader and a verbatim-copying GGUF writer.

Reading
-------
:class:`GGUFFile` memory-maps the file and parses the header (magic, version, counts, key/value
records, tensor infos) with ``struct``, without reading any tensor data.  Every count, length and
offset is checked against the file size *before* anything is allocated, so a truncated or corrupted
file raises a one-line :class:`~ropetool.errors.RopetoolError` instead of a traceback or a huge
allocation.  Big arrays are not turned into Python objects: numeric arrays are kept as (offset,
count) and turned into numpy arrays on demand; string arrays (``tokenizer.ggml.tokens``/``merges``)
are skipped by a scan of their length prefixes and decoded only when asked (:meth:`Field.head`,
:attr:`Field.value`).

Writing
-------
:func:`write_gguf` writes a new header (reusing the raw bytes of unchanged key/value records, so
they survive byte for byte, and encoding new ones itself, so empty strings and empty arrays are
written rather than silently dropped as gguf-py's writer does), lays the tensors out in order with
``general.alignment`` padding, and streams each tensor's bytes from the source file.  The output goes
to a temporary file in the target folder that is fsync'ed and renamed over the target only when
complete; on any failure it is removed and the target (and the input) are left untouched.  A process
killed outright (SIGKILL) leaves its ``.NAME.XXXXXXXX.tmp`` behind, never a partial target; the next
write of the same target removes it (:func:`create_temp`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import mmap
import os
import re
import struct
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.files import Closing, open_regular, pread_into
from ropetool.io.gguf_constants import constants as _gguf  # gguf-py's types and names, without the rest of gguf-py
from ropetool.rope.fit import nice

GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, _Keys = (_gguf.GGML_QUANT_SIZES, _gguf.GGMLQuantizationType,
                                                                 _gguf.GGUFValueType, _gguf.Keys)

T = GGUFValueType
ALIGNMENT_KEY = _Keys.General.ALIGNMENT
ARCHITECTURE_KEY = _Keys.General.ARCHITECTURE
GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
GGML_MAX_NAME = 64  # ggml's tensor name buffer: llama.cpp refuses longer tensor names
MAX_KEY_LENGTH = 65535  # what `ropetool set` writes; real keys are a few dozen bytes
COPY_CHUNK = 16 << 20

# The type names used by inspect's output and by ``ropetool set`` (``KEY=TYPE:VALUE``).
TYPE_NAMES: dict[T, str] = {
    T.UINT8: "u8", T.INT8: "i8", T.UINT16: "u16", T.INT16: "i16", T.UINT32: "u32", T.INT32: "i32",
    T.UINT64: "u64", T.INT64: "i64", T.FLOAT32: "f32", T.FLOAT64: "f64", T.BOOL: "bool", T.STRING: "str",
    T.ARRAY: "arr",
}
TYPES_BY_NAME: dict[str, T] = {v: k for k, v in TYPE_NAMES.items()}
# struct format and numpy kind of each fixed-size type (without byte order).
_FORMATS: dict[T, str] = {
    T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
    T.UINT64: "Q", T.INT64: "q", T.FLOAT32: "f", T.FLOAT64: "d", T.BOOL: "B",
}
_NUMPY: dict[T, str] = {
    T.UINT8: "u1", T.INT8: "i1", T.UINT16: "u2", T.INT16: "i2", T.UINT32: "u4", T.INT32: "i4",
    T.UINT64: "u8", T.INT64: "i8", T.FLOAT32: "f4", T.FLOAT64: "f8", T.BOOL: "u1",
}
INT_RANGES: dict[T, tuple[int, int]] = {
    T.UINT8: (0, 2**8 - 1), T.INT8: (-(2**7), 2**7 - 1), T.UINT16: (0, 2**16 - 1), T.INT16: (-(2**15), 2**15 - 1),
    T.UINT32: (0, 2**32 - 1), T.INT32: (-(2**31), 2**31 - 1), T.UINT64: (0, 2**64 - 1), T.INT64: (-(2**63), 2**63 - 1),
}


def type_name(vtype: T, sub_type: T | None = None) -> str:
    """``u32``, ``str``, ``arr[i32]``, ``arr[str]`` ... (the syntax of ``ropetool set``)."""
    if vtype == T.ARRAY:
        return f"arr[{TYPE_NAMES.get(sub_type, '?')}]"
    return TYPE_NAMES[vtype]


def _itemsize(vtype: T) -> int:
    return struct.calcsize("<" + _FORMATS[vtype])


def align(offset: int, alignment: int) -> int:
    return offset + (-offset) % alignment


@dataclass
class Field:
    """One key/value record.  Scalars are parsed; arrays are kept as a location and parsed on demand."""

    key: str
    type: T
    start: int  # offset of the record (its key-length field)
    end: int  # offset just past the record
    data_start: int  # scalars: the value; arrays: the first element
    count: int = 1  # number of elements (arrays)
    sub_type: T | None = None
    scalar: object = None  # the value of a scalar
    _file: "GGUFFile | None" = field(default=None, repr=False)

    @property
    def type_name(self) -> str:
        return type_name(self.type, self.sub_type)

    @property
    def is_array(self) -> bool:
        return self.type == T.ARRAY

    def raw(self) -> bytes:
        """The whole record, as stored (key, type and value)."""
        return self._file.raw(self.start, self.end)

    def raw_value(self) -> bytes:
        """The value part of the record (type tag onwards), as stored."""
        return self._file.raw(self.data_start - (4 if not self.is_array else 16), self.end)

    def head(self, n: int | None) -> list:
        """The first ``n`` elements of an array (all of them when ``n`` is None) as Python values."""
        if not self.is_array:
            return [self.scalar]
        n = self.count if n is None else min(n, self.count)
        if self.sub_type == T.STRING:
            return self._file._read_strings(self.data_start, n)
        arr = self._file._read_numeric(self.data_start, self.sub_type, n)
        if self.sub_type == T.BOOL:
            return [bool(v) for v in arr]
        return arr.tolist()

    @property
    def value(self):
        """Scalars: the value; numeric arrays: a numpy array; string arrays: a list of str."""
        if not self.is_array:
            return self.scalar
        if self.sub_type == T.STRING:
            return self.head(None)
        arr = self._file._read_numeric(self.data_start, self.sub_type, self.count)
        return arr.astype(bool) if self.sub_type == T.BOOL else arr


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne[0] (the contiguous dimension) first, as gguf-dump prints it
    type: GGMLQuantizationType
    offset: int  # relative to the data section
    n_elements: int
    nbytes: int
    data_offset: int = 0  # absolute offset in the file

    @property
    def type_name(self) -> str:
        return self.type.name


class Header:
    """What a header answers from its ``fields``: a GGUFFile's, or a ModelFile's edited view of one."""

    def get(self, key: str, default=None):
        """The value of a scalar key (arrays: the full value), or ``default``."""
        f = self.fields.get(key)
        return default if f is None else f.value

    @property
    def architecture(self) -> str | None:
        v = self.get(ARCHITECTURE_KEY)
        return v if isinstance(v, str) else None


class GGUFFile(Closing, Header):
    """A parsed GGUF header.  Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not os.path.lexists(self.path):
            raise RopetoolError(f"no such file: {self.path}")
        self._f = os.fdopen(open_regular(self.path, "GGUF file"), "rb")
        try:
            self.size = os.fstat(self._f.fileno()).st_size
            if self.size < 24:
                raise RopetoolError(f"{self.path}: not a GGUF file (only {self.size} bytes)")
            self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
            self._parse()
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None:
            mm.close()
            self._mm = None
        if getattr(self, "_f", None) is not None:
            self._f.close()
            self._f = None

    def raw(self, start: int, end: int) -> bytes:
        return self._mm[start:end]

    def _fail(self, what: str, pos: int, need: int | None = None) -> RopetoolError:
        left = max(self.size - pos, 0)
        if need is None:
            detail = f"at offset {pos}"
        else:
            detail = f"at offset {pos} needs {need:,} bytes but only {left:,} remain"
        return RopetoolError(f"{self.path}: truncated or corrupted GGUF: {what} {detail} (file size {self.size:,})")

    def _need(self, pos: int, n: int, what: str) -> None:
        if n < 0 or pos + n > self.size:
            raise self._fail(what, pos, n)

    def _scalar(self, pos: int, vtype: T, what: str):
        n = _itemsize(vtype)
        self._need(pos, n, what)
        (v,) = struct.unpack_from(self._e + _FORMATS[vtype], self._mm, pos)
        if vtype == T.BOOL:
            v = bool(v)
        return v, pos + n

    def _string(self, pos: int, what: str, strict: bool = False, limit: int | None = None) -> tuple[str, int]:
        n, pos = self._scalar(pos, T.UINT64, f"the length of {what}")
        if limit is not None and n > limit:
            raise RopetoolError(f"{self.path}: corrupted GGUF: {what} at offset {pos} is {n:,} bytes long "
                                f"(at most {limit:,})")
        self._need(pos, n, what)
        data = self._mm[pos:pos + n]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            if strict:
                raise RopetoolError(f"{self.path}: corrupted GGUF: {what} at offset {pos} is not valid UTF-8") from None
            text = data.decode("utf-8", errors="replace")
        return text, pos + n

    def _skip_string(self, pos: int, what: str) -> int:
        n, pos = self._scalar(pos, T.UINT64, f"the length of {what}")
        self._need(pos, n, what)
        return pos + n

    def _skip_strings(self, pos: int, count: int, what: str) -> int:
        """Offset just past ``count`` length-prefixed strings starting at ``pos`` (no decoding)."""
        self._need(pos, 8 * count, what)  # every element has at least its 8-byte length
        unpack = struct.Struct(self._e + "Q").unpack_from
        mm = self._mm
        start = pos
        try:
            for _ in range(count):
                (n,) = unpack(mm, pos)
                pos += 8 + n
        except (struct.error, OverflowError):
            raise self._fail(f"{what} (element lengths)", start, pos - start + 8) from None
        if pos > self.size:
            raise self._fail(f"{what} (element lengths)", start, pos - start)
        return pos

    def _read_strings(self, pos: int, count: int) -> list[str]:
        out = []
        unpack = struct.Struct(self._e + "Q").unpack_from
        mm = self._mm
        for _ in range(count):
            (n,) = unpack(mm, pos)
            out.append(mm[pos + 8:pos + 8 + n].decode("utf-8", errors="replace"))
            pos += 8 + n
        return out

    def _read_numeric(self, pos: int, vtype: T, count: int) -> np.ndarray:
        dtype = np.dtype(self._e + _NUMPY[vtype])
        arr = np.frombuffer(self._mm[pos:pos + count * dtype.itemsize], dtype=dtype, count=count)
        return arr.astype(dtype.newbyteorder("="), copy=True)

    # -- parsing ----------------------------------------------------------------------------

    def _parse(self) -> None:
        mm = self._mm
        if mm[:4] != GGUF_MAGIC:
            raise RopetoolError(f"{self.path}: not a GGUF file (magic {bytes(mm[:4])!r}, expected b'GGUF')")
        (v_le,) = struct.unpack_from("<I", mm, 4)
        # No endianness flag: a big-endian file has its version's bytes reversed (gguf-py's rule).
        self._e = ">" if v_le & 0xFFFF == 0 else "<"
        self.endian = "big" if self._e == ">" else "little"
        (self.version,) = struct.unpack_from(self._e + "I", mm, 4)
        if self.version == 1:
            raise RopetoolError(f"{self.path}: GGUF version 1 is no longer supported (llama.cpp refuses it too)")
        if self.version not in (2, 3):
            raise RopetoolError(f"{self.path}: unsupported GGUF version {self.version} (ropetool reads 2 and 3)")
        self.tensor_count, self.kv_count = struct.unpack_from(self._e + "QQ", mm, 8)
        # Each record takes a minimum number of bytes: refuse impossible counts before looping.
        min_kv, min_ti = 8 + 4 + 1, 8 + 4 + 4 + 8
        if self.kv_count * min_kv + self.tensor_count * min_ti > self.size - 24:
            raise RopetoolError(
                f"{self.path}: truncated or corrupted GGUF: header claims {self.kv_count:,} keys and "
                f"{self.tensor_count:,} tensors, which cannot fit in {self.size:,} bytes"
            )
        pos = 24
        self.fields: dict[str, Field] = {}
        for i in range(self.kv_count):
            f, pos = self._parse_field(pos, i)
            if f.key in self.fields:
                raise RopetoolError(f"{self.path}: corrupted GGUF: duplicate key {f.key!r} (llama.cpp refuses it)")
            self.fields[f.key] = f
        self.alignment = DEFAULT_ALIGNMENT
        af = self.fields.get(ALIGNMENT_KEY)
        if af is not None:
            if af.type != T.UINT32:
                raise RopetoolError(f"{self.path}: corrupted GGUF: {ALIGNMENT_KEY} has type {af.type_name}, not u32")
            if af.scalar == 0 or af.scalar & (af.scalar - 1):
                raise RopetoolError(f"{self.path}: corrupted GGUF: {ALIGNMENT_KEY} = {af.scalar} is not a power of two")
            self.alignment = int(af.scalar)
        self.tensors: list[TensorInfo] = []
        self._tensor_index: dict[str, TensorInfo] = {}
        for i in range(self.tensor_count):
            t, pos = self._parse_tensor_info(pos, i)
            if t.name in self._tensor_index:
                raise RopetoolError(f"{self.path}: corrupted GGUF: duplicate tensor {t.name!r}")
            self.tensors.append(t)
            self._tensor_index[t.name] = t
        self.header_end = pos
        self.data_offset = align(pos, self.alignment)
        self._check_tensor_layout()
        # String values are decoded only now, when every length in the header has proved consistent:
        # a corrupted length that still lies inside a big file is not turned into a giant str first.
        for f in self.fields.values():
            if f.type == T.STRING:
                f.scalar, _ = self._string(f.data_start, f"the value of {f.key!r}")

    def _parse_field(self, pos: int, i: int) -> tuple[Field, int]:
        start = pos
        key, pos = self._string(pos, f"the name of key #{i + 1}", strict=True, limit=MAX_KEY_LENGTH)
        (tag, pos) = self._scalar(pos, T.UINT32, f"the type of key {key!r}")
        try:
            vtype = T(tag)
        except ValueError:
            raise RopetoolError(f"{self.path}: corrupted GGUF: key {key!r} has unknown value type {tag}") from None
        if vtype == T.ARRAY:
            f, pos = self._parse_array(pos, key, start)
            return f, pos
        data_start = pos
        if vtype == T.STRING:  # decoded once the whole header has parsed (see _parse)
            value, pos = None, self._skip_string(pos, f"the value of {key!r}")
        else:
            value, pos = self._scalar(pos, vtype, f"the value of {key!r}")
        return Field(key, vtype, start, pos, data_start, 1, None, value, self), pos

    def _parse_array(self, pos: int, key: str, start: int) -> tuple[Field, int]:
        (tag, pos) = self._scalar(pos, T.UINT32, f"the element type of {key!r}")
        try:
            sub = T(tag)
        except ValueError:
            raise RopetoolError(f"{self.path}: corrupted GGUF: array {key!r} has unknown element type {tag}") from None
        (count, pos) = self._scalar(pos, T.UINT64, f"the length of array {key!r}")
        data_start = pos
        what = f"the {count:,} elements of array {key!r}"
        if sub == T.STRING:
            pos = self._skip_strings(pos, count, what)
            return Field(key, T.ARRAY, start, pos, data_start, count, sub, None, self), pos
        if sub == T.ARRAY:
            # gguf-py can write arrays of arrays, but llama.cpp refuses them ("invalid GGUF type 9"), and
            # walking (and holding) millions of tiny nested arrays is the one place a corrupted count
            # would cost memory: refuse them.
            raise RopetoolError(f"{self.path}: unsupported GGUF: {key!r} is an array of arrays, which llama.cpp "
                                "refuses (it cannot load this file)")
        n = _itemsize(sub) * count
        self._need(pos, n, what)
        return Field(key, T.ARRAY, start, pos + n, data_start, count, sub, None, self), pos + n

    def _parse_tensor_info(self, pos: int, i: int) -> tuple[TensorInfo, int]:
        name, pos = self._string(pos, f"the name of tensor #{i + 1}", strict=True, limit=GGML_MAX_NAME - 1)
        (n_dims, pos) = self._scalar(pos, T.UINT32, f"the dimension count of tensor {name!r}")
        if n_dims > GGML_MAX_DIMS:
            raise RopetoolError(f"{self.path}: corrupted GGUF: tensor {name!r} has {n_dims} dimensions (at most {GGML_MAX_DIMS})")
        self._need(pos, 8 * n_dims + 12, f"the shape, type and offset of tensor {name!r}")
        shape = struct.unpack_from(self._e + "Q" * n_dims, self._mm, pos)
        pos += 8 * n_dims
        tag, offset = struct.unpack_from(self._e + "IQ", self._mm, pos)
        pos += 12
        try:
            qtype = GGMLQuantizationType(tag)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise RopetoolError(f"{self.path}: corrupted GGUF: tensor {name!r} has unknown type id {tag}") from None
        n_elements = math.prod(shape)
        if any(d >= 2**63 for d in shape) or n_elements >= 2**63:
            raise RopetoolError(f"{self.path}: corrupted GGUF: tensor {name!r} has an impossible shape {list(shape)}")
        if shape and shape[0] % block:
            raise RopetoolError(
                f"{self.path}: corrupted GGUF: tensor {name!r} ({qtype.name}) has ne[0] = {shape[0]}, "
                f"not a multiple of its block size {block}"
            )
        nbytes = n_elements // block * type_size
        return TensorInfo(name, tuple(shape), qtype, offset, n_elements, nbytes), pos

    def _check_tensor_layout(self) -> None:
        if not self.tensors:
            return
        for t in self.tensors:
            if t.offset % self.alignment:
                raise RopetoolError(
                    f"{self.path}: corrupted GGUF: tensor {t.name!r} has offset {t.offset}, "
                    f"not a multiple of the alignment {self.alignment}"
                )
            t.data_offset = self.data_offset + t.offset
            if t.data_offset + t.nbytes > self.size:
                raise RopetoolError(
                    f"{self.path}: truncated or corrupted GGUF: tensor {t.name!r} needs bytes "
                    f"{t.data_offset:,}..{t.data_offset + t.nbytes:,} but the file ends at {self.size:,}"
                )
        ordered = sorted(self.tensors, key=lambda t: t.offset)
        for a, b in zip(ordered, ordered[1:]):
            if a.offset + a.nbytes > b.offset:
                raise RopetoolError(f"{self.path}: corrupted GGUF: tensors {a.name!r} and {b.name!r} overlap")

    # -- queries ----------------------------------------------------------------------------

    def tensor(self, name: str) -> TensorInfo | None:
        return self._tensor_index.get(name)

    def layout_is_canonical(self) -> bool:
        """True when tensors sit in order, each at the padded end of the previous (what llama.cpp requires)."""
        expected = 0
        for t in self.tensors:
            if t.offset != expected:
                return False
            expected += align(t.nbytes, self.alignment)
        return True

    def read_tensor(self, name: str, max_elements: int = 1 << 20) -> np.ndarray:
        """A small tensor's data (F32/F16 only), e.g. ``rope_freqs.weight``; big tensors are refused."""
        t = self.tensor(name)
        if t is None:
            raise KeyError(name)
        if t.n_elements > max_elements:
            raise RopetoolError(f"{name} has {t.n_elements:,} elements; refusing to read it whole")
        kinds = {GGMLQuantizationType.F32: "f4", GGMLQuantizationType.F16: "f2"}
        if t.type not in kinds:
            raise RopetoolError(f"{name} is {t.type.name}; ropetool reads only F32/F16 rope tensors")
        dtype = np.dtype(self._e + kinds[t.type])
        data = np.frombuffer(self._mm[t.data_offset:t.data_offset + t.nbytes], dtype=dtype)
        return data.astype(np.float64).reshape(tuple(reversed(t.shape)) or ())

    def read_bytes(self, start: int, n: int) -> bytearray:
        """``n`` bytes at ``start``, in a new buffer (:func:`pread_into`: reading a big model tensor by tensor
        keeps only the tensor in memory)."""
        out = bytearray(n)
        pread_into(self._f.fileno(), out, start, f"{self.path}: the file shrank while it was being read")
        return out

    def iter_tensor_bytes(self, t: TensorInfo, chunk: int = COPY_CHUNK) -> Iterator[bytes]:
        """Stream a tensor's bytes in chunks (for hashing and copying); never loads it whole."""
        fd = self._f.fileno()
        pos, end = t.data_offset, t.data_offset + t.nbytes
        while pos < end:
            data = os.pread(fd, min(chunk, end - pos), pos)
            if not data:
                raise RopetoolError(f"{self.path}: file shrank while reading tensor {t.name!r}")
            yield data
            pos += len(data)

    def tensor_hash(self, t: TensorInfo) -> str:
        h = hashlib.sha256()
        for data in self.iter_tensor_bytes(t):
            h.update(data)
        return h.hexdigest()


# ------------------------------------------------------------------------------------------
# Encoding


def check_value(vtype: T, value, sub_type: T | None = None, key: str = "value"):
    """Validate (and normalise) a value for ``vtype``; raise RopetoolError naming ``key`` if it does not fit."""
    if vtype == T.ARRAY:
        if sub_type is None or sub_type == T.ARRAY:
            raise RopetoolError(f"{key}: arrays of arrays cannot be written")
        return [check_value(sub_type, v, None, key) for v in value]
    if vtype == T.STRING:
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if not isinstance(value, str):
            raise RopetoolError(f"{key}: expected a string, got {value!r}")
        return value
    if vtype == T.BOOL:
        if not isinstance(value, (bool, np.bool_)) and value not in (0, 1):
            raise RopetoolError(f"{key}: expected a bool, got {value!r}")
        return bool(value)
    if vtype in INT_RANGES:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise RopetoolError(f"{key}: expected an integer for {TYPE_NAMES[vtype]}, got {value!r}")
        lo, hi = INT_RANGES[vtype]
        if not lo <= int(value) <= hi:
            raise RopetoolError(f"{key}: {value} is out of range for {TYPE_NAMES[vtype]} ({lo}..{hi})")
        return int(value)
    if vtype in (T.FLOAT32, T.FLOAT64):
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise RopetoolError(f"{key}: expected a number, got {value!r}") from None
        if vtype == T.FLOAT32 and math.isfinite(v) and abs(v) > float(np.finfo(np.float32).max):
            raise RopetoolError(f"{key}: {value} is out of range for f32")
        return v
    raise RopetoolError(f"{key}: cannot write values of type {vtype!r}")  # pragma: no cover


def encode_value(vtype: T, value, sub_type: T | None = None, endian: str = "<") -> bytes:
    """The value part of a record (type tag included) in ``endian`` ('<' or '>')."""
    e = endian
    out = [struct.pack(e + "I", int(vtype))]
    if vtype == T.ARRAY:
        out.append(struct.pack(e + "IQ", int(sub_type), len(value)))
        if sub_type == T.STRING:
            for s in value:
                b = s.encode("utf-8")
                out.append(struct.pack(e + "Q", len(b)))
                out.append(b)
        else:
            out.append(np.asarray(value, dtype=np.dtype(e + _NUMPY[sub_type])).tobytes())
    elif vtype == T.STRING:
        b = value.encode("utf-8")
        out.append(struct.pack(e + "Q", len(b)))
        out.append(b)
    else:
        out.append(struct.pack(e + _FORMATS[vtype], int(value) if vtype == T.BOOL else value))
    return b"".join(out)


def encode_kv(key: str, vtype: T, value, sub_type: T | None = None, endian: str = "<") -> bytes:
    kb = key.encode("utf-8")
    return struct.pack(endian + "Q", len(kb)) + kb + encode_value(vtype, value, sub_type, endian)


@dataclass
class NewValue:
    """A key/value record to write (as opposed to one copied verbatim from a source file)."""

    key: str
    type: T
    value: object
    sub_type: T | None = None

    @property
    def type_name(self) -> str:
        return type_name(self.type, self.sub_type)

    def encode(self, endian: str) -> bytes:
        return encode_kv(self.key, self.type, self.value, self.sub_type, endian)


@dataclass
class TensorOut:
    """A tensor to write: copied from ``source`` (a TensorInfo of the input) or given as ``data``."""

    name: str
    shape: tuple[int, ...]  # ggml order
    type: GGMLQuantizationType
    nbytes: int
    source: TensorInfo | None = None
    data: bytes | None = None

    @classmethod
    def copy_of(cls, t: TensorInfo) -> "TensorOut":
        return cls(t.name, t.shape, t.type, t.nbytes, source=t)

    @classmethod
    def from_array(cls, name: str, arr: np.ndarray, endian: str = "<") -> "TensorOut":
        arr = np.ascontiguousarray(arr, dtype=np.dtype(endian + "f4"))
        return cls(name, tuple(reversed(arr.shape)), GGMLQuantizationType.F32, arr.nbytes, data=arr.tobytes())


def copy_range(src: int, src_offset: int, n: int, dst: int, dst_offset: int) -> None:
    """Copy ``n`` bytes between files at the given offsets: in the kernel (copy_file_range) where it
    can, else through a buffer."""
    use_cfr = hasattr(os, "copy_file_range")
    while n > 0:
        if use_cfr:
            try:
                done = os.copy_file_range(src, dst, min(n, 1 << 30), src_offset, dst_offset)
            except OSError:  # old kernels, some file systems
                use_cfr = False
                continue
        else:
            data = os.pread(src, min(n, COPY_CHUNK), src_offset)
            done = len(data)
            pwrite_all(dst, data, dst_offset)
        if done == 0:
            raise RopetoolError("an input file ended while its data was being copied (did it change meanwhile?)")
        src_offset, dst_offset, n = src_offset + done, dst_offset + done, n - done


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of ``data`` (any buffer) at ``offset`` of ``fd``."""
    view = memoryview(data).cast("B")
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


_TEMP_NAME = r"{prefix}[a-z0-9_]{{8}}\.tmp"  # tempfile.mkstemp(prefix=_temp_prefix(out), suffix=".tmp")
NAME_MAX = 255  # bytes in one file name (Linux, macOS)


def _temp_prefix(out: Path) -> str:
    """``.NAME.``, or for a name too long to take the 14 more bytes, its first bytes and a hash of the whole."""
    prefix = f".{out.name}."
    if len(os.fsencode(prefix)) + 12 <= NAME_MAX:
        return prefix
    digest = hashlib.sha256(os.fsencode(out.name)).hexdigest()[:16]
    head = os.fsencode(out.name)[:NAME_MAX - 12 - 20].decode("utf-8", "ignore")
    return f".{head}~{digest}."


def create_temp(out: Path) -> tuple[int, str]:
    """A new temporary file next to ``out`` (``.NAME.XXXXXXXX.tmp``), held under an exclusive flock
    for as long as the returned descriptor is open; first removes the stale temporaries of ``out``.

    A writer killed outright (SIGKILL, power loss) cannot delete its temporary file; the target path
    is never touched, since the temporary is renamed over it only when complete.  The lock is how the
    next writer of the same target tells such a leftover from the file of a writer still running: the
    kernel drops a lock when its holder dies, so an unlocked temporary is stale."""
    remove_stale_temps(out)
    while True:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(out), suffix=".tmp", dir=out.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:  # not removed as stale in the instant before it was locked
            return fd, tmp
        os.close(fd)


@contextlib.contextmanager
def atomic_path(out: Path, mode: int | None = None, replace: bool = True) -> Iterator[tuple[int, str]]:
    """(descriptor, path) of a locked temporary file beside ``out`` (see create_temp).  When the block ends
    normally the file is fsynced and moved to ``out`` in one step; on any error it is removed and ``out`` is
    untouched.  ``replace=False`` never replaces a file at ``out``, even one another program created while
    this one was writing: the temporary is hard-linked to ``out`` (which fails if ``out`` exists) and then
    unlinked.  ``mode`` defaults to what open() would give a new file (mkstemp's is 0600)."""
    fd, tmp = create_temp(out)
    try:
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.fchmod(fd, mode)
        yield fd, tmp
        os.fsync(fd)
        if replace:
            os.replace(tmp, out)  # still locked: no other writer can take it for stale
        else:
            _move_no_replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(fd)


def _move_no_replace(tmp: str, out: Path) -> None:
    exists = RopetoolError(f"{out} appeared while it was being written; it was kept (pass --force to overwrite it)")
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise exists from None
    except OSError:  # a file system without hard links: the check and the rename are two steps there
        if os.path.lexists(out):
            raise exists from None
        os.replace(tmp, out)
        return
    os.unlink(tmp)


def remove_stale_temps(out: Path) -> list[Path]:
    """Delete the leftover temporary files of ``out`` that no running writer holds (see create_temp);
    only files named as ropetool names them and owned by this user.  Returns what was removed."""
    pattern = re.compile(_TEMP_NAME.format(prefix=re.escape(_temp_prefix(out))))
    removed = []
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return []
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a writer holds it: not stale
            os.close(fd)
            continue
        try:
            if os.path.samestat(os.fstat(fd), os.stat(entry.path, follow_symlinks=False)):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def check_output(out: Path, *, source: Path | None, force: bool, in_place: bool) -> None:
    """The safety rules shared by every command that writes a GGUF."""
    if not out.parent.is_dir():
        raise RopetoolError(f"output folder does not exist: {out.parent}")
    if out.is_dir():
        raise RopetoolError(f"{out} is a folder")
    if source is not None and not in_place and out.exists() and os.path.samefile(out, source):
        raise RopetoolError(f"{out} is the input file; pass --in-place to rewrite it")
    if out.exists() and not force and not in_place:
        raise RopetoolError(f"{out} exists; pass --force to overwrite it")


def header_bytes(records: Iterable["Field | NewValue"], tensors: Iterable, *, alignment: int = DEFAULT_ALIGNMENT,
                 version: int = 3, endian: str = "<") -> tuple[bytes, list[int], int]:
    """The one GGUF header writer: magic, version, counts, key/value records, tensor infos, padding.

    ``records`` are Fields of a source file (copied byte for byte) or NewValues (encoded here; empty
    strings and arrays included).  ``tensors`` need ``name``, ``shape`` (ggml order), ``type`` and
    ``nbytes``; each is placed at the next offset aligned to ``alignment``.  Returns the header (padded to
    the alignment), each tensor's offset in the data section and the data section's aligned end."""
    records = list(records)
    tensors = list(tensors)
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise RopetoolError(f"internal error: duplicate keys {dup}")  # pragma: no cover
    header = bytearray(GGUF_MAGIC + struct.pack(endian + "IQQ", version, len(tensors), len(records)))
    for r in records:
        header += r.raw() if isinstance(r, Field) else r.encode(endian)
    offsets = []
    pos = 0
    for t in tensors:
        offsets.append(pos)
        pos = align(pos + t.nbytes, alignment)
    for t, off in zip(tensors, offsets):
        nb = t.name.encode("utf-8")
        header += struct.pack(endian + "Q", len(nb)) + nb
        header += struct.pack(endian + "I", len(t.shape)) + struct.pack(endian + "Q" * len(t.shape), *t.shape)
        header += struct.pack(endian + "IQ", int(t.type), off)
    header += b"\0" * ((-len(header)) % alignment)
    return bytes(header), offsets, pos


def write_gguf(
    out: str | os.PathLike,
    records: Iterable["Field | NewValue"],
    tensors: list[TensorOut],
    *,
    source: GGUFFile | None = None,
    alignment: int = DEFAULT_ALIGNMENT,
    version: int = 3,
    endian: str = "<",
    mode: int | None = None,
    replace: bool = True,
    verify: Callable[[str], None] | None = None,
    fail_after_header=None,
) -> Path:
    """Write a GGUF atomically: a temporary file in ``out``'s folder, fsync, then rename.

    ``records`` are Fields of ``source`` (copied byte for byte) or NewValues (encoded here; empty
    strings and arrays included).  Tensors are laid out in order, each at an offset aligned to
    ``alignment``, and copied from ``source`` (see _copy_runs).  ``replace=False`` never replaces a file at
    ``out``, even one created while this one was written (see atomic_path).  ``verify(path)`` reads the
    complete temporary file before it is moved to ``out``; if it raises, nothing is written.
    ``fail_after_header`` is a test hook.
    """
    out = Path(out)
    records = list(records)
    for r in records:
        if isinstance(r, Field) and (source is None or r._file is not source):
            raise ValueError("a copied record must come from the source file")
    header, offsets, pos = header_bytes(records, tensors, alignment=alignment, version=version, endian=endian)

    with atomic_path(out, mode, replace) as (fd, tmp):
        pwrite_all(fd, header, 0)
        if fail_after_header is not None:
            fail_after_header()
        base = len(header)
        for t, off in zip(tensors, offsets):
            if t.data is not None:
                if len(t.data) != t.nbytes:  # pragma: no cover - a caller bug
                    raise RopetoolError(f"internal error: {t.name} has {len(t.data)} bytes, expected {t.nbytes}")
                pwrite_all(fd, t.data, base + off)
        for src_offset, n, dst_offset in _copy_runs(tensors, offsets):
            copy_range(source._f.fileno(), src_offset, n, fd, base + dst_offset)
        os.ftruncate(fd, base + pos)  # pos: the data section's aligned end; the padding reads as zeros
        if verify is not None:
            verify(tmp)
    return out


def _copy_runs(tensors: list[TensorOut], offsets: list[int]) -> list[tuple[int, int, int]]:
    """(source offset, length, data-section offset) of the bytes to copy: neighbouring copied tensors
    that lie at the same distance from each other in both files are one run (the padding between them
    comes along), so an edit that keeps the tensors copies the whole data section at once."""
    runs: list[list[int]] = []
    joinable = False
    for t, off in zip(tensors, offsets):
        if t.data is not None:
            joinable = False  # written from data: a run must not copy over it
            continue
        src = t.source.data_offset
        if joinable and src - runs[-1][0] == off - runs[-1][2] and src >= runs[-1][0] + runs[-1][1]:
            runs[-1][1] = src + t.nbytes - runs[-1][0]
        else:
            runs.append([src, t.nbytes, off])
        joinable = True
    return [tuple(r) for r in runs]


def insert_at(records: list, index: int, items: list) -> list:
    return records[:index] + items + records[index:]


def prefix_anchor(records: list, key: str) -> int:
    """Where a new key goes: after the last record sharing its longest dotted prefix (else the end)."""
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n]) + "."
        idx = [i for i, r in enumerate(records) if r.key.startswith(prefix)]
        if idx:
            return idx[-1] + 1
    return len(records)


ARRAY_PREVIEW = 8  # array elements shown without --full


def _f32_plain(v):
    return nice(v) if isinstance(v, float) else v


def field_json(f, full: bool) -> dict:
    entry = {"type": f.type_name}
    if f.is_array:
        n = None if full else ARRAY_PREVIEW
        values = f.head(n)
        if f.sub_type == T.FLOAT32:
            values = [_f32_plain(v) for v in values]
        entry.update(count=f.count, value=plain_value(values), truncated=(not full and f.count > ARRAY_PREVIEW))
    else:
        v = f.scalar
        entry["value"] = plain_value(_f32_plain(v) if f.type == T.FLOAT32 else v)
    return entry


def plain_value(value):
    """A value as JSON-safe plain data (numpy arrays to lists; non-finite floats as strings)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        return [plain_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return plain_value(value.item())
    return value


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    value = plain_value(obj)
    if isinstance(value, list):
        return _jsonable(value)
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)  # paths, enums


def dumps(obj) -> str:
    """JSON text of ``obj``; a non-finite number anywhere in it is written as the string "nan", "inf" or "-inf"
    (JSON has no such numbers)."""
    return json.dumps(_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False)


class Report:
    """A verdict's report (a dataclass with a ``verdict``): ``passed`` when it is "pass", its fields as a dict and as
    :func:`dumps` writes them."""

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return dumps(self.to_dict())


__all__ = [
    "GGUFFile",
    "Field",
    "TensorInfo",
    "NewValue",
    "TensorOut",
    "write_gguf",
    "header_bytes",
    "check_output",
    "create_temp",
    "atomic_path",
    "remove_stale_temps",
    "encode_kv",
    "encode_value",
    "check_value",
    "type_name",
    "TYPE_NAMES",
    "TYPES_BY_NAME",
    "INT_RANGES",
    "align",
    "plain_value",
]
