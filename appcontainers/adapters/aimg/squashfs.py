"""The .aimg codec: a zstd squashfs holding manifest.json and rootfs/, then a 64-byte trailer.

The layout is specified in docs/image-format.md. The trailer functions are pure so they
can be tested without tools; SquashfsCodec runs mksquashfs/unsquashfs through process.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zlib
import itertools
from typing import Callable, Iterable, Iterator, cast

import attrs

from ...domain.exceptions import CommandFailed, ImageCorrupt, InvalidValue
from ...domain.image import Manifest
from ...domain.operations import codec_temp_affixes
from ..host.process import stream

TRAILER_MAGIC = b"AIMGTRL1"
TRAILER_VERSION = 1
# magic, version, flags, squashfs length, sha256, reserved, crc32 of the first 60 bytes
_TRAILER = struct.Struct("<8sIIQ32sII")
TRAILER_SIZE = _TRAILER.size  # 64
SQUASHFS_MAGIC = b"hsqs"
SUPERBLOCK_SIZE = 96
DEFAULT_LEVEL = 3  # zstd 15 (mksquashfs' default) is ~30x slower for a few % less size
MAX_MANIFEST = 1 << 20
MAX_MANIFEST_DEPTH = 32
_JSON_TOKENS = re.compile(r'[\[\]{}"\\]')
_CHUNK = 1 << 20
_TAIL = 4096
_INFO_RE = re.compile(r"^file .*, uncompressed size (\d+) bytes")
_FNMATCH_SPECIAL = re.compile(r"([\\*?\[\]!+@()|])")


@attrs.frozen
class Trailer:
    """What the trailer says: how many bytes of squashfs precede it and their sha256."""

    length: int
    sha256: bytes
    version: int = TRAILER_VERSION

    @property
    def image_id(self) -> str:
        return self.sha256.hex()


def encode_trailer(length: int, sha256: bytes) -> bytes:
    if not 0 < length < 1 << 64 or len(sha256) != 32:
        raise InvalidValue("trailer needs a positive length and a 32-byte sha256")
    body = _TRAILER.pack(TRAILER_MAGIC, TRAILER_VERSION, 0, length, sha256, 0, 0)[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def decode_trailer(data: bytes, path: str = "<trailer>") -> Trailer:
    """Parse the 64 trailer bytes; ImageCorrupt(path, reason) if they are not a valid trailer."""
    if len(data) != TRAILER_SIZE:
        raise ImageCorrupt(path, f"truncated: the .aimg trailer has {len(data)} of {TRAILER_SIZE} bytes")
    magic, version, flags, length, digest, reserved, crc = _TRAILER.unpack(data)
    if magic != TRAILER_MAGIC:
        raise ImageCorrupt(path, "not an appcontainers image (no .aimg trailer)")
    if zlib.crc32(data[:-4]) != crc:
        raise ImageCorrupt(path, "the .aimg trailer is damaged (CRC mismatch)")
    if version > TRAILER_VERSION:
        raise ImageCorrupt(path, f"trailer format version {version} is newer than this appcontainers "
                                 f"understands ({TRAILER_VERSION}): upgrade appcontainers")
    if version < 1 or flags or reserved:
        raise ImageCorrupt(path, f"invalid .aimg trailer (version {version}, flags {flags:#x})")
    if length < SUPERBLOCK_SIZE:
        raise ImageCorrupt(path, f"invalid .aimg trailer: squashfs length {length} is too small")
    return Trailer(length=length, sha256=digest, version=version)


def _bytes_used(head: bytes) -> int | None:
    """The squashfs 4 superblock's bytes_used, or None if head is no squashfs 4 superblock."""
    if len(head) < SUPERBLOCK_SIZE or head[:4] != SQUASHFS_MAGIC:
        return None
    if struct.unpack_from("<H", head, 28)[0] != 4:
        return None
    return struct.unpack_from("<Q", head, 40)[0]


