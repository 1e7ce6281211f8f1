"""Paths inside a container, as users give them (pure)."""
from __future__ import annotations

import posixpath

from .exceptions import UnsafePath


def container_path(path: str, home: str = "/root") -> str:
    """Normalize a path given by a user; relative ones are under home. Refuses '..' and NUL."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise UnsafePath(f"invalid path {path!r}")
    parts = path.split("/")
    if ".." in parts:
        raise UnsafePath(f"path {path!r} contains '..': give a plain path inside the container")
    full = posixpath.normpath(path if path.startswith("/") else posixpath.join(home, path))
    if full == "/":
        raise UnsafePath(f"path {path!r} names the container's root directory")
    return full
