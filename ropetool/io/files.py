"""Opening the files a user names: regular files only, read with a size bound.

A path may name a FIFO (opening it blocks until a writer comes), a device (``/dev/zero`` never ends)
or a folder, directly or through a symlink.  :func:`open_regular` opens without blocking and checks
the opened file itself (``fstat``, so a path swapped after a check cannot fool it), refusing anything
but a regular file; :func:`read_regular` then reads at most ``limit`` bytes, refusing a larger file
before reading any of it.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from ropetool.errors import RopetoolError

TEXT_LIMIT = 64 << 20  # a configuration, index, tokenizer or template file: far above any real one
KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, what: str) -> int:
    """A read-only descriptor of ``path``, which must be a regular file (after symlinks); the caller closes it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RopetoolError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise RopetoolError(f"{what} {path} is a folder, not a file") from None
    except OSError as e:
        raise RopetoolError(f"cannot open {what} {path}: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RopetoolError(f"{what} {path} is {_kind(mode)}, not a regular file")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike, what: str, limit: int = TEXT_LIMIT) -> bytes:
    """The bytes of the regular file ``path``, refused when it is larger than ``limit``."""
    fd = open_regular(path, what)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise RopetoolError(f"{what} {path} is {size} bytes; ropetool reads at most {limit} for such a file")
        chunks, total = [], 0
        while True:  # a file may grow while it is read: stop at the limit all the same
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise RopetoolError(f"{what} {path} grew past {limit} bytes while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def pread_into(fd: int, buffer, offset: int, shrank: str) -> None:
    """Fill ``buffer`` (any writable buffer) with the bytes of ``fd`` at ``offset``, read with pread (straight into
    it where there is preadv), so that the file's pages are not mapped into this process; ``shrank``: the error
    when the file ends first."""
    view = memoryview(buffer).cast("B")
    while view:
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [view[: 1 << 30]], offset)
        else:  # older macOS Pythons: os.pread and a copy
            data = os.pread(fd, min(len(view), 1 << 30), offset)
            got = len(data)
            view[:got] = data
        if got == 0:
            raise RopetoolError(shrank)
        view, offset = view[got:], offset + got


class Closing:
    """Something that holds a file (or a model) open until :meth:`close`, and is a context manager that closes it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_text(path: str | os.PathLike, what: str, limit: int = TEXT_LIMIT) -> str:
    """A UTF-8 text file (see :func:`read_regular`)."""
    try:
        return read_regular(path, what, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise RopetoolError(f"{what} {path} is not UTF-8 text") from None


__all__ = ["open_regular", "read_regular", "read_text", "pread_into", "Closing", "TEXT_LIMIT"]
