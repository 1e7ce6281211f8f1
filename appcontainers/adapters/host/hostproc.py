"""Who is doing an operation: a token for this process, and whether a token's process lives.

A token is "pid:starttime:bootid", so a reused pid or a reboot never looks alive.
"""
from __future__ import annotations

import os


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (the state) on, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Counted after the parenthesised command name, which may hold spaces and parentheses.
    return stat[stat.rindex(")") + 2:].split()


def _starttime(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22


def _live_starttime(pid: int) -> str | None:
    """The start time of pid if it still runs: a zombie (Z) or dead (X) process has exited,
    whatever its parent has not reaped yet."""
    fields = _stat(pid)
    return fields[19] if fields and fields[0] not in ("Z", "X") else None


class HostProcesses:
    def __init__(self):
        self._boot = boot_id()

    def boot_id(self) -> str:
        return self._boot

    def token(self) -> str:
        pid = os.getpid()
        return f"{pid}:{_starttime(pid)}:{self._boot}"

    def alive(self, token: str | None) -> bool:
        if not token:
            return False
        try:
            pid, start, boot = token.split(":")
        except ValueError:
            return False
        return boot == self._boot and _live_starttime(int(pid)) == start
