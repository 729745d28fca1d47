"""Convert a Hugging Face checkpoint folder to GGUF: write a :mod:`ropetool.conversion` plan.

The header first, then the tensors converted a run of rows at a time (a few runs in memory, whatever the
model's size) into a temporary file that is renamed over the target only when complete.  A conversion
killed outright (SIGKILL) leaves that ``.NAME.XXXXXXXX.tmp`` file behind but never a partial target; the
next conversion to the same target removes it (gguf_file.create_temp).
"""

from __future__ import annotations

import functools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from gguf import GGMLQuantizationType as Q

from ropetool.conversion import Plan, PlannedTensor, plan_conversion, rows_cols
from ropetool.errors import RopetoolError
from ropetool.io.checkpoint import TensorRef, checkpoint_dtype, load_tensor
from ropetool.io.encode import CHUNK_ELEMENTS, SCRATCH, encode_rows
from ropetool.io.gguf_file import TensorOut, atomic_path, copy_range, create_temp, header_bytes, pwrite_all
from ropetool.llamacpp.quantize import estimated_bytes, quantize_gguf
from ropetool.llamacpp.validity import refuse_problems

WORKERS = max(1, min(4, os.cpu_count() or 1))  # threads converting chunks (numpy releases the GIL)
ALIGNMENT = 32  # general.alignment's default; the writer adds no alignment key
COPY_BYTES = 64 << 20  # tensors kept in their source type are copied in runs of this size


def write_gguf(plan: Plan, out: str | os.PathLike, force: bool = False,
               progress: Callable[[Iterator[PlannedTensor]], Iterator[PlannedTensor]] | None = None,
               notify: Callable[[str], None] | None = None, verify: Callable[[str], None] | None = None) -> Path:
    """Write ``plan`` to ``out`` through a temporary file in the same folder and an atomic rename.

    The layout is gguf-py's GGUFWriter's (header, key/values, tensor infos, then each tensor padded
    to 32 bytes), byte for byte.  Every tensor's place in the file is known from the plan, so the
    tensors are converted a run of rows at a time by WORKERS threads, each writing its run at its
    offset (tensors kept in their source type are copied by the kernel); a few runs are in flight.
    A quantized type (``plan.quantize_to``) is the plan written to a temporary intermediate, quantized by
    llama.cpp into the output's temporary file, and the intermediate removed.  Without ``force`` an
    existing ``out`` is never replaced, not even one another program creates meanwhile.  ``verify(tmp)`` reads
    the complete (quantized) temporary file before it is renamed into place (extend probes it); if it raises,
    nothing is written.
    """
    out = Path(out)
    if out.exists() and not force:
        raise RopetoolError(f"{out} exists; pass --force to overwrite it")
    if out.exists() and out.resolve().parent == plan.source.resolve() and out.suffix != ".gguf":
        raise RopetoolError(f"refusing to overwrite {out.name}, a file of the source model")
    if not out.parent.is_dir():
        raise RopetoolError(f"output folder does not exist: {out.parent}")
    if out.is_dir():
        raise RopetoolError(f"{out} is a folder")
    if plan.quantize_to:
        return _write_quantized(plan, out, force, progress, notify, verify)
    with atomic_path(out, replace=force) as (fd, tmp):
        _write_plan(plan, fd, progress)
        refuse_problems(tmp, str(out))
        if verify is not None:
            verify(tmp)
    return out


def _write_quantized(plan: Plan, out: Path, force: bool, progress, notify, verify=None) -> Path:
    import shutil

    header, offsets = _header_bytes(plan)
    intermediate = len(header) + sum(_padded(t.nbytes) for t in plan.tensors)
    need = intermediate + estimated_bytes(plan.n_params, plan.quantize_to)
    free = shutil.disk_usage(out.parent).free
    if need > free:
        raise RopetoolError(f"making {plan.type_name} needs about {need / 1e9:.2f} GB of disk beside {out} (the "
                            f"{plan.outtype.name} intermediate and the output) and {free / 1e9:.2f} GB is free")
    if notify:
        notify(f"writing the {plan.outtype.name} intermediate ({intermediate / 1e9:.2f} GB), then llama.cpp's quantizer "
               f"makes {plan.type_name}: about {need / 1e9:.2f} GB of disk at the peak, beside {out}")
    fd, tmp = create_temp(out.with_name(out.name + ".intermediate"))
    try:
        _write_plan(plan, fd, progress)
        os.close(fd)
        fd = None
        refuse_problems(tmp, str(out))
        if notify:
            notify(f"quantizing to {plan.type_name} with llama.cpp")
        with atomic_path(out, replace=force) as (_, tmp_out):
            quantize_gguf(Path(tmp), Path(tmp_out), plan.quantize_to)
            if verify is not None:
                verify(tmp_out)
    finally:
        if fd is not None:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
    return out


def _write_plan(plan: Plan, fd: int, progress) -> None:
    """The plan's header and tensors into the open file ``fd``."""
    header, offsets = _header_bytes(plan)
    data_start = len(header)  # padded to the alignment
    end = data_start + (offsets[-1] + _padded(plan.tensors[-1].nbytes) if plan.tensors else 0)
    sources: dict[Path, int] = {}
    try:
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


