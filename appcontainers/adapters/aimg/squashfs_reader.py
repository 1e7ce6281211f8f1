"""A squashfs reader in pure Python, for .aimg files: superblock, metadata blocks, inodes,
directories, xattrs, data blocks and fragments, with LRU caches of what was decompressed.

Used by the read-only FUSE view (image_reader.py) and to read an image's top level (is rootfs/
a directory, manifest.json a small file); needs no tools and no mounts.

Safe on any bytes (the trailer is a checksum, not a signature: anyone can seal a crafted image):
a data block decompresses to at most the block size and metadata to 8 KiB, every block and table
must lie inside the squashfs, block lists, directories, symlinks and xattrs are bounded, the
caches are bounded in bytes, names are checked, and every failure is an ImageCorrupt.
"""
from __future__ import annotations

import functools
import os
import stat
import struct

from ...domain.exceptions import AppContainersError, ImageCorrupt, InvalidValue
from .squashfs import MAX_MANIFEST, SUPERBLOCK_SIZE, check_layout, parse_manifest
from .squashfs_blocks import LRU, BlockError, decompressor
from .squashfs_inodes import Inode, InodeParser

_SUPER = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")
_DIR_HEAD, _DIR_ENTRY = struct.Struct("<III"), struct.Struct("<HhHH")
_XATTR_PREFIX = {0: "user.", 1: "trusted.", 2: "security."}
_NONE32, _NONE64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
_META = 8192
_CACHE_BYTES = 64 << 20  # decompressed data blocks and fragments kept, per image
_MAX_DIR = 16 << 20  # bytes of one directory's entries
_MAX_XATTRS = 1 << 20  # bytes of one inode's xattr names and values
_MAX_NAME = 256


