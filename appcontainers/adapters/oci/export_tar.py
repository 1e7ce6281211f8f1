"""One .aimg layer's rootfs/ as an OCI layer tar, streamed from the squashfs by our own reader
(never extracted, never mounted).

overlayfs whiteouts (a char device 0/0, or a file carrying overlay.whiteout) become `.wh.NAME`,
opaque directories (overlay.opaque=y) get a `.wh..wh..opq` entry, the overlay's own xattrs are
dropped; owners, modes, mtimes, symlinks, hard links, devices and other xattrs are kept (PAX).
"""
from __future__ import annotations

import os
import stat
import struct
import tarfile
from typing import IO, Callable, Iterator

from ...domain.exceptions import ImageCorrupt
from ..aimg.squashfs_inodes import Inode
from ..aimg.squashfs_reader import SquashfsReader

WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"
_OVERLAY = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.")
# A renamed directory or a metadata-only copy points at another layer's files: the layer's
# tree alone does not say what the merged one holds.
_UNSUPPORTED = ("redirect", "metacopy")
_KINDS = {stat.S_IFDIR: tarfile.DIRTYPE, stat.S_IFREG: tarfile.REGTYPE, stat.S_IFLNK: tarfile.SYMTYPE,
          stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE, stat.S_IFIFO: tarfile.FIFOTYPE}


def _overlay_flag(xattrs: dict[str, bytes], what: str) -> bytes | None:
    for prefix in _OVERLAY:
        value = xattrs.get(prefix + what)
        if value is not None:
            return value
    return None


def is_whiteout(i: Inode, xattrs: dict[str, bytes]) -> bool:
    """An overlayfs whiteout: a char device 0/0, or (kernel >= 6.7) a file marked overlay.whiteout."""
    if i.kind == stat.S_IFCHR and i.rdev == 0:
        return True
    return i.kind == stat.S_IFREG and _overlay_flag(xattrs, "whiteout") is not None


def is_opaque(xattrs: dict[str, bytes]) -> bool:
    return _overlay_flag(xattrs, "opaque") == b"y"


def kept_xattrs(xattrs: dict[str, bytes]) -> dict[str, str]:
    """The xattrs as PAX records (SCHILY.xattr.NAME, raw bytes kept), the overlay's own dropped."""
    return {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
            for k, v in xattrs.items() if not k.startswith(_OVERLAY)}


def walk(sq: SquashfsReader, top: Inode) -> Iterator[tuple[str, Inode]]:
    """(path, inode) of every entry under top, depth first, a directory before its entries.
    A directory met twice (a crafted image's loop: squashfs has no hard-linked directories) is
    ImageCorrupt."""
    stack, seen = [("", iter(sq.listdir(top).items()))], {top.number}
    while stack:
        prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        path, inode = prefix + entry[0], sq.inode(entry[1])
        yield path, inode
        if inode.kind == stat.S_IFDIR:
            if inode.number in seen:
                raise ImageCorrupt(sq.path, f"directory {path} appears twice in the tree")
            seen.add(inode.number)
            stack.append((path + "/", iter(sq.listdir(inode).items())))


def data_bytes(sq: SquashfsReader, top: Inode) -> int:
    """Bytes of regular-file data under top, a hard-linked file once (what a progress bar counts)."""
    sizes = {i.number: i.size for _, i in walk(sq, top) if i.kind == stat.S_IFREG}
    return sum(sizes.values())


def _whiteout_name(path: str) -> str:
    head, _, name = path.rpartition("/")
    return f"{head}/{WHITEOUT}{name}" if head else WHITEOUT + name


_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12x")
_DEVICES = (tarfile.CHRTYPE, tarfile.BLKTYPE)
_MAX8, _MAX12 = 0o7777777, 0o77777777777  # what ustar's octal fields hold


def _octal(n: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, n)


def ustar_header(name: bytes, kind: bytes, mode: int, uid: int, gid: int, mtime: int, size: int = 0,
                 link: bytes = b"", dev: tuple[int, int] = (0, 0)) -> bytes:
    """A POSIX ustar header, as tarfile writes one (its fields must fit: see Member.header)."""
    buf = _USTAR.pack(name, _octal(mode, 8), _octal(uid, 8), _octal(gid, 8), _octal(size, 12),
                      _octal(mtime, 12), b" " * 8, kind, link, b"ustar\x0000", b"", b"",
                      *((_octal(dev[0], 8), _octal(dev[1], 8)) if kind in _DEVICES else (b"", b"")), b"")
    return buf[:148] + b"%06o\0 " % sum(buf) + buf[156:]


