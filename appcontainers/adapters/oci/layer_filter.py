"""An OCI layer, as its tar passes by, turned into the members of an .aimg layer.

Nothing is extracted: the blob is decompressed as a stream (gzip, zstd or none), its digest
and its diff_id (the sha256 of the uncompressed tar) are computed over the bytes as they pass,
each member is checked like any untrusted archive (adapters/host/tar_extract.check_member) and
re-emitted as a PAX tar member under `rootfs/` for tar2sqfs. OCI whiteouts become overlayfs
ones (docs/oci.md):

- `DIR/.wh.NAME` -> a character device 0/0 `rootfs/DIR/NAME` (the entry is deleted);
- `DIR/.wh..wh..opq` -> the xattr `trusted.overlay.opaque=y` on `rootfs/DIR` (what lay below
  DIR in the layers under this one is hidden).

Directories are held back and emitted after every other member (tar2sqfs takes an entry for a
directory it already made implicitly, not one twice), so an opaque marker met after its
directory's entry still lands on it. overlay xattrs an image carries itself are dropped: only
the markers above come from us.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import posixpath
import tarfile
from typing import IO, Iterator, cast

import attrs

from ...domain.exceptions import AppContainersError, ImageCorrupt, InvalidValue, UnsafePath
from ...domain.oci import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS
from ..host.tar_extract import MemberRefused, MemberRules, check_member

ROOT = "rootfs"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "SCHILY.xattr.trusted.overlay.opaque"
_DROPPED_XATTRS = ("SCHILY.xattr.trusted.overlay.", "SCHILY.xattr.user.overlay.")
MAX_READ = 4 << 20  # no header needs more: a larger one is refused before it is read
_CHUNK = 1 << 20
MAX_PAX = 64 << 10  # a member's extended header (path, link, xattrs: Linux's xattr limit is 64 KiB)
MAX_TRAILING = 1 << 20  # what may follow the tar's end marker (zero padding): more is refused
CAPABILITY_XATTR = "SCHILY.xattr.security.capability"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@attrs.frozen
class LayerLimits:
    """What one layer may hold: member rules (devices, setuid) and its size bounds."""

    rules: MemberRules = MemberRules(any_symlink=True)
    max_bytes: int = DEFAULT_MAX_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS


class Hashing:
    """A binary stream's read(), hashing and counting what passes."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha256, self.count = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha256.update(data)
        self.count += len(data)
        return data

    def drain(self, limit: int | None = None) -> None:
        """Read to the end; ImageCorrupt past limit more bytes (a bomb hidden after the tar)."""
        left = limit
        while data := self.read(_CHUNK):
            if left is not None:
                left -= len(data)
                if left < 0:
                    raise ImageCorrupt("layer", f"more than {limit} bytes follow the end of its tar")

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


class Forward:
    """What tarfile reads through: whole reads of at most MAX_READ bytes, seeks forward only.

    Some writers (umoci insert) end a layer right after its last member's data, without the
    padding and end blocks: at the end of the stream, up to those zeros are supplied (the
    digests cover only the real bytes)."""

    def __init__(self, f: Hashing) -> None:
        self.f, self.pos = f, 0
        self.pad: int | None = None  # zeros left to supply once the stream has ended
        self.ended_at: int | None = None  # where the real bytes ended
        self.last = b""  # what the last read returned (the header block tarfile stopped at)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > MAX_READ:
            raise tarfile.ReadError(f"a header declares {n} bytes, more than {MAX_READ}")
        parts, left = [], n
        while left:
            data = self.f.read(left) if self.pad is None else b""
            if not data:
                if self.pad is None:
                    self.ended_at = self.pos + n - left
                    self.pad = -self.ended_at % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE
                data = bytes(min(left, self.pad))
                self.pad -= len(data)
                if not data:
                    break
            parts.append(data)
            left -= len(data)
        self.pos += n - left
        self.last = b"".join(parts)
        return self.last

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self.pos:
            raise tarfile.ReadError("the layer stream cannot seek back")
        while self.pos < pos:
            if not self.read(min(pos - self.pos, _CHUNK)):
                break
        return self.pos

    def tell(self) -> int:
        return self.pos


