"""Who is doing an operation: a token for this process, and whether a token's process lives.

A token is "pid:starttime:bootid", so a reused pid or a reboot never looks alive.
"""
from __future__ import annotations

import os


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def _starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 (starttime), counted after the parenthesised command name, which may hold spaces.
    return stat[stat.rindex(")") + 2:].split()[19]


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
        return boot == self._boot and _starttime(int(pid)) == start
