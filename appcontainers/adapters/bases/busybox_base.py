"""The default base image, built offline in seconds from busybox-static and the
host's Python runtime, carrying the container tools (the agent and pyzmq).

The Python runtime is not copied: its prefix is bind-mounted read-only at the
same path (the manifest's host_binds), so the image stays small. The shared
libraries the interpreter, its extension modules and pyzmq need are copied in.
"""
from __future__ import annotations

import compileall
import glob
import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile

from ...domain.exceptions import BaseBuildFailed
from ..host import process

TOOLS_DIR = "/opt/appcontainers-tools"
INIT = "/sbin/appcontainers-init"
BUILDER_VERSION = "3"  # 2: /etc/resolv.conf placeholder; 3: the agent and pyzmq precompiled
AGENT_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "agent")


def python_runtime() -> dict:
    """How the host's Python is carried into the base (pure apart from reading sys)."""
    prefix = os.path.realpath(sys.base_prefix)
    exe = os.path.realpath(sys.executable)
    if not exe.startswith(prefix + "/"):
        exe = os.path.realpath(os.path.join(prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}"))
    # The base interpreter's paths, not a virtualenv's.
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
                                      "installed_base": sys.base_prefix,
                                      "installed_platbase": sys.base_exec_prefix})
    if prefix in ("/usr", "/"):
        binds = sorted({paths["stdlib"], paths["platstdlib"]})
        copy_exe = True
    else:
        binds, copy_exe = [prefix], False
    return {"prefix": prefix, "exe": exe, "binds": binds, "copy_exe": copy_exe,
            "dynload": os.path.join(paths["platstdlib"], "lib-dynload"),
            "version": sys.version.split()[0]}


def zmq_dirs() -> list[str]:
    import zmq  # the host's pyzmq, copied in

    site = os.path.dirname(os.path.dirname(zmq.__file__))
    return [d for d in (os.path.join(site, "zmq"), os.path.join(site, "pyzmq.libs")) if os.path.isdir(d)]


def parse_ldd(text: str) -> set[str]:
    """Library paths ldd resolved (pure)."""
    libs = set()
    for line in text.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
            if target.startswith("/"):
                libs.add(target)
        elif line.startswith("/"):
            libs.add(line.split(" (")[0].strip())
    return libs


