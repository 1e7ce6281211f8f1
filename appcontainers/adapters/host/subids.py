"""Root's subordinate id ranges (/etc/subuid, /etc/subgid) for the containers' id map.

LXC writes the id map itself when it runs as root, but once the uidmap package's newuidmap is
on PATH it uses newuidmap and newgidmap, which refuse a map that root's ranges do not cover."""
from __future__ import annotations

import os

from ...domain.exceptions import UnsafeHost

FILES = ("/etc/subuid", "/etc/subgid")


def covers(text: str, base: int, count: int, owners=("root", "0")) -> bool:
    """Whether a subuid/subgid text gives one of owners a range holding base..base+count-1 (pure)."""
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in owners:
            continue
        try:
            start, size = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start <= base and base + count <= start + size:
            return True
    return False


def overlapping(text: str, base: int, count: int, owners=("root", "0")) -> list[str]:
    """The lines of a subuid/subgid text giving anyone but owners ids in base..base+count-1 (pure):
    such a user could take the containers' ids with newuidmap and read what they write."""
    found = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] in owners:
            continue
        try:
            start, size = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start < base + count and base < start + size:
            found.append(line.strip())
    return found


def ensure_range(base: int, count: int, files=FILES) -> list[str]:
    """Append root:base:count to each file whose ranges do not cover the map; returns the files
    changed. UnsafeHost, naming the file and the line to add, if one cannot be written."""
    changed = []
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        except OSError as e:
            raise UnsafeHost(f"cannot read {path} ({e.strerror}): add the line root:{base}:{count} to it") from None
        others = overlapping(text, base, count)
        if others:
            raise UnsafeHost(f"{path} gives {', '.join(others)} ids that the containers' id map uses "
                             f"({base}-{base + count - 1}): that user could become the containers' root; "
                             f"move that range, or set another idmap_base")
        if covers(text, base, count):
            continue
        line = f"root:{base}:{count}\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "a") as f:
                f.write(("\n" if text and not text.endswith("\n") else "") + line)
        except OSError as e:
            raise UnsafeHost(f"root has no subordinate id range for the containers' id map in {path} "
                             f"and it cannot be added ({e.strerror}): add the line root:{base}:{count} "
                             f"to {path}") from None
        changed.append(path)
    return changed
