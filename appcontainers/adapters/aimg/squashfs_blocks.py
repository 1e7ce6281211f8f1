"""Bounded pieces of the squashfs reader: decompressors that never produce more than they are
allowed (a block never holds more than the block size, metadata never more than 8 KiB), and an
LRU cache bounded in bytes as well as in entries.

The decompressors raise BlockError; the reader turns it into ImageCorrupt with the image's path.
"""
from __future__ import annotations

import lzma
import threading
import zlib
from collections import OrderedDict


class BlockError(Exception):
    """A block that does not decompress, or decompresses to more than its limit."""


def _check(out: bytes, limit: int, complete: bool) -> bytes:
    if len(out) > limit:
        raise BlockError(f"a block decompresses to more than {limit} bytes")
    if not complete:
        raise BlockError("a compressed block is cut short")
    return out


def _gzip(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise BlockError(f"gzip: {e}") from None
    return _check(out, limit, d.eof)


def _lzma(fmt: int):
    def decompress(data: bytes, limit: int) -> bytes:
        d = lzma.LZMADecompressor(format=fmt, memlimit=256 << 20)
        try:
            out = d.decompress(data, limit + 1)
        except lzma.LZMAError as e:
            raise BlockError(f"xz/lzma: {e}") from None
        return _check(out, limit, d.eof)
    return decompress


def _zstd():
    import zstandard
    local = threading.local()

    def decompress(data: bytes, limit: int) -> bytes:
        try:
            d = local.d
        except AttributeError:  # a decompression context per thread: they are not thread-safe
            d = local.d = zstandard.ZstdDecompressor(max_window_size=1 << 27)
        # decompress(max_output_size=) trusts a size in the frame header: read at most limit + 1
        parts, want = [], limit + 1
        try:
            with d.stream_reader(data, read_across_frames=False) as r:
                while want:
                    chunk = r.read(want)
                    if not chunk:
                        break
                    parts.append(chunk)
                    want -= len(chunk)
        except zstandard.ZstdError as e:
            raise BlockError(f"zstd: {e}") from None
        return _check(b"".join(parts), limit, True)
    return decompress


def _lz4():
    import lz4.block

    def decompress(data: bytes, limit: int) -> bytes:
        try:  # uncompressed_size is the size of the output buffer: it cannot overflow
            return lz4.block.decompress(data, uncompressed_size=limit)
        except lz4.block.LZ4BlockError as e:
            raise BlockError(f"lz4: {e}") from None
    return decompress


COMPRESSORS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}


def decompressor(comp: int):
    """decompress(data, limit) -> at most limit bytes, for the squashfs compressor id comp.

    ValueError names what is missing when comp is unknown or its module is not installed."""
    if comp == 1:
        return _gzip
    if comp == 2:
        return _lzma(lzma.FORMAT_ALONE)
    if comp == 4:
        return _lzma(lzma.FORMAT_XZ)
    if comp == 6:
        return _zstd()
    if comp == 5:
        try:
            return _lz4()
        except ImportError:
            raise ValueError("lz4-compressed squashfs: install the lz4 Python package") from None
    raise ValueError(f"squashfs compressor {COMPRESSORS.get(comp, comp)} is not supported here "
                     f"(use zstd, gzip or xz)")


class LRU:
    """A small thread-safe least-recently-used map, bounded in entries and, when max_bytes is
    given, in the total of weigh(value) (len by default)."""

    def __init__(self, capacity: int, max_bytes: int | None = None, weigh=len):
        self.capacity, self.max_bytes, self.weigh = capacity, max_bytes, weigh
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def get(self, key, default=None):
        with self._lock:
            value = self._d.get(key, default)
            if key in self._d:
                self._d.move_to_end(key)
            return value

    def put(self, key, value):
        size = self.weigh(value) if self.max_bytes is not None else 0
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None and self.max_bytes is not None:
                self.bytes -= self.weigh(old)
            if self.max_bytes is not None and size > self.max_bytes:
                return value  # bigger than the whole cache: returned, never kept
            self._d[key] = value
            self.bytes += size
            while len(self._d) > self.capacity or (self.max_bytes is not None and self.bytes > self.max_bytes):
                _, dropped = self._d.popitem(last=False)
                if self.max_bytes is not None:
                    self.bytes -= self.weigh(dropped)
        return value

    def __len__(self) -> int:
        return len(self._d)
