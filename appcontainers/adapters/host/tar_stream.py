"""Opening an untrusted tar archive for reading: a regular file only, decompressed by us, and
seen by tarfile through a reader that refuses any single read larger than a few MiB.

tarfile reads a pax or GNU long-name header's whole declared size at once, so a small tar.gz
declaring a 10 GiB header would otherwise be inflated into memory before any check could run.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import stat
import tarfile
from typing import IO, cast

from ...domain.exceptions import InvalidValue

MAX_READ = 4 << 20  # no header needs more; member data is read in smaller chunks


class _BoundedReader:
    """read/seek/tell of a binary stream, refusing reads over MAX_READ (tarfile needs no more)."""

    def __init__(self, stream):
        self._s = stream

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > MAX_READ:
            raise tarfile.ReadError(f"a header declares {n} bytes, more than {MAX_READ}")
        return self._s.read(n)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._s.seek(pos, whence)

    def tell(self) -> int:
        return self._s.tell()


def _decompressed(f):
    magic = f.read(6)
    f.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=f, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(f)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(f)
    return f


def _regular_file(archive: str):
    try:
        fd = os.open(archive, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block
    except OSError:
        raise InvalidValue(f"archive {archive!r} is not a file") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise InvalidValue(f"archive {archive!r} is not a file")
    return f


@contextlib.contextmanager
def open_tar(archive: str, label: str):
    """A TarFile reading archive (plain, gzip, bzip2 or xz), opened once, as a regular file."""
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(_regular_file(archive))
        stream = stack.enter_context(_decompressed(f))
        try:
            reader = cast(IO[bytes], _BoundedReader(stream))  # read/seek/tell: what tarfile uses
            tf = stack.enter_context(tarfile.open(fileobj=reader, mode="r:"))
        except Exception as e:
            raise InvalidValue(f"archive {label} is not a readable tar archive: {e}") from None
        yield tf
