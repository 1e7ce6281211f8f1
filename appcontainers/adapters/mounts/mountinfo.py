"""What is mounted, from /proc/self/mountinfo."""
from __future__ import annotations

import os


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, in mount order."""
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            result.append((_unescape(fields[4]), fields[sep + 1]))
    return result


def is_mountpoint(path: str) -> bool:
    path = os.path.realpath(path)
    return any(p == path for p, _ in mounts())


def mounts_under(prefix: str) -> list[tuple[str, str]]:
    """(mount point, type) of the mounts below prefix, read once."""
    prefix = os.path.realpath(prefix).rstrip("/") + "/"
    return [(p, kind) for p, kind in mounts() if p.startswith(prefix)]


def mounted_under(prefix: str) -> list[str]:
    return [p for p, _ in mounts_under(prefix)]


def fstype(path: str) -> str | None:
    """The filesystem type mounted at path (the last mount there), or None."""
    path = os.path.realpath(path)
    found = None
    for p, kind in mounts():
        if p == path:
            found = kind
    return found
