"""A read-only FUSE view of an image and its parent layers, merged as overlayfs would merge them.

The squashfs is read in Python by squashfs_reader.py (no squashfuse, no tools).

    python -m appcontainers.adapters.aimg.image_reader [-f] IMAGE [PARENT ...] DIR

mounts IMAGE (top first, then its ancestors) at DIR and returns once the mount is up, leaving a
daemon behind (-f: stay in the foreground until unmounted). Unmount with `fusermount3 -u DIR`.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
import sys

try:
    import mfusepy as fuse
except (ImportError, OSError):  # OSError: mfusepy found no libfuse
    import fuse

from ...domain.exceptions import AppContainersError, InvalidValue
from .squashfs_reader import LRU, Inode, SquashfsReader, _is_whiteout, open_layers  # noqa: F401

_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
_REDIRECT = "trusted.overlay.redirect"
_OPQ_MARKER = ".wh..wh..opq"  # fuse-overlayfs marks opaque dirs with this file as well as the xattr

log = logging.getLogger(__name__)

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
        below: tuple | None
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
        base = path.rstrip("/")
        out: list[str | tuple[str, dict[str, int], int]] = [".", ".."]
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
        print("usage: python -m appcontainers.adapters.aimg.image_reader [-f] IMAGE [PARENT ...] DIR",
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
