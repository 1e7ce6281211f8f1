"""OCI images made by real tools for the OCI tests (import, export, registry): umoci builds a
layout layer by layer, skopeo converts it, Debian's docker-registry serves it on 127.0.0.1.

    build_image(layout, "t", [layer1, layer2])  # each layerN(rootfs) changes an unpacked tree
    skopeo(["copy", "oci:L:t", "oci-archive:F"])
    tree(directory)                               # {path: (type, mode, uid, gid, content)}
    registry fixture -> "127.0.0.1:PORT"          # push with skopeo --dest-tls-verify=false
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from typing import Callable

import pytest

BUSYBOX = "/bin/busybox"  # statically linked on the test host


def run(argv: list[str], timeout: float = 300) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{argv} failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p.stdout


def skopeo(args: list[str]) -> str:
    return run(["skopeo", *args])


def build_image(layout: str, tag: str, layers: list[Callable[[str], None]], *,
                config: list[str] = (), base: str | None = None) -> None:
    """A new OCI layout (if need be) holding tag: one umoci layer per function, each given the
    unpacked rootfs to change, on the image tagged base if given (its layers shared), else on
    nothing; config: umoci config options (--config.cmd=..., ...)."""
    if not os.path.exists(os.path.join(layout, "index.json")):
        run(["umoci", "init", "--layout", layout])
    if base is not None:
        run(["umoci", "tag", "--image", f"{layout}:{base}", tag])
    else:
        run(["umoci", "new", "--image", f"{layout}:{tag}"])
    for change in layers:
        bundle = tempfile.mkdtemp(prefix="umoci-bundle.", dir=os.path.dirname(layout))
        os.rmdir(bundle)
        try:
            run(["umoci", "unpack", "--image", f"{layout}:{tag}", bundle])
            change(os.path.join(bundle, "rootfs"))
            run(["umoci", "repack", "--image", f"{layout}:{tag}", bundle])
        finally:
            shutil.rmtree(bundle, ignore_errors=True)
    if config:
        run(["umoci", "config", "--image", f"{layout}:{tag}", *config])
    run(["umoci", "gc", "--layout", layout])


def insert(layout: str, tag: str, source: str, target: str, *, opaque: bool = False) -> None:
    """A new layer holding source at target (--opaque: hiding what lay below target)."""
    run(["umoci", "insert", "--image", f"{layout}:{tag}", *(["--opaque"] if opaque else []), source, target])


def whiteout(layout: str, tag: str, target: str) -> None:
    """A new layer deleting target."""
    run(["umoci", "insert", "--image", f"{layout}:{tag}", "--whiteout", target])


def unpack(layout: str, tag: str, dest: str) -> str:
    """umoci unpack of layout:tag into dest; the rootfs path."""
    run(["umoci", "unpack", "--image", f"{layout}:{tag}", dest])
    return os.path.join(dest, "rootfs")


def busybox_tree(rootfs: str) -> None:
    """A small root: busybox and a few of its applets, /etc files, a setgid-less tree."""
    for d in ("bin", "etc", "tmp", "var/lib/app", "usr/share/doc"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin/busybox"))
    for applet in ("sh", "ls", "cat", "echo", "env", "pwd", "sleep"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    with open(os.path.join(rootfs, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)


def tree(root: str) -> dict[str, tuple]:
    """Every entry under root: (type, mode, uid, gid, sha256 of content or link target)."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            else:
                what = (os.major(st.st_rdev), os.minor(st.st_rdev)) if stat.S_ISCHR(st.st_mode) else None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)
    return out


@pytest.fixture(scope="module")
def registry():
    """A local registry (registry_helpers: Debian's docker-registry, plain HTTP) on 127.0.0.1
    and a free port, with its own storage; "127.0.0.1:PORT". Stopped and removed after."""
    from .registry_helpers import start_registry, stop_registry

    r = start_registry()
    try:
        yield r.host
    finally:
        stop_registry(r)