def _padded(n: int) -> int:
    return n + (-n) % ALIGNMENT


def _tasks(t: PlannedTensor, offset: int, fd: int, sources: dict[Path, int]) -> Iterator[Callable[[], None]]:
    """Callables that together write tensor ``t``'s bytes at ``offset`` of ``fd``, a run of rows each."""
    rows, cols = rows_cols(t.shape)
    if rows == 0 or cols == 0:
        return
    row_bytes = t.nbytes // rows
    step = max(1, CHUNK_ELEMENTS // cols)
    if t.each is not None:  # a stack made one source at a time (one expert's matrix in memory per task)
        per_source = t.nbytes // len(t.source)
        for k, ref in enumerate(t.source):
            yield functools.partial(_each_and_write, ref, t, fd, offset + k * per_source)
        return
    if not t.streamed:
        flat = np.asarray(t.whole()).reshape(rows, cols)  # generated or transformed: computed whole
        for i in range(0, rows, step):
            yield functools.partial(_encode_and_write, flat[i:i + step], t.qtype, fd, offset + i * row_bytes)
        return
    per_source = t.nbytes // len(t.source)  # experts: each source is one expert's matrix, in order
    rows_per_source = rows // len(t.source)
    for k, ref in enumerate(t.source):
        yield from _source_tasks(ref, t, offset + k * per_source, per_source, rows_per_source, cols, row_bytes, step, fd,
                                 sources)


def _source_tasks(ref: TensorRef, t: PlannedTensor, offset: int, nbytes: int, rows: int, cols: int, row_bytes: int,
                  step: int, fd: int, sources: dict[Path, int]) -> Iterator[Callable[[], None]]:
    """One source tensor's rows into its place: copied as they are, or converted a run of rows at a time."""
    if ref.path not in sources:
        sources[ref.path] = os.open(ref.path, os.O_RDONLY)
    src = sources[ref.path]
    if (ref.dtype, t.qtype) in (("F32", Q.F32), ("F16", Q.F16)) and t.rows_transform is None:  # the bytes themselves
        for i in range(0, nbytes, COPY_BYTES):
            n = min(COPY_BYTES, nbytes - i)
            yield functools.partial(copy_range, src, ref.start + i, n, fd, offset + i)
        return
    itemsize = checkpoint_dtype(ref.dtype).itemsize
    for i in range(0, rows, step):
        n = min(step, rows - i)
        yield functools.partial(_convert_and_write, src, ref, ref.start + i * cols * itemsize, n, cols, t.qtype,
                                fd, offset + i * row_bytes, t.rows_transform)


def _convert_and_write(src: int, ref: TensorRef, start: int, n: int, cols: int, qtype: Q, fd: int, offset: int,
                       rows_transform: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
    scratch = SCRATCH
    dtype = checkpoint_dtype(ref.dtype)
    raw = scratch.buf("src_" + dtype.str, dtype, n * cols)
    _pread_into(src, raw, start, ref.path)
    if ref.dtype == "BF16":  # widened by hand: bf16 is the top half of a float32
        wide = scratch.buf("bf16", np.uint32, raw.size)
        np.copyto(wide, raw)
        np.left_shift(wide, np.uint32(16), out=wide)
        raw = wide.view(np.float32)
    rows = raw.reshape(n, cols)
    if rows_transform is not None:
        rows = rows_transform(rows)
    _encode_and_write(rows, qtype, fd, offset)


def _each_and_write(ref: TensorRef, t: PlannedTensor, fd: int, offset: int) -> None:
    """One source of a stack made by ``t.each`` (one expert's matrix), encoded a run of rows at a time."""
    part = np.asarray(t.each(load_tensor(ref)), dtype=np.float32)
    rows, cols = rows_cols(part.shape)
    flat, row_bytes, step = part.reshape(rows, cols), t.nbytes // rows_cols(t.shape)[0], max(1, CHUNK_ELEMENTS // cols)
    for i in range(0, rows, step):
        _encode_and_write(flat[i:i + step], t.qtype, fd, offset + i * row_bytes)


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
    """The header (gguf_file's one header writer) and each tensor's offset in the data section."""
    infos = [TensorOut(t.name, tuple(reversed(t.shape)), t.qtype, t.nbytes) for t in plan.tensors]
    header, offsets, _ = header_bytes(plan.values, infos, alignment=ALIGNMENT)
    return header, offsets


def convert(model_dir, out, outtype="auto", method=None, approximate=False, force=False, pre_tokenizer=None,
            progress=None, **rope_options) -> Plan:
    """Convert ``model_dir`` to the GGUF file ``out``; returns the plan that was written."""
    out = Path(out)
    if out.exists() and not force:
        raise RopetoolError(f"{out} exists; pass --force to overwrite it")
    plan = plan_conversion(model_dir, outtype, method, approximate, pre_tokenizer, **rope_options)
    write_gguf(plan, out, force=force, progress=progress)
    return plan