def check_layout(head: bytes, tail: bytes, size: int, path: str = "<image>") -> Trailer:
    """Structural check of a whole file from its first 96 bytes, last bytes (>= 64) and size.

    Everything but the checksum and the manifest; raises ImageCorrupt with the reason.
    """
    if size < SUPERBLOCK_SIZE + TRAILER_SIZE:
        raise ImageCorrupt(path, f"too short to be an image ({size} bytes)")
    used = _bytes_used(head)
    if tail[-TRAILER_SIZE:][:8] != TRAILER_MAGIC:
        if used is not None and used > size:
            raise ImageCorrupt(path, f"truncated: the squashfs needs {used} bytes, the file has {size}")
        at = tail.rfind(TRAILER_MAGIC)
        if at >= 0 and len(tail) - at < TRAILER_SIZE:
            raise ImageCorrupt(path, f"truncated: the .aimg trailer is cut short "
                                     f"({len(tail) - at} of {TRAILER_SIZE} bytes)")
        if at >= 0 and zlib.crc32(tail[at:at + TRAILER_SIZE - 4]) == \
                struct.unpack_from("<I", tail, at + TRAILER_SIZE - 4)[0]:
            raise ImageCorrupt(path, f"length mismatch: {len(tail) - at - TRAILER_SIZE} bytes "
                                     f"follow the .aimg trailer (bytes were added)")
        what = " (a plain squashfs)" if used is not None else ""
        raise ImageCorrupt(path, f"not an appcontainers image (no .aimg trailer){what}")
    trailer = decode_trailer(tail[-TRAILER_SIZE:], path)
    expected = trailer.length + TRAILER_SIZE
    if size < expected:
        raise ImageCorrupt(path, f"truncated: length mismatch, the trailer announces {expected} bytes, "
                                 f"the file has {size}")
    if size > expected:
        raise ImageCorrupt(path, f"length mismatch: the trailer announces {expected} bytes, the file "
                                 f"has {size} (bytes were added)")
    if head[:4] != SQUASHFS_MAGIC:
        raise ImageCorrupt(path, "no squashfs superblock (bad squashfs magic)")
    if used is None:
        raise ImageCorrupt(path, "unsupported squashfs version (expected 4.x)")
    if used > trailer.length:
        raise ImageCorrupt(path, f"truncated: the squashfs needs {used} bytes, "
                                 f"the trailer covers {trailer.length}")
    return trailer