def _guarded(method):
    """Whatever goes wrong on a damaged image (struct, index, key, decompression errors) is ImageCorrupt."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except AppContainersError:
            raise
        except BlockError as e:
            raise ImageCorrupt(self.path, str(e)) from None
        except Exception as e:
            raise ImageCorrupt(self.path, f"unreadable squashfs ({type(e).__name__}: {e})") from None
    return wrapper


class SquashfsReader:
    """Random access to one squashfs 4.0 file (bytes past `length`, like a trailer, are never read)."""

    def __init__(self, path: str, length: int | None = None):
        self.path = path
        self.rootfs: Inode | None = None  # rootfs: the image's rootfs/ dir, set by _open_layer
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ImageCorrupt(path, f"cannot open: {e.strerror}") from None
        try:
            self._setup(length)
        except BaseException:
            os.close(self.fd)
            raise

    @_guarded
    def _setup(self, length: int | None) -> None:
        self._superblock(length)
        self._meta = LRU(4096)  # entries of at most 8 KiB
        self._inodes = LRU(65536, 32 << 20, Inode.weight)
        self._dirs = LRU(4096, 32 << 20, lambda d: sum(80 + len(k) for k in d))
        self._xattrs = LRU(4096, 8 << 20, lambda x: sum(80 + len(k) + len(v) for k, v in x.items()))
        self._data = LRU(max(16, _CACHE_BYTES // self.block_size), _CACHE_BYTES)
        self.ids = self._table(self.id_table, self.id_count, 4, "I")
        self._frag_index = self._pointers(self.frag_table, -(-self.fragment_count * 16 // _META))
        self._xattr_start, self._xattr_count, self._xattr_index = 0, 0, []
        if self.xattr_table != _NONE64:
            self._xattr_start, self._xattr_count, _ = struct.unpack("<QII", self._pread(16, self.xattr_table))
            self._xattr_index = self._pointers(self.xattr_table + 16, -(-self._xattr_count * 16 // _META))
        self.root = self.inode(self.root_ref)
        if self.root.kind != stat.S_IFDIR:
            raise ImageCorrupt(self.path, "the root inode is not a directory")

    def _superblock(self, length: int | None) -> None:
        raw = os.pread(self.fd, SUPERBLOCK_SIZE, 0)
        if len(raw) != SUPERBLOCK_SIZE:
            raise ImageCorrupt(self.path, "too short for a squashfs superblock")
        (magic, self.inode_count, _, self.block_size, self.fragment_count, comp, block_log, self.flags,
         self.id_count, major, _, self.root_ref, self.bytes_used, self.id_table, self.xattr_table,
         self.inode_table, self.dir_table, self.frag_table, export) = _SUPER.unpack(raw)
        if magic != 0x73717368 or major != 4:
            raise ImageCorrupt(self.path, "not a squashfs 4.0 filesystem")
        if self.bytes_used > os.fstat(self.fd).st_size or (length is not None and self.bytes_used > length):
            raise ImageCorrupt(self.path, "truncated: the squashfs is longer than the file")
        if not 12 <= block_log <= 20 or self.block_size != 1 << block_log:
            raise ImageCorrupt(self.path, f"invalid block size {self.block_size}")
        if not SUPERBLOCK_SIZE <= self.inode_table < self.dir_table < self.bytes_used:
            raise ImageCorrupt(self.path, "the inode and directory tables are out of place")
        later = [t for t in (self.frag_table, export, self.id_table, self.xattr_table)
                 if t != _NONE64 and t > self.dir_table]
        self.dir_end = min(later + [self.bytes_used])
        try:
            self._decompress = decompressor(comp)
        except ValueError as e:
            raise ImageCorrupt(self.path, str(e)) from None

    def close(self) -> None:
        os.close(self.fd)

    # -- metadata -----------------------------------------------------------------------------
    def _pread(self, n: int, at: int) -> bytes:
        if at < 0 or at + n > self.bytes_used:
            raise ImageCorrupt(self.path, f"a read of {n} bytes at {at} runs past the squashfs")
        raw = os.pread(self.fd, n, at)
        if len(raw) != n:
            raise ImageCorrupt(self.path, f"a read of {n} bytes at {at} runs past the end of the file")
        return raw

    def _pointers(self, at: int, n: int) -> list[int]:
        return list(struct.unpack(f"<{n}Q", self._pread(8 * n, at))) if n else []

    def _table(self, at: int, count: int, size: int, fmt: str) -> list:
        raw = b"".join(self._meta_block(p, at)[0] for p in self._pointers(at, -(-count * size // _META)))
        if len(raw) < count * size:
            raise ImageCorrupt(self.path, "a lookup table is cut short")
        return list(struct.unpack(f"<{count}{fmt}", raw[:count * size]))

    def _meta_block(self, pos: int, end: int) -> tuple[bytes, int]:
        """(data, position of the next block) of the metadata block at pos, which must end by end."""
        if not SUPERBLOCK_SIZE <= pos < end:
            raise ImageCorrupt(self.path, f"metadata block at {pos} lies outside its table")
        hit = self._meta.get(pos)
        if hit is not None and hit[1] <= end:
            return hit
        (head,) = struct.unpack("<H", self._pread(2, pos))
        size = head & 0x7FFF
        if not 0 < size <= _META or pos + 2 + size > min(end, self.bytes_used):
            raise ImageCorrupt(self.path, f"metadata block at {pos} has an invalid length {size}")
        raw = self._pread(size, pos + 2)
        data = raw if head & 0x8000 else self._decompress(raw, _META)
        if not data:
            raise ImageCorrupt(self.path, f"empty metadata block at {pos}")
        return self._meta.put(pos, (data, pos + 2 + size))

    def _read(self, pos: int, off: int, n: int, end: int) -> tuple[bytes, int, int]:
        """n bytes of the metadata stream from block pos, offset off, within a table ending at end;
        returns them and where they end."""
        parts = []
        while n > 0:
            data, following = self._meta_block(pos, end)
            if off >= len(data):
                pos, off = following, off - len(data)
                continue
            chunk = data[off:off + n]
            parts.append(chunk)
            n -= len(chunk)
            off += len(chunk)
        return b"".join(parts), pos, off

    @_guarded
    def inode(self, ref: int) -> Inode:
        hit = self._inodes.get(ref)
        if hit is not None:
            return hit
        reader = InodeParser(self, self.inode_table + (ref >> 16), ref & 0xFFFF)
        return self._inodes.put(ref, reader.inode())

    @_guarded
    def listdir(self, d: Inode) -> dict[str, int]:
        """Name -> inode reference of a directory's entries, in the image's (sorted) order."""
        if d.kind != stat.S_IFDIR:
            raise ImageCorrupt(self.path, f"inode {d.number} is not a directory")
        key = (d.dir_start, d.dir_offset, d.size)  # an empty dir points where the next one starts
        hit = self._dirs.get(key)
        if hit is not None:
            return hit
        if d.size > _MAX_DIR:
            raise ImageCorrupt(self.path, f"directory inode {d.number} claims {d.size} bytes of entries")
        entries = {}
        if d.size > 3:
            blob, _, _ = self._read(self.dir_table + d.dir_start, d.dir_offset, d.size - 3, self.dir_end)
            entries = self._entries(blob)
        return self._dirs.put(key, entries)

    def _entries(self, blob: bytes) -> dict[str, int]:
        entries: dict[str, int] = {}
        at = 0
        while at < len(blob):
            count, start, _ = _DIR_HEAD.unpack_from(blob, at)
            at += _DIR_HEAD.size
            if count >= 256:
                raise ImageCorrupt(self.path, f"a directory header announces {count + 1} entries")
            for _ in range(count + 1):
                offset, _, _, name_size = _DIR_ENTRY.unpack_from(blob, at)
                at += _DIR_ENTRY.size
                raw = blob[at:at + name_size + 1]
                at += name_size + 1
                name = raw.decode("utf-8", "surrogateescape")
                if len(raw) != name_size + 1 or name_size >= _MAX_NAME or name in (".", "..") \
                        or "/" in name or "\0" in name or name in entries:
                    raise ImageCorrupt(self.path, f"invalid directory entry {name[:80]!r}")
                entries[name] = (start << 16) | offset
        return entries

    @_guarded
    def xattrs(self, i: Inode) -> dict[str, bytes]:
        if i.xattr == _NONE32 or not self._xattr_index:
            return {}
        hit = self._xattrs.get(i.xattr)
        if hit is not None:
            return hit
        if i.xattr >= self._xattr_count:
            raise ImageCorrupt(self.path, f"inode {i.number} has xattr index {i.xattr} of {self._xattr_count}")
        at = i.xattr * 16
        raw, _, _ = self._read(self._xattr_index[at // _META], at % _META, 16, self.xattr_table)
        ref, count, size = struct.unpack("<QII", raw)
        if size > _MAX_XATTRS:
            raise ImageCorrupt(self.path, f"inode {i.number} claims {size} bytes of xattrs")
        return self._xattrs.put(i.xattr, self._xattr_pairs(self._xattr_start + (ref >> 16), ref & 0xFFFF, count))

    def _xattr_pairs(self, pos: int, off: int, count: int) -> dict[str, bytes]:
        found, budget = {}, _MAX_XATTRS

        def take(n: int) -> bytes:
            nonlocal pos, off, budget
            budget -= n
            if budget < 0 or n > 65536:
                raise ImageCorrupt(self.path, "an inode's xattrs are too large")
            raw, pos, off = self._read(pos, off, n, self.xattr_table)
            return raw

        for _ in range(count):
            kind, name_size = struct.unpack("<HH", take(4))
            name = take(name_size)
            value = take(struct.unpack("<I", take(4))[0])
            if kind & 0x100:  # stored once elsewhere; value is a reference to it
                (vref,) = struct.unpack("<Q", value)
                pos_, off_ = pos, off
                pos, off = self._xattr_start + (vref >> 16), vref & 0xFFFF
                value = take(struct.unpack("<I", take(4))[0])
                pos, off = pos_, off_
            prefix = _XATTR_PREFIX.get(kind & 0xFF, "unknown.")
            found[prefix + name.decode("utf-8", "surrogateescape")] = value
        return found

    # -- data ---------------------------------------------------------------------------------
    def _block(self, pos: int, word: int) -> bytes:
        key = (pos, word)
        hit = self._data.get(key)
        if hit is not None:
            return hit
        on_disk = word & 0xFFFFFF
        if on_disk > self.block_size or pos < SUPERBLOCK_SIZE or pos + on_disk > self.bytes_used:
            raise ImageCorrupt(self.path, f"data block at {pos} of {on_disk} bytes is out of bounds")
        raw = self._pread(on_disk, pos)
        return self._data.put(key, raw if word & (1 << 24) else self._decompress(raw, self.block_size))

    def _tail(self, i: Inode) -> bytes:
        if i.fragment is None or i.fragment >= self.fragment_count:
            raise ImageCorrupt(self.path, f"inode {i.number} has an invalid fragment")
        at = i.fragment * 16
        raw, _, _ = self._read(self._frag_index[at // _META], at % _META, 16, self.frag_table)
        start, word, _ = struct.unpack("<QII", raw)
        data = self._block(start, word)
        n = i.size % self.block_size
        if i.frag_offset + n > len(data):
            raise ImageCorrupt(self.path, f"the fragment of inode {i.number} is too short")
        return data[i.frag_offset:i.frag_offset + n]

    @_guarded
    def read(self, i: Inode, offset: int, size: int) -> bytes:
        """Up to size bytes of a regular file from offset."""
        if i.kind != stat.S_IFREG:
            raise ImageCorrupt(self.path, f"inode {i.number} is not a regular file")
        end, bs, parts = min(offset + size, i.size), self.block_size, []
        while offset < end:
            index, within = divmod(offset, bs)
            if index < len(i.block_words):
                word, full = i.block_words[index], min(bs, i.size - index * bs)
                data = self._block(i.block_pos[index], word) if word & 0xFFFFFF else bytes(full)  # 0: sparse
                if len(data) != full:
                    raise ImageCorrupt(self.path, f"block {index} of inode {i.number} holds {len(data)} "
                                                  f"bytes, not {full}")
            else:
                data = self._tail(i)
            piece = data[within:within + end - offset]
            if not piece:
                raise ImageCorrupt(self.path, f"short block in inode {i.number}")
            parts.append(piece)
            offset += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_all(self, i: Inode, limit: int) -> bytes:
        """The whole content of a regular file of at most limit bytes."""
        if i.size > limit:
            raise ImageCorrupt(self.path, f"inode {i.number} holds {i.size} bytes, more than {limit}")
        return self.read(i, 0, i.size)


def _is_whiteout(i: Inode) -> bool:
    return i.kind == stat.S_IFCHR and i.rdev == 0


def read_top(sq: SquashfsReader) -> tuple[bytes, Inode]:
    """(manifest.json's bytes, the rootfs inode) of an opened image. rootfs must be a real
    directory and manifest.json a regular file of at most MAX_MANIFEST bytes: a symlink is
    refused, never followed (it would point the host at its own files)."""
    top = sq.listdir(sq.root)
    for name in ("manifest.json", "rootfs"):
        if name not in top:
            raise ImageCorrupt(sq.path, f"no {name} inside")
    rootfs, manifest = sq.inode(top["rootfs"]), sq.inode(top["manifest.json"])
    if rootfs.kind != stat.S_IFDIR:
        what = "a symlink" if rootfs.kind == stat.S_IFLNK else "not a directory"
        raise ImageCorrupt(sq.path, f"rootfs is {what}")
    if manifest.kind != stat.S_IFREG:
        raise ImageCorrupt(sq.path, "manifest.json is not a regular file")
    if manifest.size > MAX_MANIFEST:
        raise ImageCorrupt(sq.path, f"manifest.json is larger than {MAX_MANIFEST} bytes")
    return sq.read_all(manifest, MAX_MANIFEST), rootfs


def read_manifest_bytes(path: str, length: int) -> bytes:
    """manifest.json of the squashfs in the first length bytes of path, its top level checked."""
    sq = SquashfsReader(path, length)
    try:
        return read_top(sq)[0]
    finally:
        sq.close()


def _open_layer(path: str) -> tuple[SquashfsReader, str, str | None]:
    """(reader with .rootfs set, image id, manifest parent) of one .aimg, its layout checked."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(SUPERBLOCK_SIZE)
            f.seek(max(0, size - 4096))
            trailer = check_layout(head, f.read(4096), size, path)
    except OSError as e:
        raise ImageCorrupt(path, f"cannot read: {e.strerror}") from None
    sq = SquashfsReader(path, trailer.length)
    try:
        raw, sq.rootfs = read_top(sq)
        return sq, trailer.image_id, parse_manifest(raw, path).get("parent")
    except BaseException:
        sq.close()
        raise


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
