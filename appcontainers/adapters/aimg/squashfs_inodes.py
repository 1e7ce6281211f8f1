"""Squashfs 4.0 inodes: the Inode record and the parser that reads one from the inode table,
with its bounds (blocks of one file, bytes of a symlink target)."""
from __future__ import annotations

import os
import stat
import struct
from typing import Any
import sys
from array import array
from itertools import accumulate

from ...domain.exceptions import ImageCorrupt

_HEADER = struct.Struct("<HHHHII")  # type, permissions, uid index, gid index, mtime, inode number
_DIR, _EXT_DIR = struct.Struct("<IIHHI"), struct.Struct("<IIIIHHI")
_FILE, _EXT_FILE = struct.Struct("<IIII"), struct.Struct("<QQQIIII")
_KINDS = {1: stat.S_IFDIR, 2: stat.S_IFREG, 3: stat.S_IFLNK, 4: stat.S_IFBLK, 5: stat.S_IFCHR,
          6: stat.S_IFIFO, 7: stat.S_IFSOCK}
_NONE32 = 0xFFFFFFFF
_MAX_BLOCKS = 1 << 22  # blocks of one file: 512 GiB at 128 KiB
_MAX_LINK = 4096  # bytes of a symlink target (the kernel's limit too)


class Inode:
    __slots__ = ("mode", "uid", "gid", "mtime", "number", "nlink", "size", "rdev", "xattr",
                 "target", "dir_start", "dir_offset", "block_pos", "block_words", "fragment", "frag_offset")
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
    target: Any        # bytes for a symlink, else None
    block_pos: Any     # where a file's data blocks start, else None
    block_words: Any   # array of a file's block sizes, else None
    fragment: Any      # fragment index for a file with a tail, else None

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)

    def weight(self) -> int:
        return 200 + 12 * len(self.block_words or ())


def _words(raw: bytes) -> array:
    words = array("I")
    words.frombytes(raw)
    if sys.byteorder == "big":
        words.byteswap()
    return words


class InodeParser:
    """Parses one inode from the inode table, field group by field group."""

    def __init__(self, sq, pos: int, off: int):
        self.sq, self.pos, self.off = sq, pos, off

    def take(self, s: struct.Struct) -> tuple:
        return s.unpack(self.raw(s.size))

    def raw(self, n: int) -> bytes:
        data, self.pos, self.off = self.sq._read(self.pos, self.off, n, self.sq.dir_table)
        return data

    def inode(self) -> Inode:
        sq = self.sq
        itype, perm, uid_i, gid_i, mtime, number = self.take(_HEADER)
        basic, ext = (itype - 7, True) if itype > 7 else (itype, False)
        if basic not in _KINDS or uid_i >= len(sq.ids) or gid_i >= len(sq.ids):
            raise ImageCorrupt(sq.path, f"inode {number} has type {itype} or id indexes out of range")
        i = Inode()
        i.mode, i.uid, i.gid = _KINDS[basic] | perm & 0o7777, sq.ids[uid_i], sq.ids[gid_i]
        i.mtime, i.number, i.nlink, i.size, i.rdev, i.xattr = mtime, number, 1, 0, 0, _NONE32
        i.target = i.block_pos = i.block_words = i.fragment = None
        i.dir_start = i.dir_offset = i.frag_offset = 0
        {1: self._dir, 2: self._file, 3: self._symlink}.get(basic, self._special)(i, basic, ext)
        return i

    def _dir(self, i: Inode, basic: int, ext: bool) -> None:
        if ext:
            i.nlink, i.size, i.dir_start, _, _, i.dir_offset, i.xattr = self.take(_EXT_DIR)
        else:
            i.dir_start, i.nlink, i.size, i.dir_offset, _ = self.take(_DIR)

    def _file(self, i: Inode, basic: int, ext: bool) -> None:
        if ext:
            start, i.size, _, i.nlink, frag, i.frag_offset, i.xattr = self.take(_EXT_FILE)
        else:
            start, frag, i.frag_offset, i.size = self.take(_FILE)
        bs = self.sq.block_size
        n = i.size // bs if frag != _NONE32 else -(-i.size // bs)
        if n > _MAX_BLOCKS:
            raise ImageCorrupt(self.sq.path, f"inode {i.number} claims {i.size} bytes in {n} blocks")
        i.block_words = _words(self.raw(4 * n))
        i.block_pos = array("Q", accumulate((w & 0xFFFFFF for w in i.block_words[:-1]), initial=start)) \
            if n else array("Q")
        i.fragment = frag if frag != _NONE32 else None

    def _symlink(self, i: Inode, basic: int, ext: bool) -> None:
        i.nlink, size = self.take(struct.Struct("<II"))
        if size > _MAX_LINK:
            raise ImageCorrupt(self.sq.path, f"symlink inode {i.number} has a {size}-byte target")
        i.target, i.size = self.raw(size), size
        if ext:
            (i.xattr,) = self.take(struct.Struct("<I"))

    def _special(self, i: Inode, basic: int, ext: bool) -> None:
        if basic in (4, 5):
            i.nlink, dev, *x = self.take(struct.Struct("<III" if ext else "<II"))
            i.rdev = os.makedev((dev >> 8) & 0xFFF, (dev & 0xFF) | ((dev >> 12) & 0xFFF00))
        else:
            i.nlink, *x = self.take(struct.Struct("<II" if ext else "<I"))
        i.xattr = x[0] if x else _NONE32