def json_depth(text: str) -> int:
    """How deeply text's arrays and objects nest, found without parsing it (linear, no recursion)."""
    depth = deepest = 0
    in_string, skip = False, -1
    for m in _JSON_TOKENS.finditer(text):
        at, ch = m.start(), m.group()
        if at < skip:
            continue
        if in_string:
            if ch == "\\":
                skip = at + 2  # the escaped character is not a token
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_manifest(raw: bytes, path: str) -> dict:
    """The manifest dict in raw (manifest.json's bytes), bounded in size and depth before it is
    parsed, and checked; ImageCorrupt(path, reason) otherwise."""
    if len(raw) > MAX_MANIFEST:
        raise ImageCorrupt(path, f"manifest.json is larger than {MAX_MANIFEST} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ImageCorrupt(path, f"manifest.json is not valid JSON: {e}") from None
    if json_depth(text) > MAX_MANIFEST_DEPTH:
        raise ImageCorrupt(path, f"manifest.json nests deeper than {MAX_MANIFEST_DEPTH} levels")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ImageCorrupt(path, f"manifest.json is not valid JSON: {e}") from None
    try:
        Manifest.from_dict(data)
    except InvalidValue as e:
        raise ImageCorrupt(path, f"bad manifest.json: {e}") from None
    return data


def sha256_prefix(f, length: int) -> bytes:
    """sha256 of the first length bytes of the open binary file f, read 1 MiB at a time."""
    h, buf = hashlib.sha256(), bytearray(_CHUNK)
    view, remaining = memoryview(buf), length
    f.seek(0)
    while remaining:
        n = f.readinto(view[:min(remaining, _CHUNK)])
        if not n:
            raise EOFError(f"file ended {remaining} bytes early")
        h.update(view[:n])
        remaining -= n
    return h.digest()


def _fnmatch_escape(name: str) -> str:
    return _FNMATCH_SPECIAL.sub(r"\\\1", name)


def mksquashfs_argv(source: str, manifest_file: str, dest: str, *, level: int, threads: int,
                    excludes=(), info: bool = False) -> list[str]:
    """The mksquashfs command line: both sources land in the root, then the source dir moves to rootfs/."""
    name = os.path.basename(source)
    argv = ["mksquashfs", source, manifest_file, dest, "-noappend", "-comp", "zstd",
            "-Xcompression-level", str(level), "-processors", str(threads), "-xattrs",
            "-exit-on-error", "-root-mode", "0755", "-root-uid", "0", "-root-gid", "0",
            "-action", "move(rootfs)@depth(1) && type(d) && !name(rootfs)",
            # fuse-overlayfs marks opaque directories with this file as well as the xattr; the
            # kernel overlay would show it as a plain file, so no image carries it.
            "-action", "exclude@name(.wh..wh..opq)"]
    argv += ["-info", "-no-progress"] if info else ["-no-progress", "-quiet"]
    patterns = []
    for ex in excludes:
        rel = str(ex).lstrip("/")
        while rel.startswith("./"):
            rel = rel[2:].lstrip("/")
        if not rel or ".." in rel.split("/"):
            raise InvalidValue(f"invalid exclude {ex!r}: give a path inside the source directory")
        patterns.append(f"{_fnmatch_escape(name)}/{rel.rstrip('/')}")
    if patterns:
        argv += ["-wildcards", "-e", *patterns]  # -e takes every remaining argument: keep it last
    return argv


def tar2sqfs_argv(dest: str, *, level: int, threads: int) -> list[str]:
    """The tar2sqfs command line (squashfs-tools-ng): a tar on stdin to the squashfs dest, with the
    codec's settings (zstd, 128 KiB blocks); a member it cannot read fails it rather than being
    skipped. The squashfs root gets 0755 root:root, as mksquashfs_argv's -root-* options give."""
    return ["tar2sqfs", "--compressor", "zstd", "--comp-extra", f"level={level}", "--block-size",
            str(1 << 17), "--num-jobs", str(threads), "--no-skip", "--quiet", "--force",
            "--defaults", "uid=0,gid=0,mode=0755,mtime=0", dest]


def _manifest_member(text: bytes) -> bytes:
    ti = tarfile.TarInfo("manifest.json")
    ti.size, ti.mode = len(text), 0o644
    pad = (-len(text)) % tarfile.BLOCKSIZE
    return ti.tobuf(tarfile.PAX_FORMAT) + text + bytes(pad)


class _Feed:
    """The chunks given to a command's stdin (read in process.stream's feeder thread): an
    exception while producing them ends the stream and is kept for the caller to raise."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks, self.error = chunks, None  # type: Iterable[bytes], BaseException | None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.chunks
        except BaseException as e:  # noqa: B902 (handed to the caller's thread)
            self.error = e


def _checked_level(level: int | None) -> int:
    level = DEFAULT_LEVEL if level is None else level
    if not isinstance(level, int) or not 1 <= level <= 22:
        raise InvalidValue(f"invalid zstd level {level!r}: use 1..22")
    return level


def _checked_dest(dest: str) -> str:
    dest = os.path.abspath(dest)
    dest_dir = os.path.dirname(dest)
    if not os.path.isdir(dest_dir):
        raise InvalidValue(f"cannot write {dest}: {dest_dir} is not a directory")
    return dest


def _write_sealed(dest: str, write: Callable[[str], None], tool: str) -> bytes:
    """write(tmp) puts a squashfs in a temp file next to dest; it is then sealed with the
    trailer, fsynced and renamed to dest. The sha256 digest; nothing is left on failure."""
    dest_dir = os.path.dirname(dest)
    prefix, suffix = codec_temp_affixes(dest)  # reconcile finds a dead save's file by them
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=dest_dir)
    os.close(fd)
    done = False
    try:
        write(tmp)
        with open(tmp, "r+b", buffering=0) as f:
            length = os.fstat(f.fileno()).st_size
            if _bytes_used(f.read(SUPERBLOCK_SIZE)) is None:
                raise ImageCorrupt(tmp, f"{tool} wrote no squashfs 4 superblock")
            digest = sha256_prefix(f, length)
            f.seek(length)
            trailer = encode_trailer(length, digest)
            if f.write(trailer) != len(trailer):
                raise OSError(f"short write appending the trailer to {tmp}")
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        done = True
        _fsync_dir(dest_dir)
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return digest


def _tree_bytes(root: str) -> int:
    total, stack = 0, [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SquashfsCodec:
    """ImageCodec for .aimg files, with mksquashfs and unsquashfs (squashfs-tools >= 4.5)."""

    def __init__(self, *, pack_timeout: float = 6 * 3600, read_timeout: float = 60):
        self.pack_timeout, self.read_timeout = pack_timeout, read_timeout

    def pack(self, source: str, manifest: dict, dest: str, level: int | None = None,
             progress=None, excludes=(), threads: int | None = None) -> str:
        """Squash source as rootfs/ with manifest into dest (atomically); returns the image id.

        progress, if given, is called with a percentage (0..100) as files are read.
        excludes are mksquashfs wildcard patterns relative to source (e.g. "var/cache/apt/*").
        """
        src = os.path.realpath(source)
        if not os.path.isdir(src):
            raise InvalidValue(f"cannot pack {source}: not a directory")
        if src == "/" or os.path.basename(src) == "manifest.json":
            raise InvalidValue(f"cannot pack {source}: pack a directory not named '/' or 'manifest.json'")
        Manifest.from_dict(manifest)  # never write an image that verify() would refuse
        level = _checked_level(level)
        threads = threads or os.cpu_count() or 1
        dest = _checked_dest(dest)
        meta_dir = tempfile.mkdtemp(prefix="aimg-manifest.")
        try:
            manifest_file = os.path.join(meta_dir, "manifest.json")
            with open(manifest_file, "w") as f:
                f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            os.chmod(manifest_file, 0o644)

            def write(tmp: str) -> None:
                argv = mksquashfs_argv(src, manifest_file, tmp, level=level, threads=threads,
                                       excludes=excludes, info=progress is not None)
                self._mksquashfs(argv, src, progress)
            digest = _write_sealed(dest, write, "mksquashfs")
        finally:
            shutil.rmtree(meta_dir, ignore_errors=True)
        if progress is not None:
            progress(100)
        return digest.hex()

    def pack_tar(self, members: Iterable[bytes], manifest: dict, dest: str, level: int | None = None,
                 threads: int | None = None) -> str:
        """Squash a tar stream into dest (atomically) with tar2sqfs: members are the bytes of tar
        members already under rootfs/ (no end marker), read once as they come, never extracted;
        the manifest is added as manifest.json. Returns the image id. An exception raised while
        members are produced is raised here, and nothing is written."""
        Manifest.from_dict(manifest)
        level = _checked_level(level)
        threads = threads or os.cpu_count() or 1
        dest = _checked_dest(dest)
        text = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()

        def write(tmp: str) -> None:
            feed = _Feed(itertools.chain([_manifest_member(text)], members, [bytes(2 * tarfile.BLOCKSIZE)]))
            argv = tar2sqfs_argv(tmp, level=level, threads=threads)
            code, out, err = stream(argv, timeout=self.pack_timeout, input=cast(bytes, feed))
            if feed.error is not None:
                raise feed.error
            if code != 0:
                raise CommandFailed(argv, code, (out[-65536:] + err[-65536:]).decode(errors="replace"))
        return _write_sealed(dest, write, "tar2sqfs").hex()

    def _mksquashfs(self, argv: list[str], src: str, progress) -> None:
        on_line = None
        if progress is not None:
            total = max(_tree_bytes(src), 1)
            state = {"done": 0, "last": 0}
            progress(0)

            def on_line(_stream, line):
                m = _INFO_RE.match(line)
                if m:
                    state["done"] += int(m.group(1))
                    pct = min(99, state["done"] * 100 // total)
                    if pct > state["last"]:
                        state["last"] = pct
                        progress(pct)
        code, out, err = stream(argv, timeout=self.pack_timeout, on_line=on_line)
        if code != 0:
            text = (out[-65536:] + err[-65536:]).decode(errors="replace")
            raise CommandFailed(argv, code, text)

    def _layout(self, path: str, f) -> Trailer:
        st = os.fstat(f.fileno())
        head = f.read(SUPERBLOCK_SIZE)
        f.seek(max(0, st.st_size - _TAIL))
        tail = f.read(_TAIL)
        return check_layout(head, tail, st.st_size, path)

    def _open(self, path: str):
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # before open(): a FIFO would block it
                what = " (a directory)" if os.path.isdir(path) else ""
                raise ImageCorrupt(path, f"not a regular file{what}")
            return open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise ImageCorrupt(path, "no such file") from None
        except OSError as e:
            raise ImageCorrupt(path, f"cannot open: {e.strerror}") from None

    def _trailer(self, path: str) -> Trailer:
        with self._open(path) as f:
            return self._layout(path, f)

    def image_id(self, path: str) -> str:
        """The id recorded in the trailer (structure checked, checksum not)."""
        return self._trailer(path).image_id

    def squashfs_size(self, path: str) -> int:
        """Bytes of squashfs before the trailer (what the id is the sha256 of)."""
        return self._trailer(path).length

    def read_manifest(self, path: str) -> dict:
        """The manifest, without checking the checksum (cheap)."""
        return self._manifest(path, self._trailer(path).length)

    def verify(self, path: str) -> tuple[str, dict]:
        """(id, manifest dict) of a valid image; ImageCorrupt(path, reason) otherwise."""
        with self._open(path) as f:
            trailer = self._layout(path, f)
            try:
                digest = sha256_prefix(f, trailer.length)
            except (OSError, EOFError) as e:
                raise ImageCorrupt(path, f"cannot read: {e}") from None
        if digest != trailer.sha256:
            raise ImageCorrupt(path, "checksum mismatch: the file was altered or damaged")
        return trailer.image_id, self._manifest(path, trailer.length)

    def copy_verified(self, src: str, dest: str) -> tuple[str, dict]:
        """Copy src to the new file dest, checking it on the way (one read instead of a copy
        then a verify); (id, manifest) of the copy. dest is removed if anything is wrong."""
        with self._open(src) as f:
            trailer = self._layout(src, f)
            total = trailer.length + TRAILER_SIZE
            h, buf = hashlib.sha256(), bytearray(_CHUNK)
            view = memoryview(buf)
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                f.seek(0)
                done = 0
                while done < total:
                    n = f.readinto(view[:min(total - done, _CHUNK)])
                    if not n:
                        raise ImageCorrupt(src, f"file ended {total - done} bytes early")
                    if done < trailer.length:
                        h.update(view[:min(n, trailer.length - done)])
                    mv = view[:n]
                    while mv:
                        mv = mv[os.write(out, mv):]
                    done += n
                os.fsync(out)
            except BaseException:
                os.close(out)
                os.unlink(dest)
                raise
            os.close(out)
        try:
            if h.digest() != trailer.sha256:
                raise ImageCorrupt(src, "checksum mismatch: the file was altered or damaged")
            return trailer.image_id, self._manifest(dest, trailer.length)
        except BaseException:
            os.unlink(dest)
            raise

    def _manifest(self, path: str, length: int) -> dict:
        """Read by our own squashfs reader, never by following a path: rootfs/ must be a real
        directory and manifest.json a regular file no larger than MAX_MANIFEST (checked on its
        inode before a byte of it is read)."""
        from .squashfs_reader import read_manifest_bytes

        return parse_manifest(read_manifest_bytes(os.path.abspath(path), length), path)
