"""Copying files and directory trees between the host and a container (docker cp rules).

A destination that is an existing directory receives the source inside it under its own name;
otherwise the destination is the copy's name. Reads and writes inside the container go through
the HostFs port's in-root operations: a container symlink is never followed out of its root.
"""
from __future__ import annotations

import posixpath

from ..domain.exceptions import InvalidValue
from ..domain.paths import container_path
from .containers import ContainerService
from .host_errors import host_errors


READ_MAX = 64 << 20  # read_file returns bytes in memory: bigger files are copied out


@host_errors("read file")
def read_file(cs: ContainerService, name: str, path: str, max_bytes: int = READ_MAX) -> bytes:
    """The content of the container's regular file path (never through a final symlink)."""
    full = container_path(path)
    with cs.locked(name):
        r = cs._ready(name)
        cs.ensure_mounted(r)
        return cs.p.fs.read_in_root(cs.layout.rootfs(name), full, max_bytes)


@host_errors("copy out")
def copy_out(cs: ContainerService, name: str, path: str, dest: str) -> tuple[str, int]:
    """Copy the container path to the host path dest; (the host path written, entries copied). mode, if given, is a copied file's mode (default: the source's)."""
    full = container_path(path)
    fs = cs.p.fs
    target = posixpath.join(dest, posixpath.basename(full)) if fs.is_dir(dest) else dest
    with cs.locked(name):
        r = cs._ready(name)
        cs.ensure_mounted(r)
        root = cs.layout.rootfs(name)
        kind = fs.kind_in_root(root, full)
        if kind is None:
            raise InvalidValue(f"{full}: no such file or directory in container {name}")
        if fs.exists(target) and (kind != "file" or fs.is_dir(target)):
            raise InvalidValue(f"{target} exists on the host: give a new name or a directory to copy into")
        return target, fs.copy_out_of_root(root, full, target)


@host_errors("copy in")
def copy_in(cs: ContainerService, name: str, src: str, dest: str,
            mode: int | None = None) -> tuple[str, int]:
    """Copy the host file or directory src to the container path dest; (the container path
    written, entries copied). mode, if given, is a copied file's mode (default: the source's)."""
    fs = cs.p.fs
    full = container_path(dest)
    with cs.locked(name):
        r = cs._ready(name)
        cs.ensure_mounted(r)
        root = cs.layout.rootfs(name)
        if fs.kind_in_root(root, full) == "dir":
            full = posixpath.join(full, posixpath.basename(src.rstrip("/")) or "root")
        shift = r.idmap[0] if r.idmap else 0
        return full, fs.copy_into_root(root, src, full, cs.layout.tmp, shift=shift, mode=mode)
