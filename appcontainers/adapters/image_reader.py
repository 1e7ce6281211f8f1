"""A read-only FUSE view of an image and its parent layers, merged as overlayfs would merge them.

The squashfs is read here, in Python (no squashfuse, no tools): superblock, metadata blocks, inodes,
directories, xattrs, data blocks and fragments, with LRU caches of what was decompressed.

    python -m appcontainers.adapters.image_reader [-f] IMAGE [PARENT ...] DIR

mounts IMAGE (top first, then its ancestors) at DIR and returns once the mount is up, leaving a
daemon behind (-f: stay in the foreground until unmounted). Unmount with `fusermount3 -u DIR`.
"""
from __future__ import annotations

import errno
import itertools
import json
import logging
import lzma
import os
import stat
import struct
import sys
import threading
import zlib
from collections import OrderedDict

try:
    import mfusepy as fuse
except (ImportError, OSError):  # OSError: mfusepy found no libfuse
    import fuse

from ..domain.exceptions import AppContainersError, ImageCorrupt, InvalidValue
from .squashfs import SUPERBLOCK_SIZE, check_layout

log = logging.getLogger(__name__)

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
_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
_REDIRECT = "trusted.overlay.redirect"
_OPQ_MARKER = ".wh..wh..opq"  # fuse-overlayfs marks opaque dirs with this file as well as the xattr


class LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, capacity: int):
        self.capacity, self._d, self._lock = capacity, OrderedDict(), threading.Lock()

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

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)


class SquashfsReader:
    """Random access to one squashfs 4.0 file (bytes past `length`, like a trailer, are never read)."""

    def __init__(self, path: str, length: int | None = None):
        self.path, self.rootfs = path, None  # rootfs: the image's rootfs/ dir, set by _open_layer
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


_MISSING = object()
_TIMEOUT = 3600  # seconds the kernel may cache names and attributes: an image never changes


def _eio(method):
    """Unexpected failures (a damaged block, a bad reference) become EIO, logged, not EINVAL."""
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except OSError:
            raise
        except Exception as e:
            log.error("%s%r failed: %s", method.__name__, args, e)
            raise fuse.FuseOSError(errno.EIO) from None
    wrapper.__name__ = method.__name__
    return wrapper


