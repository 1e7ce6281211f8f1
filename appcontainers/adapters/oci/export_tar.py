"""One .aimg layer's rootfs/ as an OCI layer tar, streamed from the squashfs by our own reader
(never extracted, never mounted).

overlayfs whiteouts (a char device 0/0, or a file carrying overlay.whiteout) become `.wh.NAME`,
opaque directories (overlay.opaque=y) get a `.wh..wh..opq` entry, the overlay's own xattrs are
dropped; owners, modes, mtimes, symlinks, hard links, devices and other xattrs are kept (PAX).
"""
from __future__ import annotations

import os
import stat
import tarfile
from typing import IO, Callable, Iterator, cast

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


class _InodeFile:
    """read(n) of one regular file of the squashfs, for tarfile.addfile."""

    def __init__(self, sq: SquashfsReader, inode: Inode, counted: Callable[[int], None]):
        self.sq, self.inode, self.offset, self.counted = sq, inode, 0, counted

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.inode.size - self.offset
        data = self.sq.read(self.inode, self.offset, n) if n else b""
        self.offset += len(data)
        self.counted(len(data))
        return data


def walk(sq: SquashfsReader, top: Inode) -> Iterator[tuple[str, Inode]]:
    """(path, inode) of every entry under top, depth first, a directory before its entries."""
    stack = [("", iter(sq.listdir(top).items()))]
    while stack:
        prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        path, inode = prefix + entry[0], sq.inode(entry[1])
        yield path, inode
        if inode.kind == stat.S_IFDIR:
            stack.append((path + "/", iter(sq.listdir(inode).items())))


def data_bytes(sq: SquashfsReader, top: Inode) -> int:
    """Bytes of regular-file data under top, a hard-linked file once (what a progress bar counts)."""
    sizes = {i.number: i.size for _, i in walk(sq, top) if i.kind == stat.S_IFREG}
    return sum(sizes.values())


def _marker(path: str, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(path)
    ti.mode, ti.mtime, ti.uname, ti.gname = 0o600, mtime, "", ""
    return ti


def _whiteout_name(path: str) -> str:
    head, _, name = path.rpartition("/")
    return f"{head}/{WHITEOUT}{name}" if head else WHITEOUT + name


class LayerTar:
    """Writes one layer as a PAX tar to a binary stream (write and tell)."""

    def __init__(self, sq: SquashfsReader, out: IO[bytes], counted: Callable[[int], None] = lambda n: None):
        self.sq, self.counted = sq, counted
        self.tf = tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=sq.block_size)
        self.links: dict[int, str] = {}  # inode number -> the path it was first written at

    def write(self, rootfs: Inode) -> None:
        with self.tf:
            for path, inode in walk(self.sq, rootfs):
                self._entry(path, inode)

    def _entry(self, path: str, inode: Inode) -> None:
        xattrs = self.sq.xattrs(inode)
        for what in _UNSUPPORTED:
            if _overlay_flag(xattrs, what) is not None:
                raise ImageCorrupt(self.sq.path, f"{path} carries overlay.{what} (a renamed directory or a "
                                                 f"metadata-only copy): export the image flattened")
        if is_whiteout(inode, xattrs):
            self.tf.addfile(_marker(_whiteout_name(path), inode.mtime))
            return
        ti = self._info(path, inode, xattrs)
        if ti is None:  # a socket: tar has no type for it (Docker skips them too)
            return
        if ti.type == tarfile.REGTYPE:
            self.tf.addfile(ti, cast(IO[bytes], _InodeFile(self.sq, inode, self.counted)))
        else:
            self.tf.addfile(ti)
        if inode.kind == stat.S_IFDIR and is_opaque(xattrs) and OPAQUE not in self.sq.listdir(inode):
            self.tf.addfile(_marker(f"{path}/{OPAQUE}", inode.mtime))

    def _info(self, path: str, inode: Inode, xattrs: dict[str, bytes]) -> tarfile.TarInfo | None:
        kind = _KINDS.get(inode.kind)
        if kind is None:
            return None
        ti = tarfile.TarInfo(path)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, inode.mode & 0o7777, inode.uid, inode.gid, inode.mtime
        ti.uname = ti.gname = ""
        ti.pax_headers = kept_xattrs(xattrs)
        if inode.kind != stat.S_IFDIR and inode.nlink > 1:
            first = self.links.setdefault(inode.number, path)
            if first != path:
                ti.type, ti.linkname = tarfile.LNKTYPE, first
                return ti
        if kind == tarfile.REGTYPE:
            ti.size = inode.size
        elif kind == tarfile.SYMTYPE:
            ti.linkname = inode.target.decode("utf-8", "surrogateescape")
        elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            ti.devmajor, ti.devminor = os.major(inode.rdev), os.minor(inode.rdev)
        return ti