class Member:
    """One tar member's header fields."""

    __slots__ = ("name", "kind", "mode", "uid", "gid", "mtime", "size", "link", "dev", "pax")

    def __init__(self, name: str, kind: bytes, mode: int = 0o600, uid: int = 0, gid: int = 0, mtime: int = 0):
        self.name, self.kind, self.mode, self.uid, self.gid, self.mtime = name, kind, mode, uid, gid, mtime
        self.size, self.link, self.dev = 0, "", (0, 0)
        self.pax: dict[str, str] = {}

    def header(self) -> bytes:
        """ustar when it can say everything (plain ASCII, short names, small numbers), else PAX."""
        name = self.name + "/" if self.kind == tarfile.DIRTYPE else self.name
        raw_name, raw_link = name.encode("utf-8", "surrogateescape"), self.link.encode("utf-8", "surrogateescape")
        if (not self.pax and len(raw_name) <= 100 and len(raw_link) <= 100 and raw_name.isascii()
                and raw_link.isascii() and max(self.uid, self.gid, *self.dev) <= _MAX8
                and max(self.size, self.mtime) <= _MAX12 and self.mtime >= 0):
            return ustar_header(raw_name, self.kind, self.mode, self.uid, self.gid, self.mtime, self.size,
                                raw_link, self.dev)
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.size = self.kind, self.mode, self.uid, self.gid, \
            self.mtime, self.size
        ti.linkname, (ti.devmajor, ti.devminor), ti.pax_headers = self.link, self.dev, self.pax
        ti.uname = ti.gname = ""
        return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class LayerTar:
    """Writes one layer as a tar (ustar, PAX where needed) to a binary stream (write and tell)."""

    def __init__(self, sq: SquashfsReader, out: IO[bytes], counted: Callable[[int], None] = lambda n: None):
        self.sq, self.out, self.counted = sq, out, counted
        self.links: dict[int, str] = {}  # inode number -> the path it was first written at

    def write(self, rootfs: Inode) -> None:
        for path, inode in walk(self.sq, rootfs):
            self._entry(path, inode)
        self.out.write(bytes(2 * tarfile.BLOCKSIZE))  # the end, padded to tar's 10 KiB records
        self.out.write(bytes(-self.out.tell() % tarfile.RECORDSIZE))

    def _entry(self, path: str, inode: Inode) -> None:
        xattrs = self.sq.xattrs(inode)
        for what in _UNSUPPORTED:
            if _overlay_flag(xattrs, what) is not None:
                raise ImageCorrupt(self.sq.path, f"{path} carries overlay.{what} (a renamed directory or a "
                                                 f"metadata-only copy): export the image flattened")
        if is_whiteout(inode, xattrs):
            self.out.write(Member(_whiteout_name(path), tarfile.REGTYPE, mtime=inode.mtime).header())
            return
        m = self._member(path, inode, xattrs)
        if m is None:  # a socket: tar has no type for it (Docker skips them too)
            return
        self.out.write(m.header())
        if m.kind == tarfile.REGTYPE:
            self._data(inode)
        if inode.kind == stat.S_IFDIR and is_opaque(xattrs) and OPAQUE not in self.sq.listdir(inode):
            self.out.write(Member(f"{path}/{OPAQUE}", tarfile.REGTYPE, mtime=inode.mtime).header())

    def _data(self, inode: Inode) -> None:
        offset, chunk = 0, self.sq.block_size * 8
        while offset < inode.size:
            data = self.sq.read(inode, offset, min(chunk, inode.size - offset))
            self.out.write(data)
            offset += len(data)
            self.counted(len(data))
        self.out.write(bytes(-inode.size % tarfile.BLOCKSIZE))

    def _member(self, path: str, inode: Inode, xattrs: dict[str, bytes]) -> Member | None:
        kind = _KINDS.get(inode.kind)
        if kind is None:
            return None
        m = Member(path, kind, inode.mode & 0o7777, inode.uid, inode.gid, inode.mtime)
        m.pax = kept_xattrs(xattrs)
        if inode.kind != stat.S_IFDIR and inode.nlink > 1:
            first = self.links.setdefault(inode.number, path)
            if first != path:
                m.kind, m.link = tarfile.LNKTYPE, first
                return m
        if kind == tarfile.REGTYPE:
            m.size = inode.size
        elif kind == tarfile.SYMTYPE:
            m.link = inode.target.decode("utf-8", "surrogateescape")
        elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            m.dev = (os.major(inode.rdev), os.minor(inode.rdev))
        return m
