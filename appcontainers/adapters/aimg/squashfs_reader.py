"""A squashfs reader in pure Python, for .aimg files: superblock, metadata blocks, inodes,
directories, xattrs, data blocks and fragments, with LRU caches of what was decompressed.

Used by the read-only FUSE view (image_reader.py); needs no tools and no mounts.
"""
from __future__ import annotations

import json
import lzma
import os
import stat
import struct
import threading
import zlib
from collections import OrderedDict
from typing import Any

from ...domain.exceptions import AppContainersError, ImageCorrupt, InvalidValue
from .squashfs import SUPERBLOCK_SIZE, check_layout

_SUPER = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")
_HEADER = struct.Struct("<HHHHII")  # type, permissions, uid index, gid index, mtime, inode number
_DIR, _EXT_DIR = struct.Struct("<IIHHI"), struct.Struct("<IIIIHHI")
_FILE, _EXT_FILE = struct.Struct("<IIII"), struct.Struct("<QQQIIII")
_DIR_HEAD, _DIR_ENTRY = struct.Struct("<III"), struct.Struct("<HhHH")
_KINDS = {1: stat.S_IFDIR, 2: stat.S_IFREG, 3: stat.S_IFLNK, 4: stat.S_IFBLK, 5: stat.S_IFCHR,
          6: stat.S_IFIFO, 7: stat.S_IFSOCK}
_XATTR_PREFIX = {0: "user.", 1: "trusted.", 2: "security."}
_NONE32, _NONE64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
_META = 8192
_CACHE_BYTES = 64 << 20  # decompressed data blocks and fragments kept, per image


class LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, capacity: int):
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self.capacity, self._lock = capacity, threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            value = self._d.get(key, default)
            if key in self._d:
                self._d.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.capacity:
                self._d.popitem(last=False)
        return value


def _decompressor(comp: int, path: str):
    if comp == 1:
        return lambda data, size: zlib.decompress(data)
    if comp == 2:
        return lambda data, size: lzma.decompress(data, format=lzma.FORMAT_ALONE)
    if comp == 4:
        return lambda data, size: lzma.decompress(data)
    if comp == 6:
        import zstandard
        local = threading.local()

        def zstd(data, size):
            try:
                d = local.d
            except AttributeError:  # a decompression context per thread: they are not thread-safe
                d = local.d = zstandard.ZstdDecompressor()
            return d.decompress(data, max_output_size=size)
        return zstd
    if comp == 5:
        try:
            import lz4.block
        except ImportError:
            raise ImageCorrupt(path, "lz4-compressed squashfs: install the lz4 Python package") from None
        return lambda data, size: lz4.block.decompress(data, uncompressed_size=size)
    raise ImageCorrupt(path, f"squashfs compressor {comp} is not supported here (use zstd, gzip or xz)")


class Inode:
    __slots__ = ("mode", "uid", "gid", "mtime", "number", "nlink", "size", "rdev", "xattr",
                 "target", "dir_start", "dir_offset", "blocks", "fragment", "frag_offset")
    mode: int
    uid: int
    gid: int
    mtime: int
    number: int
    nlink: int
    size: int
    rdev: int
    xattr: int
    dir_start: int
    dir_offset: int
    frag_offset: int
    target: Any       # bytes for a symlink, else None
    blocks: Any       # list of data block sizes for a file, else None
    fragment: Any     # fragment index for a file with a tail, else None

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)


