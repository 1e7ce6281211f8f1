"""The data root's own safety: created root-only (0711), refused if another user could write
into it (a user's skeleton is rendered, with Tempita's Python blocks, by root), and the
directories that hold what containers wrote or what images hold made root-only."""
from __future__ import annotations

import os
import stat

from ...domain.exceptions import UnsafeHost


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(st.st_uid != 0 or st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != 0))


def check_not_writable(path: str, what: str) -> None:
    """UnsafeHost naming path if a user other than root owns or can write it (a symlink is refused too)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeHost(f"{what} {path} is a symbolic link: refusing to use it")
    if _writable_by_others(st):
        raise UnsafeHost(f"{what} {path} can be written by users other than root (owner uid {st.st_uid}, "
                         f"mode {stat.S_IMODE(st.st_mode):o}): refusing to use it; make it root's and "
                         f"not group- or world-writable (chown root:root, chmod go-w), or use another root")


def check_ancestors(path: str) -> None:
    """Every existing directory above path is root's and not writable by others (unless sticky,
    like /tmp): else its owner could rename the checked data root away after the check and put
    their own tree, skeletons and all, in its place."""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            st = None
        if st is not None and not st.st_mode & stat.S_ISVTX and _writable_by_others(st):
            raise UnsafeHost(f"{parent}, above the data root {path}, can be written by users other than "
                             f"root (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}): they could "
                             f"replace the data root; use a root under root-owned directories")
        if st is not None and st.st_uid != 0:
            raise UnsafeHost(f"{parent}, above the data root {path}, belongs to uid {st.st_uid}: that user "
                             f"could replace the data root; use a root under root-owned directories")
        if parent == "/":
            return
        parent = os.path.dirname(parent)


def check_tree(path: str, what: str) -> None:
    """check_not_writable for path and everything below it (the skeletons are a few files)."""
    check_not_writable(path, what)
    if not os.path.isdir(path) or os.path.islink(path):
        return
    for top, dirs, files in os.walk(path):
        for entry in (*dirs, *files):
            check_not_writable(os.path.join(top, entry), what)


def prepare(settings) -> None:
    """Make (or check) the data root and set the modes of what must be root-only."""
    L = settings.layout
    check_ancestors(settings.root)
    check_not_writable(settings.root, "data root")
    check_tree(L.skeletons, "skeletons")
    # 0711: no listing by other users; containers' roots pass through to their own directories.
    for d in (settings.root, L.lxcpath, os.path.join(settings.root, "mnt"), os.path.join(settings.root, "run")):
        os.makedirs(d, mode=0o711, exist_ok=True)
        os.chmod(d, 0o711)
    # Uppers hold what containers wrote (setuid-root files among them): root only. The views made
    # for saves likewise; stored images may hold files that are 0600 inside a container.
    for d in (os.path.join(settings.root, "overlays"), os.path.join(settings.root, "mnt", ".views"),
              os.path.join(settings.root, "images"), L.bases, L.user_images):
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
    for d in (L.bases, L.user_images):
        for entry in os.scandir(d):
            if entry.is_file(follow_symlinks=False):
                os.chmod(entry.path, 0o600)

