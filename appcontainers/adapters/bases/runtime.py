"""The agent's runtime: a self-contained tree (the host's Python interpreter, the stdlib, pyzmq
and libzmq, every shared library they need with glibc's own loader, the agent precompiled)
that runs the agent in a container whose image has no init of its own (any image: no Python,
musl instead of glibc, no /bin/sh).

Built once per data root, keyed by what it is made from (the default base's build_key), root-
owned and read-only; containers get it as one read-only bind mount at RUNTIME_MOUNT and run
the agent through its loader, so nothing of the image's own libraries or ld.so.cache is used
and nothing of the runtime is written into the image:

    /.appcontainers/lib/ld.so --inhibit-cache --library-path /.appcontainers/lib
        /.appcontainers/bin/python -I -S -m appcontainers_agent

Python finds its stdlib from its own path (prefix /.appcontainers: lib/python3.X/os.py); the
agent and pyzmq sit in that stdlib directory, so no environment variable is needed (and none
leaks into the commands the agent runs).
"""
from __future__ import annotations

import compileall
import glob
import hashlib
import os
import shutil
import sys

from ...domain.exceptions import BaseBuildFailed
from ..host import process
from .busybox_base import AGENT_SRC, build_key, parse_ldd, python_runtime, zmq_dirs

RUNTIME_VERSION = "1"
# Not wanted by the agent, large: left out of the stdlib copy.
SKIPPED = ("site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip",
           "lib2to3", "pydoc_data", "__phello__", "config-*", "*.exe", "*.whl", "_test*.so",
           "_tkinter*.so", "*.opt-1.pyc", "*.opt-2.pyc")
# glibc loads these itself when needed (thread cancellation, unwinding): ldd does not list them.
DLOPENED = ("libgcc_s.so.1",)


def find_loader(ldd_text: str) -> str:
    """The dynamic loader's path in ldd's output (the line without "=>")."""
    for line in ldd_text.splitlines():
        line = line.strip()
        if line.startswith("/") and "=>" not in line:
            return line.split(" (")[0].strip()
    raise BaseBuildFailed("ldd named no dynamic loader for the host's Python")


def runtime_key(runtime: dict, loader: str) -> str:
    """Changes when anything the runtime is made from changes (the base's key, with the loader
    in the place of busybox)."""
    return hashlib.sha256(f"runtime-{RUNTIME_VERSION}:{build_key(runtime, loader)}".encode()).hexdigest()


def _ldd(path: str) -> str:
    return process.run(["ldd", path], timeout=30, check=False).stdout.decode()


def _copy_libs(sofiles: list[str], lib_dir: str) -> None:
    """Every library the files need (pyzmq's own bundled ones stay next to pyzmq), flat in lib_dir."""
    libs: set[str] = set()
    for so in sofiles:
        libs |= parse_ldd(_ldd(so))
    for name in DLOPENED:
        for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"):
            if os.path.exists(os.path.join(d, name)):
                libs.add(os.path.join(d, name))
                break
    for lib in sorted(libs):
        if "/pyzmq.libs/" in lib:
            continue
        dest = os.path.join(lib_dir, os.path.basename(lib))
        if not os.path.exists(dest):
            shutil.copy2(os.path.realpath(lib), dest)


def populate(tree: str, runtime: dict) -> None:
    """Lay out the runtime at tree: bin/python, lib/ld.so and the libraries, lib/python3.X."""
    version = "python%d.%d" % sys.version_info[:2]
    stdlib = os.path.join(tree, "lib", version)
    os.makedirs(os.path.join(tree, "bin"))
    src_stdlib = os.path.dirname(runtime["dynload"])
    shutil.copytree(src_stdlib, stdlib, symlinks=False, ignore=shutil.ignore_patterns(*SKIPPED))
    if not os.path.isdir(os.path.join(stdlib, "lib-dynload")):
        shutil.copytree(runtime["dynload"], os.path.join(stdlib, "lib-dynload"),
                        ignore=shutil.ignore_patterns(*SKIPPED))
    shutil.copytree(AGENT_SRC, os.path.join(stdlib, "appcontainers_agent"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    sofiles = [runtime["exe"], *glob.glob(os.path.join(stdlib, "lib-dynload", "*.so"))]
    for d in zmq_dirs():
        shutil.copytree(d, os.path.join(stdlib, os.path.basename(d)),
                        ignore=shutil.ignore_patterns("__pycache__", "tests"))
        sofiles += glob.glob(os.path.join(d, "**", "*.so*"), recursive=True)
    shutil.copy2(runtime["exe"], os.path.join(tree, "bin", "python"))
    lib_dir = os.path.join(tree, "lib")
    _copy_libs(sofiles, lib_dir)
    shutil.copy2(os.path.realpath(find_loader(_ldd(runtime["exe"]))), os.path.join(lib_dir, "ld.so"))
    if not compileall.compile_dir(stdlib, ddir=f"/.appcontainers/lib/{version}", quiet=2, workers=1):
        raise BaseBuildFailed("the agent's runtime did not compile")


def seal(tree: str) -> None:
    """Root-owned and read-only: directories 0555, files 0444 (0555 if executable)."""
    for dirpath, dirs, files in os.walk(tree, topdown=False):
        for f in files:
            path = os.path.join(dirpath, f)
            if os.path.islink(path):
                continue
            os.chown(path, 0, 0)
            os.chmod(path, 0o555 if os.stat(path).st_mode & 0o111 else 0o444)
        os.chown(dirpath, 0, 0)
        os.chmod(dirpath, 0o555)


class RuntimeBuilder:
    """Builds the agent's runtime tree; offline, a few seconds."""

    def __init__(self) -> None:
        self._key: str | None = None

    def key(self) -> str:
        # What the runtime is made from does not change under a running process: hash it once.
        if self._key is None:
            runtime = python_runtime()
            self._key = runtime_key(runtime, find_loader(_ldd(runtime["exe"])))
        return self._key

    def build(self, dest: str) -> None:
        """Make the tree at dest (which must not exist): built beside it, then renamed into place."""
        stage = f"{dest}.building-{os.getpid()}"
        for stale in glob.glob(os.path.join(glob.escape(os.path.dirname(dest)), "*.building-*")):
            _remove(stale)  # a killed build's (the caller holds the build lock)
        try:
            populate(stage, python_runtime())
            seal(stage)
            os.rename(stage, dest)
        finally:
            _remove(stage)


def _remove(path: str) -> None:
    if not os.path.lexists(path):
        return
    for dirpath, dirs, _files in os.walk(path):  # sealed directories: writable again to be removed
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)