class SquashfsReader:
    """Random access to one squashfs 4.0 file (bytes past `length`, like a trailer, are never read)."""

    def __init__(self, path: str, length: int | None = None):
        self.rootfs: Inode | None = None  # the image's rootfs/ dir, set by _open_layer
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fields = _SUPER.unpack(os.pread(self.fd, SUPERBLOCK_SIZE, 0))
            (magic, self.inode_count, _, self.block_size, self.fragment_count, comp, _, self.flags,
             id_count, major, _, self.root_ref, self.bytes_used, id_table, self.xattr_table,
             self.inode_table, self.dir_table, self.frag_table, _) = fields
            if magic != 0x73717368 or major != 4:
                raise ImageCorrupt(path, "not a squashfs 4.0 filesystem")
            if length is not None and self.bytes_used > length:
                raise ImageCorrupt(path, "truncated: the squashfs is longer than the file")
            self._decompress = _decompressor(comp, path)
            self._meta, self._inodes = LRU(4096), LRU(65536)
            self._dirs, self._xattrs = LRU(4096), LRU(4096)
            self._data = LRU(max(16, _CACHE_BYTES // self.block_size))
            self.ids = self._table(id_table, id_count, 4, "I")
            self._frag_index = self._pointers(self.frag_table, -(-self.fragment_count * 16 // _META))
            self._xattr_start, self._xattr_index = 0, []
            if self.xattr_table != _NONE64:
                self._xattr_start, count, _ = struct.unpack("<QII", os.pread(self.fd, 16, self.xattr_table))
                self._xattr_index = self._pointers(self.xattr_table + 16, -(-count * 16 // _META))
            self.root = self.inode(self.root_ref)
        except ImageCorrupt:
            os.close(self.fd)
            raise
        except Exception as e:  # struct, zlib, lzma, zstd errors, bad indexes: a damaged file
            os.close(self.fd)
            raise ImageCorrupt(path, f"unreadable squashfs: {e}") from None

    def close(self) -> None:
        os.close(self.fd)

    # -- metadata -----------------------------------------------------------------------------
    def _pointers(self, at: int, n: int) -> list[int]:
        return list(struct.unpack(f"<{n}Q", os.pread(self.fd, 8 * n, at))) if n else []

    def _table(self, at: int, count: int, size: int, fmt: str) -> list:
        raw = b"".join(self._meta_block(p)[0] for p in self._pointers(at, -(-count * size // _META)))
        return list(struct.unpack(f"<{count}{fmt}", raw[:count * size]))

    def _meta_block(self, pos: int) -> tuple[bytes, int]:
        hit = self._meta.get(pos)
        if hit is not None:
            return hit
        raw = os.pread(self.fd, _META + 2, pos)
        (head,) = struct.unpack_from("<H", raw)
        size = head & 0x7FFF
        if len(raw) < size + 2:
            raise ImageCorrupt(self.path, f"metadata block at {pos} runs past the end")
        data = raw[2:size + 2] if head & 0x8000 else self._decompress(raw[2:size + 2], _META)
        return self._meta.put(pos, (data, pos + 2 + size))

    def _read(self, pos: int, off: int, n: int) -> tuple[bytes, int, int]:
        """n bytes of the metadata stream from block pos, offset off; returns them and where they end."""
        parts = []
        while n > 0:
            data, following = self._meta_block(pos)
            if off >= len(data):
                if not data:
                    raise ImageCorrupt(self.path, f"empty metadata block at {pos}")
                pos, off = following, off - len(data)
                continue
            chunk = data[off:off + n]
            parts.append(chunk)
            n -= len(chunk)
            off += len(chunk)
        return b"".join(parts), pos, off

    def inode(self, ref: int) -> Inode:
        hit = self._inodes.get(ref)
        if hit is not None:
            return hit
        pos, off = self.inode_table + (ref >> 16), ref & 0xFFFF
        raw, pos, off = self._read(pos, off, _HEADER.size)
        itype, perm, uid_i, gid_i, mtime, number = _HEADER.unpack(raw)
        basic, ext = (itype - 7, True) if itype > 7 else (itype, False)
        i = Inode()
        i.mode, i.uid, i.gid = _KINDS[basic] | perm, self.ids[uid_i], self.ids[gid_i]
        i.mtime, i.number, i.nlink, i.size, i.rdev, i.xattr = mtime, number, 1, 0, 0, _NONE32
        i.target = i.blocks = i.fragment = None

        def take(s: struct.Struct):
            nonlocal pos, off
            raw, pos, off = self._read(pos, off, s.size)
            return s.unpack(raw)

        if basic == 1:
            if ext:
                i.nlink, i.size, i.dir_start, _, _, i.dir_offset, i.xattr = take(_EXT_DIR)
            else:
                i.dir_start, i.nlink, i.size, i.dir_offset, _ = take(_DIR)
        elif basic == 2:
            if ext:
                start, i.size, _, i.nlink, frag, i.frag_offset, i.xattr = take(_EXT_FILE)
            else:
                start, frag, i.frag_offset, i.size = take(_FILE)
            bs = self.block_size
            n = i.size // bs if frag != _NONE32 else -(-i.size // bs)
            words = take(struct.Struct(f"<{n}I")) if n else ()
            i.fragment = frag if frag != _NONE32 else None
            blocks = []
            for w in words:
                blocks.append((start, w))
                start += w & 0xFFFFFF
            i.blocks = blocks
        elif basic == 3:
            i.nlink, size = take(struct.Struct("<II"))
            i.target, pos, off = self._read(pos, off, size)
            i.size = size
            if ext:
                (i.xattr,) = take(struct.Struct("<I"))
        elif basic in (4, 5):
            i.nlink, dev, *x = take(struct.Struct("<III" if ext else "<II"))
            i.rdev = os.makedev((dev >> 8) & 0xFFF, (dev & 0xFF) | ((dev >> 12) & 0xFFF00))
            i.xattr = x[0] if x else _NONE32
        else:
            i.nlink, *x = take(struct.Struct("<II" if ext else "<I"))
            i.xattr = x[0] if x else _NONE32
        return self._inodes.put(ref, i)

    def listdir(self, d: Inode) -> dict[str, int]:
        """Name -> inode reference of a directory's entries, in the image's (sorted) order."""
        key = (d.dir_start, d.dir_offset, d.size)  # an empty dir points where the next one starts
        hit = self._dirs.get(key)
        if hit is not None:
            return hit
        entries = {}
        if d.size > 3:
            blob, _, _ = self._read(self.dir_table + d.dir_start, d.dir_offset, d.size - 3)
            at = 0
            while at < len(blob):
                count, start, _ = _DIR_HEAD.unpack_from(blob, at)
                at += _DIR_HEAD.size
                for _ in range(count + 1):
                    offset, _, _, name_size = _DIR_ENTRY.unpack_from(blob, at)
                    at += _DIR_ENTRY.size
                    name = blob[at:at + name_size + 1].decode("utf-8", "surrogateescape")
                    at += name_size + 1
                    entries[name] = (start << 16) | offset
        return self._dirs.put(key, entries)

    def xattrs(self, i: Inode) -> dict[str, bytes]:
        if i.xattr == _NONE32 or not self._xattr_index:
            return {}
        hit = self._xattrs.get(i.xattr)
        if hit is not None:
            return hit
        at = i.xattr * 16
        raw, _, _ = self._read(self._xattr_index[at // _META], at % _META, 16)
        ref, count, _ = struct.unpack("<QII", raw)
        pos, off, found = self._xattr_start + (ref >> 16), ref & 0xFFFF, {}
        for _ in range(count):
            raw, pos, off = self._read(pos, off, 4)
            kind, name_size = struct.unpack("<HH", raw)
            name, pos, off = self._read(pos, off, name_size)
            raw, pos, off = self._read(pos, off, 4)
            value, pos, off = self._read(pos, off, struct.unpack("<I", raw)[0])
            if kind & 0x100:  # stored once elsewhere; value is a reference to it
                (vref,) = struct.unpack("<Q", value)
                raw, vpos, voff = self._read(self._xattr_start + (vref >> 16), vref & 0xFFFF, 4)
                value, _, _ = self._read(vpos, voff, struct.unpack("<I", raw)[0])
            prefix = _XATTR_PREFIX.get(kind & 0xFF, "unknown.")
            found[prefix + name.decode("utf-8", "surrogateescape")] = value
        return self._xattrs.put(i.xattr, found)

    # -- data ---------------------------------------------------------------------------------
    def _block(self, pos: int, word: int, size: int) -> bytes:
        hit = self._data.get(pos)
        if hit is not None:
            return hit
        on_disk = word & 0xFFFFFF
        raw = os.pread(self.fd, on_disk, pos)
        if len(raw) != on_disk:
            raise ImageCorrupt(self.path, f"data block at {pos} runs past the end")
        return self._data.put(pos, raw if word & (1 << 24) else self._decompress(raw, size))

    def _tail(self, i: Inode) -> bytes:
        at = i.fragment * 16
        raw, _, _ = self._read(self._frag_index[at // _META], at % _META, 16)
        start, word, _ = struct.unpack("<QII", raw)
        data = self._block(start, word, self.block_size)
        return data[i.frag_offset:i.frag_offset + i.size % self.block_size]

    def read(self, i: Inode, offset: int, size: int) -> bytes:
        """Up to size bytes of a regular file from offset."""
        end, bs, parts = min(offset + size, i.size), self.block_size, []
        while offset < end:
            index, within = divmod(offset, bs)
            if index < len(i.blocks):
                pos, word = i.blocks[index]
                full = min(bs, i.size - index * bs)
                data = self._block(pos, word, bs) if word & 0xFFFFFF else bytes(full)  # 0: sparse
            else:
                data = self._tail(i)
            piece = data[within:within + end - offset]
            if not piece:
                raise ImageCorrupt(self.path, f"short block in inode {i.number}")
            parts.append(piece)
            offset += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_all(self, i: Inode) -> bytes:
        return self.read(i, 0, i.size)


def _is_whiteout(i: Inode) -> bool:
    return i.kind == stat.S_IFCHR and i.rdev == 0


def _open_layer(path: str) -> tuple[SquashfsReader, str, str | None]:
    """(reader with .rootfs set, image id, manifest parent) of one .aimg, its layout checked."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(SUPERBLOCK_SIZE)
            f.seek(max(0, size - 4096))
            trailer = check_layout(head, f.read(4096), size, path)
        sq = SquashfsReader(path, trailer.length)
    except OSError as e:
        raise ImageCorrupt(path, f"cannot read: {e.strerror}") from None
    try:
        top = sq.listdir(sq.root)
        if "rootfs" not in top or "manifest.json" not in top:
            raise ImageCorrupt(path, "no rootfs/ or manifest.json inside")
        try:
            manifest = json.loads(sq.read_all(sq.inode(top["manifest.json"])))
        except ValueError:
            raise ImageCorrupt(path, "manifest.json is not valid JSON") from None
        sq.rootfs = sq.inode(top["rootfs"])
        if sq.rootfs.kind != stat.S_IFDIR or not isinstance(manifest, dict):
            raise ImageCorrupt(path, "rootfs is not a directory or the manifest not an object")
        return sq, trailer.image_id, manifest.get("parent")
    except AppContainersError:
        sq.close()
        raise
    except Exception as e:
        sq.close()
        raise ImageCorrupt(path, f"unreadable squashfs: {e}") from None


def open_layers(paths: list[str]) -> list[SquashfsReader]:
    """Open each .aimg (top first), checking its layout and that each names the next as its parent."""
    opened: list[tuple[SquashfsReader, str, str | None]] = []
    try:
        for path in paths:
            opened.append(_open_layer(path))
        for n, (sq, _, parent) in enumerate(opened):
            expected = opened[n + 1][1] if n + 1 < len(opened) else None
            if parent != expected:
                need = f"its parent {parent}" if parent else "no parent"
                raise InvalidValue(f"{sq.path} has {need} but is followed by "
                                   f"{paths[n + 1] if expected else 'nothing'}: give the image, then "
                                   f"its parent, grandparent... down to a full image")
        return [sq for sq, _, _ in opened]
    except BaseException:
        for sq, _, _ in opened:
            sq.close()
        raise
