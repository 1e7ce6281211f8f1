"""Where exported blobs go: an OCI layout directory (blobs/sha256/HEX), or straight into a tar
archive (each member's header written last, once its name, the digest, is known: no blob is
written twice).

A blob is written through a DigestWriter: sha256 of what comes in (a layer's diff_id), gzip
(optional), sha256 and size of what goes out (the blob's digest).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tarfile
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Callable

_BLOCK = tarfile.BLOCKSIZE


class ParallelGzip:
    """One gzip member, compressed on threads pigz-style: the stream is cut into CHUNK-byte
    pieces, each deflated on its own with the 32 KiB before it as dictionary and ended by a sync
    flush, so the pieces join into one deflate stream (zlib releases the GIL while it works).
    The pieces are cut by size alone: the same input gives the same bytes on any machine."""

    CHUNK = 1 << 20
    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown

    def __init__(self, level: int, emit: Callable[[bytes], None], workers: int | None = None):
        self.level, self.emit = level, emit
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gzip")
        self.pending: deque[Future[bytes]] = deque()
        self.buf, self.prev, self.crc, self.size = bytearray(), b"", 0, 0
        emit(self.HEADER)

    def write(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= self.CHUNK:
            self._submit(bytes(self.buf[:self.CHUNK]), last=False)
            del self.buf[:self.CHUNK]

    def _submit(self, chunk: bytes, last: bool) -> None:
        self.crc, self.size = zlib.crc32(chunk, self.crc), self.size + len(chunk)
        self.pending.append(self.pool.submit(_deflate, chunk, self.prev, self.level, last))
        self.prev = chunk[-32768:]
        while len(self.pending) > 2 * self.workers or (last and self.pending):
            self.emit(self.pending.popleft().result())

    def finish(self) -> None:
        try:
            self._submit(bytes(self.buf), last=True)
            self.emit(struct.pack("<II", self.crc & 0xFFFFFFFF, self.size & 0xFFFFFFFF))
        finally:
            self.close()

    def close(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True)


def _deflate(chunk: bytes, zdict: bytes, level: int, last: bool) -> bytes:
    z = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=zdict) if zdict else zlib.compressobj(level, zlib.DEFLATED, -15)
    return z.compress(chunk) + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class DigestWriter:
    """write()/tell() for a layer tar: hashes the tar (diff_id), gzips it if level, hashes the blob."""

    def __init__(self, out: IO[bytes], level: int | None, workers: int | None = None):
        self.out, self.raw, self.packed = out, hashlib.sha256(), hashlib.sha256()
        self.raw_size = self.size = 0
        self.gz = ParallelGzip(level, self._emit, workers) if level is not None else None

    def write(self, data: bytes) -> int:
        self.raw.update(data)
        self.raw_size += len(data)
        if self.gz is not None:
            self.gz.write(data)
        else:
            self._emit(data)
        return len(data)

    def tell(self) -> int:
        return self.raw_size

    def _emit(self, data: bytes) -> None:
        if data:
            self.packed.update(data)
            self.size += len(data)
            self.out.write(data)

    def finish(self) -> tuple[str, str, int]:
        """("sha256:HEX" of the blob, "sha256:HEX" of the uncompressed content, blob size)."""
        if self.gz is not None:
            self.gz.finish()
            self.gz = None
        return "sha256:" + self.packed.hexdigest(), "sha256:" + self.raw.hexdigest(), self.size

    def close(self) -> None:
        """Stop the gzip threads (after a failure; finish() stops them otherwise)."""
        if self.gz is not None:
            self.gz.close()


class DirSink:
    """Blobs as files blobs/sha256/HEX under root (a layout being made, in a temp directory)."""

    def __init__(self, root: str):
        self.root = root
        self.blobs = os.path.join(root, "blobs", "sha256")
        os.makedirs(self.blobs, mode=0o755)
        self._open: IO[bytes] | None = None

    def begin(self) -> IO[bytes]:
        self._open = open(os.path.join(self.blobs, ".partial"), "wb", buffering=1 << 20)
        return self._open

    def commit(self, name: str) -> None:
        assert self._open is not None
        self._open.close()
        self._open = None
        os.replace(os.path.join(self.blobs, ".partial"), os.path.join(self.root, name))

    def add(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.root, name), "wb") as f:
            f.write(data)

    def abort(self) -> None:
        """Close a blob left half-written by a failure (its file is removed with the directory;
        an open one would keep its filesystem busy for as long as the traceback lives)."""
        if self._open is not None:
            with contextlib.suppress(OSError):
                self._open.close()
            self._open = None


class TarSink:
    """Blobs as members of a tar archive written to a seekable file: a member's header is a
    placeholder until commit() knows its name and size, then written in place."""

    def __init__(self, out: IO[bytes], mtime: int, dirs: tuple[str, ...] = ()):
        self.out, self.mtime, self._start = out, mtime, -1
        for d in dirs:
            self.out.write(self._header(d, 0, tarfile.DIRTYPE))

    def _header(self, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
        ti = tarfile.TarInfo(name)
        ti.size, ti.type, ti.mtime, ti.uname, ti.gname = size, kind, self.mtime, "", ""
        ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        return ti.tobuf(format=tarfile.USTAR_FORMAT)

    def begin(self) -> IO[bytes]:
        self._start = self.out.tell()
        self.out.write(bytes(_BLOCK))
        return self.out

    def commit(self, name: str) -> None:
        end = self.out.tell()
        size = end - self._start - _BLOCK
        self.out.write(bytes(-size % _BLOCK))
        self.out.seek(self._start)
        self.out.write(self._header(name, size))
        self.out.seek(0, os.SEEK_END)

    def add(self, name: str, data: bytes) -> None:
        self.out.write(self._header(name, len(data)))
        self.out.write(data + bytes(-len(data) % _BLOCK))

    def close(self) -> None:
        """The end of the archive: two zero blocks, padded to tar's 10 KiB records as tar does."""
        self.out.write(bytes(2 * _BLOCK))
        self.out.write(bytes(-self.out.tell() % tarfile.RECORDSIZE))
