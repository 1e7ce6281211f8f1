"""The cgroups a container's config names (lxc.cgroup.dir.container / .monitor), and what a dead
LXC monitor left of them.

LXC creates exactly those paths and fails to start if one exists (it only retries other names
for its default ones); a monitor killed with SIGKILL leaves them behind.
"""
from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"
KEYS = ("lxc.cgroup.dir.container", "lxc.cgroup.dir.monitor")


def configured_dirs(config: str) -> list[str]:
    """The relative cgroup paths a config's lxc.cgroup.dir.container/.monitor lines name (pure)."""
    found = []
    for line in config.splitlines():
        key, sep, value = line.partition("=")
        value = value.strip()
        if sep and key.strip() in KEYS and value and not value.startswith("/") \
                and ".." not in value.split("/"):
            found.append(value)
    return found


def _hierarchies(root: str) -> list[str]:
    """The unified root itself, and each v1 hierarchy mounted below it."""
    tops = [root]
    for entry in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        path = os.path.join(root, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            tops.append(path)
    return tops


def remove_stale(dirs: list[str], root: str = CGROUP_ROOT) -> None:
    """rmdir these cgroups, innermost first, in every hierarchy. Call only for a container that
    is not running: a cgroup that still holds a process cannot be removed (EBUSY) and stays."""
    for rel in dirs:
        for top in _hierarchies(root):
            path = os.path.join(top, rel)
            if not os.path.isdir(path):
                continue
            for dirpath, _dirs, _files in os.walk(path, topdown=False):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def usage(rel: str, root: str = CGROUP_ROOT) -> dict:
    """cpu_seconds, memory_bytes and pids of the cgroup rel: from the cgroup v2 files at root/rel
    (a unified host), else from the v1 controllers (cpuacct/, memory/, pids/: a hybrid host such
    as this one); None where not readable (a stopped container has no cgroup)."""
    v2 = os.path.join(root, rel)
    cpu = _read(os.path.join(v2, "cpu.stat"))
    if cpu is not None:
        usec = next((int(v) for k, _, v in (line.partition(" ") for line in cpu.splitlines())
                     if k == "usage_usec"), None)
        return {"cpu_seconds": None if usec is None else usec / 1e6,
                "memory_bytes": _int(_read(os.path.join(v2, "memory.current"))),
                "pids": _int(_read(os.path.join(v2, "pids.current")))}
    nsec = _int(_read(os.path.join(root, "cpuacct", rel, "cpuacct.usage")))
    return {"cpu_seconds": None if nsec is None else nsec / 1e9,
            "memory_bytes": _int(_read(os.path.join(root, "memory", rel, "memory.usage_in_bytes"))),
            "pids": _int(_read(os.path.join(root, "pids", rel, "pids.current")))}


def disk_used(path: str) -> int | None:
    """Bytes allocated by the files under path (not following links); None if it is missing."""
    if not os.path.isdir(path):
        return None
    total = 0
    for dirpath, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total