def decompressed(raw: Hashing):
    """The uncompressed stream of raw (gzip, zstd or a plain tar), told by its first bytes."""
    head = raw.f.peek(4)[:4] if hasattr(raw.f, "peek") else b""
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=cast(IO[bytes], raw), mode="rb")
    if head == _ZSTD_MAGIC:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], raw), read_across_frames=True)
    return raw


def _dir(name: str) -> tarfile.TarInfo:
    """A directory entry for a directory the layer marks opaque without listing it."""
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    return ti


def _renamed(m: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    out = copy.copy(m)
    out.name = f"{ROOT}/{name}" if name else ROOT
    out.uname = out.gname = ""
    # Only extended attributes pass (path/linkpath would override the new names), and no overlay
    # marker the image set itself.
    out.pax_headers = {k: v for k, v in m.pax_headers.items()
                       if k.startswith("SCHILY.xattr.") and not k.startswith(_DROPPED_XATTRS)}
    if m.islnk():
        out.linkname = f"{ROOT}/{posixpath.normpath(m.linkname).lstrip('/')}"
    return out


@attrs.define
class LayerMapper:
    """The member-by-member mapping (pure: TarInfo in, TarInfo out), tested as data.

    map() gives the members to emit now; directories() those held back, for the end."""

    held: dict[str, tarfile.TarInfo] = attrs.Factory(dict)  # clean name -> directory entry

    def map(self, m: tarfile.TarInfo, name: str) -> list[tarfile.TarInfo]:
        parent, base = posixpath.split(name)
        if base == OPAQUE:
            held = self.held.setdefault(parent, _renamed(_dir(parent), parent))
            held.pax_headers = {**held.pax_headers, OPAQUE_XATTR: "y"}
            return []
        if base.startswith(WHITEOUT + WHITEOUT):
            return []  # other aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not part of the tree
        if base.startswith(WHITEOUT):
            return [self._whiteout(m, parent, base[len(WHITEOUT):])]
        if m.isdir():
            entry = _renamed(m, name)
            if OPAQUE_XATTR in self.held.get(name, entry).pax_headers:
                entry.pax_headers = {**entry.pax_headers, OPAQUE_XATTR: "y"}
            self.held[name] = entry
            return []
        return [_renamed(m, name)]

    @staticmethod
    def _whiteout(m: tarfile.TarInfo, parent: str, target: str) -> tarfile.TarInfo:
        if not target or target in (".", "..") or not m.isreg():
            raise MemberRefused("is a malformed whiteout")
        ti = tarfile.TarInfo(f"{ROOT}/{posixpath.join(parent, target)}")
        ti.type, ti.mode, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 0, 0, 0
        ti.mtime = m.mtime
        return ti

    def directories(self) -> list[tarfile.TarInfo]:
        return list(self.held.values())


def header(ti: tarfile.TarInfo) -> bytes:
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _data(tf: tarfile.TarFile, m: tarfile.TarInfo) -> Iterator[bytes]:
    src = cast(IO[bytes], tf.extractfile(m))
    stream = cast(Forward, tf.fileobj)
    left = m.size
    while left:
        chunk = src.read(min(left, _CHUNK))
        if not chunk or (stream.ended_at is not None and stream.ended_at < m.offset_data + m.size):
            raise tarfile.ReadError(f"member {m.name!r} is cut short")  # only padding may be made up
        left -= len(chunk)
        yield chunk
    if m.size % tarfile.BLOCKSIZE:
        yield bytes(tarfile.BLOCKSIZE - m.size % tarfile.BLOCKSIZE)


@attrs.define
class _Counts:
    members: int = 0
    total: int = 0


def _checked(m: tarfile.TarInfo, files: set[str], limits: LayerLimits, counts: _Counts) -> str:
    counts.members += 1
    if counts.members > limits.max_members:
        raise MemberRefused(f"is past the limit of {limits.max_members} members")
    if sum(len(k) + len(v) for k, v in m.pax_headers.items()) > MAX_PAX:
        raise MemberRefused(f"has more than {MAX_PAX} bytes of extended headers")
    if CAPABILITY_XATTR in m.pax_headers and not limits.rules.setuid:
        raise MemberRefused("carries file capabilities (security.capability), refused as setuid "
                            "files are unless allowed")
    name = check_member(m, files, limits.rules)
    counts.total += m.size if m.isreg() else 0
    if counts.total > limits.max_bytes:
        raise MemberRefused(f"takes the layer past {limits.max_bytes} unpacked bytes")
    return name


def _members(tf: tarfile.TarFile, label: str, limits: LayerLimits) -> Iterator[bytes]:
    mapper, files, counts = LayerMapper(), set[str](), _Counts()
    while (m := tf.next()) is not None:
        tf.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every header it read
        try:
            emitted = mapper.map(m, _checked(m, files, limits, counts))
        except MemberRefused as e:
            raise UnsafePath(f"layer {label} refused: member {m.name!r} {e}") from None
        for ti in emitted:
            yield header(ti)
            if ti.isreg():
                yield from _data(tf, m)
    for ti in mapper.directories():
        yield header(ti)


def layer_members(blob: IO[bytes], label: str, *, digest: str | None, diff_id: str | None,
                  limits: LayerLimits = LayerLimits(), on_read=None) -> Iterator[bytes]:
    """The tar members (no end marker) of the .aimg layer made from the layer blob, as bytes.

    digest/diff_id: what the OCI manifest and config say (None: not checked). Both are checked
    once the blob has been read to its end; ImageCorrupt if either differs, UnsafePath for a
    refused member, InvalidValue for bytes that are no tar. on_read(n): compressed bytes read."""
    raw = Hashing(blob)
    plain = Hashing(decompressed(raw))
    try:
        tf = tarfile.open(fileobj=cast(IO[bytes], Forward(plain)), mode="r:")
        for chunk in _members(tf, label, limits):
            yield chunk
            if on_read is not None:
                on_read(raw.count)
        _end_is_zeros(tf)
        plain.drain(MAX_TRAILING)
        raw.drain(MAX_TRAILING)
    except AppContainersError:
        raise
    except Exception as e:  # tarfile, gzip, zstd, zlib errors: the bytes are not a tar
        if digest is not None and _digest_of_rest(raw) != digest:
            raise ImageCorrupt(label, f"its digest is not {digest}: the blob is damaged or altered") from None
        raise InvalidValue(f"layer {label} is not a readable tar archive: {e}") from None
    _check_digests(label, raw, plain, digest, diff_id)


def _end_is_zeros(tf: tarfile.TarFile) -> None:
    """tarfile stops at the first header it cannot read as if the archive ended there: a tar cut
    or damaged mid-way would import what came before. The real end is two zero blocks (here, or
    the stream's end where a writer left them out, which Forward supplies as zeros)."""
    stream = cast(Forward, tf.fileobj)
    if stream.pos != tf.offset + tarfile.BLOCKSIZE or stream.last.strip(b"\0"):
        raise tarfile.ReadError("a damaged header where the archive should end (cut or altered)")


def _digest_of_rest(raw: Hashing) -> str | None:
    """The blob's digest after reading what is left (None if even that fails)."""
    try:
        raw.drain()
    except OSError:
        return None
    return raw.digest()


def _check_digests(label: str, raw: Hashing, plain: Hashing, digest: str | None, diff_id: str | None) -> None:
    if digest is not None and raw.digest() != digest:
        raise ImageCorrupt(label, f"its digest is not {digest}: the blob is damaged or altered")
    if diff_id is not None and plain.digest() != diff_id:
        raise ImageCorrupt(label, f"its uncompressed content is not {diff_id} (the diff_id its "
                                  f"config names): the layer is damaged or altered")