class ImageFS(fuse.Operations):
    """The rootfs/ trees of layers (top first) merged read-only, with overlayfs' rules.

    An upper entry hides the lower ones of its name; a whiteout (char device 0/0) hides them and
    is not shown; a directory with trusted.overlay.opaque=y (or user.overlay.opaque) hides what the
    layers under it hold there; trusted.overlay.redirect is followed; trusted.overlay.* is hidden.
    """

    use_ns = True

    def __init__(self, layers: list[SquashfsReader]):
        self.layers = layers
        self._nodes = LRU(1 << 17)  # path -> (layer, inode) stack, top first; None: no such path
        self._handles: dict[int, tuple[SquashfsReader, Inode]] = {}
        self._next_fh = itertools.count(1)
        self._root = self._stack_from(0, [(n, sq.rootfs) for n, sq in enumerate(layers)])

    # -- merging ------------------------------------------------------------------------------
    def _opaque(self, n: int, d: Inode) -> bool:
        sq = self.layers[n]
        found = sq.xattrs(d)
        return any(found.get(k) == b"y" for k in _OPAQUE) or _OPQ_MARKER in sq.listdir(d)

    def _stack_from(self, first: int, dirs) -> tuple:
        out = []
        for n, d in dirs:
            if n >= first:
                out.append((n, d))
                if self._opaque(n, d):
                    break
        return tuple(out)

    def _child(self, stack: tuple, name: str) -> tuple | None:
        found: list = []
        for n, d in stack:
            sq = self.layers[n]
            ref = sq.listdir(d).get(name)
            if ref is None:
                continue
            i = sq.inode(ref)
            if _is_whiteout(i):
                break
            if i.kind != stat.S_IFDIR:
                if not found:
                    found.append((n, i))
                break
            found.append((n, i))
            if self._opaque(n, i):
                break
            redirect = sq.xattrs(i).get(_REDIRECT)
            if redirect is not None:  # a renamed directory: its lower part lives at the old path
                found.extend(self._redirected(stack, n, redirect.decode("utf-8", "surrogateescape")))
                break
        return tuple(found) or None

    def _redirected(self, stack: tuple, n: int, target: str) -> tuple:
        if target.startswith("/"):
            below = self._stack_from(n + 1, [(m, sq.rootfs) for m, sq in enumerate(self.layers)])
        else:
            below = tuple((m, d) for m, d in stack if m > n)
        for name in filter(None, target.split("/")):
            below = self._child(below, name) if below else None
            if not below or below[0][1].kind != stat.S_IFDIR:
                return ()
        return below

    def _lookup(self, path: str) -> tuple | None:
        node = self._nodes.get(path, _MISSING)
        if node is not _MISSING:
            return node
        node, prefix = self._root, ""
        for name in path.split("/"):
            if not name:
                continue
            prefix += "/" + name
            cached = self._nodes.get(prefix, _MISSING)
            if cached is _MISSING:
                cached = None
                if node[0][1].kind == stat.S_IFDIR and name != _OPQ_MARKER:
                    cached = self._child(node, name)
                self._nodes.put(prefix, cached)
            node = cached
            if node is None:
                return None
        return node

    def _top(self, path: str) -> tuple[int, Inode]:
        node = self._lookup(path)
        if node is None:
            raise fuse.FuseOSError(errno.ENOENT)
        return node[0]

    # -- operations ---------------------------------------------------------------------------
    @_eio
    def getattr(self, path, fh=None):
        node = self._lookup(path)
        if node is None:
            raise fuse.FuseOSError(errno.ENOENT)
        n, i = node[0]
        ns = i.mtime * 1_000_000_000
        return {"st_mode": i.mode, "st_ino": (n << 32) | i.number, "st_uid": i.uid, "st_gid": i.gid,
                "st_nlink": 1 if len(node) > 1 else i.nlink,  # as overlayfs says of merged dirs
                "st_size": i.size, "st_rdev": i.rdev, "st_blocks": (i.size + 511) // 512,
                "st_blksize": self.layers[n].block_size, "st_atime": ns, "st_mtime": ns, "st_ctime": ns}

    @_eio
    def readdir(self, path, fh):
        node = self._lookup(path)
        if node is None:
            raise fuse.FuseOSError(errno.ENOENT)
        if node[0][1].kind != stat.S_IFDIR:
            raise fuse.FuseOSError(errno.ENOTDIR)
        names: dict[str, None] = {}
        for n, d in node:
            names.update(dict.fromkeys(self.layers[n].listdir(d)))
        base, out = path.rstrip("/"), [".", ".."]
        for name in names:
            child = self._lookup(f"{base}/{name}")
            if child is not None:
                n, i = child[0]
                out.append((name, {"st_mode": i.mode, "st_ino": (n << 32) | i.number}, 0))
        return out

    @_eio
    def readlink(self, path):
        _, i = self._top(path)
        if i.kind != stat.S_IFLNK:
            raise fuse.FuseOSError(errno.EINVAL)
        return i.target.decode("utf-8", "surrogateescape")

    @_eio
    def open(self, path, flags):
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise fuse.FuseOSError(errno.EROFS)
        n, i = self._top(path)
        if i.kind != stat.S_IFREG:
            raise fuse.FuseOSError(errno.EISDIR if i.kind == stat.S_IFDIR else errno.EINVAL)
        fh = next(self._next_fh)
        self._handles[fh] = (self.layers[n], i)  # the open file keeps its inode, whatever path does
        return fh

    @_eio
    def read(self, path, size, offset, fh):
        try:
            sq, i = self._handles[fh]
        except KeyError:
            raise fuse.FuseOSError(errno.EBADF) from None
        return sq.read(i, offset, size)

    def release(self, path, fh):
        self._handles.pop(fh, None)
        return 0

    @_eio
    def getxattr(self, path, name, position=0):
        n, i = self._top(path)
        value = None if name.startswith("trusted.overlay.") else self.layers[n].xattrs(i).get(name)
        if value is None:
            raise fuse.FuseOSError(errno.ENODATA)
        return value

    @_eio
    def listxattr(self, path):
        n, i = self._top(path)
        return [k for k in self.layers[n].xattrs(i) if not k.startswith("trusted.overlay.")]

    def statfs(self, path):
        bs = self.layers[0].block_size
        return {"f_bsize": bs, "f_frsize": bs, "f_blocks": sum(-(-sq.bytes_used // bs) for sq in self.layers),
                "f_bfree": 0, "f_bavail": 0, "f_files": sum(sq.inode_count for sq in self.layers),
                "f_ffree": 0, "f_favail": 0, "f_namemax": 256}

    def destroy(self, path):
        for sq in self.layers:
            sq.close()


def mount_image(layers: list[str], mountpoint: str, foreground: bool = True) -> None:
    """Serve the image files layers (top first) merged and read-only at mountpoint.

    foreground=True returns when the filesystem is unmounted (`fusermount3 -u mountpoint`, or
    Ctrl-C). foreground=False daemonizes once the mount is up: libfuse forks and the calling
    process exits with status 0 at once (os._exit: no cleanup, flush output first), so call it
    only from a process that has nothing else to do, or run this module as a subprocess.
    """
    if not layers:
        raise InvalidValue("give at least one image file")
    paths = [os.path.abspath(p) for p in layers]  # libfuse chdirs to /
    mountpoint = os.path.abspath(mountpoint)
    if not os.path.isdir(mountpoint):
        raise InvalidValue(f"cannot mount on {mountpoint}: not a directory")
    ops = ImageFS(open_layers(paths))
    options = {"ro": True, "default_permissions": True, "use_ino": True, "kernel_cache": True,
               "entry_timeout": _TIMEOUT, "attr_timeout": _TIMEOUT, "negative_timeout": _TIMEOUT,
               "fsname": os.path.basename(paths[0]).replace(",", "_"), "subtype": "aimg"}
    if os.geteuid() == 0:
        options["allow_other"] = True  # root mounts for everyone; modes still apply
    try:
        fuse.FUSE(ops, mountpoint, foreground=foreground, **options)
    except RuntimeError as e:
        raise AppContainersError(f"cannot mount {paths[0]} at {mountpoint} (libfuse error {e}): "
                                 f"is it already mounted, or is /dev/fuse missing?") from None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    foreground = "-f" in args
    args = [a for a in args if a != "-f"]
    if len(args) < 2:
        print("usage: python -m appcontainers.adapters.image_reader [-f] IMAGE [PARENT ...] DIR",
              file=sys.stderr)
        return 2
    try:
        mount_image(args[:-1], args[-1], foreground=foreground)
    except AppContainersError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