def build_key(runtime: dict, busybox: str) -> str:
    """Changes when anything the base is made from changes."""
    h = hashlib.sha256(BUILDER_VERSION.encode())
    h.update(repr(sorted(runtime.items())).encode())
    st = os.stat(busybox)
    h.update(f"{busybox}:{st.st_size}:{int(st.st_mtime)}".encode())
    for d in [AGENT_SRC, *zmq_dirs()]:
        for path in sorted(glob.glob(os.path.join(d, "**", "*"), recursive=True)):
            if path.endswith((".py", ".so")) or ".so." in path:
                with open(path, "rb") as f:
                    h.update(path.encode() + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def _copy_lib(lib: str, rootfs: str) -> None:
    dest = os.path.join(rootfs, lib.lstrip("/"))
    if not os.path.exists(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)


def _write(rootfs: str, path: str, text: str, mode: int = 0o644) -> None:
    full = os.path.join(rootfs, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    os.chmod(full, mode)


def init_script(runtime: dict) -> str:
    return (
        "#!/bin/sh\n# appcontainers-tools: the agent is this container's init.\n"
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"export PYTHONHOME={runtime['prefix']}\n"
        f"export PYTHONPATH={TOOLS_DIR}:{TOOLS_DIR}/site\n"
        "export PYTHONDONTWRITEBYTECODE=1\n"
        "# Its own errors go to the host-side agent directory, next to its log.\n"
        f"exec {runtime['exe']} -S -m appcontainers_agent \"$@\" 2>>/run/appcontainers/agent.stderr\n"
    )


def populate(rootfs: str, busybox: str, runtime: dict) -> None:
    """Lay out the busybox rootfs with the agent, pyzmq and the libraries they need."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "var/log", "run/appcontainers",
              "dev", "proc", "sys", "mnt", TOOLS_DIR.lstrip("/") + "/site"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    for d in ("tmp", "var/tmp"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        os.chmod(os.path.join(rootfs, d), 0o1777)
    os.chmod(os.path.join(rootfs, "root"), 0o700)
    shutil.copy2(busybox, os.path.join(rootfs, "bin/busybox"))
    applets = process.run([busybox, "--list-full"], timeout=30).stdout.decode().split()
    for applet in applets:
        link = os.path.join(rootfs, applet)
        if applet != "bin/busybox" and not os.path.lexists(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink("/bin/busybox", link)
    _write(rootfs, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    _write(rootfs, "/etc/group", "root:x:0:\nnogroup:x:65534:\n")
    _write(rootfs, "/etc/hosts", "127.0.0.1\tlocalhost\n")
    _write(rootfs, "/etc/hostname", "localhost\n")
    _write(rootfs, "/etc/resolv.conf", "")  # the container's resolver is bind-mounted here
    _write(rootfs, "/etc/profile", "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
    for bind in runtime["binds"]:
        os.makedirs(os.path.join(rootfs, bind.lstrip("/")), exist_ok=True)
    shutil.copytree(AGENT_SRC, os.path.join(rootfs, TOOLS_DIR.lstrip("/"), "appcontainers_agent"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    sofiles = [runtime["exe"], *glob.glob(os.path.join(runtime["dynload"], "*.so"))]
    for d in zmq_dirs():
        shutil.copytree(d, os.path.join(rootfs, TOOLS_DIR.lstrip("/"), "site", os.path.basename(d)),
                        ignore=shutil.ignore_patterns("__pycache__", "tests"))
        sofiles += glob.glob(os.path.join(d, "**", "*.so*"), recursive=True)
    libs = set()
    for so in sofiles:
        libs |= parse_ldd(process.run(["ldd", so], timeout=30, check=False).stdout.decode())
    bound = tuple(b.rstrip("/") + "/" for b in runtime["binds"])
    for lib in sorted(libs):
        if not lib.startswith(bound) and "/pyzmq.libs/" not in lib:
            _copy_lib(lib, rootfs)
    if runtime["copy_exe"]:
        _copy_lib(runtime["exe"], rootfs)
    _write(rootfs, INIT, init_script(runtime), 0o755)
    precompile(rootfs)


def precompile(rootfs: str) -> None:
    """The tools' .pyc, built now by this same interpreter (the one the container runs, so the
    same cache tag): the image is read-only and runs with PYTHONDONTWRITEBYTECODE, so without
    them every start compiles the agent and pyzmq again. Timestamp-checked, as Python's own:
    copytree kept the sources' mtimes and the image keeps them."""
    tools = os.path.join(rootfs, TOOLS_DIR.lstrip("/"))
    for sub in ("appcontainers_agent", *(os.path.join("site", n) for n in sorted(os.listdir(os.path.join(tools, "site"))))):
        if not compileall.compile_dir(os.path.join(tools, sub), ddir=os.path.join(TOOLS_DIR, sub), quiet=2):
            raise BaseBuildFailed(f"the tools in {sub} did not compile")


def find_busybox() -> str:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path):
            return path
    return process.which("busybox")


class BusyboxBaseBuilder:
    """Builds the default base with a codec; offline, a few seconds."""

    def __init__(self, codec, workdir: str, level: int = 3):
        self.codec, self.workdir, self.level = codec, workdir, level
        self._key: str | None = None

    def key(self) -> str:
        # What the base is made from does not change under a running process: hash it once.
        if self._key is None:
            self._key = build_key(python_runtime(), find_busybox())
        return self._key

    def build(self, dest: str, name: str, created: float) -> tuple[str, dict]:
        """Pack the base into dest; returns (image id, manifest dict)."""
        runtime, busybox = python_runtime(), find_busybox()
        os.makedirs(self.workdir, exist_ok=True)
        stage = tempfile.mkdtemp(prefix="base-", dir=self.workdir)
        try:
            rootfs = os.path.join(stage, "rootfs")
            populate(rootfs, busybox, runtime)
            manifest = {"format_version": 1, "name": name, "created": created, "parent": None,
                        "startup_commands": [], "environment": {}, "host_binds": runtime["binds"],
                        "base": name, "init": [INIT], "build_key": build_key(runtime, busybox)}
            image_id = self.codec.pack(rootfs, manifest, dest, level=self.level)
            return image_id, manifest
        finally:
            shutil.rmtree(stage, ignore_errors=True)
