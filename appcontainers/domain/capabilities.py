"""Linux capabilities a container keeps: a Docker-like default set, widened only on purpose."""
from __future__ import annotations

from typing import Iterable

from .exceptions import InvalidValue

# capabilities(7), lowercase, without the cap_ prefix (LXC's lxc.cap.keep spelling).
KNOWN = frozenset((
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
))

# What an ordinary application needs (Docker's set without mknod, net_raw and setfcap).
DEFAULT = ("chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
           "net_bind_service", "sys_chroot", "audit_write")


def validate_caps(value: object) -> tuple[str, ...]:
    """caps_add as a sorted tuple of known capability names; a clear error otherwise."""
    if isinstance(value, (str, bytes)):
        raise InvalidValue(f"caps_add must be a list of capability names, not one string {value!r}")
    if not isinstance(value, Iterable):
        raise InvalidValue(f"caps_add must be a list of capability names, not {value!r}")
    names = list(value)
    for name in names:
        if not isinstance(name, str) or name not in KNOWN:
            hint = " (without the cap_ prefix)" if isinstance(name, str) and name.startswith("cap_") else ""
            raise InvalidValue(f"unknown capability {name!r}{hint}: use a lowercase name from "
                               f"capabilities(7), e.g. net_admin")
    return tuple(sorted(set(names)))


def kept(caps_add: Iterable[str]) -> tuple[str, ...]:
    """The capabilities a container keeps: the default set plus caps_add, in a stable order."""
    return DEFAULT + tuple(c for c in sorted(caps_add) if c not in DEFAULT)
